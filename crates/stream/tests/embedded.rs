//! The embedded backend through the `Stream` trait: appends, reads, seeks, restarts, retention,
//! resharding and limits.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fleetcore_stream::routing::hash_key;
use fleetcore_stream::{
    EmbeddedConfig, EmbeddedStreams, NewRecord, Position, Record, SequenceNumber, ShardId,
    StartingPosition, Stream, StreamError, StreamMode, StreamSpec,
};
use support::{record, spec};

async fn open(dir: &std::path::Path) -> EmbeddedStreams {
    EmbeddedStreams::open(dir, EmbeddedConfig::default())
        .await
        .expect("open")
}

/// Every record of a shard from its start.
async fn read_all(streams: &dyn Stream, name: &str, shard: ShardId) -> Vec<Record> {
    let mut from = streams
        .resolve(name, shard, StartingPosition::TrimHorizon)
        .await
        .expect("resolve");
    let mut records = Vec::new();
    loop {
        let batch = streams.read(name, shard, from, 1000).await.expect("read");
        if batch.records.is_empty() {
            return records;
        }
        from = batch.next;
        records.extend(batch.records);
    }
}

#[tokio::test]
async fn records_go_to_the_shard_of_their_key_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let streams = open(dir.path()).await;
    let info = streams.create_stream(spec("s", 4)).await.expect("create");
    assert_eq!(info.shards.len(), 4);
    let keys: Vec<String> = (0..200).map(|i| format!("device-{i}")).collect();
    let records: Vec<NewRecord> = keys.iter().map(|k| record(k, &format!("{k}:0"))).collect();
    let outcomes = streams.put_records("s", records).await.expect("put");
    for (key, outcome) in keys.iter().zip(&outcomes) {
        let appended = outcome.as_ref().expect("appended");
        let shard = &info.shards[appended.shard.0 as usize];
        assert!(
            shard.hash_range.contains(hash_key(key)),
            "{key} went to the wrong shard"
        );
    }
    let mut total = 0;
    for shard in &info.shards {
        let records = read_all(&streams, "s", shard.id).await;
        assert!(records.windows(2).all(|w| w[0].sequence < w[1].sequence));
        for r in &records {
            assert!(shard.hash_range.contains(hash_key(&r.partition_key)));
            assert_eq!(r.data, Bytes::from(format!("{}:0", r.partition_key)));
        }
        total += records.len();
    }
    assert_eq!(total, 200);
}

#[tokio::test]
async fn records_survive_a_restart_and_numbers_keep_growing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first_put = {
        let streams = open(dir.path()).await;
        streams.create_stream(spec("s", 1)).await.expect("create");
        let outcomes = streams
            .put_records("s", (0..10).map(|i| record("k", &i.to_string())).collect())
            .await
            .expect("put");
        outcomes.last().cloned().expect("ten").expect("ok").sequence
    };
    let streams = open(dir.path()).await;
    let records = read_all(&streams, "s", ShardId(0)).await;
    let data: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect();
    assert_eq!(data, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    let next = streams
        .put_records("s", vec![record("k", "10")])
        .await
        .expect("put");
    let next = next[0].as_ref().expect("ok").sequence;
    assert!(next > first_put);
}

#[tokio::test]
async fn a_recreated_stream_never_repeats_a_sequence_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let streams = open(dir.path()).await;
    streams.create_stream(spec("s", 1)).await.expect("create");
    let old = streams
        .put_records("s", vec![record("k", "a")])
        .await
        .expect("put");
    streams.delete_stream("s").await.expect("delete");
    assert!(matches!(
        streams.describe_stream("s").await,
        Err(StreamError::NotFound(_))
    ));
    streams
        .create_stream(spec("s", 1))
        .await
        .expect("re-create");
    assert!(read_all(&streams, "s", ShardId(0)).await.is_empty());
    let new = streams
        .put_records("s", vec![record("k", "b")])
        .await
        .expect("put");
    assert!(new[0].as_ref().expect("ok").sequence > old[0].as_ref().expect("ok").sequence);
}

