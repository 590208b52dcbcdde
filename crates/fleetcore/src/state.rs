//! Where `fleetcore serve` keeps its state (`[state]` in the config file, `--state-*` flags,
//! `FLEETCORE_STATE_*` variables): the embedded redb file, or PostgreSQL shared by several nodes;
//! and, with PostgreSQL, following the changes the other nodes make.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use fleetcore_archive::{Archive, DELIVERY_STREAMS_TABLE};
use fleetcore_core::store::{Entries, StoreError, WriteOp};
use fleetcore_core::{KvStore, RedbStore, WriteBatch};
use fleetcore_functions::{EVENT_SOURCE_MAPPINGS_TABLE, FUNCTIONS_TABLE, Functions, Mappings};
use fleetcore_identity::IdentityService;
use fleetcore_identity::policy::Policies;
use fleetcore_mqtt::broker::SESSION_TABLES;
use fleetcore_notify::Notify;
use fleetcore_notify::registry::{SUBSCRIPTIONS as SNS_SUBSCRIPTIONS, TOPICS as SNS_TOPICS};
use fleetcore_postgres::{Change, ChangeFeed, PgStore, PgStoreConfig};
use fleetcore_provisioning::Provisioning;
use fleetcore_provisioning::store::{TEMPLATES, VERSIONS as TEMPLATE_VERSIONS};
use fleetcore_rules::destinations::{TABLE as DESTINATIONS_TABLE, TopicRuleDestinations};
use fleetcore_rules::registry::RuleRegistry;
use fleetcore_shadow::store::SHADOWS_TABLE;
use serde::Deserialize;
use tokio::runtime::Handle;

/// Tables whose changes other nodes must hear of (prefixes): identity (registry, certificates,
/// CAs, policies and attachments: checked on live connections), the topic rules (compiled in
/// memory) and their destinations (`rules_topic_rule_destination`, cached), the provisioning
/// templates (parsed and cached), the Lambda functions (cached, with their runners; their
/// packages, `lambda_code`, are read when first used) and event source mappings (each runs a
/// poller on every node), the SNS topics and subscriptions
/// (cached; a subscription gone closes its delivery lane), the Firehose delivery streams (each
/// runs a delivery task on every node). Every other table is read from the store when needed.
const WATCHED: &[&str] = &[
    "iot_",
    RULES_TABLE,
    "provisioning_template",
    FUNCTIONS_TABLE,
    EVENT_SOURCE_MAPPINGS_TABLE,
    SNS_TOPICS,
    SNS_SUBSCRIPTIONS,
    DELIVERY_STREAMS_TABLE,
];
/// Tables a cluster's nodes share beyond identity and rules: the persistent sessions (taken over
/// by compare-and-set of their owner) and the shadows (written by compare-and-set).
const CLUSTER_TABLES: &[&str] = &[
    SESSION_TABLES[0],
    SESSION_TABLES[1],
    SESSION_TABLES[2],
    SHADOWS_TABLE,
];
const RULES_TABLE: &str = "rules_topic_rule";
const POLICY_TABLES: &str = "iot_policy";

/// Options of the state store, layered like the other `serve` options.
#[derive(clap::Args, Deserialize, Debug, Default)]
#[serde(default, deny_unknown_fields)]
pub struct StateArgs {
    /// State backend: `embedded` (<data-dir>/store.redb) or `postgres` (shared by every node,
    /// at --state-url). [default: embedded]
    #[arg(
        id = "state_backend",
        long = "state-backend",
        env = "FLEETCORE_STATE_BACKEND",
        value_name = "BACKEND"
    )]
    pub backend: Option<String>,

    /// PostgreSQL of the `postgres` backend: `postgres://user:password@host:port/database`.
    #[arg(
        id = "state_url",
        long = "state-url",
        env = "FLEETCORE_STATE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub url: Option<String>,
}

/// Which state store to run.
#[derive(Clone, PartialEq, Eq)]
pub enum StateBackend {
    /// `<data dir>/store.redb`.
    Embedded,
    /// PostgreSQL at this URL.
    Postgres { url: String },
}

impl std::fmt::Debug for StateBackend {
    // The URL may hold a password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateBackend::Embedded => f.write_str("Embedded"),
            StateBackend::Postgres { .. } => f.write_str("Postgres"),
        }
    }
}

