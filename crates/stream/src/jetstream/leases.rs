//! Consumer-group leases and checkpoints of the JetStream backend: one KV entry per
//! (stream incarnation, group, shard) holding the owner, the lease's expiry and the
//! checkpoint, changed only by compare-and-set on the entry's revision, so two consumers can
//! never both think they hold a shard, and a checkpoint is written only by the holder.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::meta::{StreamMeta, hex, now_ms};
use super::storage;
use crate::{Lease, Position, ShardId, StreamError};

/// KV bucket of leases and checkpoints.
pub(super) const LEASE_BUCKET: &str = "fleetcore_stream_leases";

/// Compare-and-set attempts before giving up on a contended lease.
const ATTEMPTS: usize = 8;

/// How long a steal keeps retrying compare-and-set races against the holder's checkpoints.
const STEAL_BUDGET: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseEntry {
    owner: String,
    expires_ms: u64,
    /// The checkpoint position, as a decimal string.
    checkpoint: Option<String>,
}

fn key(meta: &StreamMeta, group: &str, shard: ShardId) -> Result<String, StreamError> {
    if group.is_empty() {
        return Err(StreamError::InvalidArgument(
            "consumer group name must not be empty".into(),
        ));
    }
    Ok(format!(
        "{}.{}.{}.{}",
        StreamMeta::key(&meta.name),
        meta.epoch,
        hex(group),
        shard.0
    ))
}

async fn read(store: &kv::Store, key: &str) -> Result<Option<(LeaseEntry, u64)>, StreamError> {
    match store.entry(key).await.map_err(storage)? {
        Some(entry) if entry.operation == kv::Operation::Put => {
            let lease = serde_json::from_slice(&entry.value)
                .map_err(|e| StreamError::Storage(format!("corrupt lease {key}: {e}")))?;
            Ok(Some((lease, entry.revision)))
        }
        // Absent, or deleted (a create overwrites a deletion marker).
        _ => Ok(None),
    }
}

fn json(lease: &LeaseEntry) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(lease).unwrap_or_default())
}

/// Outcome of one compare-and-set.
enum Cas {
    Done,
    Raced,
}

async fn write(
    store: &kv::Store,
    key: &str,
    lease: &LeaseEntry,
    revision: Option<u64>,
) -> Result<Cas, StreamError> {
    match revision {
        Some(revision) => match store.update(key, json(lease), revision).await {
            Ok(_) => Ok(Cas::Done),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(Cas::Raced),
            Err(e) => Err(storage(e)),
        },
        None => match store.create(key, json(lease)).await {
            Ok(_) => Ok(Cas::Done),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(Cas::Raced),
            Err(e) => Err(storage(e)),
        },
    }
}