#[tokio::test]
async fn bad_requests_are_refused_without_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let streams = open(dir.path()).await;
    streams.create_stream(spec("s", 1)).await.expect("create");
    let big = NewRecord {
        partition_key: "k".into(),
        explicit_hash_key: None,
        data: Bytes::from(vec![0; (1 << 20) + 1]),
    };
    assert!(matches!(
        streams.put_records("s", vec![record("k", "ok"), big]).await,
        Err(StreamError::InvalidArgument(_))
    ));
    assert!(matches!(
        streams
            .put_records("s", vec![record(&"x".repeat(257), "a")])
            .await,
        Err(StreamError::InvalidArgument(_))
    ));
    assert!(matches!(
        streams.put_records("s", vec![record("", "a")]).await,
        Err(StreamError::InvalidArgument(_))
    ));
    assert!(matches!(
        streams.put_records("missing", vec![record("k", "a")]).await,
        Err(StreamError::NotFound(_))
    ));
    assert!(matches!(
        streams.create_stream(spec("s", 1)).await,
        Err(StreamError::AlreadyExists(_))
    ));
    assert!(matches!(
        streams.create_stream(spec("bad name", 1)).await,
        Err(StreamError::InvalidArgument(_))
    ));
    assert!(matches!(
        streams.read("s", ShardId(9), Position(0), 10).await,
        Err(StreamError::NotFound(_))
    ));
    assert!(read_all(&streams, "s", ShardId(0)).await.is_empty());
    // The largest allowed record goes through.
    let max = NewRecord {
        partition_key: "é".repeat(256),
        explicit_hash_key: None,
        data: Bytes::from(vec![7; 1 << 20]),
    };
    streams
        .put_records("s", vec![max.clone()])
        .await
        .expect("max record");
    let records = read_all(&streams, "s", ShardId(0)).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].data, max.data);
    assert_eq!(records[0].partition_key, max.partition_key);
}

#[tokio::test]
async fn on_demand_streams_start_with_four_shards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let streams = open(dir.path()).await;
    let info = streams
        .create_stream(StreamSpec {
            mode: StreamMode::OnDemand,
            shard_count: 0,
            ..spec("od", 0)
        })
        .await
        .expect("create");
    assert_eq!(info.mode, StreamMode::OnDemand);
    assert_eq!(info.shards.len(), 4);
}

#[tokio::test]
async fn positions_resolve_like_kinesis_iterators() {
    let dir = tempfile::tempdir().expect("tempdir");
    let streams = open(dir.path()).await;
    streams.create_stream(spec("s", 1)).await.expect("create");
    let shard = ShardId(0);
    let first = streams
        .put_records("s", (0..5).map(|i| record("k", &i.to_string())).collect())
        .await
        .expect("put");
    let seq: Vec<SequenceNumber> = first
        .iter()
        .map(|o| o.as_ref().expect("ok").sequence)
        .collect();
    let latest = streams
        .resolve("s", shard, StartingPosition::Latest)
        .await
        .expect("latest");
    assert!(
        streams
            .read("s", shard, latest, 10)
            .await
            .expect("read")
            .records
            .is_empty()
    );
    let at = streams
        .resolve("s", shard, StartingPosition::AtSequence(seq[2]))
        .await
        .expect("at");
    assert_eq!(
        streams
            .read("s", shard, at, 10)
            .await
            .expect("read")
            .records[0]
            .sequence,
        seq[2]
    );
    let after = streams
        .resolve("s", shard, StartingPosition::AfterSequence(seq[2]))
        .await
        .expect("after");
    assert_eq!(
        streams
            .read("s", shard, after, 10)
            .await
            .expect("read")
            .records[0]
            .sequence,
        seq[3]
    );
    let batch = streams
        .read("s", shard, Position::at(seq[0]), 2)
        .await
        .expect("read");
    assert_eq!(batch.records.len(), 2);
    assert_eq!(batch.next, Position::after(seq[1]));
    assert!(!batch.end_of_shard);
    // Records put after LATEST was resolved are read from it.
    streams
        .put_records("s", vec![record("k", "5")])
        .await
        .expect("put");
    let batch = streams.read("s", shard, latest, 10).await.expect("read");
    assert_eq!(batch.records.len(), 1);
    assert_eq!(batch.records[0].data, Bytes::from("5"));
    assert_eq!(batch.millis_behind_latest, 0);
    // AT_TIMESTAMP: a time before everything is the first record, one after is the end.
    let early = streams
        .resolve("s", shard, StartingPosition::AtTimestamp(UNIX_EPOCH))
        .await
        .expect("early");
    assert_eq!(
        streams
            .read("s", shard, early, 1)
            .await
            .expect("read")
            .records[0]
            .sequence,
        seq[0]
    );
    let late = streams
        .resolve(
            "s",
            shard,
            StartingPosition::AtTimestamp(SystemTime::now() + Duration::from_secs(60)),
        )
        .await
        .expect("late");
    assert!(
        streams
            .read("s", shard, late, 10)
            .await
            .expect("read")
            .records
            .is_empty()
    );
}

