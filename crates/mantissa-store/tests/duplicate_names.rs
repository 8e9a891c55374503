//! Two item types that claim the same stable name stop the program at open,
//! naming both.

use mantissa_store::*;

mod blog {
    #[derive(mantissa_store::Item)]
    #[item(name = "t.dup.post", version = 1)]
    pub struct Post {
        pub title: String,
    }
}

mod forum {
    #[derive(mantissa_store::Item)]
    #[item(name = "t.dup.post", version = 1)]
    pub struct Post {
        pub subject: String,
    }
}

#[test]
fn a_type_name_registered_twice_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Site::open(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("item type name \"t.dup.post\" is registered twice: by "),
        "{msg}"
    );
    assert!(
        msg.contains("blog::Post") && msg.contains("forum::Post"),
        "{msg}"
    );
    assert!(
        !dir.path().join("site.sqlite").exists(),
        "nothing was created"
    );
}
