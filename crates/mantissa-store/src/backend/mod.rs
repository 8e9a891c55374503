//! The boundary between the store and the database engine.
//!
//! Everything above this module speaks in [`Value`](crate::Value)s and SQL
//! text written by [`crate::sql`]; only the backend touches a driver. SQLite
//! (rusqlite) is the one backend today. The PostgreSQL backend will be a
//! sibling module exposing the same `Conn` surface, chosen when a site is
//! opened; the `Item` API does not change.

pub(crate) mod sqlite;

pub(crate) use sqlite::{Conn, Row, is_missing_column, is_missing_table};
