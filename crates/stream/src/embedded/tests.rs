//! Unit tests of the embedded backend that need its internals (fault injection, sync counts).

use std::fs;
use std::path::Path;

use bytes::Bytes;

use super::segment::faults;
use super::*;

fn spec(shards: u32) -> StreamSpec {
    StreamSpec {
        name: "s".into(),
        mode: StreamMode::Provisioned,
        shard_count: shards,
        retention_hours: 24,
    }
}

fn record(key: &str, data: &str) -> NewRecord {
    NewRecord {
        partition_key: key.into(),
        explicit_hash_key: None,
        data: Bytes::copy_from_slice(data.as_bytes()),
    }
}

async fn all(streams: &EmbeddedStreams) -> Vec<String> {
    let batch = streams
        .read("s", ShardId(0), Position(0), 10_000)
        .await
        .expect("read");
    batch
        .records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect()
}

fn segment_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for stream in fs::read_dir(dir).expect("dir").flatten() {
        if stream.path().is_dir() {
            for shard in fs::read_dir(stream.path()).expect("stream").flatten() {
                for file in fs::read_dir(shard.path()).expect("shard").flatten() {
                    if file.path().extension().is_some_and(|e| e == "seg") {
                        total += file.metadata().expect("meta").len();
                    }
                }
            }
        }
    }
    total
}

#[tokio::test]
async fn a_full_disk_fails_the_put_and_leaves_the_log_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("streams");
    let streams = EmbeddedStreams::open(&path, EmbeddedConfig::default())
        .await
        .expect("open");
    streams.create_stream(spec(1)).await.expect("create");
    let first = streams
        .put_records("s", vec![record("k", "a"), record("k", "b")])
        .await
        .expect("put");
    let before = segment_bytes(&path);
    faults::fill_disk_once(&path);
    let failed = streams
        .put_records("s", vec![record("k", "lost-1"), record("k", "lost-2")])
        .await;
    assert!(matches!(failed, Err(StreamError::Storage(_))), "{failed:?}");
    assert_eq!(
        segment_bytes(&path),
        before,
        "the half-written tail was cut back"
    );
    assert_eq!(all(&streams).await, ["a", "b"]);
    let after = streams
        .put_records("s", vec![record("k", "c")])
        .await
        .expect("put after the disk has room again");
    let (first, after) = (
        first[1].as_ref().expect("ok").sequence,
        after[0].as_ref().expect("ok").sequence,
    );
    assert!(
        after.0 > first.0 + 2,
        "numbers of the failed records are not reused"
    );
    drop(streams);
    let streams = EmbeddedStreams::open(&path, EmbeddedConfig::default())
        .await
        .expect("reopen");
    assert_eq!(all(&streams).await, ["a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_share_fsyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("streams");
    let streams = Arc::new(
        EmbeddedStreams::open(&path, EmbeddedConfig::default())
            .await
            .expect("open"),
    );
    streams.create_stream(spec(1)).await.expect("create");
    faults::count_syncs_under(&path);
    let puts = 64;
    let tasks: Vec<_> = (0..puts)
        .map(|i| {
            let streams = streams.clone();
            tokio::spawn(async move {
                streams
                    .put_records("s", vec![record("k", &i.to_string())])
                    .await
                    .expect("put")
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("join");
    }
    let syncs = faults::syncs_under(&path);
    assert_eq!(all(&streams).await.len(), puts);
    assert!(syncs >= 1 && syncs < puts, "{syncs} fsyncs for {puts} puts");
}
