//! Bad stores give clear errors that name the file and the problem, and
//! change nothing.

use std::path::Path;

use mantissa_store::*;

#[derive(Item, Debug)]
#[item(name = "t.err.note", version = 2)]
struct Note {
    text: String,
}

upgrader!(Note, 1, |_item| Ok(()));

fn site() -> (tempfile::TempDir, Site) {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::open(dir.path()).unwrap();
    (dir, site)
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let (_d, site) = site();
    let path = site.user_store_path("bob").unwrap();
    std::fs::write(&path, b"this is a text file, not a store\n".repeat(200)).unwrap();
    let before = bytes(&path);
    let err = site.user_store("bob").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: not a Mantissa store (the file is not a SQLite database)",
            path.display()
        )
    );
    assert!(bytes(&path) == before, "the file was changed");
}

#[test]
fn another_programs_database_is_refused_and_left_alone() {
    let (_d, site) = site();
    let path = site.user_store_path("carol").unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT); INSERT INTO accounts (owner) VALUES ('x');")
        .unwrap();
    drop(c);
    let before = bytes(&path);
    let err = site.user_store("carol").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: not a Mantissa store (it is a SQLite database of some other program)",
            path.display()
        )
    );
    assert!(bytes(&path) == before, "the file was changed");
}

fn make_store(site: &Site, name: &str) -> std::path::PathBuf {
    let s = site.user_store(name).unwrap();
    s.write_blocking(|tx| -> Result<_> {
        for i in 0..2000 {
            tx.insert(&Note {
                text: format!("note {i} {}", "x".repeat(100)),
            })?;
        }
        Ok(())
    })
    .unwrap();
    let path = s.path().to_path_buf();
    drop(s);
    // Close it: reopen the site without this store in its cache.
    path
}

#[test]
fn a_store_from_a_newer_program_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = {
        let site = Site::open(dir.path()).unwrap();
        make_store(&site, "dave")
    };
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute(
        "UPDATE _types SET version = 7 WHERE name = 't.err.note'",
        [],
    )
    .unwrap();
    drop(c);
    let before = bytes(&path);
    let site = Site::open(dir.path()).unwrap();
    let err = site.user_store("dave").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: written by a newer version of the application (t.err.note is at version 7, this program knows up to 2); upgrade the program",
            path.display()
        )
    );
    assert!(bytes(&path) == before, "the file was changed");

    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute("UPDATE _types SET version = 2", []).unwrap();
    c.execute("UPDATE _meta SET value = 9 WHERE key = 'format'", [])
        .unwrap();
    drop(c);
    let err = site.user_store("dave").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: store format 9 is newer than this program's (2); upgrade the program",
            path.display()
        )
    );
}

#[test]
fn a_missing_upgrader_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = {
        let site = Site::open(dir.path()).unwrap();
        make_store(&site, "erin")
    };
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute(
        "UPDATE _types SET version = 0 WHERE name = 't.err.note'",
        [],
    )
    .unwrap();
    drop(c);
    let site = Site::open(dir.path()).unwrap();
    let err = site.user_store("erin").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: t.err.note is stored at version 0 but no upgrader from version 0 is registered",
            path.display()
        )
    );
}

#[test]
fn a_corrupt_store_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = {
        let site = Site::open(dir.path()).unwrap();
        make_store(&site, "frank")
    };
    // Scribble over the middle of the file, where the items' pages are.
    let mut data = bytes(&path);
    assert!(data.len() > 100_000, "{}", data.len());
    let mid = data.len() / 2;
    for b in &mut data[mid..mid + 8192] {
        *b = 0xA5;
    }
    std::fs::write(&path, &data).unwrap();
    let site = Site::open(dir.path()).unwrap();
    let outcome = site.user_store("frank").and_then(|s| {
        let problems = s.check()?;
        let read = s.read_blocking(|r| r.query::<Note>().column(Note::text));
        Ok((problems, read.err()))
    });
    let named = path.display().to_string();
    match outcome {
        Err(e) => assert!(
            e.to_string().contains(&named) && e.to_string().contains("corrupt"),
            "{e}"
        ),
        Ok((problems, read_err)) => {
            assert!(!problems.is_empty(), "check finds the damage");
            let e = read_err.expect("reading damaged pages fails");
            assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("{named}: the store is corrupt")),
                "{e}"
            );
        }
    }
}

#[test]
fn store_names_that_are_not_file_names_are_refused() {
    let (_d, site) = site();
    for bad in [
        "",
        "../etc",
        "Alice",
        "a/b",
        ".hidden",
        "x".repeat(65).as_str(),
    ] {
        let err = site.user_store(bad).unwrap_err();
        assert!(matches!(err, StoreError::BadName { .. }), "{bad:?}: {err}");
    }
    assert!(site.user_names().unwrap().is_empty());
}

#[test]
fn concurrent_writers_to_one_store_never_see_busy_or_corrupt_it() {
    let (_d, site) = site();
    let path = site.user_store("busy").unwrap().path().to_path_buf();
    // Separate handles are separate connections and write locks, as two
    // processes would be.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let s = Store::open(&path).unwrap();
                for i in 0..100 {
                    s.write_blocking(move |tx| {
                        tx.insert(&Note {
                            text: format!("{t}-{i}"),
                        })?;
                        tx.insert(&Note {
                            text: format!("{t}-{i}b"),
                        })
                        .map(drop)
                    })
                    .unwrap();
                    s.read_blocking(|r| r.query::<Note>().count()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.read_blocking(|r| r.query::<Note>().count()).unwrap(), 800);
    assert_eq!(s.check().unwrap(), Vec::<String>::new());
}
