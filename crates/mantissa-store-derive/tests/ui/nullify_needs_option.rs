use mantissa_store::{Item, Ref};

#[derive(Item)]
#[item(name = "ui.author", version = 1)]
struct Author {
    name: String,
}

#[derive(Item)]
#[item(name = "ui.post", version = 1)]
struct Post {
    #[item(on_delete = "nullify")]
    author: Ref<Author>,
}

fn main() {}
