//! Mantissa's multiprotocol host.
//!
//! This crate owns everything between a listening socket and a protocol's
//! first byte: the listeners (addresses and TLS settings handed to
//! [`Server::listen`] by whoever starts the server), TLS, the threads
//! connections are served on (one single-threaded runtime per CPU, each
//! connection on one of them for its whole life), the one [`Guard`] that
//! every protocol shares — connection caps overall and per IP address,
//! handshake, header and idle timeouts, request-rate limits and load
//! shedding — and graceful shutdown. Protocols (HTTP in `mantissa-web`,
//! SMTP and SIP later) plug in through the small [`Protocol`] trait and
//! never see a connection the guard refused.
//!
//! It knows nothing of HTTP, URLs or accounts, and no database: it does not
//! depend on `mantissa-store` (a test keeps it so). What it listens on is
//! handed to it as plain addresses and TLS settings (the site keeps them as
//! `mantissa-web`'s `Port` items), and what a connection thread must set up
//! for the store, its reader queue, is done by a hook that whoever starts
//! the server passes ([`Server::on_thread_start`]).

mod guard;
mod idle;
mod listener;
mod tls;
mod workers;

pub use guard::{Guard, Limits, Permit, Receiving, Refusal, SlotGuard};
pub use idle::{Answering, Requests};
pub use listener::{BoxFuture, Connection, Io, Protocol, Server, ServerError, Shutdown};
pub use tls::load_tls;
