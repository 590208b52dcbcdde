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

/// Opens the store at `path` with the default configuration.
async fn open(path: &Path) -> EmbeddedStreams {
    EmbeddedStreams::open(path, EmbeddedConfig::default())
        .await
        .expect("open")
}

#[tokio::test]
async fn a_full_disk_fails_the_put_and_leaves_the_log_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("streams");
    let streams = open(&path).await;
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
    let streams = open(&path).await;
    assert_eq!(all(&streams).await, ["a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_share_fsyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("streams");
    let streams = Arc::new(open(&path).await);
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

#[tokio::test]
async fn numbers_stay_unique_across_many_reservations_and_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("streams");
    let mut seen = Vec::new();
    for _ in 0..3 {
        let streams = open(&path).await;
        if streams.describe_stream("s").await.is_err() {
            streams.create_stream(spec(2)).await.expect("create");
        }
        for i in 0..20 {
            let records = (0..3).map(|j| record(&format!("{i}-{j}"), "x")).collect();
            for outcome in streams.put_records("s", records).await.expect("put") {
                seen.push(outcome.expect("appended").sequence);
            }
        }
        let file: serde_json::Value =
            serde_json::from_slice(&fs::read(path.join("catalog.json")).expect("catalog"))
                .expect("json");
        let reserved = file["streams"]["s"]["reserved"].as_u64().expect("reserved");
        let newest = seen.iter().max().expect("some").0 as u64;
        assert!(
            newest < reserved,
            "every number handed out was reserved on disk first"
        );
    }
    // One counter per stream: in put order, across shards and restarts, numbers only grow.
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
}

/// A record for shard `shard` of `shards` (by explicit hash key).
fn record_for(shard: u32, shards: u32, data: &str) -> NewRecord {
    NewRecord {
        partition_key: "k".into(),
        explicit_hash_key: Some(crate::routing::uniform_ranges(shards)[shard as usize].start),
        data: Bytes::copy_from_slice(data.as_bytes()),
    }
}

/// Every record of `shard`, as (sequence, data), through GetRecords.
async fn shard_records(streams: &EmbeddedStreams, shard: u32) -> Vec<(u128, String)> {
    let mut from = streams
        .resolve("s", ShardId(shard), StartingPosition::TrimHorizon)
        .await
        .expect("resolve");
    let mut out = Vec::new();
    loop {
        let batch = streams
            .read("s", ShardId(shard), from, 3)
            .await
            .expect("read");
        if batch.records.is_empty() {
            return out;
        }
        from = batch.next;
        out.extend(
            batch
                .records
                .iter()
                .map(|r| (r.sequence.0, String::from_utf8_lossy(&r.data).into_owned())),
        );
    }
}

/// The segment files under a streams directory, by shard directory name.
fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for stream in fs::read_dir(dir).expect("dir").flatten() {
        if stream.path().is_dir() {
            for shard in fs::read_dir(stream.path()).expect("stream").flatten() {
                for file in fs::read_dir(shard.path()).expect("shard").flatten() {
                    if file.path().extension().is_some_and(|e| e == "seg") {
                        files.push(file.path());
                    }
                }
            }
        }
    }
    files.sort();
    files
}