impl StateArgs {
    /// Fills what these options leave unset from `under` (the config file).
    pub fn layer(&mut self, under: &mut StateArgs) {
        if self.backend.is_none() {
            self.backend = under.backend.take();
        }
        if self.url.is_none() {
            self.url = under.url.take();
        }
    }

    /// The backend these options name; `postgres` without a URL is refused.
    pub fn resolve(self) -> anyhow::Result<StateBackend> {
        match self.backend.as_deref().map(str::trim) {
            None | Some("embedded") => Ok(StateBackend::Embedded),
            Some("postgres") => match self.url.filter(|u| !u.trim().is_empty()) {
                Some(url) => Ok(StateBackend::Postgres { url }),
                None => bail!(
                    "the postgres state backend needs a url ([state] url, --state-url or \
                     FLEETCORE_STATE_URL)"
                ),
            },
            Some(other) => bail!("state backend `{other}` is not `embedded` or `postgres`"),
        }
    }
}

/// The state a node runs on.
pub struct State {
    /// Tables every node shares: identity (registry, certificates, policies), topic rules and
    /// their destinations, provisioning templates, Lambda functions and their packages, event
    /// source mappings, SNS topics and subscriptions, Firehose delivery streams.
    pub shared: Arc<dyn KvStore>,
    /// Every other capability's tables, kept apart per node (the same store as `shared` when
    /// embedded): those services keep caches or run single writers that are not yet safe to
    /// share between nodes (docs/SCALING.md).
    pub node: Arc<dyn KvStore>,
    /// The other nodes' changes to the shared tables (PostgreSQL only).
    pub changes: Option<ChangeFeed>,
    /// With PostgreSQL: the store of the broker and the shadows for a cluster, in which
    /// persistent sessions resume on any node and shadows are one per thing cluster-wide
    /// ([`CLUSTER_TABLES`] shared by the nodes, the other tables this node's own).
    pub clustered: Option<Arc<dyn KvStore>>,
}

/// Opens the state store; with PostgreSQL also the feed of the other nodes' changes.
pub async fn open(backend: &StateBackend, data_dir: &Path, node_id: &str) -> anyhow::Result<State> {
    let (store, changes) = open_backend(backend, data_dir, node_id).await?;
    let node: Arc<dyn KvStore> = match changes {
        Some(_) => Arc::new(NodeScoped::new(Arc::clone(&store), node_id, &[])),
        None => Arc::clone(&store),
    };
    let clustered = changes.as_ref().map(|_| {
        Arc::new(NodeScoped::new(Arc::clone(&store), node_id, CLUSTER_TABLES)) as Arc<dyn KvStore>
    });
    Ok(State {
        shared: store,
        node,
        changes,
        clustered,
    })
}

async fn open_backend(
    backend: &StateBackend,
    data_dir: &Path,
    node_id: &str,
) -> anyhow::Result<(Arc<dyn KvStore>, Option<ChangeFeed>)> {
    match backend {
        StateBackend::Embedded => {
            let path = data_dir.join("store.redb");
            let store = RedbStore::open(&path).with_context(|| {
                format!(
                    "opening the store {} (is another fleetcore running on this data folder?)",
                    path.display()
                )
            })?;
            Ok((Arc::new(store), None))
        }
        StateBackend::Postgres { url } => {
            let mut config = PgStoreConfig::new(url.clone(), node_id);
            config.watched = WATCHED.to_vec();
            let (store, feed) = tokio::task::spawn_blocking(move || PgStore::connect(config))
                .await
                .context("connecting to PostgreSQL")?
                .context("opening the PostgreSQL state store")?;
            Ok((Arc::new(store), Some(feed)))
        }
    }
}

/// A node's own part of a shared store: every key is stored behind `<node id>\0`, so nodes
/// sharing one database never see or overwrite each other's keys in these tables; the
/// `shared` tables excepted (their keys are the nodes' common ones).
struct NodeScoped {
    inner: Arc<dyn KvStore>,
    prefix: Vec<u8>,
    shared: &'static [&'static str],
}

impl NodeScoped {
    fn new(inner: Arc<dyn KvStore>, node_id: &str, shared: &'static [&'static str]) -> NodeScoped {
        let mut prefix = node_id.as_bytes().to_vec();
        prefix.push(0);
        NodeScoped {
            inner,
            prefix,
            shared,
        }
    }

    /// The prefix of `table`'s keys: this node's, or none for a shared table.
    fn prefix_of(&self, table: &str) -> &[u8] {
        if self.shared.contains(&table) {
            &[]
        } else {
            &self.prefix
        }
    }

    fn scoped(&self, table: &str, key: &[u8]) -> Vec<u8> {
        let prefix = self.prefix_of(table);
        let mut out = Vec::with_capacity(prefix.len() + key.len());
        out.extend_from_slice(prefix);
        out.extend_from_slice(key);
        out
    }
}

