//! The JetStream backend against a real nats-server (started per test).

mod support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fleetcore_stream::{
    JetStreamStreams, NewRecord, Position, ShardId, StartingPosition, Stream, StreamError,
    StreamStatus,
};
use support::nats::NatsServer;
use support::{record, spec};

async fn put(
    streams: &JetStreamStreams,
    name: &str,
    records: Vec<NewRecord>,
) -> Vec<fleetcore_stream::Appended> {
    streams
        .put_records(name, records)
        .await
        .expect("put")
        .into_iter()
        .map(|o| o.expect("record stored"))
        .collect()
}

#[tokio::test]
async fn records_round_trip_in_order_per_shard() {
    let nats = NatsServer::start();
    let streams = JetStreamStreams::connect(&nats.url).await.expect("connect");
    assert!(streams.list_streams().await.expect("list").is_empty());
    assert!(streams.leases("nothing", "g").await.is_err());
    let info = streams
        .create_stream(spec("orders", 2))
        .await
        .expect("create");
    assert!(
        streams
            .leases("orders", "g")
            .await
            .expect("no leases")
            .is_empty()
    );
    assert_eq!(info.status, StreamStatus::Active);
    assert_eq!(info.shards.len(), 2);
    assert_eq!(info.shards[0].hash_range.start, 0);
    assert_eq!(info.shards[1].hash_range.end, u128::MAX);
    assert!(matches!(
        streams.create_stream(spec("orders", 1)).await,
        Err(StreamError::AlreadyExists(_))
    ));
    assert_eq!(streams.list_streams().await.expect("list"), ["orders"]);

    let records: Vec<NewRecord> = (0..50)
        .map(|i| record(&format!("k{}", i % 7), &format!("r{i}")))
        .collect();
    let appended = put(&streams, "orders", records.clone()).await;
    for shard in [ShardId(0), ShardId(1)] {
        let start = streams
            .resolve("orders", shard, StartingPosition::TrimHorizon)
            .await
            .expect("resolve");
        let batch = streams
            .read("orders", shard, start, 1000)
            .await
            .expect("read");
        let expected: Vec<&str> = appended
            .iter()
            .zip(&records)
            .filter(|(a, _)| a.shard == shard)
            .map(|(_, r)| std::str::from_utf8(&r.data).expect("utf8"))
            .collect();
        let got: Vec<&str> = batch
            .records
            .iter()
            .map(|r| std::str::from_utf8(&r.data).expect("utf8"))
            .collect();
        assert_eq!(got, expected);
        assert!(
            batch
                .records
                .windows(2)
                .all(|w| w[0].sequence < w[1].sequence)
        );
        assert!(!batch.end_of_shard);
        // continuing reads from the same position reuse the consumer and see new records
        let again = streams
            .read("orders", shard, batch.next, 1000)
            .await
            .expect("read");
        assert!(again.records.is_empty());
    }
    // a key always lands in the same shard; reading AT/AFTER a sequence
    let first = appended[0];
    let at = streams
        .resolve(
            "orders",
            first.shard,
            StartingPosition::AtSequence(first.sequence),
        )
        .await
        .expect("at");
    let batch = streams
        .read("orders", first.shard, at, 1)
        .await
        .expect("read");
    assert_eq!(batch.records[0].data, Bytes::from("r0"));
    assert_eq!(batch.records[0].partition_key, "k0");
    assert!(batch.millis_behind_latest < 60_000);
    let after = streams
        .resolve(
            "orders",
            first.shard,
            StartingPosition::AfterSequence(first.sequence),
        )
        .await
        .expect("after");
    let batch = streams
        .read("orders", first.shard, after, 1)
        .await
        .expect("read");
    assert_ne!(batch.records[0].data, Bytes::from("r0"));
    // a sequence number of another shard is refused
    let other = ShardId(1 - first.shard.0);
    assert!(matches!(
        streams
            .resolve(
                "orders",
                other,
                StartingPosition::AtSequence(first.sequence)
            )
            .await,
        Err(StreamError::InvalidArgument(_))
    ));
    assert!(matches!(
        streams.read("orders", ShardId(9), Position(0), 10).await,
        Err(StreamError::NotFound(_))
    ));
}