pub(super) async fn acquire(
    store: &kv::Store,
    meta: &StreamMeta,
    group: &str,
    shard: ShardId,
    owner: &str,
    ttl: Duration,
) -> Result<bool, StreamError> {
    let key = key(meta, group, shard)?;
    for _ in 0..ATTEMPTS {
        let now = now_ms();
        let current = read(store, &key).await?;
        let (checkpoint, revision) = match &current {
            Some((lease, _)) if lease.owner != owner && lease.expires_ms > now => {
                return Ok(false);
            }
            Some((lease, revision)) => (lease.checkpoint.clone(), Some(*revision)),
            None => (None, None),
        };
        let lease = LeaseEntry {
            owner: owner.to_string(),
            expires_ms: now + ttl.as_millis() as u64,
            checkpoint,
        };
        if let Cas::Done = write(store, &key, &lease, revision).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

pub(super) async fn steal(
    store: &kv::Store,
    meta: &StreamMeta,
    group: &str,
    shard: ShardId,
    current: &str,
    owner: &str,
    ttl: Duration,
) -> Result<bool, StreamError> {
    let key = key(meta, group, shard)?;
    // The holder rewrites the entry at every checkpoint, so a busy holder can win a fixed
    // number of compare-and-set races in a row; keep trying while it still holds the lease,
    // for a bounded time instead.
    let give_up = Instant::now() + STEAL_BUDGET;
    while Instant::now() < give_up {
        let Some((mut lease, revision)) = read(store, &key).await? else {
            return Ok(false);
        };
        if lease.owner != current {
            return Ok(false);
        }
        lease.owner = owner.to_string();
        lease.expires_ms = now_ms() + ttl.as_millis() as u64;
        if let Cas::Done = write(store, &key, &lease, Some(revision)).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Every lease of `group` on the stream, live or expired.
pub(super) async fn list(
    store: &kv::Store,
    meta: &StreamMeta,
    group: &str,
) -> Result<Vec<Lease>, StreamError> {
    let prefix = key(meta, group, ShardId(0))?;
    let prefix = &prefix[..prefix.len() - 1];
    let mut keys = store.keys().await.map_err(storage)?;
    let mut found = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(storage)?;
        if let Some(shard) = key.strip_prefix(prefix).and_then(|s| s.parse::<u32>().ok()) {
            found.push((ShardId(shard), key));
        }
    }
    let mut leases = Vec::with_capacity(found.len());
    for (shard, key) in found {
        if let Some((entry, _)) = read(store, &key).await? {
            leases.push(Lease {
                shard,
                owner: entry.owner,
                expires: std::time::UNIX_EPOCH + Duration::from_millis(entry.expires_ms),
            });
        }
    }
    leases.sort_by_key(|l| l.shard);
    Ok(leases)
}

pub(super) async fn checkpoint(
    store: &kv::Store,
    meta: &StreamMeta,
    group: &str,
    shard: ShardId,
    owner: &str,
    position: Position,
) -> Result<(), StreamError> {
    let key = key(meta, group, shard)?;
    let lost = || StreamError::LeaseLost {
        group: group.to_string(),
        shard,
    };
    for _ in 0..ATTEMPTS {
        let Some((mut lease, revision)) = read(store, &key).await? else {
            return Err(lost());
        };
        if lease.owner != owner {
            return Err(lost());
        }
        lease.checkpoint = Some(position.0.to_string());
        if let Cas::Done = write(store, &key, &lease, Some(revision)).await? {
            return Ok(());
        }
    }
    Err(lost())
}

pub(super) async fn checkpoint_of(
    store: &kv::Store,
    meta: &StreamMeta,
    group: &str,
    shard: ShardId,
) -> Result<Option<Position>, StreamError> {
    let key = key(meta, group, shard)?;
    let Some((lease, _)) = read(store, &key).await? else {
        return Ok(None);
    };
    lease
        .checkpoint
        .map(|text| {
            text.parse::<u128>()
                .map(Position)
                .map_err(|_| StreamError::Storage(format!("corrupt checkpoint in {key}")))
        })
        .transpose()
}

/// Removes the leases and checkpoints of dropped shards (best effort).
pub(super) async fn delete_shards(store: &kv::Store, meta: &StreamMeta, shards: &[u32]) {
    if shards.is_empty() {
        return;
    }
    let prefix = format!("{}.{}.", StreamMeta::key(&meta.name), meta.epoch);
    let Ok(mut keys) = store.keys().await else {
        return;
    };
    let mut doomed = Vec::new();
    while let Some(Ok(key)) = keys.next().await {
        let shard = key.rsplit('.').next().and_then(|s| s.parse::<u32>().ok());
        if key.starts_with(&prefix) && shard.is_some_and(|s| shards.contains(&s)) {
            doomed.push(key);
        }
    }
    for key in doomed {
        let _ = store.purge(&key).await;
    }
}

/// Removes every lease and checkpoint of a deleted stream (best effort: they are keyed by the
/// stream's epoch, so leftovers are never read by a re-created stream).
pub(super) async fn delete_all(store: &kv::Store, meta: &StreamMeta) {
    let prefix = format!("{}.{}.", StreamMeta::key(&meta.name), meta.epoch);
    let Ok(mut keys) = store.keys().await else {
        return;
    };
    let mut doomed = Vec::new();
    while let Some(Ok(key)) = keys.next().await {
        if key.starts_with(&prefix) {
            doomed.push(key);
        }
    }
    for key in doomed {
        let _ = store.purge(&key).await;
    }
}
