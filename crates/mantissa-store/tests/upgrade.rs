//! Schema evolution against a store written by the old code
//! (tests/resources/contacts-v1.sqlite, see tests/resources/README.md).

use std::path::{Path, PathBuf};

use mantissa_store::*;

mod refused;
use refused::Refused;

#[derive(Item, Debug)]
#[item(name = "t.up.company", version = 1)]
struct Company {
    title: String,
}

/// Version 3 (two upgrades from the stored version 1): `name` became `full_name`, `age` became text, `legacy` is gone,
/// `email` and `tags` are new (tags with a default).
#[derive(Item, Debug)]
#[item(name = "t.up.contact", version = 3)]
struct Contact {
    #[item(index)]
    full_name: String,
    age: String,
    email: Option<String>,
    #[item(default = "none")]
    tags: String,
    #[item(on_delete = "cascade")]
    company: Ref<Company>,
}

upgrader!(Contact, 1, |item| {
    item.rename("name", "full_name");
    item.retype("age", |years: i64| format!("{years} years"))?;
    item.remove("legacy");
    Ok(())
});

upgrader!(Contact, 2, |item| {
    // Arbitrary code: derive the new attribute from the old ones.
    let name: String = item.get("full_name")?;
    let email = name.to_lowercase().replace(' ', ".") + "@example.com";
    item.set("email", Some(email));
    Ok(())
});

fn copy_historic(dir: &Path) -> PathBuf {
    let res = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resources");
    let dest = dir.join("contacts.sqlite");
    std::fs::copy(res.join("contacts-v1.sqlite"), &dest).unwrap();
    copy_dir(&res.join("contacts-v1.files"), &dir.join("contacts.files"));
    dest
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn a_small_old_store_is_upgraded_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_historic(dir.path());
    let store = Store::open(&path).unwrap();
    assert!(store.upgrades_in_progress().is_empty());
    let contacts = store
        .read_blocking(|r| {
            r.query::<Contact>()
                .order_by(Contact::full_name.asc())
                .all()
        })
        .unwrap();
    assert_eq!(contacts.len(), 50);
    let c7 = &contacts[7];
    assert_eq!(c7.id().id(), 8, "items keep their ids");
    assert_eq!(c7.full_name, "Contact 07");
    assert_eq!(c7.age, "27 years");
    assert_eq!(c7.email.as_deref(), Some("contact.07@example.com"));
    assert_eq!(c7.tags, "none");
    let (title, card) = store
        .read_blocking({
            let (company, id) = (c7.company, c7.id());
            move |r| -> Result<_> { Ok((r.get(company)?.title.clone(), r.file(id, "card.vcf")?)) }
        })
        .unwrap();
    assert_eq!(title, "Initech");
    assert!(
        String::from_utf8(card.unwrap())
            .unwrap()
            .contains("FN:Contact 07")
    );

    // The index, the references and the id sequence came through the upgrade.
    let new = store
        .write_blocking(|tx| -> Result<_> {
            let acme = tx
                .query::<Company>()
                .filter(Company::title.eq("Acme"))
                .first()?
                .unwrap();
            let id = tx.insert(&Contact {
                full_name: "New".into(),
                age: "1 year".into(),
                email: None,
                tags: "x".into(),
                company: acme.id(),
            })?;
            tx.delete(acme.id())?;
            Ok(id)
        })
        .unwrap();
    assert_eq!(new.id(), 52, "ids are never reused, across an upgrade too");
    let left = store
        .read_blocking(|r| r.query::<Contact>().count())
        .unwrap();
    assert_eq!(
        left, 25,
        "deleting Acme cascaded to its contacts, new and upgraded"
    );
    let err = store
        .write_blocking(|tx| {
            tx.insert(&Contact {
                full_name: "Contact 01".into(),
                age: String::new(),
                email: None,
                tags: String::new(),
                company: Ref::from_id(12345),
            })
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.up.contact.company refers to a t.up.company that does not exist"
    );
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}

#[test]
fn a_large_old_store_upgrades_in_the_background_and_never_shows_old_items() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_while_upgrading(dir.path());
    let progress = store.upgrades_in_progress();
    assert_eq!(progress[0].item, "t.up.contact");
    assert_eq!(progress[0].total, 30_050);

    // Other types are usable at once; reading contacts waits for the upgrade.
    let companies = store
        .read_blocking(|r| r.query::<Company>().count())
        .unwrap();
    assert_eq!(companies, 2);
    let (n, bulk) = store
        .read_blocking(|r| -> Result<_> {
            Ok((
                r.query::<Contact>().count()?,
                r.query::<Contact>()
                    .filter(Contact::full_name.eq("Bulk 00042"))
                    .first()?,
            ))
        })
        .unwrap();
    assert_eq!(n, 30_050);
    let bulk = bulk.unwrap();
    assert_eq!(bulk.age, "42 years");
    assert_eq!(bulk.email.as_deref(), Some("bulk.00042@example.com"));
    assert!(store.upgrades_in_progress().is_empty());
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}

