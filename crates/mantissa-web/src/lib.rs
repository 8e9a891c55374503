//! Mantissa web (in progress).
