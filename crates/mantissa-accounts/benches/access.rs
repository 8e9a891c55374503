//! The access check of a shared item (issue 13, item 15): what
//! [`SharePolicy`] costs a visitor when the item has few shares and when it
//! has 10,000. It used to load every share of the item on every view (7.3
//! ms at 10,000); it now reads only the rows that can apply to the visitor,
//! through indexes, so the two should cost about the same: the 10-share
//! case is the reference, and the ratio is the figure.
//!
//! Run with `cargo bench -p mantissa-accounts --bench access`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mantissa_accounts::{AccountId, Accounts, Role, SharePolicy, find_account, set_group, share};
use mantissa_store::{Item, Site};
use mantissa_web::{AccessPolicy, Published};

#[derive(Item, Debug, Clone)]
#[item(name = "bench.doc", version = 1)]
struct Doc {
    title: String,
}

/// A site with `shares` other accounts' shares on alice's one item, plus
/// one for bob through a group; what bob's check needs.
fn setup(
    dir: &std::path::Path,
    shares: usize,
) -> (
    Site,
    SharePolicy,
    mantissa_store::Store,
    mantissa_store::Stored<Published>,
) {
    let site = Site::open(dir.join("site")).unwrap();
    let accounts = Accounts::new(
        site.clone(),
        std::sync::Arc::new(mantissa_mail::Outbox::new(dir.join("outbox"))),
        "site@example.org",
        "http://localhost",
    );
    accounts.create_user("alice", None, None, false).unwrap();
    accounts.create_user("bob", None, None, false).unwrap();
    let bob = find_account(&site, "bob").unwrap();
    let store = site.user_store("alice").unwrap();
    let published = store
        .write_blocking(
            move |tx| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let doc = tx.insert(&Doc {
                    title: "shared".into(),
                })?;
                mantissa_web::publish(tx, "docs", doc, "shared")?;
                // Other accounts' shares (ids that are no one's here: the check
                // never looks at them, which is the point).
                for i in 0..shares {
                    share(
                        tx,
                        doc,
                        Role::User(AccountId(1_000_000 + i as i64)),
                        &["view"],
                    )?;
                }
                set_group(tx, "friends", &[bob])?;
                share(tx, doc, Role::Group("friends".into()), &["view"])?;
                Ok(tx.query::<Published>().first()?)
            },
        )
        .unwrap()
        .unwrap();
    (site.clone(), SharePolicy::new(site), store, published)
}

fn access(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("access_check");
    for shares in [10usize, 10_000] {
        let dir = tempfile::tempdir().unwrap();
        let (_site, policy, store, published) = setup(dir.path(), shares);
        let check = || {
            rt.block_on(policy.capabilities(
                store.clone(),
                "alice".into(),
                Some("bob".into()),
                published.clone(),
            ))
            .unwrap()
        };
        assert_eq!(check(), vec!["view".to_string()]);
        g.bench_function(format!("{shares}_shares"), |b| {
            b.iter(|| black_box(check()))
        });
    }
    g.finish();
}

criterion_group!(benches, access);
criterion_main!(benches);
