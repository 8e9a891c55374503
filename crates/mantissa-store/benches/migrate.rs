//! A site of many users moved from SQLite files into PostgreSQL and back
//! (`Site::copy_to`, what `mantissa migrate` runs), timed, with every store
//! checked equal to the original on the way (the copy checks each store's
//! rows, counted and hashed, and its files; this checks again what each
//! user sees, after both moves).
//!
//! `cargo bench -p mantissa-store --bench migrate` moves 10,000 users
//! (`MANTISSA_BENCH_USERS` to change it); under `cargo test` it moves 50.
//! PostgreSQL is `$MANTISSA_TEST_POSTGRES`, or one the run starts
//! (`mantissa_store::testing`).

use std::time::Instant;

use mantissa_store::*;

#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "bench.migrate.contact", version = 1)]
struct Contact {
    #[item(unique)]
    name: String,
    email: String,
}

#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "bench.migrate.note", version = 1)]
struct Note {
    #[item(on_delete = "cascade")]
    about: Ref<Contact>,
    text: String,
    stars: i64,
}

fn users() -> usize {
    if !std::env::args().any(|a| a == "--bench") {
        return 50;
    }
    std::env::var("MANTISSA_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn name(i: usize) -> String {
    format!("user{i:05}")
}

/// What user `i` sees: their contacts and notes, and the note's file.
fn seen(site: &Site, i: usize) -> Vec<(String, String, i64, Option<Vec<u8>>)> {
    site.user_store(&name(i))
        .unwrap()
        .read_blocking(|r| -> Result<_> {
            let mut out = Vec::new();
            for n in r.query::<Note>().order_by(Note::text.asc()).all()? {
                out.push((
                    r.get(n.about)?.name.clone(),
                    n.text.clone(),
                    n.stars,
                    r.file(n.id(), "note.txt")?,
                ));
            }
            Ok(out)
        })
        .unwrap()
}

fn main() {
    let n = users();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Site::open(dir.path().join("sqlite")).unwrap();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..8 {
            let sqlite = &sqlite;
            s.spawn(move || {
                for i in (t..n).step_by(8) {
                    sqlite
                        .user_store(&name(i))
                        .unwrap()
                        .write_blocking(|tx| -> Result<()> {
                            let c = tx.insert(&Contact {
                                name: format!("contact of {i}"),
                                email: format!("c{i}@example.org"),
                            })?;
                            for k in 0..3 {
                                let note = tx.insert(&Note {
                                    about: c,
                                    text: format!("note {k} of {i}"),
                                    stars: k,
                                })?;
                                if k == 0 {
                                    tx.attach_file(
                                        note,
                                        "note.txt",
                                        format!("file of {i}").as_bytes(),
                                    )?;
                                }
                            }
                            Ok(())
                        })
                        .unwrap();
                }
            });
        }
    });
    let made = start.elapsed();
    sqlite.close().unwrap();
    let sqlite = Site::open_existing(dir.path().join("sqlite")).unwrap();

    let url = mantissa_store::testing::postgres_database();
    let pg = Site::open_postgres(dir.path().join("node"), &url).unwrap();
    let start = Instant::now();
    let there = sqlite.copy_to(&pg, false, |_, _, _| {}).unwrap();
    let to_pg = start.elapsed();
    assert_eq!(there.copied, n + 1);

    let back = Site::open(dir.path().join("back")).unwrap();
    let start = Instant::now();
    let again = pg.copy_to(&back, false, |_, _, _| {}).unwrap();
    let to_sqlite = start.elapsed();
    assert_eq!(again.copied, n + 1);
    assert_eq!(back.user_names().unwrap(), sqlite.user_names().unwrap());
    for i in 0..n {
        assert_eq!(seen(&back, i), seen(&sqlite, i), "{}", name(i));
    }
    println!(
        "migrate: {n} users ({} rows, {} files): made in {:.1} s; to PostgreSQL {:.1} s ({:.0} stores/s); back to SQLite {:.1} s ({:.0} stores/s); every store equal",
        there.rows,
        there.files,
        made.as_secs_f64(),
        to_pg.as_secs_f64(),
        (n + 1) as f64 / to_pg.as_secs_f64(),
        to_sqlite.as_secs_f64(),
        (n + 1) as f64 / to_sqlite.as_secs_f64(),
    );
}
