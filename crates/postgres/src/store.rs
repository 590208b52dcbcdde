//! [`PgStore`]: the [`KvStore`] seam over one PostgreSQL table, `fleetcore_kv (tbl, key, value)`.
//! Every `apply` is one transaction; writes to watched tables add a NOTIFY to it, so other nodes
//! hear of a change exactly when it commits.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use fleetcore_core::store::{Entries, KvStore, StoreError, WriteBatch, WriteOp, prefix_end};
use tokio::runtime::{Handle, Runtime};
use tokio_postgres::Config;

use crate::changes::{self, ChangeFeed, ChangeKind, encode_notifications};
use crate::pool::{self, Lease, Pool};
use crate::{PgError, schema};

/// How a node reaches PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStoreConfig {
    /// `postgres://user:password@host:port/database` (or key=value form).
    pub url: String,
    /// This node's id: its own notifications are not fed back to it.
    pub node_id: String,
    /// Table-name prefixes whose changes are announced to the other nodes (tables held in
    /// caches or checked on live connections); writes to other tables notify no one.
    pub watched: Vec<&'static str>,
    /// Connections kept open for requests.
    pub pool_size: usize,
    /// Longest a request may take (connecting included) before it fails.
    pub request_timeout: Duration,
}

impl PgStoreConfig {
    /// Defaults for `url` and `node_id`: 8 connections, 10 s per request, nothing watched.
    pub fn new(url: impl Into<String>, node_id: impl Into<String>) -> PgStoreConfig {
        PgStoreConfig {
            url: url.into(),
            node_id: node_id.into(),
            watched: Vec::new(),
            pool_size: 8,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// fleetcore's state in PostgreSQL (see the crate docs).
pub struct PgStore {
    runtime: Option<Runtime>,
    handle: Handle,
    pool: Arc<Pool>,
    node_id: Arc<str>,
    watched: Arc<[&'static str]>,
    timeout: Duration,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects, migrates the schema and starts listening for other nodes' changes. Blocks;
    /// call it outside async code or in `spawn_blocking`.
    pub fn connect(config: PgStoreConfig) -> Result<(PgStore, ChangeFeed), PgError> {
        let pg = Config::from_str(&config.url).map_err(|e| PgError::InvalidUrl(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pgstore")
            .enable_all()
            .build()
            .map_err(|e| PgError::Runtime(e.to_string()))?;
        let handle = runtime.handle().clone();
        let timeout = config.request_timeout;
        let first = pg.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        handle.spawn(async move {
            let result = async {
                let mut client = tokio::time::timeout(timeout, pool::open(&first))
                    .await
                    .map_err(|_| PgError::Connect(format!("no answer within {timeout:?}")))?
                    .map_err(|e| PgError::Connect(crate::describe(&e)))?;
                schema::migrate(&mut client).await?;
                pool::prepare(client)
                    .await
                    .map_err(|e| PgError::Connect(crate::describe(&e)))
            }
            .await;
            let _ = tx.send(result);
        });
        let conn = rx
            .recv()
            .map_err(|_| PgError::Runtime("the runtime stopped".into()))??;
        let pool = Pool::new(pg.clone(), config.pool_size);
        // The migrating connection becomes the pool's first.
        pool.adopt(conn);
        let node_id: Arc<str> = config.node_id.into();
        let feed = changes::listen(&handle, pg, Arc::clone(&node_id));
        Ok((
            PgStore {
                runtime: Some(runtime),
                handle,
                pool,
                node_id,
                watched: config.watched.into(),
                timeout,
            },
            feed,
        ))
    }

    /// This node's id, as stamped on its notifications.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Runs `work` with a pooled connection on the store's runtime and waits for it, with the
    /// request timeout; a failed request discards its connection.
    fn run<T, F, Fut>(&self, operation: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Lease>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        let pool = Arc::clone(&self.pool);
        let timeout = self.timeout;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let result = tokio::time::timeout(timeout, async {
                let lease = Arc::new(pool.acquire().await.map_err(|e| failed(operation, e))?);
                let out = work(Arc::clone(&lease)).await;
                if out.is_err()
                    && let Ok(lease) = Arc::try_unwrap(lease)
                {
                    lease.discard();
                }
                out.map_err(|e| failed(operation, e))
            })
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Backend {
                    operation,
                    message: format!("PostgreSQL did not answer within {timeout:?}"),
                })
            });
            let _ = tx.send(result);
        });
        rx.recv().map_err(|_| StoreError::Backend {
            operation,
            message: "the PostgreSQL store is shut down".into(),
        })?
    }

    fn watches(&self, table: &str) -> bool {
        self.watched.iter().any(|p| table.starts_with(p))
    }
}

fn failed(operation: &'static str, e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend {
        operation,
        message: crate::describe(&e),
    }
}