#[tokio::test]
async fn waiting_readers_wake_on_a_put_not_on_a_timer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let streams = Arc::new(open(dir.path()).await);
    streams.create_stream(spec("s", 1)).await.expect("create");
    let from = streams
        .resolve("s", ShardId(0), StartingPosition::Latest)
        .await
        .expect("latest");
    let waiter = {
        let streams = streams.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            streams
                .wait_for_records("s", ShardId(0), from, Duration::from_secs(30))
                .await
                .expect("wait");
            started.elapsed()
        })
    };
    tokio::task::yield_now().await;
    streams
        .put_records("s", vec![record("k", "x")])
        .await
        .expect("put");
    let waited = waiter.await.expect("join");
    assert!(waited < Duration::from_secs(10), "woke after {waited:?}");
    // Nothing new: the wait ends at its timeout.
    let next = streams
        .read("s", ShardId(0), from, 10)
        .await
        .expect("read")
        .next;
    let started = tokio::time::Instant::now();
    streams
        .wait_for_records("s", ShardId(0), next, Duration::from_millis(200))
        .await
        .expect("wait");
    assert!(started.elapsed() >= Duration::from_millis(190));
}

/// A clock the test moves forward.
fn manual_clock() -> (Arc<AtomicU64>, EmbeddedConfig) {
    let offset_ms = Arc::new(AtomicU64::new(0));
    let offset = offset_ms.clone();
    let config = EmbeddedConfig {
        segment_bytes: 4096,
        clock: Arc::new(move || {
            SystemTime::now() + Duration::from_millis(offset.load(Ordering::Relaxed))
        }),
        ..EmbeddedConfig::default()
    };
    (offset_ms, config)
}

fn segment_files(dir: &std::path::Path) -> usize {
    let mut count = 0;
    for stream in std::fs::read_dir(dir).expect("dir").flatten() {
        if !stream.path().is_dir() {
            continue;
        }
        for shard in std::fs::read_dir(stream.path())
            .expect("stream dir")
            .flatten()
        {
            count += std::fs::read_dir(shard.path())
                .expect("shard dir")
                .flatten()
                .filter(|f| f.path().extension().is_some_and(|e| e == "seg"))
                .count();
        }
    }
    count
}

