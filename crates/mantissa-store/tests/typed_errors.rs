//! A transaction returns its caller's own error type: an application's
//! refusal crosses the store intact (no string to compare later), rolls
//! back everything the transaction wrote, and the store's own refusals
//! arrive as that type's store variant.

use mantissa_store::*;

#[derive(Item, Debug)]
#[item(name = "t.typed.order", version = 1)]
struct Order {
    item: String,
}

/// An application's error: its own refusals, and the store's.
#[derive(Debug, thiserror::Error)]
enum ShopError {
    #[error("{item} is out of stock ({wanted} wanted, {left} left)")]
    OutOfStock {
        item: String,
        wanted: u32,
        left: u32,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn site() -> (tempfile::TempDir, Site) {
    let dir = tempfile::tempdir().unwrap();
    let site = mantissa_store::testing::open_site(dir.path()).unwrap();
    (dir, site)
}

fn orders(store: &Store) -> u64 {
    store.read_blocking(|r| r.query::<Order>().count()).unwrap()
}

/// Writes an order, then refuses: what a shop's transaction does when the
/// stock runs out halfway.
fn order_then_refuse(tx: &mut Write<'_>) -> Result<(), ShopError> {
    tx.insert(&Order {
        item: "teapot".into(),
    })?;
    Err(ShopError::OutOfStock {
        item: "teapot".into(),
        wanted: 2,
        left: 1,
    })
}

fn assert_out_of_stock(e: ShopError) {
    match e {
        ShopError::OutOfStock { item, wanted, left } => {
            assert_eq!((item.as_str(), wanted, left), ("teapot", 2, 1));
        }
        other => panic!("expected OutOfStock, got {other:?}"),
    }
}

#[test]
fn an_application_error_crosses_write_blocking_intact_and_rolls_back() {
    let (_d, site) = site();
    let store = site.user_store("ann").unwrap();
    let err = store.write_blocking(order_then_refuse).unwrap_err();
    assert_out_of_stock(err);
    assert_eq!(orders(&store), 0, "the order was rolled back");
}

#[tokio::test]
async fn an_application_error_crosses_an_async_write_intact_and_rolls_back() {
    let (_d, site) = site();
    let store = site.user_store("bob").unwrap();
    let err = store.write(order_then_refuse).await.unwrap_err();
    assert_out_of_stock(err);
    let left = store
        .read(|r| -> Result<_, ShopError> { Ok(r.query::<Order>().count()?) })
        .await
        .unwrap();
    assert_eq!(left, 0, "the order was rolled back");
}

#[test]
fn an_application_error_from_a_savepoint_undoes_only_the_savepoint() {
    let (_d, site) = site();
    let store = site.user_store("cat").unwrap();
    let inner = store
        .write_blocking(|tx| -> Result<_, ShopError> {
            let refused = tx.savepoint(order_then_refuse).unwrap_err();
            tx.insert(&Order {
                item: "kettle".into(),
            })?;
            Ok(refused)
        })
        .unwrap();
    assert_out_of_stock(inner);
    let items = store
        .read_blocking(|r| r.query::<Order>().all())
        .unwrap()
        .into_iter()
        .map(|o| o.into_inner().item)
        .collect::<Vec<_>>();
    assert_eq!(items, ["kettle"]);
}

#[test]
fn a_store_refusal_arrives_as_the_callers_store_variant() {
    let (_d, site) = site();
    let store = site.user_store("dan").unwrap();
    let inner = store.clone();
    let err = store
        .write_blocking(move |tx| -> Result<_, ShopError> {
            tx.insert(&Order { item: "cup".into() })?;
            // Nested: refused before the inner closure runs.
            inner.write_blocking(|tx| -> Result<_, ShopError> {
                tx.insert(&Order {
                    item: "saucer".into(),
                })?;
                Ok(())
            })?;
            Ok(())
        })
        .unwrap_err();
    assert!(
        matches!(err, ShopError::Store(StoreError::NestedWrite { ref store }) if store == "dan"),
        "{err:?}"
    );
    assert_eq!(orders(&store), 0, "the outer write was rolled back too");
}

#[tokio::test]
async fn a_refusal_before_anything_is_done_arrives_as_the_callers_store_variant() {
    let (_d, site) = site();
    let store = site.user_store("eve").unwrap();
    // On the runtime's own thread, the blocking call is refused.
    let err = store
        .write_blocking(|tx| -> Result<_, ShopError> {
            tx.insert(&Order { item: "jug".into() })?;
            Ok(())
        })
        .unwrap_err();
    assert!(
        matches!(err, ShopError::Store(StoreError::BlockingInAsync { .. })),
        "{err:?}"
    );
    let closing = store.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .unwrap()
        .unwrap();
    let err = store
        .write(|tx| -> Result<_, ShopError> {
            tx.insert(&Order { item: "jug".into() })?;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, ShopError::Store(StoreError::Closed)),
        "{err:?}"
    );
}

#[test]
fn a_panic_arrives_as_the_callers_store_variant() {
    let (_d, site) = site();
    let store = site.user_store("fay").unwrap();
    let err = store
        .write_blocking(|tx| -> Result<(), ShopError> {
            tx.insert(&Order {
                item: "bowl".into(),
            })?;
            panic!("dropped the bowl");
        })
        .unwrap_err();
    assert!(
        matches!(err, ShopError::Store(StoreError::Panicked(ref m)) if m == "dropped the bowl"),
        "{err:?}"
    );
    assert_eq!(orders(&store), 0);
}