impl KvStore for PgStore {
    fn compare_and_set(
        &self,
        table: &'static str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let key = key.to_vec();
        let expected = expected.map(<[u8]>::to_vec);
        // A write to a watched table is announced in the same transaction, as `apply` does.
        let notifications = if self.watches(table) {
            encode_notifications(&self.node_id, &[(table, ChangeKind::Key, key.clone())])
        } else {
            Vec::new()
        };
        self.run("compare and set", move |lease| async move {
            let c = lease.conn();
            if !notifications.is_empty() {
                c.client.batch_execute("BEGIN").await?;
            }
            // One statement each way: PostgreSQL checks and writes the row atomically.
            let written = match &expected {
                None => {
                    c.client
                        .execute(
                            "INSERT INTO fleetcore_kv (tbl, key, value) VALUES ($1, $2, $3) \
                             ON CONFLICT (tbl, key) DO NOTHING",
                            &[&table, &key, &new],
                        )
                        .await?
                }
                Some(old) => {
                    c.client
                        .execute(
                            "UPDATE fleetcore_kv SET value = $3 \
                             WHERE tbl = $1 AND key = $2 AND value = $4",
                            &[&table, &key, &new, old],
                        )
                        .await?
                }
            };
            if !notifications.is_empty() {
                if written == 1 {
                    for payload in &notifications {
                        c.client
                            .execute(&c.notify, &[&changes::CHANNEL, payload])
                            .await?;
                    }
                }
                c.client.batch_execute("COMMIT").await?;
            }
            Ok(written == 1)
        })
    }

    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_vec();
        self.run("get", move |lease| async move {
            let c = lease.conn();
            let row = c.client.query_opt(&c.get, &[&table, &key]).await?;
            row.map(|r| r.try_get::<_, Vec<u8>>(0)).transpose()
        })
    }

    fn scan_prefix(&self, table: &'static str, prefix: &[u8]) -> Result<Entries, StoreError> {
        let prefix = prefix.to_vec();
        self.run("scan", move |lease| async move {
            let c = lease.conn();
            let rows = match prefix_end(&prefix) {
                Some(end) => c.client.query(&c.scan, &[&table, &prefix, &end]).await?,
                None => c.client.query(&c.scan_open, &[&table, &prefix]).await?,
            };
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let announced: Vec<(&'static str, ChangeKind, Vec<u8>)> = batch
            .ops()
            .iter()
            .filter_map(|op| match op {
                WriteOp::Put { table, key, .. } | WriteOp::Delete { table, key }
                    if self.watches(table) =>
                {
                    Some((*table, ChangeKind::Key, key.clone()))
                }
                WriteOp::DeletePrefix { table, prefix } if self.watches(table) => {
                    Some((*table, ChangeKind::Prefix, prefix.clone()))
                }
                _ => None,
            })
            .collect();
        let notifications = encode_notifications(&self.node_id, &announced);
        let runs = Run::group(batch);
        self.run("commit", move |lease| async move {
            let c = lease.conn();
            c.client.batch_execute("BEGIN").await?;
            for run in &runs {
                match run {
                    Run::Puts {
                        table,
                        keys,
                        values,
                    } => {
                        c.client
                            .execute(&c.put_many, &[table, keys, values])
                            .await?;
                    }
                    Run::Delete { table, key } => {
                        c.client.execute(&c.delete, &[table, key]).await?;
                    }
                    Run::DeletePrefix { table, prefix } => match prefix_end(prefix) {
                        Some(end) => {
                            c.client
                                .execute(&c.delete_range, &[table, prefix, &end])
                                .await?;
                        }
                        None => {
                            c.client.execute(&c.delete_open, &[table, prefix]).await?;
                        }
                    },
                }
            }
            for payload in &notifications {
                c.client
                    .execute(&c.notify, &[&changes::CHANNEL, payload])
                    .await?;
            }
            c.client.batch_execute("COMMIT").await
        })
    }
}

/// A batch as statements: consecutive puts into one table become one multi-row upsert (the last
/// write of a key wins, as applying them in order would give).
enum Run {
    Puts {
        table: &'static str,
        keys: Vec<Vec<u8>>,
        values: Vec<Vec<u8>>,
    },
    Delete {
        table: &'static str,
        key: Vec<u8>,
    },
    DeletePrefix {
        table: &'static str,
        prefix: Vec<u8>,
    },
}

impl Run {
    fn group(batch: WriteBatch) -> Vec<Run> {
        let mut runs: Vec<Run> = Vec::new();
        // The run being built: its table and key -> index of the key in the run, for dedup.
        let mut index: std::collections::HashMap<Vec<u8>, usize> = Default::default();
        for op in batch.ops().iter().cloned() {
            match op {
                WriteOp::Put { table, key, value } => {
                    if let Some(Run::Puts {
                        table: t,
                        keys,
                        values,
                    }) = runs.last_mut()
                        && *t == table
                    {
                        match index.get(&key) {
                            Some(&i) => values[i] = value,
                            None => {
                                index.insert(key.clone(), keys.len());
                                keys.push(key);
                                values.push(value);
                            }
                        }
                        continue;
                    }
                    index.clear();
                    index.insert(key.clone(), 0);
                    runs.push(Run::Puts {
                        table,
                        keys: vec![key],
                        values: vec![value],
                    });
                }
                WriteOp::Delete { table, key } => runs.push(Run::Delete { table, key }),
                WriteOp::DeletePrefix { table, prefix } => {
                    runs.push(Run::DeletePrefix { table, prefix })
                }
            }
        }
        runs
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // The store may be dropped inside async code, where a runtime may not block.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_puts_into_one_table_merge_and_the_last_write_wins() {
        let mut b = WriteBatch::new();
        b.put("a", b"1".to_vec(), b"x".to_vec());
        b.put("a", b"2".to_vec(), b"y".to_vec());
        b.put("a", b"1".to_vec(), b"z".to_vec());
        b.delete("a", b"2".to_vec());
        b.put("a", b"2".to_vec(), b"w".to_vec());
        b.put("b", b"1".to_vec(), b"v".to_vec());
        let runs = Run::group(b);
        assert_eq!(runs.len(), 4);
        match &runs[0] {
            Run::Puts {
                table,
                keys,
                values,
            } => {
                assert_eq!(*table, "a");
                assert_eq!(keys, &vec![b"1".to_vec(), b"2".to_vec()]);
                assert_eq!(values, &vec![b"z".to_vec(), b"y".to_vec()]);
            }
            _ => panic!("expected puts"),
        }
        assert!(matches!(&runs[1], Run::Delete { table: "a", .. }));
        assert!(matches!(&runs[2], Run::Puts { table: "a", keys, .. } if keys.len() == 1));
        assert!(matches!(&runs[3], Run::Puts { table: "b", .. }));
    }
}
