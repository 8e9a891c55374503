use mantissa_store::Item;

#[derive(Item)]
#[item(name = "ui.post", version = 1)]
struct Post {
    seen: std::time::Instant,
}

fn main() {}
