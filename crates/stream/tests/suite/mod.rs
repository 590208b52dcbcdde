//! The consumer-group suite, generic over any `Stream` backend: a backend's test file declares
//! `mod suite;` and runs each function with a factory that opens the backend on the test's own
//! storage (opening it again after every handle was dropped is a restart).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetcore_stream::{
    ConsumerBatch, ConsumerConfig, ConsumerGroup, NewRecord, StartingPosition, Stream, StreamMode,
    StreamSpec, Unconsumed, unconsumed,
};
use parking_lot::Mutex;
use tokio::time::Instant;

/// Opens the backend under test on the same storage every time it is called.
pub trait Backend: Send + Sync + 'static {
    fn open(&self) -> impl Future<Output = Arc<dyn Stream>> + Send;
}

const DEADLINE: Duration = Duration::from_secs(30);

fn config() -> ConsumerConfig {
    ConsumerConfig {
        lease_ttl: Duration::from_millis(900),
        batch_limit: 100,
        start: StartingPosition::TrimHorizon,
    }
}

async fn create(stream: &dyn Stream, name: &str, shards: u32) {
    stream
        .create_stream(StreamSpec {
            name: name.into(),
            mode: StreamMode::Provisioned,
            shard_count: shards,
            retention_hours: 24,
        })
        .await
        .expect("create stream");
}

/// Puts records `first..first + count`, each with key `key-<n % keys>` and data `<n>`.
async fn put(stream: &dyn Stream, name: &str, first: usize, count: usize, keys: usize) {
    let records: Vec<NewRecord> = (first..first + count)
        .map(|n| NewRecord {
            partition_key: format!("key-{}", n % keys),
            explicit_hash_key: None,
            data: Bytes::from(n.to_string()),
        })
        .collect();
    for chunk in records.chunks(500) {
        for outcome in stream.put_records(name, chunk.to_vec()).await.expect("put") {
            outcome.expect("record appended");
        }
    }
}

fn numbers(batch: &ConsumerBatch) -> Vec<usize> {
    batch
        .records
        .iter()
        .map(|r| {
            std::str::from_utf8(&r.data)
                .expect("utf-8")
                .parse()
                .expect("number")
        })
        .collect()
}

/// Next batch, or panic at the deadline.
async fn next(consumer: &mut ConsumerGroup, deadline: Instant) -> ConsumerBatch {
    tokio::time::timeout_at(deadline, consumer.next())
        .await
        .expect("a batch before the deadline")
        .expect("next batch")
}