/// Adds `n` version-1 contacts of `company`, named by `name`, to the
/// historic store at `path`, as the old code would have: the old store grew.
fn add_old_contacts(path: &Path, n: i64, name: impl Fn(i64) -> String, company: i64) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("BEGIN").unwrap();
    let mut st = c
        .prepare(
            "INSERT INTO \"item_t.up.contact\" (name, age, legacy, company) VALUES (?, ?, 0, ?)",
        )
        .unwrap();
    for i in 0..n {
        st.execute(rusqlite::params![name(i), i, company]).unwrap();
    }
    drop(st);
    c.execute_batch("COMMIT").unwrap();
}

/// The historic store with 30,000 more version-1 contacts, named
/// "Bulk 00000" on, opened: its contacts upgrade in the background.
fn open_while_upgrading(dir: &Path) -> Store {
    let path = copy_historic(dir);
    add_old_contacts(&path, 30_000, |i| format!("Bulk {i:05}"), 1);
    let store = Store::open(&path).unwrap();
    let progress = store.upgrades_in_progress();
    assert_eq!(
        progress.len(),
        1,
        "upgrading in the background: {progress:?}"
    );
    store
}

/// Contact "Bulk 00042", read from `store`, is at the current version.
fn assert_bulk_42_is_current(store: &Store) {
    let bulk = store
        .read_blocking(|r| {
            r.query::<Contact>()
                .filter(Contact::full_name.eq("Bulk 00042"))
                .first()
        })
        .unwrap()
        .expect("Bulk 00042 is found by its new attribute");
    assert_eq!(bulk.age, "42 years");
    assert!(store.upgrades_in_progress().is_empty());
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}

/// A write that finishes an upgrade (by touching the type) and then fails
/// leaves the upgrade to do: its rollback undid it, so nothing may go on as
/// if it were done.
#[test]
fn an_upgrade_finished_by_a_write_that_rolls_back_is_still_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_while_upgrading(dir.path());
    let err = store
        .write_blocking(|tx| {
            let n = tx.query::<Contact>().count()?;
            assert_eq!(n, 30_050, "the write sees the upgraded contacts");
            // A second look in the same transaction does not upgrade twice.
            let bulk = tx
                .query::<Contact>()
                .filter(Contact::full_name.eq("Bulk 00007"))
                .first()?
                .expect("found in the write");
            assert_eq!(bulk.age, "7 years");
            Err::<(), _>(Refused::Because("changed my mind"))
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "changed my mind");
    assert_bulk_42_is_current(&store);
}

/// The same inside a savepoint that rolls back, in a write that commits.
#[test]
fn an_upgrade_finished_in_a_savepoint_that_rolls_back_is_still_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_while_upgrading(dir.path());
    let inner = store
        .write_blocking(|tx| -> Result<_> {
            let inner = tx.savepoint(|tx| {
                tx.query::<Contact>().count()?;
                Err::<(), _>(Refused::Because("not this part"))
            });
            Ok(inner.unwrap_err().to_string())
        })
        .unwrap();
    assert_eq!(inner, "not this part");
    assert_bulk_42_is_current(&store);
}

#[test]
fn upgrades_resume_after_a_restart_and_finish_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_historic(dir.path());
    add_old_contacts(&path, 12_000, |i| format!("B{i}"), 2);
    // Open, let the background make some progress, and drop the store
    // (as a restart would).
    {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.upgrades_in_progress().len(), 1);
    }
    let store = Store::open(&path).unwrap();
    let mut seen = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel();
    store
        .finish_upgrades(move |p| {
            let _ = tx.send((p.done, p.total));
        })
        .unwrap();
    seen.extend(rx.try_iter());
    if let Some(&(done, total)) = seen.last() {
        assert_eq!(done, total);
    }
    assert!(store.upgrades_in_progress().is_empty());
    let n = store
        .read_blocking(|r| r.query::<Contact>().count())
        .unwrap();
    assert_eq!(n, 12_050);
}
