//! Crash test: a child process appends with the embedded backend under load and is killed with
//! SIGKILL; reopening must serve every acknowledged record, in order, and nothing corrupt.
//!
//! The child is this test binary itself, run again with `FLEETCORE_STREAM_CRASH_CHILD` set to
//! the data directory; it prints `ACK <shard> <sequence> <data>` for every acknowledged record.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fleetcore_stream::{
    EmbeddedConfig, EmbeddedStreams, NewRecord, ShardId, StartingPosition, Stream, StreamError,
    StreamMode, StreamSpec,
};

const CHILD_ENV: &str = "FLEETCORE_STREAM_CRASH_CHILD";
const ROUNDS: usize = 3;
const ACKS_BEFORE_KILL: usize = 4000;

/// The payload of record `n` of writer `task` in round `round`: its name and a filler derived
/// from it, so a damaged payload is recognisable.
fn payload(round: usize, task: usize, n: usize) -> String {
    let name = format!("{round}-{task}-{n}");
    let filler: String = name
        .bytes()
        .cycle()
        .take(200 + n % 50)
        .map(char::from)
        .collect();
    format!("{name}|{filler}")
}

fn well_formed(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Some((name, filler)) = text.split_once('|') else {
        return false;
    };
    let parts: Vec<usize> = name.split('-').filter_map(|p| p.parse().ok()).collect();
    parts.len() == 3 && payload(parts[0], parts[1], parts[2]) == text && !filler.is_empty()
}

fn config() -> EmbeddedConfig {
    EmbeddedConfig {
        segment_bytes: 256 * 1024,
        ..EmbeddedConfig::default()
    }
}

/// The child: appends from eight concurrent writers until killed.
async fn child(dir: &Path, round: usize) {
    let streams = Arc::new(EmbeddedStreams::open(dir, config()).await.expect("open"));
    match streams
        .create_stream(StreamSpec {
            name: "crash".into(),
            mode: StreamMode::Provisioned,
            shard_count: 4,
            retention_hours: 24,
        })
        .await
    {
        Ok(_) | Err(StreamError::AlreadyExists(_)) => {}
        Err(error) => panic!("create: {error}"),
    }
    let writers: Vec<_> = (0..8)
        .map(|task| {
            let streams = streams.clone();
            tokio::spawn(async move {
                let mut n = 0;
                loop {
                    let batch: Vec<(usize, NewRecord)> = (n..n + 1 + n % 40)
                        .map(|i| {
                            let record = NewRecord {
                                partition_key: format!("key-{}", i % 23),
                                explicit_hash_key: None,
                                data: Bytes::from(payload(round, task, i)),
                            };
                            (i, record)
                        })
                        .collect();
                    n += batch.len();
                    let records = batch.iter().map(|(_, r)| r.clone()).collect();
                    let Ok(outcomes) = streams.put_records("crash", records).await else {
                        return;
                    };
                    let mut out = std::io::stdout().lock();
                    for ((_, record), outcome) in batch.iter().zip(outcomes) {
                        let appended = outcome.expect("appended");
                        let data = std::str::from_utf8(&record.data).expect("utf-8");
                        writeln!(out, "ACK {} {} {data}", appended.shard.0, appended.sequence)
                            .expect("stdout");
                    }
                    out.flush().expect("flush");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
}

#[test]
fn acknowledged_records_survive_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let round = std::env::var("FLEETCORE_STREAM_CRASH_ROUND")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(child(Path::new(&dir), round));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked: BTreeMap<(u32, u128), String> = BTreeMap::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "acknowledged_records_survive_sigkill",
                "--exact",
                "--nocapture",
            ])
            .env(CHILD_ENV, dir.path())
            .env("FLEETCORE_STREAM_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut this_round = 0;
        while this_round < ACKS_BEFORE_KILL {
            assert!(
                Instant::now() < deadline,
                "the child acknowledged too little"
            );
            let Some(Ok(line)) = lines.next() else {
                panic!("the child stopped early");
            };
            if let Some(ack) = parse_ack(&line) {
                acked.insert((ack.0, ack.1), ack.2);
                this_round += 1;
            }
        }
        child.kill().expect("SIGKILL the child");
        // Lines already written before the kill were acknowledged too.
        for line in lines.map_while(Result::ok) {
            if let Some(ack) = parse_ack(&line) {
                acked.insert((ack.0, ack.1), ack.2);
            }
        }
        child.wait().expect("reap the child");
        verify(dir.path(), &acked);
    }
}

fn parse_ack(line: &str) -> Option<(u32, u128, String)> {
    let mut parts = line.strip_prefix("ACK ")?.splitn(3, ' ');
    let shard = parts.next()?.parse().ok()?;
    let sequence = parts.next()?.parse().ok()?;
    let data = parts.next()?.to_owned();
    well_formed(data.as_bytes()).then_some((shard, sequence, data))
}

/// Reopens the directory: every acknowledged record is there, each shard reads in increasing
/// order, every served payload is intact.
fn verify(dir: &Path, acked: &BTreeMap<(u32, u128), String>) {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let streams = EmbeddedStreams::open(dir, config()).await.expect("reopen");
            let info = streams.describe_stream("crash").await.expect("describe");
            let mut stored: BTreeMap<(u32, u128), Bytes> = BTreeMap::new();
            for shard in &info.shards {
                let mut from = streams
                    .resolve("crash", shard.id, StartingPosition::TrimHorizon)
                    .await
                    .expect("resolve");
                let mut previous = None;
                loop {
                    let batch = streams
                        .read("crash", shard.id, from, 10_000)
                        .await
                        .expect("read");
                    if batch.records.is_empty() {
                        break;
                    }
                    for record in batch.records {
                        assert!(
                            previous < Some(record.sequence),
                            "out of order in {}",
                            shard.id
                        );
                        previous = Some(record.sequence);
                        assert!(well_formed(&record.data), "a damaged record was served");
                        stored.insert((shard.id.0, record.sequence.0), record.data);
                    }
                    from = batch.next;
                }
            }
            for ((shard, sequence), data) in acked {
                let found = stored.get(&(*shard, *sequence));
                assert_eq!(
                    found.map(|d| &d[..]),
                    Some(data.as_bytes()),
                    "acknowledged record {sequence} of {} is missing or different",
                    ShardId(*shard)
                );
            }
            let newest = acked.keys().map(|(_, s)| *s).max().unwrap_or(0);
            let outcome = streams
                .put_records(
                    "crash",
                    vec![NewRecord {
                        partition_key: "after".into(),
                        explicit_hash_key: None,
                        data: Bytes::from(payload(99, 0, 0)),
                    }],
                )
                .await
                .expect("put after the crash");
            assert!(outcome[0].as_ref().expect("appended").sequence.0 > newest);
        });
}