#[tokio::test]
async fn retention_deletes_whole_expired_segments_and_hides_expired_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (offset, config) = manual_clock();
    let streams = EmbeddedStreams::open(dir.path(), config)
        .await
        .expect("open");
    streams.create_stream(spec("s", 1)).await.expect("create");
    let payload = "x".repeat(500);
    for _ in 0..20 {
        streams
            .put_records("s", vec![record("k", &payload)])
            .await
            .expect("put");
    }
    let old_segments = segment_files(dir.path());
    assert!(old_segments > 2, "4 KiB segments roll: {old_segments}");
    offset.store(23 * 3_600_000, Ordering::Relaxed);
    streams.apply_retention().await.expect("retention");
    assert_eq!(
        segment_files(dir.path()),
        old_segments,
        "nothing is 24 hours old yet"
    );
    streams
        .put_records("s", vec![record("k", "fresh")])
        .await
        .expect("put");
    offset.store(25 * 3_600_000, Ordering::Relaxed);
    let records = read_all(&streams, "s", ShardId(0)).await;
    assert_eq!(records.len(), 1, "expired records are not served");
    assert_eq!(records[0].data, Bytes::from("fresh"));
    streams.apply_retention().await.expect("retention");
    assert_eq!(
        segment_files(dir.path()),
        1,
        "only the segment of the fresh record is left"
    );
    assert_eq!(read_all(&streams, "s", ShardId(0)).await.len(), 1);
    // Much later even that one goes, and appends still work with growing numbers.
    offset.store(60 * 3_600_000, Ordering::Relaxed);
    streams.apply_retention().await.expect("retention");
    assert!(read_all(&streams, "s", ShardId(0)).await.is_empty());
    let last = streams
        .put_records("s", vec![record("k", "later")])
        .await
        .expect("put");
    assert!(last[0].as_ref().expect("ok").sequence > records[0].sequence);
    assert_eq!(read_all(&streams, "s", ShardId(0)).await.len(), 1);
}

#[tokio::test]
async fn resharding_closes_parents_and_routes_to_children() {
    let dir = tempfile::tempdir().expect("tempdir");
    let streams = open(dir.path()).await;
    streams.create_stream(spec("s", 2)).await.expect("create");
    let before = streams
        .put_records(
            "s",
            (0..50).map(|i| record(&format!("k{i}"), "old")).collect(),
        )
        .await
        .expect("put");
    let info = streams.update_shard_count("s", 4).await.expect("reshard");
    assert_eq!(info.shards.len(), 6);
    let (closed, opened): (Vec<_>, Vec<_>) = info.shards.iter().partition(|s| !s.is_open());
    assert_eq!(closed.len(), 2);
    assert_eq!(opened.len(), 4);
    for child in &opened {
        let parent = child.parent.expect("child has a parent");
        let parent = info
            .shards
            .iter()
            .find(|s| s.id == parent)
            .expect("parent listed");
        assert!(parent.ending_sequence.expect("closed") < child.starting_sequence);
        assert!(parent.hash_range.start <= child.hash_range.start);
        assert!(child.hash_range.end <= parent.hash_range.end);
    }
    let after = streams
        .put_records(
            "s",
            (0..50).map(|i| record(&format!("k{i}"), "new")).collect(),
        )
        .await
        .expect("put");
    let max_before = before
        .iter()
        .map(|o| o.as_ref().expect("ok").sequence)
        .max();
    for outcome in &after {
        let appended = outcome.as_ref().expect("ok");
        assert!(appended.shard.0 >= 2, "new records go to children");
        assert!(Some(appended.sequence) > max_before);
    }
    // A parent reads to its end and says so.
    let parent = closed[0].id;
    let from = streams
        .resolve("s", parent, StartingPosition::TrimHorizon)
        .await
        .expect("trim");
    let mut batch = streams.read("s", parent, from, 10_000).await.expect("read");
    if !batch.end_of_shard {
        batch = streams
            .read("s", parent, batch.next, 10_000)
            .await
            .expect("read");
    }
    assert!(batch.end_of_shard);
    // Merge back down to 2, and survive a restart with the layout intact.
    let info = streams.update_shard_count("s", 2).await.expect("merge");
    assert_eq!(info.shards.iter().filter(|s| s.is_open()).count(), 2);
    assert!(matches!(
        streams.update_shard_count("s", 5).await,
        Err(StreamError::InvalidArgument(_))
    ));
    drop(streams);
    let streams = open(dir.path()).await;
    assert_eq!(
        streams.describe_stream("s").await.expect("describe").shards,
        info.shards
    );
    let mut total = 0;
    for shard in &info.shards {
        total += read_all(&streams, "s", shard.id).await.len();
    }
    assert_eq!(total, 100);
}

