//! The items the store's benchmarks on either engine write and read, and
//! how they are made: the same on SQLite (`store.rs`) and PostgreSQL
//! (`postgres.rs`). Not in `common`, which `open_stores.rs` also takes in
//! and whose item types are its own.

use mantissa_store::Item;

/// A small item: what the insert, single-write and cold-open benchmarks
/// store.
#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "bench.note", version = 1)]
pub struct Note {
    pub title: String,
    pub n: i64,
    pub done: bool,
}

/// A small item with an indexed attribute, for the query benchmark.
#[derive(Item, Debug, Clone, PartialEq)]
#[item(name = "bench.entry", version = 1)]
pub struct Entry {
    pub title: String,
    #[item(index)]
    pub score: i64,
    pub done: bool,
}

/// Scores are drawn from `0..SCORE_RANGE`.
pub const SCORE_RANGE: i64 = 1_000_000;

pub fn note(i: usize) -> Note {
    Note {
        title: format!("note number {i}"),
        n: i as i64 * 7,
        done: i.is_multiple_of(3),
    }
}

/// The query benchmarks' `n` entries, the same in every run.
pub fn entries(n: usize) -> Vec<Entry> {
    let mut rng = fastrand::Rng::with_seed(7);
    (0..n)
        .map(|i| Entry {
            title: format!("entry number {i}"),
            score: rng.i64(0..SCORE_RANGE),
            done: i.is_multiple_of(2),
        })
        .collect()
}
