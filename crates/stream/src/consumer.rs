//! Consumer groups over any [`Stream`], in the manner of the Kinesis Client Library.
//!
//! Each member holds leases on some shards, renews them every third of the lease TTL, and takes
//! over shards whose lease lapsed. Members even out the work: one that holds fewer than its fair
//! share (shards / members) takes free shards, then steals from a member holding more. Reading
//! resumes at the group's checkpoint; a closed shard must be processed to its end (checkpoint
//! [`Position::SHARD_END`]) before the shards that took over its hash keys are read, so records of
//! one partition key keep their order across a reshard. Delivery is at least once: a batch that
//! was not committed before a lease moved is read again by the new holder.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::{FutureExt, select_all};
use tokio::time::Instant;

use crate::{Position, Record, ShardId, ShardInfo, StartingPosition, Stream, StreamError};

/// How a consumer group member behaves.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// How long a lease lasts without renewal (renewed every third of it).
    pub lease_ttl: Duration,
    /// Most records in one batch.
    pub batch_limit: usize,
    /// Where a shard without a checkpoint is first read. `Latest` means "what arrives after this
    /// member started" on every shard, children of a later reshard included; a sequence number
    /// applies to the shard it belongs to, other shards are read from their start.
    pub start: StartingPosition,
}

impl Default for ConsumerConfig {
    fn default() -> ConsumerConfig {
        ConsumerConfig {
            lease_ttl: Duration::from_secs(10),
            batch_limit: 1000,
            start: StartingPosition::TrimHorizon,
        }
    }
}

/// Records of one shard handed to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerBatch {
    /// The shard they come from.
    pub shard: ShardId,
    /// The records, in sequence order (never empty).
    pub records: Vec<Record>,
    /// Where reading continues after them; committing the batch checkpoints this.
    pub next: Position,
}

/// A shard this member holds the lease of.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// Where the next read starts.
    cursor: Position,
    /// The checkpoint written last (or found at acquisition).
    committed: Position,
    /// The shard is closed and every record of it has been handed out.
    drained: bool,
}

/// One member of a consumer group.
pub struct ConsumerGroup {
    stream: Arc<dyn Stream>,
    stream_name: String,
    group: String,
    owner: String,
    config: ConsumerConfig,
    held: BTreeMap<ShardId, Held>,
    next_refresh: Instant,
    turn: usize,
    /// When this member was created (what `StartingPosition::Latest` means).
    started: SystemTime,
}

impl ConsumerGroup {
    /// A member `owner` of consumer group `group` on stream `stream_name`.
    pub fn new(
        stream: Arc<dyn Stream>,
        stream_name: impl Into<String>,
        group: impl Into<String>,
        owner: impl Into<String>,
        config: ConsumerConfig,
    ) -> ConsumerGroup {
        ConsumerGroup {
            stream,
            stream_name: stream_name.into(),
            group: group.into(),
            owner: owner.into(),
            config,
            held: BTreeMap::new(),
            next_refresh: Instant::now(),
            turn: 0,
            started: SystemTime::now(),
        }
    }

    /// The shards this member holds the lease of right now.
    pub fn held_shards(&self) -> Vec<ShardId> {
        self.held.keys().copied().collect()
    }

    /// Waits for the next non-empty batch from a shard this consumer holds the lease of.
    pub async fn next(&mut self) -> Result<ConsumerBatch, StreamError> {
        loop {
            if Instant::now() >= self.next_refresh {
                self.refresh().await?;
                self.next_refresh = Instant::now() + self.config.lease_ttl / 3;
            }
            if let Some(batch) = self.read_some().await? {
                return Ok(batch);
            }
            self.wait().await;
        }
    }

    /// Checkpoints the batch (durable): after a restart the group resumes after it.
    pub async fn commit(&mut self, batch: &ConsumerBatch) -> Result<(), StreamError> {
        let Some(held) = self.held.get(&batch.shard).copied() else {
            return Err(StreamError::LeaseLost {
                group: self.group.clone(),
                shard: batch.shard,
            });
        };
        if batch.next <= held.committed {
            return Ok(());
        }
        let finishing = held.drained && batch.next >= held.cursor;
        let position = if finishing {
            Position::SHARD_END
        } else {
            batch.next
        };
        self.checkpoint(batch.shard, position).await?;
        if let Some(held) = self.held.get_mut(&batch.shard) {
            held.committed = batch.next;
        }
        if finishing {
            self.finish(batch.shard);
        }
        Ok(())
    }