impl KvStore for NodeScoped {
    fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(table, &self.scoped(table, key))
    }

    fn compare_and_set(
        &self,
        table: &'static str,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        self.inner
            .compare_and_set(table, &self.scoped(table, key), expected, new)
    }

    fn scan_prefix(&self, table: &'static str, prefix: &[u8]) -> Result<Entries, StoreError> {
        let skip = self.prefix_of(table).len();
        Ok(self
            .inner
            .scan_prefix(table, &self.scoped(table, prefix))?
            .into_iter()
            .map(|(mut k, v)| {
                k.drain(..skip);
                (k, v)
            })
            .collect())
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut scoped = WriteBatch::new();
        for op in batch.into_ops() {
            match op {
                WriteOp::Put { table, key, value } => {
                    scoped.put(table, self.scoped(table, &key), value)
                }
                WriteOp::Delete { table, key } => scoped.delete(table, self.scoped(table, &key)),
                WriteOp::DeletePrefix { table, prefix } => {
                    scoped.delete_prefix(table, self.scoped(table, &prefix))
                }
            }
        }
        self.inner.apply(scoped)
    }
}

/// What a node refreshes when another node changes the shared state.
#[derive(Clone)]
pub struct Followers {
    pub identity: Arc<IdentityService>,
    pub policies: Arc<Policies>,
    pub rules: Arc<RuleRegistry>,
    pub destinations: Arc<TopicRuleDestinations>,
    pub provisioning: Arc<Provisioning>,
    pub functions: Arc<Functions>,
    pub mappings: Arc<Mappings>,
    pub notify: Arc<Notify>,
    pub archive: Arc<Archive>,
}

/// Applies the other nodes' changes as they come: identity changes re-check live connections
/// (a revoked certificate is cut off here as on the node that revoked it), policy changes drop
/// the compiled policies, rule changes recompile the rule.
pub fn follow(mut feed: ChangeFeed, followers: Followers) {
    tokio::spawn(async move {
        while let Some(change) = feed.recv().await {
            let followers = followers.clone();
            // The handlers read the store and take locks: off the async workers.
            let applied = tokio::task::spawn_blocking(move || apply(&change, &followers)).await;
            if let Err(e) = applied {
                tracing::error!(error = %e, "applying another node's change panicked");
            }
        }
    });
}

fn apply(change: &Change, f: &Followers) {
    let (table, key) = match change {
        Change::Everything => {
            f.policies.changed_elsewhere();
            f.identity.notify_change();
            report("the topic rules", f.rules.reload_all());
            report("the topic rule destinations", f.destinations.reload_all());
            f.provisioning.templates().forget_all();
            report("the functions", f.functions.reload_all());
            report(
                "the event source mappings",
                Handle::current().block_on(f.mappings.reload_all()),
            );
            report("the SNS topics", f.notify.reload_all());
            report(
                "the delivery streams",
                Handle::current().block_on(f.archive.reload_all()),
            );
            return;
        }
        Change::Key { table, key } => (table.as_str(), Some(String::from_utf8_lossy(key))),
        // A prefix deleted: the whole table is read again.
        Change::Prefix { table, .. } => (table.as_str(), None),
    };
    let key = key.as_deref();
    match table {
        RULES_TABLE => report(
            "a topic rule",
            key.map_or_else(|| f.rules.reload_all(), |k| f.rules.reload(k)),
        ),
        DESTINATIONS_TABLE => report(
            "a topic rule destination",
            key.map_or_else(|| f.destinations.reload_all(), |k| f.destinations.reload(k)),
        ),
        // A version's key is `<template>/<version>`.
        TEMPLATES | TEMPLATE_VERSIONS => match key.and_then(|k| k.split('/').next()) {
            Some(name) => f.provisioning.templates().forget(name),
            None => f.provisioning.templates().forget_all(),
        },
        FUNCTIONS_TABLE => report(
            "a function",
            key.map_or_else(|| f.functions.reload_all(), |k| f.functions.reload(k)),
        ),
        EVENT_SOURCE_MAPPINGS_TABLE => report(
            "an event source mapping",
            reload_blocking(key, |k| f.mappings.reload(k), || f.mappings.reload_all()),
        ),
        SNS_TOPICS => report(
            "an SNS topic",
            key.map_or_else(|| f.notify.reload_all(), |k| f.notify.reload_topic(k)),
        ),
        SNS_SUBSCRIPTIONS => report(
            "an SNS subscription",
            key.map_or_else(
                || f.notify.reload_all(),
                |k| f.notify.reload_subscription(k),
            ),
        ),
        DELIVERY_STREAMS_TABLE => report(
            "a delivery stream",
            reload_blocking(key, |k| f.archive.reload(k), || f.archive.reload_all()),
        ),
        t if t.starts_with(POLICY_TABLES) => f.policies.changed_elsewhere(),
        _ => f.identity.notify_change(),
    }
}

