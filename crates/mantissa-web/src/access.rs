//! The one place where it is decided what a visitor may do with a
//! published item.
//!
//! Every request for `/users/<owner>/<slug>/…` asks the site's
//! [`AccessPolicy`] for the visitor's capabilities on the item *before* the
//! offering is called, and answers 404 — never 403, so nothing leaks that
//! the item exists — when they do not include `view`. Offerings get the
//! capabilities in their [`SharedRequest`](crate::SharedRequest) and cannot
//! skip the check. Without accounts, the policy is [`PublicPolicy`]:
//! published means visible to everyone; `mantissa-accounts` installs roles
//! and shares.

use std::future::Future;
use std::pin::Pin;

use mantissa_store::{Store, Stored};

use crate::offering::Published;
use crate::page::WebError;

/// The capability to see an item.
pub const VIEW: &str = "view";

/// A boxed future of capabilities.
pub type CapabilitiesFuture = Pin<Box<dyn Future<Output = Result<Vec<String>, WebError>> + Send>>;

/// Decides what a visitor may do with a published item.
pub trait AccessPolicy: Send + Sync + 'static {
    /// The capabilities of `visitor` (none when anonymous) on `item`, which
    /// `owner` published in `store`.
    fn capabilities(
        &self,
        store: Store,
        owner: String,
        visitor: Option<String>,
        item: Stored<Published>,
    ) -> CapabilitiesFuture;
}

/// Published items are visible to everyone; only the owner may do more.
pub struct PublicPolicy;

impl AccessPolicy for PublicPolicy {
    fn capabilities(
        &self,
        _store: Store,
        owner: String,
        visitor: Option<String>,
        _item: Stored<Published>,
    ) -> CapabilitiesFuture {
        Box::pin(async move {
            if visitor.as_deref() == Some(owner.as_str()) {
                Ok(vec!["*".into()])
            } else {
                Ok(vec![VIEW.into()])
            }
        })
    }
}

/// Whether `caps` grant `capability` (`*` grants everything).
pub fn grants(caps: &[String], capability: &str) -> bool {
    caps.iter().any(|c| c == "*" || c == capability)
}