    /// Writes a checkpoint; forgets the shard if its lease is gone.
    async fn checkpoint(&mut self, shard: ShardId, position: Position) -> Result<(), StreamError> {
        let result = self
            .stream
            .checkpoint(&self.stream_name, &self.group, shard, &self.owner, position)
            .await;
        if matches!(result, Err(StreamError::LeaseLost { .. })) {
            self.held.remove(&shard);
        }
        result
    }

    /// The shard is processed to its end: let go of it and look for its children now.
    fn finish(&mut self, shard: ShardId) {
        self.held.remove(&shard);
        self.next_refresh = Instant::now();
    }

    /// Reads each held shard once, round robin, until one has records.
    async fn read_some(&mut self) -> Result<Option<ConsumerBatch>, StreamError> {
        let shards: Vec<ShardId> = self.held.keys().copied().collect();
        for i in 0..shards.len() {
            let shard = shards[(self.turn + i) % shards.len()];
            let Some(held) = self.held.get(&shard).copied() else {
                continue;
            };
            if held.drained {
                continue;
            }
            let batch = match self
                .stream
                .read(
                    &self.stream_name,
                    shard,
                    held.cursor,
                    self.config.batch_limit,
                )
                .await
            {
                Ok(batch) => batch,
                Err(StreamError::NotFound(_)) => {
                    self.finish(shard);
                    continue;
                }
                Err(error) => return Err(error),
            };
            let held = self.held.entry(shard).or_insert(held);
            held.cursor = batch.next;
            held.drained = batch.end_of_shard;
            if !batch.records.is_empty() {
                self.turn = (self.turn + i + 1) % shards.len();
                return Ok(Some(ConsumerBatch {
                    shard,
                    records: batch.records,
                    next: batch.next,
                }));
            }
            if held.drained && held.committed >= held.cursor {
                match self.checkpoint(shard, Position::SHARD_END).await {
                    Ok(()) | Err(StreamError::LeaseLost { .. }) => self.finish(shard),
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(None)
    }

    /// Waits until a held shard may have records, or the next lease renewal is due.
    async fn wait(&self) {
        let deadline = self.next_refresh;
        let waits: Vec<_> = self
            .held
            .iter()
            .filter(|(_, held)| !held.drained)
            .map(|(shard, held)| {
                let timeout = deadline.saturating_duration_since(Instant::now());
                self.stream
                    .wait_for_records(&self.stream_name, *shard, held.cursor, timeout)
                    .boxed()
            })
            .collect();
        if waits.is_empty() {
            tokio::time::sleep_until(deadline).await;
        } else {
            let _ = tokio::time::timeout_at(deadline, select_all(waits)).await;
        }
    }

    /// Renews held leases, drops lost ones, and takes a fair share of the readable shards.
    async fn refresh(&mut self) -> Result<(), StreamError> {
        let info = self.stream.describe_stream(&self.stream_name).await?;
        let mut finished = HashSet::new();
        for shard in &info.shards {
            let checkpoint = self
                .stream
                .checkpoint_of(&self.stream_name, &self.group, shard.id)
                .await?;
            if checkpoint == Some(Position::SHARD_END) {
                finished.insert(shard.id);
            }
        }
        let readable: Vec<&ShardInfo> = info
            .shards
            .iter()
            .filter(|shard| !finished.contains(&shard.id))
            .filter(|shard| {
                predecessors(&info.shards, shard).all(|parent| finished.contains(&parent.id))
            })
            .collect();
        let readable_ids: HashSet<ShardId> = readable.iter().map(|shard| shard.id).collect();

        let ttl = self.config.lease_ttl;
        for shard in self.held_shards() {
            let renewed = readable_ids.contains(&shard)
                && self
                    .stream
                    .acquire_lease(&self.stream_name, &self.group, shard, &self.owner, ttl)
                    .await?;
            if !renewed {
                self.held.remove(&shard);
            }
        }

        let now = SystemTime::now();
        let mut holders: HashMap<ShardId, String> = HashMap::new();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for lease in self.stream.leases(&self.stream_name, &self.group).await? {
            if lease.is_live(now)
                && readable_ids.contains(&lease.shard)
                && lease.owner != self.owner
            {
                *counts.entry(lease.owner.clone()).or_default() += 1;
                holders.insert(lease.shard, lease.owner);
            }
        }
        let members = counts.len() + 1;
        let target = readable.len().div_ceil(members);
        for shard in &readable {
            if self.held.len() >= target {
                break;
            }
            if self.held.contains_key(&shard.id) || holders.contains_key(&shard.id) {
                continue;
            }
            if self
                .stream
                .acquire_lease(&self.stream_name, &self.group, shard.id, &self.owner, ttl)
                .await?
            {
                self.take(&info.shards, shard).await?;
            }
        }
        while self.held.len() < target {
            let Some((victim, count)) = counts
                .iter()
                .max_by_key(|(owner, count)| (**count, (*owner).clone()))
                .map(|(owner, count)| (owner.clone(), *count))
            else {
                break;
            };
            if count <= target {
                break;
            }
            let Some(shard) = readable
                .iter()
                .find(|shard| holders.get(&shard.id) == Some(&victim))
                .copied()
            else {
                break;
            };
            holders.remove(&shard.id);
            counts.insert(victim.clone(), count - 1);
            if self
                .stream
                .steal_lease(
                    &self.stream_name,
                    &self.group,
                    shard.id,
                    &victim,
                    &self.owner,
                    ttl,
                )
                .await?
            {
                self.take(&info.shards, shard).await?;
            }
        }
        Ok(())
    }

    /// Starts holding `shard`: reading resumes at its checkpoint, or at its start.
    async fn take(&mut self, shards: &[ShardInfo], shard: &ShardInfo) -> Result<(), StreamError> {
        let checkpoint = self
            .stream
            .checkpoint_of(&self.stream_name, &self.group, shard.id)
            .await?;
        let cursor = match checkpoint {
            Some(position) => position,
            None => {
                let has_parents =
                    predecessors(shards, shard).next().is_some() || shard.parent.is_some();
                let start = match self.config.start {
                    // Resolving LATEST when the shard is taken would skip what a child shard
                    // received while its parents were being read to their end.
                    StartingPosition::Latest => StartingPosition::AtTimestamp(self.started),
                    StartingPosition::AtSequence(_) | StartingPosition::AfterSequence(_)
                        if has_parents =>
                    {
                        StartingPosition::TrimHorizon
                    }
                    start => start,
                };
                self.stream
                    .resolve(&self.stream_name, shard.id, start)
                    .await?
            }
        };
        self.held.insert(
            shard.id,
            Held {
                cursor,
                committed: cursor,
                drained: false,
            },
        );
        Ok(())
    }
}

/// The closed shards whose records come before `shard`'s: those that ended before it started
/// and shared some of its hash keys (its parents, and their ancestors).
fn predecessors<'a>(
    shards: &'a [ShardInfo],
    shard: &'a ShardInfo,
) -> impl Iterator<Item = &'a ShardInfo> + 'a {
    shards.iter().filter(move |other| {
        other.id != shard.id
            && other
                .ending_sequence
                .is_some_and(|end| end < shard.starting_sequence)
            && other.hash_range.start <= shard.hash_range.end
            && shard.hash_range.start <= other.hash_range.end
    })
}

/// Most records [`unconsumed`] reads at once.
const COUNT_BATCH: usize = 1000;

/// What consumer group `group` has not checkpointed on stream `stream_name`, whichever member
/// reads it: the records after each shard's checkpoint (from the trim horizon without one),
/// counted until `max_records` records or `max_bytes` bytes of data are found (the byte limit
/// is checked after each read of up to [`COUNT_BATCH`] records). A producer that
/// admits work against a limit uses it to learn the true backlog of a stream that other nodes
/// also write and read, where its own count of what it added and saw done drifts.
pub async fn unconsumed(
    stream: &dyn Stream,
    stream_name: &str,
    group: &str,
    max_records: usize,
    max_bytes: usize,
) -> Result<Unconsumed, StreamError> {
    let mut found = Unconsumed::default();
    for shard in stream.describe_stream(stream_name).await?.shards {
        let mut position = match stream.checkpoint_of(stream_name, group, shard.id).await? {
            Some(Position::SHARD_END) => continue,
            Some(position) => position,
            None => {
                stream
                    .resolve(stream_name, shard.id, StartingPosition::TrimHorizon)
                    .await?
            }
        };
        while found.records < max_records && found.bytes < max_bytes {
            let limit = (max_records - found.records).min(COUNT_BATCH);
            let batch = stream.read(stream_name, shard.id, position, limit).await?;
            found.records += batch.records.len();
            found.bytes += batch.records.iter().map(|r| r.data.len()).sum::<usize>();
            position = batch.next;
            if batch.records.is_empty() || batch.end_of_shard {
                break;
            }
        }
    }
    Ok(found)
}

/// Records a consumer group has not checkpointed (see [`unconsumed`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unconsumed {
    /// How many.
    pub records: usize,
    /// Their data's bytes.
    pub bytes: usize,
}
