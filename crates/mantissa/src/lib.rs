//! Mantissa.
pub use mantissa_store as store;