/// Two members of one group split the shards between them and together see every record.
pub async fn members_share_shards_and_see_every_record(backend: impl Backend) {
    let stream = backend.open().await;
    create(&*stream, "share", 4).await;
    let seen: Arc<Mutex<BTreeMap<&'static str, HashSet<usize>>>> = Arc::default();
    let total = 2000;
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut members = Vec::new();
    for owner in ["a", "b"] {
        let mut consumer = ConsumerGroup::new(stream.clone(), "share", "g", owner, config());
        let seen = seen.clone();
        let errors = errors.clone();
        members.push(tokio::spawn(async move {
            // Ends when the test ends (the runtime shuts down under it).
            loop {
                let batch = match consumer.next().await {
                    Ok(batch) => batch,
                    Err(error) => {
                        eprintln!("member {owner}: {error}");
                        errors.lock().push(format!("{owner}: {error}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                seen.lock()
                    .entry(owner)
                    .or_default()
                    .extend(numbers(&batch));
                // A lease may move between read and commit; the new holder re-reads.
                let _ = consumer.commit(&batch).await;
            }
        }));
    }
    // Produce until both members have received records, then until every record was seen.
    let deadline = Instant::now() + DEADLINE;
    let mut produced = 0;
    loop {
        let both_busy = seen.lock().values().filter(|s| !s.is_empty()).count() == 2;
        if produced < total || !both_busy {
            put(&*stream, "share", produced, 100, 97).await;
            produced += 100;
        }
        let (both, all) = {
            let seen = seen.lock();
            let union: HashSet<usize> = seen.values().flatten().copied().collect();
            (
                seen.len() == 2 && seen.values().all(|s| !s.is_empty()),
                (0..produced).all(|n| union.contains(&n)),
            )
        };
        if both && all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "members did not share the work in time: {:?}; errors: {:?}",
            seen.lock()
                .iter()
                .map(|(k, v)| (*k, v.len()))
                .collect::<Vec<_>>(),
            errors.lock()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for member in members {
        member.abort();
    }
}

/// A member that stops (without letting go) loses its shards to another once the leases lapse;
/// the other resumes after the stopped member's last checkpoint.
pub async fn a_stopped_members_shards_are_taken_over(backend: impl Backend) {
    let stream = backend.open().await;
    create(&*stream, "takeover", 2).await;
    put(&*stream, "takeover", 0, 200, 13).await;
    let deadline = Instant::now() + DEADLINE;
    let mut first = ConsumerGroup::new(stream.clone(), "takeover", "g", "first", config());
    let mut committed = HashSet::new();
    while committed.len() < 100 {
        let batch = next(&mut first, deadline).await;
        first.commit(&batch).await.expect("commit");
        committed.extend(numbers(&batch));
    }
    // The first member stops without releasing its leases.
    assert_eq!(first.held_shards().len(), 2);
    drop(first);
    put(&*stream, "takeover", 200, 100, 13).await;
    let mut second = ConsumerGroup::new(stream.clone(), "takeover", "g", "second", config());
    let mut seen = HashSet::new();
    while (0..300).any(|n| !committed.contains(&n) && !seen.contains(&n)) {
        let batch = next(&mut second, deadline).await;
        seen.extend(numbers(&batch));
        second.commit(&batch).await.expect("commit");
    }
    assert_eq!(
        second.held_shards().len(),
        2,
        "the second member holds every shard"
    );
    assert!(
        seen.iter().all(|n| !committed.contains(n)),
        "records committed by the first member were delivered again"
    );
}

/// After a restart of the backend, the group resumes right after its last commit; records read
/// but not committed are delivered again (at least once).
pub async fn a_restarted_group_resumes_from_its_checkpoint(backend: impl Backend) {
    let deadline = Instant::now() + DEADLINE;
    let (committed, uncommitted) = {
        let stream = backend.open().await;
        create(&*stream, "resume", 1).await;
        put(&*stream, "resume", 0, 300, 5).await;
        let mut consumer = ConsumerGroup::new(stream.clone(), "resume", "g", "a", config());
        let batch = next(&mut consumer, deadline).await;
        consumer.commit(&batch).await.expect("commit");
        let committed = numbers(&batch);
        let uncommitted = numbers(&next(&mut consumer, deadline).await);
        (committed, uncommitted)
    };
    assert_eq!(committed, (0..100).collect::<Vec<_>>());
    let stream = backend.open().await;
    let mut consumer = ConsumerGroup::new(stream.clone(), "resume", "g", "a", config());
    let batch = next(&mut consumer, deadline).await;
    assert_eq!(
        numbers(&batch),
        uncommitted,
        "resumes after the last commit"
    );
    let mut seen = numbers(&batch);
    consumer.commit(&batch).await.expect("commit");
    while seen.len() < 200 {
        let batch = next(&mut consumer, deadline).await;
        seen.extend(numbers(&batch));
        consumer.commit(&batch).await.expect("commit");
    }
    assert_eq!(seen, (100..300).collect::<Vec<_>>());
}

/// Records of one partition key reach the group in the order they were put, across splits and
/// merges: parents are read to their end before their children.
pub async fn order_per_key_survives_resharding(backend: impl Backend) {
    let stream = backend.open().await;
    create(&*stream, "reshard", 2).await;
    let keys = 11;
    put(&*stream, "reshard", 0, 300, keys).await;
    stream
        .update_shard_count("reshard", 4)
        .await
        .expect("split");
    put(&*stream, "reshard", 300, 300, keys).await;
    stream
        .update_shard_count("reshard", 3)
        .await
        .expect("merge");
    put(&*stream, "reshard", 600, 300, keys).await;
    let deadline = Instant::now() + DEADLINE;
    let mut members: Vec<ConsumerGroup> = ["a", "b"]
        .into_iter()
        .map(|owner| ConsumerGroup::new(stream.clone(), "reshard", "g", owner, config()))
        .collect();
    // Per key, the first delivery of each record must come in put order.
    let mut last_per_key: BTreeMap<usize, usize> = BTreeMap::new();
    let mut seen = HashSet::new();
    while seen.len() < 900 {
        // Serve the members in turn, each until it has nothing right now.
        for member in &mut members {
            let Ok(batch) = tokio::time::timeout(Duration::from_millis(300), member.next()).await
            else {
                continue;
            };
            let batch = batch.expect("next");
            for n in numbers(&batch) {
                if !seen.insert(n) {
                    continue;
                }
                let key = n % keys;
                if let Some(previous) = last_per_key.insert(key, n) {
                    assert!(previous < n, "key {key}: {n} delivered after {previous}");
                }
            }
            let _ = member.commit(&batch).await;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of 900 records seen",
            seen.len()
        );
    }
}

/// A group starting at LATEST sees only records put after it started, on every shard, including
/// shards that a reshard before its start created and one after its start creates.
pub async fn a_latest_group_sees_only_new_records(backend: impl Backend) {
    let stream = backend.open().await;
    create(&*stream, "latest", 2).await;
    put(&*stream, "latest", 0, 100, 7).await;
    stream.update_shard_count("latest", 4).await.expect("split");
    put(&*stream, "latest", 100, 100, 7).await;
    // Arrival times have millisecond precision: the group starts clearly after the old records.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let config = ConsumerConfig {
        start: StartingPosition::Latest,
        ..config()
    };
    let mut consumer = ConsumerGroup::new(stream.clone(), "latest", "g", "a", config);
    put(&*stream, "latest", 200, 100, 7).await;
    stream.update_shard_count("latest", 2).await.expect("merge");
    put(&*stream, "latest", 300, 100, 7).await;
    let deadline = Instant::now() + DEADLINE;
    let mut seen = HashSet::new();
    while seen.len() < 200 {
        let batch = next(&mut consumer, deadline).await;
        for n in numbers(&batch) {
            assert!(n >= 200, "record {n} was put before the group started");
            seen.insert(n);
        }
        consumer.commit(&batch).await.expect("commit");
    }
}

/// `unconsumed` counts what a group has not checkpointed on every shard, whoever reads it, and
/// stops at its record limit.
pub async fn unconsumed_counts_what_the_group_has_not_checkpointed(backend: impl Backend) {
    let stream = backend.open().await;
    create(&*stream, "backlog", 2).await;
    // Records 0..10 and 10..100: two data bytes each from 10 on.
    put(&*stream, "backlog", 0, 100, 7).await;
    let count = |records, bytes| unconsumed(&*stream, "backlog", "g", records, bytes);
    let all = count(usize::MAX, usize::MAX).await.expect("count");
    assert_eq!(
        all,
        Unconsumed {
            records: 100,
            bytes: 10 + 90 * 2
        }
    );
    let few = count(5, usize::MAX).await.expect("count");
    assert_eq!(few.records, 5, "stops at the record limit");

    let mut member = ConsumerGroup::new(stream.clone(), "backlog", "g", "a", config());
    let deadline = Instant::now() + DEADLINE;
    let batch = next(&mut member, deadline).await;
    let taken = batch.records.len();
    assert_eq!(
        count(usize::MAX, usize::MAX).await.expect("count").records,
        100,
        "read but not checkpointed still counts"
    );
    member.commit(&batch).await.expect("commit");
    assert_eq!(
        count(usize::MAX, usize::MAX).await.expect("count").records,
        100 - taken
    );
}
