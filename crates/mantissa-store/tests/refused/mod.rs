//! The error type of the tests' transactions that refuse for their own
//! reasons, as an application's would: its own words, or the store's error.

use mantissa_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Because(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}
