use mantissa_store::{Item, Read};

#[derive(Item)]
#[item(name = "ui.post", version = 1)]
struct Post {
    views: i64,
}

fn find(r: &Read<'_>) {
    let _ = r.query::<Post>().filter(Post::views.gt("ten"));
}

fn main() {}
