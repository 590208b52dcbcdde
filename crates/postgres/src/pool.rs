//! A small pool of connections, each with the store's statements prepared once. A connection
//! that failed a request is dropped rather than returned (its state is unknown); the next request
//! connects anew, so a restarted server is picked up without a restart of the node.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, Config, NoTls, Statement};

/// One connection and its prepared statements.
pub(crate) struct Conn {
    pub client: Client,
    pub get: Statement,
    pub scan: Statement,
    pub scan_open: Statement,
    pub put_many: Statement,
    pub delete: Statement,
    pub delete_range: Statement,
    pub delete_open: Statement,
    pub notify: Statement,
}

/// At most `size` connections, reused.
pub(crate) struct Pool {
    config: Config,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
}

/// A connection lent by the pool; returned on drop unless [`Lease::discard`]ed.
pub(crate) struct Lease {
    conn: Option<Conn>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    pub fn new(config: Config, size: usize) -> Arc<Pool> {
        Arc::new(Pool {
            config,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1))),
        })
    }

    /// Keeps `conn` (opened elsewhere on the store's runtime) as an idle connection.
    pub fn adopt(&self, conn: Conn) {
        self.idle.lock().push(conn);
    }

    /// A connection: an idle one, or a new one. Must run on the store's runtime.
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease, tokio_postgres::Error> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the pool's semaphore is never closed"));
        let reused = loop {
            let Some(conn) = self.idle.lock().pop() else {
                break None;
            };
            if !conn.client.is_closed() {
                break Some(conn);
            }
        };
        let conn = match reused {
            Some(conn) => conn,
            None => connect(&self.config).await?,
        };
        Ok(Lease {
            conn: Some(conn),
            pool: Arc::clone(self),
            _permit: permit,
        })
    }
}

impl Lease {
    /// The connection.
    pub fn conn(&self) -> &Conn {
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("a lease holds its connection until dropped"))
    }

    /// Drops the connection instead of returning it (after a failed request).
    pub fn discard(mut self) {
        self.conn = None;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !conn.client.is_closed()
        {
            self.pool.idle.lock().push(conn);
        }
    }
}

/// Opens a connection on the current runtime and prepares the statements.
pub(crate) async fn connect(config: &Config) -> Result<Conn, tokio_postgres::Error> {
    prepare(open(config).await?).await
}

/// Opens a connection on the current runtime, without preparing anything (for migrations).
pub(crate) async fn open(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %crate::describe(&e), "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Prepares the store's statements on `client` (the schema must exist).
pub(crate) async fn prepare(client: Client) -> Result<Conn, tokio_postgres::Error> {
    let prepare = |sql: &'static str| client.prepare(sql);
    Ok(Conn {
        get: prepare("SELECT value FROM fleetcore_kv WHERE tbl = $1 AND key = $2").await?,
        scan: prepare(
            "SELECT key, value FROM fleetcore_kv WHERE tbl = $1 AND key >= $2 AND key < $3 \
             ORDER BY key",
        )
        .await?,
        scan_open: prepare(
            "SELECT key, value FROM fleetcore_kv WHERE tbl = $1 AND key >= $2 ORDER BY key",
        )
        .await?,
        // One statement per run of puts into one table (keys unique within the run).
        put_many: prepare(
            "INSERT INTO fleetcore_kv (tbl, key, value) \
             SELECT $1, k, v FROM unnest($2::bytea[], $3::bytea[]) AS t(k, v) \
             ON CONFLICT (tbl, key) DO UPDATE SET value = EXCLUDED.value",
        )
        .await?,
        delete: prepare("DELETE FROM fleetcore_kv WHERE tbl = $1 AND key = $2").await?,
        delete_range: prepare("DELETE FROM fleetcore_kv WHERE tbl = $1 AND key >= $2 AND key < $3")
            .await?,
        delete_open: prepare("DELETE FROM fleetcore_kv WHERE tbl = $1 AND key >= $2").await?,
        notify: prepare("SELECT pg_notify($1, $2)").await?,
        client,
    })
}