#[tokio::test]
async fn latest_timestamp_and_waiting() {
    let nats = NatsServer::start();
    let streams = JetStreamStreams::connect(&nats.url).await.expect("connect");
    streams
        .create_stream(spec("ticks", 1))
        .await
        .expect("create");
    put(&streams, "ticks", vec![record("a", "old")]).await;
    let latest = streams
        .resolve("ticks", ShardId(0), StartingPosition::Latest)
        .await
        .expect("latest");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let timed_out = streams
        .wait_for_records("ticks", ShardId(0), latest, Duration::from_millis(100))
        .await;
    assert!(timed_out.is_ok());
    let waiter = {
        let url = nats.url.clone();
        tokio::spawn(async move {
            let streams = JetStreamStreams::connect(&url).await.expect("connect");
            tokio::time::sleep(Duration::from_millis(100)).await;
            put(&streams, "ticks", vec![record("a", "new")]).await;
        })
    };
    let started = std::time::Instant::now();
    streams
        .wait_for_records("ticks", ShardId(0), latest, Duration::from_secs(10))
        .await
        .expect("wait");
    assert!(started.elapsed() < Duration::from_secs(5));
    waiter.await.expect("writer");
    let batch = streams
        .read("ticks", ShardId(0), latest, 10)
        .await
        .expect("read");
    assert_eq!(batch.records.len(), 1);
    assert_eq!(batch.records[0].data, Bytes::from("new"));
    let at = streams
        .resolve("ticks", ShardId(0), StartingPosition::AtTimestamp(cut))
        .await
        .expect("at timestamp");
    let batch = streams
        .read("ticks", ShardId(0), at, 10)
        .await
        .expect("read");
    assert_eq!(batch.records.len(), 1, "only the record put after the cut");
}

