//! fleetcore's state in PostgreSQL, for nodes that share it: [`PgStore`] implements the
//! [`KvStore`](fleetcore_core::KvStore) seam every capability persists through, and its
//! [`ChangeFeed`] tells a node which tables other nodes changed (LISTEN/NOTIFY), so the node can
//! refresh its caches and re-check its live connections.
//!
//! The trait is synchronous and callers run on any thread, tokio workers included; the store owns
//! a small runtime of its own on which the connections live, and a call waits for its answer on a
//! plain channel (as a redb call waits for the disk).

mod changes;
mod pool;
mod schema;
mod store;

pub use changes::{Change, ChangeFeed};
pub use schema::SCHEMA_VERSION;
pub use store::{PgStore, PgStoreConfig};

/// Why the PostgreSQL store could not start.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The connection URL does not parse.
    #[error("the PostgreSQL url is not valid: {0}")]
    InvalidUrl(String),
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    /// The schema could not be brought up to date.
    #[error("PostgreSQL schema migration failed: {0}")]
    Migrate(String),
    /// The store's own runtime could not start.
    #[error("cannot start the PostgreSQL store's runtime: {0}")]
    Runtime(String),
}

/// A client error with the server's own message and SQLSTATE when there is one (the error's
/// `Display` alone says only "db error").
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
