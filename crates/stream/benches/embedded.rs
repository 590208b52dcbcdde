//! Embedded stream throughput beside the disk's own fsync-bound limit, measured in the same run.
//!
//! `cargo bench -p fleetcore-stream --bench embedded` (release profile). Writes under
//! `FLEETCORE_BENCH_DIR` (default: the system temporary directory), which should be on the disk
//! being measured.
//!
//! - anchor: sequential writes of one PutRecords batch worth of frames (500 x 256 B records)
//!   followed by fdatasync, to a plain file, one batch after another;
//! - put: `put_records` batches of 500 x 256 B records with durability, from 1, 4 and 16
//!   concurrent producers (group commit lets concurrent batches share an fsync);
//! - read: every record back through `read` (limit 10,000), one shard after another.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetcore_stream::{
    EmbeddedConfig, EmbeddedStreams, NewRecord, Position, ShardId, Stream, StreamMode, StreamSpec,
};

const RECORD_BYTES: usize = 256;
const BATCH: usize = 500;
/// Frame bytes per record besides the payload: header, sequence, arrival, key length, and a
/// key like `device-3-517`.
const FRAME_OVERHEAD: usize = 8 + 26 + 12;
const TOTAL_RECORDS: usize = 1_000_000;

fn main() {
    let base = std::env::var_os("FLEETCORE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base).expect("bench directory");
    println!(
        "directory: {}; {TOTAL_RECORDS} records of {RECORD_BYTES} B per run",
        dir.path().display()
    );
    let anchor = anchor(dir.path());
    report(
        "anchor: write + fdatasync per 500-record batch",
        anchor,
        None,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for (shards, producers) in [(1, 1), (1, 4), (4, 4), (4, 16)] {
            let path = dir.path().join(format!("streams-{shards}-{producers}"));
            let streams = Arc::new(
                EmbeddedStreams::open(&path, EmbeddedConfig::default())
                    .await
                    .expect("open"),
            );
            streams
                .create_stream(StreamSpec {
                    name: "bench".into(),
                    mode: StreamMode::Provisioned,
                    shard_count: shards,
                    retention_hours: 24,
                })
                .await
                .expect("create");
            let put = put(&streams, producers).await;
            report(
                &format!("put_records, {shards} shard(s), {producers} producer(s)"),
                put,
                Some(anchor),
            );
            let read = read(&streams, shards).await;
            report(&format!("read, {shards} shard(s)"), read, None);
        }
    });
}

fn report(label: &str, elapsed: Duration, anchor: Option<Duration>) {
    let rate = TOTAL_RECORDS as f64 / elapsed.as_secs_f64();
    let mb = rate * RECORD_BYTES as f64 / 1e6;
    match anchor {
        Some(anchor) => println!(
            "{label:<50} {rate:>10.0} records/s {mb:>7.1} MB/s  {:.2}x anchor",
            anchor.as_secs_f64() / elapsed.as_secs_f64()
        ),
        None => println!("{label:<50} {rate:>10.0} records/s {mb:>7.1} MB/s"),
    }
}

/// Time to write and fdatasync TOTAL_RECORDS worth of frames, one batch at a time.
fn anchor(dir: &std::path::Path) -> Duration {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("anchor.log"))
        .expect("anchor file");
    let batch = vec![0x5a; BATCH * (RECORD_BYTES + FRAME_OVERHEAD)];
    let started = Instant::now();
    for _ in 0..TOTAL_RECORDS / BATCH {
        file.write_all(&batch).expect("write");
        file.sync_data().expect("fdatasync");
    }
    started.elapsed()
}

fn batch(producer: usize, n: usize) -> Vec<NewRecord> {
    (0..BATCH)
        .map(|i| NewRecord {
            partition_key: format!("device-{producer}-{}", (n + i) % 1000),
            explicit_hash_key: None,
            data: Bytes::from(vec![(i % 251) as u8; RECORD_BYTES]),
        })
        .collect()
}

async fn put(streams: &Arc<EmbeddedStreams>, producers: usize) -> Duration {
    let per_producer = TOTAL_RECORDS / producers / BATCH;
    let batches: Vec<Vec<Vec<NewRecord>>> = (0..producers)
        .map(|p| (0..per_producer).map(|b| batch(p, b * BATCH)).collect())
        .collect();
    let started = Instant::now();
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|batches| {
            let streams = streams.clone();
            tokio::spawn(async move {
                for batch in batches {
                    streams.put_records("bench", batch).await.expect("put");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("producer");
    }
    started.elapsed()
}

async fn read(streams: &Arc<EmbeddedStreams>, shards: u32) -> Duration {
    let started = Instant::now();
    let mut total = 0;
    for shard in 0..shards {
        let mut from = Position(0);
        loop {
            let batch = streams
                .read("bench", ShardId(shard), from, 10_000)
                .await
                .expect("read");
            if batch.records.is_empty() {
                break;
            }
            total += batch.records.len();
            from = batch.next;
        }
    }
    assert_eq!(total, TOTAL_RECORDS, "every record read back");
    started.elapsed()
}
