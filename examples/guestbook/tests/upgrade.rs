//! A store written when `Entry` was at version 1 opens with today's code:
//! its entries come up to version 2 through the upgrader in `lib.rs`
//! (`signed_in` false: version 1 only had typed names), nothing lost.

use guestbook::{Book, Entry};
use mantissa::Store;

#[test]
fn a_book_of_version_1_is_upgraded_when_its_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ann.sqlite");
    let old = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/resources/guestbook-v1.sqlite"
    );
    std::fs::copy(old, &path).unwrap();

    let store = Store::open(&path).unwrap();
    let (books, entries) = store
        .read_blocking(|r| -> mantissa::store::Result<_> {
            let books = r.query::<Book>().all()?;
            let entries = r.query::<Entry>().order_by(Entry::author.asc()).all()?;
            Ok((books, entries))
        })
        .unwrap();
    assert_eq!(books.len(), 1);
    assert_eq!(books[0].title, "My guestbook");
    let seen: Vec<(&str, &str, bool)> = entries
        .iter()
        .map(|e| (e.author.as_str(), e.text.as_str(), e.signed_in))
        .collect();
    assert_eq!(
        seen,
        [
            ("Carol", "First!", false),
            ("Dan", "Second, from 2026", false)
        ]
    );
    assert_eq!(entries[0].written.to_string(), "2026-11-01T10:00:00Z");
}
