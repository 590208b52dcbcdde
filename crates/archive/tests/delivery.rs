//! Delivery end to end on the embedded stream backend and a local lake: buffers flush on size,
//! on interval and at shutdown; a restart neither loses nor repeats records.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetcore_archive::config::S3Destination;
use fleetcore_archive::lake::LakeConfig;
use fleetcore_archive::{Archive, ArchiveError, ArchiveSettings, CreateDeliveryStream};
use fleetcore_core::{KvStore, RedbStore};
use fleetcore_stream::{EmbeddedConfig, EmbeddedStreams, Stream};
use serde_json::json;

struct Server {
    archive: Arc<Archive>,
    _streams: Arc<dyn Stream>,
}

async fn start(dir: &Path, backlog_limit_bytes: usize) -> Server {
    let store: Arc<dyn KvStore> =
        Arc::new(RedbStore::open(&dir.join("store.redb")).expect("store"));
    let streams: Arc<dyn Stream> = Arc::new(
        EmbeddedStreams::open(dir.join("streams"), EmbeddedConfig::default())
            .await
            .expect("streams"),
    );
    let archive = Archive::start(
        store,
        Arc::clone(&streams),
        ArchiveSettings {
            lake: LakeConfig::Local {
                root: dir.join("lake"),
            },
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            backlog_limit_bytes,
            shutdown_grace: Duration::from_secs(10),
            consumer_owner: "test-node".into(),
        },
        None,
    )
    .await
    .expect("archive");
    Server {
        archive,
        _streams: streams,
    }
}

fn destination(size_mb: u32, interval: u32) -> S3Destination {
    serde_json::from_value(json!({
        "RoleARN": "arn:aws:iam::000000000000:role/f",
        "BucketARN": "arn:aws:s3:::lake",
        "Prefix": "p/",
        "BufferingHints": {"SizeInMBs": size_mb, "IntervalInSeconds": interval},
    }))
    .expect("destination")
}

fn objects(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if !path.to_string_lossy().contains('#') {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dir.join("lake/lake"), &mut out);
    out
}

fn lines(dir: &Path) -> Vec<String> {
    let mut all: Vec<String> = objects(dir)
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .expect("read")
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    all.sort();
    all
}

async fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create(server: &Server, name: &str, size_mb: u32, interval: u32) {
    server
        .archive
        .create(CreateDeliveryStream {
            name: name.into(),
            kinesis_source: None,
            destination: destination(size_mb, interval),
            tags: Vec::new(),
        })
        .await
        .expect("create");
}

async fn put(server: &Server, name: &str, records: impl IntoIterator<Item = String>) {
    let outcomes = server
        .archive
        .put_records(name, records.into_iter().map(Bytes::from).collect())
        .await
        .expect("put");
    assert!(outcomes.iter().all(Result::is_ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_flushes_before_the_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), 64 << 20).await;
    create(&server, "size", 1, 900).await;
    let record = "x".repeat(10_000);
    for _ in 0..12 {
        put(&server, "size", (0..10).map(|_| record.clone())).await;
    }
    // 1.2 MB against a 1 MiB buffer: one object long before 900 s.
    wait_for("a size-triggered object", Duration::from_secs(10), || {
        !objects(dir.path()).is_empty()
    })
    .await;
    // The buffer takes whole read batches: when the reader is slower than the puts, one batch
    // holds all 120 records (the object is then written at once, still long before 900 s).
    let written = lines(dir.path()).len();
    assert!(
        (100..=120).contains(&written),
        "{written} records in the first object(s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interval_flushes_a_small_buffer_and_shutdown_flushes_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), 64 << 20).await;
    create(&server, "tick", 128, 1).await;
    put(&server, "tick", (0..5).map(|i| format!("{{\"i\":{i}}}"))).await;
    wait_for(
        "an interval-triggered object",
        Duration::from_secs(10),
        || lines(dir.path()).len() == 5,
    )
    .await;
    let key = objects(dir.path())[0].to_string_lossy().into_owned();
    assert!(key.contains("/lake/lake/p/year="), "{key}");

    server
        .archive
        .create(CreateDeliveryStream {
            name: "slow".into(),
            kinesis_source: None,
            destination: destination(128, 900),
            tags: Vec::new(),
        })
        .await
        .expect("create");
    put(&server, "slow", (5..10).map(|i| format!("{{\"i\":{i}}}"))).await;
    server.archive.shutdown().await;
    assert_eq!(
        lines(dir.path()).len(),
        10,
        "shutdown flushed the 900 s buffer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_configurations_and_delivers_each_record_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), 64 << 20).await;
    create(&server, "once", 128, 900).await;
    put(&server, "once", (0..100).map(|i| format!("{{\"i\":{i}}}"))).await;
    server.archive.shutdown().await;
    drop(server);

    let server = start(dir.path(), 64 << 20).await;
    assert_eq!(server.archive.describe("once").expect("kept").version, 1);
    put(
        &server,
        "once",
        (100..110).map(|i| format!("{{\"i\":{i}}}")),
    )
    .await;
    server.archive.shutdown().await;
    let mut expected: Vec<String> = (0..110).map(|i| format!("{{\"i\":{i}}}")).collect();
    expected.sort();
    assert_eq!(lines(dir.path()), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_refuses_puts_until_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), 1000).await;
    create(&server, "full", 128, 900).await;
    put(&server, "full", ["y".repeat(1000)]).await;
    let refused = server
        .archive
        .put_records("full", vec![Bytes::from_static(b"z")])
        .await
        .expect_err("backlog full");
    assert!(
        matches!(refused, ArchiveError::Unavailable(_)),
        "{refused:?}"
    );
}
