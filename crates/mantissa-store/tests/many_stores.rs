//! Many user stores, few open files.

use mantissa_store::*;

#[derive(Item)]
#[item(name = "t.many.note", version = 1)]
struct Note {
    n: i64,
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn user_stores_open_on_demand_within_a_bounded_cache() {
    let dir = tempfile::tempdir().unwrap();
    let site = mantissa_store::testing::open_site(dir.path()).unwrap();
    site.set_open_stores(16);
    let baseline = open_fds();
    for i in 0..400 {
        let s = site.user_store(&format!("user{i:03}")).unwrap();
        s.write_blocking(move |tx| tx.insert(&Note { n: i }).map(drop))
            .unwrap();
    }
    assert!(
        site.open_stores() <= 16,
        "{} stores open",
        site.open_stores()
    );
    let fds = open_fds() - baseline;
    assert!(fds <= 16 * 4, "{fds} files open for 400 stores");
    assert_eq!(site.user_names().unwrap().len(), 400);
    // A store evicted long ago still has its item.
    let n = site
        .user_store("user007")
        .unwrap()
        .read_blocking(|r| r.query::<Note>().column(Note::n))
        .unwrap();
    assert_eq!(n, [7]);
}
