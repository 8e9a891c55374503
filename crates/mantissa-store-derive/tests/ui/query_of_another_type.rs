use mantissa_store::{Item, Read};

#[derive(Item)]
#[item(name = "ui.author", version = 1)]
struct Author {
    name: String,
}

#[derive(Item)]
#[item(name = "ui.post", version = 1)]
struct Post {
    title: String,
}

fn find(r: &Read<'_>) {
    let _ = r.query::<Post>().filter(Author::name.eq("x"));
}

fn main() {}
