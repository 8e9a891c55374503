//! Test fixtures shared by Mantissa's crates (never a dependency of
//! production code): a real server on 127.0.0.1 with a plain HTTP/1.1
//! client over TCP, and an SMTP server that keeps what it receives.

#![allow(missing_docs)]

pub mod http;
pub mod notes;
pub mod smtp;

pub use http::*;
pub use smtp::{SmtpSink, dkim_verifies};