/// Runs an asynchronous reload of the changed `key` (`one`), or of the whole table when the key
/// is not known (`all`), on this blocking thread.
fn reload_blocking<'a, E, One, All>(
    key: Option<&'a str>,
    one: impl FnOnce(&'a str) -> One,
    all: impl FnOnce() -> All,
) -> Result<(), E>
where
    One: Future<Output = Result<(), E>>,
    All: Future<Output = Result<(), E>>,
{
    match key {
        Some(k) => Handle::current().block_on(one(k)),
        None => Handle::current().block_on(all()),
    }
}

/// Logs a failure to follow another node's change of `what`.
fn report<E: std::fmt::Display>(what: &str, result: Result<(), E>) {
    if let Err(e) = result {
        tracing::error!(error = %e, "could not follow {what} changed by another node");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_scoped_views_of_one_store_do_not_see_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn KvStore> =
            Arc::new(RedbStore::open(&dir.path().join("s.redb")).expect("store"));
        let (a, b) = (
            NodeScoped::new(Arc::clone(&store), "a", &[]),
            NodeScoped::new(Arc::clone(&store), "b", &[]),
        );
        let mut batch = WriteBatch::new();
        batch.put("mqtt_sessions", b"c1".to_vec(), b"on a".to_vec());
        batch.put("mqtt_sessions", b"c2".to_vec(), b"on a too".to_vec());
        a.apply(batch).expect("apply");
        let mut batch = WriteBatch::new();
        batch.put("mqtt_sessions", b"c1".to_vec(), b"on b".to_vec());
        b.apply(batch).expect("apply");
        assert_eq!(
            a.get("mqtt_sessions", b"c1").expect("get"),
            Some(b"on a".to_vec())
        );
        assert_eq!(
            b.get("mqtt_sessions", b"c1").expect("get"),
            Some(b"on b".to_vec())
        );
        assert_eq!(
            b.scan_prefix("mqtt_sessions", b"").expect("scan"),
            vec![(b"c1".to_vec(), b"on b".to_vec())]
        );
        let mut batch = WriteBatch::new();
        batch.delete_prefix("mqtt_sessions", b"c".to_vec());
        a.apply(batch).expect("apply");
        assert!(
            a.scan_prefix("mqtt_sessions", b"")
                .expect("scan")
                .is_empty()
        );
        assert_eq!(
            b.get("mqtt_sessions", b"c1").expect("get"),
            Some(b"on b".to_vec())
        );
    }

    #[test]
    fn embedded_is_the_default_and_postgres_needs_a_url() {
        assert_eq!(
            StateArgs::default().resolve().expect("default"),
            StateBackend::Embedded
        );
        let pg = StateArgs {
            backend: Some("postgres".into()),
            url: Some("postgres://u:secret@db/fleet".into()),
        };
        let resolved = pg.resolve().expect("postgres");
        assert_eq!(
            resolved,
            StateBackend::Postgres {
                url: "postgres://u:secret@db/fleet".into()
            }
        );
        assert!(!format!("{resolved:?}").contains("secret"));
        let err = StateArgs {
            backend: Some("postgres".into()),
            url: None,
        }
        .resolve()
        .expect_err("no url");
        assert!(err.to_string().contains("needs a url"), "{err}");
        let err = StateArgs {
            backend: Some("mysql".into()),
            url: None,
        }
        .resolve()
        .expect_err("unknown");
        assert!(err.to_string().contains("mysql"), "{err}");
    }
}