#[tokio::test]
async fn leases_and_checkpoints_persist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ttl = Duration::from_secs(60);
    {
        let streams = open(dir.path()).await;
        streams.create_stream(spec("s", 2)).await.expect("create");
        assert!(
            streams
                .acquire_lease("s", "g", ShardId(0), "a", ttl)
                .await
                .expect("lease")
        );
        assert!(
            !streams
                .acquire_lease("s", "g", ShardId(0), "b", ttl)
                .await
                .expect("lease")
        );
        assert!(matches!(
            streams
                .checkpoint("s", "g", ShardId(0), "b", Position(5))
                .await,
            Err(StreamError::LeaseLost { .. })
        ));
        streams
            .checkpoint("s", "g", ShardId(0), "a", Position(7))
            .await
            .expect("checkpoint");
    }
    let streams = open(dir.path()).await;
    assert_eq!(
        streams
            .checkpoint_of("s", "g", ShardId(0))
            .await
            .expect("checkpoint"),
        Some(Position(7))
    );
    assert_eq!(
        streams
            .checkpoint_of("s", "g", ShardId(1))
            .await
            .expect("none"),
        None
    );
    let leases = streams.leases("s", "g").await.expect("leases");
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].owner, "a");
    assert!(
        !streams
            .steal_lease("s", "g", ShardId(0), "b", "c", ttl)
            .await
            .expect("steal")
    );
    assert!(
        streams
            .steal_lease("s", "g", ShardId(0), "a", "c", ttl)
            .await
            .expect("steal")
    );
    assert!(
        !streams
            .acquire_lease("s", "g", ShardId(0), "a", ttl)
            .await
            .expect("lease")
    );
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _streams = open(dir.path()).await;
    assert!(matches!(
        EmbeddedStreams::open(dir.path(), EmbeddedConfig::default()).await,
        Err(StreamError::Storage(_))
    ));
}