/// Copies a streams directory as it is on disk right now (what a power loss would find, before
/// the damage the test adds).
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[tokio::test]
async fn a_commit_touching_four_shards_costs_one_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("streams");
    let streams = open(&path).await;
    streams.create_stream(spec(4)).await.expect("create");
    let put = |round: usize| {
        (0..4)
            .map(|shard| record_for(shard, 4, &format!("{round}-{shard}")))
            .collect::<Vec<_>>()
    };
    // The first put creates each shard's first segment (those are synced with their directory).
    streams.put_records("s", put(0)).await.expect("put");
    faults::count_syncs_under(&path);
    for round in 1..=3 {
        let outcomes = streams.put_records("s", put(round)).await.expect("put");
        let shards: Vec<u32> = outcomes
            .iter()
            .map(|o| o.as_ref().expect("appended").shard.0)
            .collect();
        assert_eq!(shards, [0, 1, 2, 3], "the put touches every shard");
    }
    assert_eq!(faults::syncs_under(&path), 3, "one fsync per commit");
    for shard in 0..4 {
        let data: Vec<String> = shard_records(&streams, shard)
            .await
            .into_iter()
            .map(|(_, data)| data)
            .collect();
        assert_eq!(
            data,
            (0..4).map(|r| format!("{r}-{shard}")).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn acknowledged_records_survive_a_power_loss_that_tore_every_segment_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("streams");
    let config = || EmbeddedConfig {
        segment_bytes: 4096,
        ..EmbeddedConfig::default()
    };
    let streams = EmbeddedStreams::open(&path, config()).await.expect("open");
    streams.create_stream(spec(2)).await.expect("create");
    let mut acked: Vec<Vec<(u128, String)>> = vec![Vec::new(), Vec::new()];
    let put = |round: usize, shard: u32| {
        record_for(
            shard,
            2,
            &format!("{round}-{shard}-{}", "x".repeat(round % 7 * 20)),
        )
    };
    // Synced lengths: a segment is synced by the put that creates it.
    let mut synced = std::collections::HashMap::new();
    for round in 0..60 {
        let records = vec![put(round, 0), put(round, 1), put(round + 1000, 0)];
        let datas: Vec<String> = records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.data).into_owned())
            .collect();
        let before = segment_files(&path);
        let outcomes = streams.put_records("s", records).await.expect("put");
        for (outcome, data) in outcomes.into_iter().zip(datas) {
            let appended = outcome.expect("appended");
            acked[appended.shard.0 as usize].push((appended.sequence.0, data));
        }
        for file in segment_files(&path) {
            if !before.contains(&file) {
                // Created by this put, which synced it.
                synced.insert(file.clone(), fs::metadata(&file).expect("meta").len());
            }
        }
    }
    let files = segment_files(&path);
    assert!(files.len() > 2, "the shards rolled to new segments");

    // A crash that lost nothing: every record once, none twice.
    let intact = dir.path().join("intact");
    copy_dir(&path, &intact);
    // A power loss: the unsynced part of every newest segment is torn (cut, or a hole of zeros
    // with later bytes present), and the journal ends in half a frame of an unanswered batch.
    let torn = dir.path().join("torn");
    copy_dir(&path, &torn);
    drop(streams);
    let newest: Vec<&std::path::PathBuf> = files
        .iter()
        .filter(|file| {
            let shard = file.parent().expect("shard");
            !files
                .iter()
                .any(|other| other.parent() == Some(shard) && other > *file)
        })
        .collect();
    assert_eq!(newest.len(), 2);
    for (i, file) in newest.into_iter().enumerate() {
        let copy = torn.join(file.strip_prefix(&path).expect("under"));
        let mut bytes = fs::read(&copy).expect("read");
        let synced = *synced.get(file).expect("a synced length") as usize;
        assert!(
            bytes.len() > synced + 64,
            "the segment has an unsynced tail"
        );
        let middle = synced + (bytes.len() - synced) / 2;
        if i == 0 {
            bytes.truncate(middle);
        } else {
            bytes[synced + 1..middle].fill(0);
        }
        fs::write(&copy, &bytes).expect("write");
    }
    let mut journal = fs::read(torn.join(journal::FILE_NAME)).expect("journal");
    journal.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 5]);
    fs::write(torn.join(journal::FILE_NAME), journal).expect("write");

    for copy in [intact, torn] {
        let streams = EmbeddedStreams::open(&copy, config()).await.expect("open");
        for shard in 0..2 {
            assert_eq!(
                shard_records(&streams, shard).await,
                acked[shard as usize],
                "{} shard {shard}",
                copy.display()
            );
        }
        let newest = acked
            .iter()
            .flatten()
            .map(|(s, _)| *s)
            .max()
            .expect("acked");
        let after = streams
            .put_records("s", vec![record_for(1, 2, "after")])
            .await
            .expect("put");
        let after = after[0].as_ref().expect("appended").sequence.0;
        assert!(after > newest, "no sequence number is handed out twice");
        drop(streams);
        let streams = EmbeddedStreams::open(&copy, config())
            .await
            .expect("reopen");
        let mut expected = acked[1].clone();
        expected.push((after, "after".into()));
        assert_eq!(shard_records(&streams, 1).await, expected);
        assert_eq!(shard_records(&streams, 0).await, acked[0]);
    }
}

#[tokio::test]
async fn a_data_folder_without_a_journal_opens_with_its_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("streams");
    {
        let streams = open(&path).await;
        streams.create_stream(spec(1)).await.expect("create");
        streams
            .put_records("s", vec![record("k", "a"), record("k", "b")])
            .await
            .expect("put");
    }
    // Folders written before the journal existed have none.
    fs::remove_file(path.join(journal::FILE_NAME)).expect("remove");
    let streams = open(&path).await;
    assert_eq!(all(&streams).await, ["a", "b"]);
    streams
        .put_records("s", vec![record("k", "c")])
        .await
        .expect("put");
    assert_eq!(all(&streams).await, ["a", "b", "c"]);
}
