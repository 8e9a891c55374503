use mantissa_store::Item;

#[derive(Item)]
#[item(version = 1)]
struct Post {
    title: String,
}

fn main() {}