#[tokio::test]
async fn reshard_closes_parents_and_children_cover_the_key_space() {
    let nats = NatsServer::start();
    let streams = JetStreamStreams::connect(&nats.url).await.expect("connect");
    streams
        .create_stream(spec("grow", 2))
        .await
        .expect("create");
    let before = put(
        &streams,
        "grow",
        (0..20)
            .map(|i| record(&format!("k{i}"), "before"))
            .collect(),
    )
    .await;
    let info = streams
        .update_shard_count("grow", 3)
        .await
        .expect("reshard");
    let open: Vec<_> = info.shards.iter().filter(|s| s.is_open()).collect();
    let closed: Vec<_> = info.shards.iter().filter(|s| !s.is_open()).collect();
    assert_eq!((open.len(), closed.len()), (3, 2));
    assert_eq!(open[0].hash_range.start, 0);
    assert_eq!(open[2].hash_range.end, u128::MAX);
    assert!(open.iter().all(|s| s.parent.is_some()));
    for parent in &closed {
        let start = streams
            .resolve("grow", parent.id, StartingPosition::TrimHorizon)
            .await
            .expect("resolve");
        let batch = streams
            .read("grow", parent.id, start, 1000)
            .await
            .expect("read");
        assert_eq!(
            batch.records.len(),
            before.iter().filter(|a| a.shard == parent.id).count()
        );
        assert!(batch.end_of_shard);
    }
    let after = put(&streams, "grow", vec![record("k1", "after")]).await;
    assert!(open.iter().any(|s| s.id == after[0].shard));
    assert!(matches!(
        streams.update_shard_count("grow", 7).await,
        Err(StreamError::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn retention_leases_delete_and_recreate() {
    let nats = NatsServer::start();
    let streams = JetStreamStreams::connect(&nats.url).await.expect("connect");
    streams
        .create_stream(spec("life", 1))
        .await
        .expect("create");
    let info = streams.set_retention("life", 48).await.expect("retention");
    assert_eq!(info.retention_hours, 48);
    assert!(matches!(
        streams.set_retention("life", 23).await,
        Err(StreamError::InvalidArgument(_))
    ));

    let ttl = Duration::from_secs(30);
    assert!(
        streams
            .acquire_lease("life", "g", ShardId(0), "a", ttl)
            .await
            .expect("lease")
    );
    assert!(
        !streams
            .acquire_lease("life", "g", ShardId(0), "b", ttl)
            .await
            .expect("lease")
    );
    streams
        .checkpoint("life", "g", ShardId(0), "a", Position(42))
        .await
        .expect("checkpoint");
    assert!(matches!(
        streams
            .checkpoint("life", "g", ShardId(0), "b", Position(43))
            .await,
        Err(StreamError::LeaseLost { .. })
    ));
    assert_eq!(
        streams
            .checkpoint_of("life", "g", ShardId(0))
            .await
            .expect("of"),
        Some(Position(42))
    );
    // an expired lease is taken over, with the checkpoint
    assert!(
        streams
            .acquire_lease("life", "g2", ShardId(0), "a", Duration::from_millis(1))
            .await
            .expect("lease")
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(
        streams
            .acquire_lease("life", "g2", ShardId(0), "b", ttl)
            .await
            .expect("takeover")
    );

    let old = put(&streams, "life", vec![record("x", "old")]).await;
    streams.delete_stream("life").await.expect("delete");
    assert!(matches!(
        streams.describe_stream("life").await,
        Err(StreamError::NotFound(_))
    ));
    assert!(matches!(
        streams.put_records("life", vec![record("x", "y")]).await,
        Err(StreamError::NotFound(_))
    ));
    streams
        .create_stream(spec("life", 1))
        .await
        .expect("re-create");
    let new = put(&streams, "life", vec![record("x", "new")]).await;
    assert!(
        new[0].sequence > old[0].sequence,
        "numbers are never reused"
    );
    assert_eq!(
        streams
            .checkpoint_of("life", "g", ShardId(0))
            .await
            .expect("of"),
        None
    );
    let batch = streams
        .read("life", ShardId(0), Position(0), 10)
        .await
        .expect("read");
    assert_eq!(batch.records.len(), 1);
    assert_eq!(batch.records[0].data, Bytes::from("new"));
}

#[tokio::test]
async fn records_near_the_limits() {
    let nats = NatsServer::start();
    let streams = JetStreamStreams::connect(&nats.url).await.expect("connect");
    streams.create_stream(spec("big", 1)).await.expect("create");
    let key: String = "é".repeat(256);
    let big = NewRecord {
        partition_key: key.clone(),
        explicit_hash_key: Some(5),
        data: Bytes::from(vec![7u8; fleetcore_stream::MAX_RECORD_BYTES]),
    };
    let out = streams.put_records("big", vec![big]).await.expect("put");
    assert!(out[0].is_ok(), "{out:?}");
    let batch = streams
        .read("big", ShardId(0), Position(0), 10)
        .await
        .expect("read");
    assert_eq!(
        batch.records[0].data.len(),
        fleetcore_stream::MAX_RECORD_BYTES
    );
    assert_eq!(batch.records[0].partition_key, key);
    let too_big = NewRecord {
        partition_key: "k".into(),
        explicit_hash_key: None,
        data: Bytes::from(vec![0u8; fleetcore_stream::MAX_RECORD_BYTES + 1]),
    };
    assert!(matches!(
        streams.put_records("big", vec![too_big]).await,
        Err(StreamError::InvalidArgument(_))
    ));

    // 12 MiB of records: a read stops at 10 MiB, the next one goes on from there
    let megs: Vec<NewRecord> = (0..12u8)
        .map(|i| NewRecord {
            partition_key: "m".into(),
            explicit_hash_key: None,
            data: Bytes::from(vec![i; fleetcore_stream::MAX_RECORD_BYTES - 4096]),
        })
        .collect();
    for chunk in megs.chunks(4) {
        put(&streams, "big", chunk.to_vec()).await;
    }
    let mut from = streams
        .resolve("big", ShardId(0), StartingPosition::TrimHorizon)
        .await
        .expect("resolve");
    let mut seen = Vec::new();
    loop {
        let batch = streams
            .read("big", ShardId(0), from, 100)
            .await
            .expect("read");
        let bytes: usize = batch.records.iter().map(|r| r.data.len()).sum();
        assert!(bytes <= 10 << 20, "a read returned {bytes} bytes");
        if batch.records.is_empty() {
            break;
        }
        seen.extend(
            batch
                .records
                .iter()
                .skip_while(|r| r.partition_key != "m")
                .map(|r| r.data[0]),
        );
        from = batch.next;
    }
    assert_eq!(seen, (0..12u8).collect::<Vec<_>>());
}

#[tokio::test]
async fn acknowledged_records_survive_a_nats_server_crash_and_the_client_reconnects() {
    let mut nats = NatsServer::start();
    let streams = JetStreamStreams::connect(&nats.url).await.expect("connect");
    streams
        .create_stream(spec("durable", 2))
        .await
        .expect("create");
    let before = put(
        &streams,
        "durable",
        (0..100)
            .map(|i| record(&format!("k{i}"), &format!("b{i}")))
            .collect(),
    )
    .await;
    nats.restart();
    // the same client reconnects by itself; puts fail until it has
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        match streams
            .put_records("durable", vec![record("k1", "after")])
            .await
        {
            Ok(outcomes) if outcomes.iter().all(Result::is_ok) => break outcomes,
            _ => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no reconnect within 20 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let after = after[0].clone().expect("stored");
    for shard in [ShardId(0), ShardId(1)] {
        let batch = streams
            .read("durable", shard, Position(0), 1000)
            .await
            .expect("read");
        let mut expected: Vec<_> = before
            .iter()
            .filter(|a| a.shard == shard)
            .map(|a| a.sequence)
            .collect();
        if after.shard == shard {
            expected.push(after.sequence);
        }
        assert_eq!(
            batch.records.iter().map(|r| r.sequence).collect::<Vec<_>>(),
            expected
        );
    }
}

#[tokio::test]
async fn closed_shards_leave_once_expired_and_empty() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let nats = NatsServer::start();
    let hours = Arc::new(AtomicU64::new(0));
    let clock = {
        let hours = Arc::clone(&hours);
        Arc::new(move || {
            SystemTime::now() + Duration::from_secs(3600 * hours.load(Ordering::SeqCst))
        })
    };
    let streams = JetStreamStreams::connect_with_clock(&nats.url, clock)
        .await
        .expect("connect");
    streams
        .create_stream(spec("churn", 2))
        .await
        .expect("create");
    let ids =
        |info: fleetcore_stream::StreamInfo| info.shards.iter().map(|s| s.id.0).collect::<Vec<_>>();
    assert_eq!(
        ids(streams.update_shard_count("churn", 1).await.expect("merge")),
        [0, 1, 2]
    );
    assert_eq!(
        ids(streams.update_shard_count("churn", 2).await.expect("split")),
        [0, 1, 2, 3, 4]
    );
    put(&streams, "churn", vec![record("kept", "x")]).await;
    hours.store(25, Ordering::SeqCst);
    // 0, 1 and 2 closed more than the 24 h retention ago and hold nothing: they go
    let info = streams.update_shard_count("churn", 1).await.expect("merge");
    assert_eq!(ids(info), [3, 4, 5]);
    assert!(matches!(
        streams.read("churn", ShardId(0), Position(0), 10).await,
        Err(StreamError::NotFound(_))
    ));
    hours.store(50, Ordering::SeqCst);
    // 3 and 4 are past retention too, but the one holding a record (not expired in
    // JetStream's own time) stays readable
    let info = streams.update_shard_count("churn", 2).await.expect("split");
    let kept: Vec<u32> = ids(info);
    assert_eq!(kept.len(), 4, "{kept:?}");
    assert!(kept.contains(&5) && kept.contains(&6) && kept.contains(&7));
    let holder = kept[0];
    let batch = streams
        .read("churn", ShardId(holder), Position(0), 10)
        .await
        .expect("read");
    assert_eq!(batch.records.len(), 1);
}
