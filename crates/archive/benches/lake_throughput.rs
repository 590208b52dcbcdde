//! Delivery throughput into the local lake, end to end: records put into a DirectPut delivery
//! stream (durable in its internal stream), read back by the delivery task, encoded (GZIP JSON
//! lines, or Parquet) and written as objects, until the last object is in the lake.
//!
//! `benches/archive_throughput.sh` runs it beside its anchors (`gzip -1`, pyarrow) on the same
//! input. Environment: `ARCHIVE_BENCH_MB` (input size, default 64), `ARCHIVE_BENCH_INPUT` (where
//! the JSON lines input is written for the anchors), `ARCHIVE_BENCH_FORMATS` (`gzip,parquet`),
//! `ARCHIVE_BENCH_PRODUCERS` (concurrent PutRecordBatch callers of 500 records, default 4).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetcore_archive::config::S3Destination;
use fleetcore_archive::lake::LakeConfig;
use fleetcore_archive::{Archive, ArchiveSettings, CreateDeliveryStream};
use fleetcore_core::{KvStore, RedbStore};
use fleetcore_stream::{EmbeddedConfig, EmbeddedStreams, Stream};
use serde_json::json;

/// Deterministic telemetry records of about 150 bytes.
fn records(total_bytes: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut size = 0;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut seq = 0u64;
    while size < total_bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let record = json!({
            "device": format!("sensor-{:04}", x % 5000),
            "ts": 1_795_748_645_000u64 + seq * 10,
            "temp": (x % 4000) as f64 / 100.0,
            "humidity": (x % 1000) as f64 / 10.0,
            "battery": 3.0 + (x % 120) as f64 / 100.0,
            "status": if x.is_multiple_of(17) { "alarm" } else { "ok" },
            "seq": seq,
        })
        .to_string();
        size += record.len() + 1;
        out.push(Bytes::from(record));
        seq += 1;
    }
    out
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

async fn run(format: &str, input: &[Bytes]) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn KvStore> =
        Arc::new(RedbStore::open(&dir.path().join("store.redb")).expect("store"));
    let streams: Arc<dyn Stream> = Arc::new(
        EmbeddedStreams::open(dir.path().join("streams"), EmbeddedConfig::default())
            .await
            .expect("streams"),
    );
    let archive = Archive::start(
        store,
        Arc::clone(&streams),
        ArchiveSettings {
            lake: LakeConfig::Local {
                root: dir.path().join("lake"),
            },
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            backlog_limit_bytes: 1 << 30,
            shutdown_grace: Duration::from_secs(600),
            consumer_owner: "test-node".into(),
        },
        None,
    )
    .await
    .expect("archive");
    let mut destination = json!({
        "RoleARN": "arn:aws:iam::000000000000:role/f",
        "BucketARN": "arn:aws:s3:::bench",
        "Prefix": "telemetry/",
        "BufferingHints": {"SizeInMBs": 16, "IntervalInSeconds": 900},
    });
    match format {
        "gzip" => destination["CompressionFormat"] = json!("GZIP"),
        "parquet" => {
            destination["DataFormatConversionConfiguration"] = json!({"Enabled": true,
                "OutputFormatConfiguration": {"Serializer": {"ParquetSerDe": {"Compression": "SNAPPY"}}}})
        }
        other => panic!("unknown format {other}"),
    }
    let destination: S3Destination = serde_json::from_value(destination).expect("destination");
    archive
        .create(CreateDeliveryStream {
            name: "bench".into(),
            kinesis_source: None,
            destination,
            tags: Vec::new(),
        })
        .await
        .expect("create");
    let input_bytes: usize = input.iter().map(|r| r.len() + 1).sum();
    let started = Instant::now();
    // Several producers, as a fleet's rules and gateways are: their puts share fsyncs.
    let producers: usize = std::env::var("ARCHIVE_BENCH_PRODUCERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let chunks: Vec<Vec<Bytes>> = input.chunks(500).map(<[Bytes]>::to_vec).collect();
    let chunks = Arc::new(chunks);
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let (archive, chunks) = (Arc::clone(&archive), Arc::clone(&chunks));
            tokio::spawn(async move {
                for chunk in chunks.iter().skip(p).step_by(producers) {
                    let outcomes = archive
                        .put_records("bench", chunk.clone())
                        .await
                        .expect("put");
                    assert!(outcomes.iter().all(Result::is_ok));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("producer");
    }
    let put_done = started.elapsed();
    // The final flush takes in the rest of the stream and writes the last objects.
    archive.shutdown().await;
    let elapsed = started.elapsed();
    let lake = dir_bytes(&dir.path().join("lake"));
    let mb = input_bytes as f64 / 1e6;
    json!({
        "format": format,
        "records": input.len(),
        "input_mb": mb,
        "lake_mb": lake as f64 / 1e6,
        "seconds": elapsed.as_secs_f64(),
        "mb_per_s": mb / elapsed.as_secs_f64(),
        "put_only_mb_per_s": mb / put_done.as_secs_f64(),
    })
}

/// The encoding alone, in memory, on one thread: the CPU cost of a flush without the stream and
/// the file system (16 MB objects, as the end-to-end run's buffer).
fn encode_only(format: &str, input: &[Bytes]) -> serde_json::Value {
    let mb = input.iter().map(|r| r.len() + 1).sum::<usize>() as f64 / 1e6;
    let started = Instant::now();
    let mut out = 0usize;
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0;
    let mut flush = |chunk: &mut Vec<&[u8]>| {
        out += match format {
            "gzip" => fleetcore_archive::encode::json_lines(
                chunk.iter().copied(),
                fleetcore_archive::config::Compression::Gzip,
            )
            .expect("gzip")
            .len(),
            _ => fleetcore_archive::parquet::convert(
                chunk,
                None,
                fleetcore_archive::parquet::ParquetCompression::Snappy,
            )
            .expect("parquet")
            .file
            .map_or(0, |f| f.len()),
        };
        chunk.clear();
    };
    for r in input {
        chunk.push(&r[..]);
        chunk_bytes += r.len();
        if chunk_bytes >= 16 << 20 {
            flush(&mut chunk);
            chunk_bytes = 0;
        }
    }
    flush(&mut chunk);
    let seconds = started.elapsed().as_secs_f64();
    json!({
        "format": format!("{format} (encode only)"),
        "input_mb": mb,
        "lake_mb": out as f64 / 1e6,
        "seconds": seconds,
        "mb_per_s": mb / seconds,
    })
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it too, with no env: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let mb: usize = std::env::var("ARCHIVE_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 64 });
    let input = records(mb * 1_000_000);
    if let Ok(path) = std::env::var("ARCHIVE_BENCH_INPUT") {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("input file"));
        for r in &input {
            file.write_all(r)
                .and_then(|()| file.write_all(b"\n"))
                .expect("write");
        }
        file.flush().expect("flush");
    }
    let formats = std::env::var("ARCHIVE_BENCH_FORMATS").unwrap_or_else(|_| "gzip,parquet".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for format in formats.split(',') {
        let result = runtime.block_on(run(format, &input));
        println!("{result}");
        println!("{}", encode_only(format, &input));
    }
}
