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

/// (shards, concurrent producers) of each put scenario.
const SCENARIOS: [(u32, usize); 4] = [(1, 1), (1, 4), (4, 4), (4, 16)];

fn main() {
    let base = std::env::var_os("FLEETCORE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir_in(&base).expect("bench directory");
    println!(
        "directory: {}; {TOTAL_RECORDS} records of {RECORD_BYTES} B per run, {rounds} rounds",
        dir.path().display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Per round: the anchor, then each scenario's put and read; medians at the end.
    let mut anchors = Vec::new();
    let mut puts = vec![Vec::new(); SCENARIOS.len()];
    let mut reads = vec![Vec::new(); SCENARIOS.len()];
    for round in 0..rounds {
        println!("round {}", round + 1);
        let anchor = anchor(dir.path());
        report(
            "anchor: write + fdatasync per 500-record batch",
            anchor,
            None,
        );
        anchors.push(anchor);
        for (i, (shards, producers)) in SCENARIOS.into_iter().enumerate() {
            let path = dir.path().join(format!("streams-{shards}-{producers}"));
            let (put, read) = runtime.block_on(scenario(&path, shards, producers));
            std::fs::remove_dir_all(&path).expect("clean up");
            report(
                &format!("put_records, {shards} shard(s), {producers} producer(s)"),
                put,
                Some(anchor),
            );
            report(&format!("read, {shards} shard(s)"), read, None);
            puts[i].push((put, anchor));
            reads[i].push(read);
        }
    }
    println!("medians over {rounds} rounds");
    report(
        "anchor: write + fdatasync per 500-record batch",
        median(&anchors),
        None,
    );
    for (i, (shards, producers)) in SCENARIOS.into_iter().enumerate() {
        let put = median(&puts[i].iter().map(|(put, _)| *put).collect::<Vec<_>>());
        let mut ratios: Vec<f64> = puts[i]
            .iter()
            .map(|(put, anchor)| anchor.as_secs_f64() / put.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        report(
            &format!("put_records, {shards} shard(s), {producers} producer(s)"),
            put,
            None,
        );
        println!(
            "{:<50} median {:.2}x anchor (same round)",
            "",
            ratios[ratios.len() / 2]
        );
        report(&format!("read, {shards} shard(s)"), median(&reads[i]), None);
    }
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

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

async fn scenario(path: &std::path::Path, shards: u32, producers: usize) -> (Duration, Duration) {
    let streams = Arc::new(
        EmbeddedStreams::open(path, EmbeddedConfig::default())
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
    let read = read(&streams, shards).await;
    (put, read)
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