#[tokio::test]
async fn a_closed_shard_whose_records_expired_still_reaches_its_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (offset, config) = manual_clock();
    let streams = EmbeddedStreams::open(dir.path(), config)
        .await
        .expect("open");
    streams.create_stream(spec("s", 1)).await.expect("create");
    streams
        .put_records(
            "s",
            (0..30)
                .map(|i| record("k", &format!("{i:0>300}")))
                .collect(),
        )
        .await
        .expect("put");
    streams.update_shard_count("s", 2).await.expect("split");
    offset.store(25 * 3_600_000, Ordering::Relaxed);
    let from = streams
        .resolve("s", ShardId(0), StartingPosition::TrimHorizon)
        .await
        .expect("trim horizon");
    let batch = streams.read("s", ShardId(0), from, 10).await.expect("read");
    assert!(batch.records.is_empty());
    assert!(batch.end_of_shard, "readers can move on to the children");
    // Once retention ran, the closed shard is gone from the description.
    streams.apply_retention().await.expect("retention");
    let info = streams.describe_stream("s").await.expect("describe");
    assert_eq!(info.shards.len(), 2);
    assert!(info.shards.iter().all(|s| s.is_open()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_write_queue_makes_producers_wait_not_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EmbeddedConfig {
        queue_bytes: 2048,
        ..EmbeddedConfig::default()
    };
    let streams = Arc::new(
        EmbeddedStreams::open(dir.path(), config)
            .await
            .expect("open"),
    );
    streams.create_stream(spec("s", 2)).await.expect("create");
    let producers: Vec<_> = (0..16)
        .map(|p| {
            let streams = streams.clone();
            tokio::spawn(async move {
                for b in 0..10 {
                    let records = (0..4)
                        .map(|i| record(&format!("{p}-{b}-{i}"), &"x".repeat(1000)))
                        .collect();
                    streams.put_records("s", records).await.expect("put");
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await.expect("producer");
    }
    let mut total = 0;
    for shard in [ShardId(0), ShardId(1)] {
        total += read_all(&*streams, "s", shard).await.len();
    }
    assert_eq!(total, 16 * 10 * 4);
}

#[tokio::test]
async fn damaged_or_missing_segment_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EmbeddedConfig {
        segment_bytes: 4096,
        ..EmbeddedConfig::default()
    };
    let mut expected = Vec::new();
    let mut sequences = Vec::new();
    {
        let streams = EmbeddedStreams::open(dir.path(), config.clone())
            .await
            .expect("open");
        streams.create_stream(spec("s", 1)).await.expect("create");
        for i in 0..60 {
            let data = format!("{i}-{}", "y".repeat(300));
            let outcome = streams
                .put_records("s", vec![record("k", &data)])
                .await
                .expect("put");
            sequences.push(outcome[0].as_ref().expect("ok").sequence);
            expected.push(data);
        }
    }
    let mut indexes = Vec::new();
    for stream in std::fs::read_dir(dir.path()).expect("dir").flatten() {
        if stream.path().is_dir() {
            for shard in std::fs::read_dir(stream.path()).expect("stream").flatten() {
                for file in std::fs::read_dir(shard.path()).expect("shard").flatten() {
                    if file.path().extension().is_some_and(|e| e == "idx") {
                        indexes.push(file.path());
                    }
                }
            }
        }
    }
    assert!(
        indexes.len() >= 3,
        "sealed segments have indexes: {}",
        indexes.len()
    );
    std::fs::write(&indexes[0], b"garbage").expect("damage an index");
    std::fs::remove_file(&indexes[1]).expect("remove an index");
    let streams = EmbeddedStreams::open(dir.path(), config)
        .await
        .expect("reopen");
    let data: Vec<String> = read_all(&streams, "s", ShardId(0))
        .await
        .iter()
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect();
    assert_eq!(data, expected);
    // Seeks land on the right record in every segment, rebuilt indexes included.
    for i in [0, 7, 19, 33, 59] {
        let at = streams
            .resolve("s", ShardId(0), StartingPosition::AtSequence(sequences[i]))
            .await
            .expect("at sequence");
        let batch = streams.read("s", ShardId(0), at, 1).await.expect("read");
        assert_eq!(batch.records[0].data, Bytes::from(expected[i].clone()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_under_load_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EmbeddedConfig {
        segment_bytes: 16 * 1024,
        ..EmbeddedConfig::default()
    };
    let streams = Arc::new(
        EmbeddedStreams::open(dir.path(), config)
            .await
            .expect("open"),
    );
    streams.create_stream(spec("s", 2)).await.expect("create");
    let progress = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let streams = streams.clone();
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for b in 0..40 {
                    let records: Vec<NewRecord> = (0..25)
                        .map(|i| record(&format!("key-{}", i % 9), &format!("{p}-{b}-{i}")))
                        .collect();
                    let outcomes = streams
                        .put_records("s", records.clone())
                        .await
                        .expect("put");
                    for (record, outcome) in records.into_iter().zip(outcomes) {
                        acked.push((outcome.expect("appended"), record.data));
                    }
                    progress.fetch_add(25, Ordering::Relaxed);
                }
                acked
            })
        })
        .collect();
    for target in [4, 3, 6, 3] {
        streams
            .update_shard_count("s", target)
            .await
            .expect("reshard");
    }
    let mut acked = Vec::new();
    for producer in producers {
        acked.extend(producer.await.expect("producer"));
    }
    let info = streams.describe_stream("s").await.expect("describe");
    let mut stored = std::collections::HashMap::new();
    for shard in &info.shards {
        let records = read_all(&*streams, "s", shard.id).await;
        assert!(records.windows(2).all(|w| w[0].sequence < w[1].sequence));
        if let Some(end) = shard.ending_sequence {
            assert!(
                records.iter().all(|r| r.sequence <= end),
                "{} past its end",
                shard.id
            );
        }
        for r in records {
            assert!(r.sequence >= shard.starting_sequence);
            assert!(shard.hash_range.contains(hash_key(&r.partition_key)));
            stored.insert((shard.id, r.sequence), r.data);
        }
    }
    assert_eq!(stored.len(), acked.len());
    for (appended, data) in acked {
        assert_eq!(
            stored.get(&(appended.shard, appended.sequence)),
            Some(&data)
        );
    }
}
