//! Recovery of damaged segment tails: whatever a crash or a bad disk leaves at the end of the
//! newest segment, reopening serves every record before the damage intact and in order, serves
//! nothing from the damage on, and goes on appending with larger sequence numbers.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use fleetcore_stream::{
    EmbeddedConfig, EmbeddedStreams, NewRecord, Record, SequenceNumber, ShardId, StartingPosition,
    Stream, StreamMode, StreamSpec,
};
use proptest::prelude::*;

/// Bytes of a stored frame: length, CRC, sequence, arrival, key length, key, data.
fn frame_len(record: &NewRecord) -> u64 {
    (8 + 16 + 8 + 2 + record.partition_key.len() + record.data.len()) as u64
}

#[derive(Debug, Clone)]
enum Damage {
    /// The newest segment ends at this fraction of its length (a torn write).
    Cut(f64),
    /// One byte of the newest segment is XORed with a non-zero value (bit rot).
    Flip(f64, u8),
    /// Garbage follows the last whole frame (a frame half-written over old bytes).
    Garbage(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0.0..=1.0f64).prop_map(Damage::Cut),
        (0.0..1.0f64, 1u8..).prop_map(|(at, x)| Damage::Flip(at, x)),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Garbage),
    ]
}

fn records() -> impl Strategy<Value = Vec<Vec<NewRecord>>> {
    let record = (
        "[a-z]{1,12}",
        proptest::collection::vec(any::<u8>(), 0..400),
    )
        .prop_map(|(key, data)| NewRecord {
            partition_key: key,
            explicit_hash_key: None,
            data: Bytes::from(data),
        });
    proptest::collection::vec(proptest::collection::vec(record, 1..6), 1..25)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for stream in std::fs::read_dir(dir).expect("dir").flatten() {
        if stream.path().is_dir() {
            for shard in std::fs::read_dir(stream.path()).expect("stream").flatten() {
                for file in std::fs::read_dir(shard.path()).expect("shard").flatten() {
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

async fn read_all(streams: &dyn Stream) -> Vec<Record> {
    let mut from = streams
        .resolve("s", ShardId(0), StartingPosition::TrimHorizon)
        .await
        .expect("resolve");
    let mut out = Vec::new();
    loop {
        let batch = streams.read("s", ShardId(0), from, 7).await.expect("read");
        if batch.records.is_empty() {
            return out;
        }
        from = batch.next;
        out.extend(batch.records);
    }
}

fn config() -> EmbeddedConfig {
    EmbeddedConfig {
        segment_bytes: 2048,
        ..EmbeddedConfig::default()
    }
}

async fn damaged_tail_case(puts: Vec<Vec<NewRecord>>, damage: Damage) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut acked: Vec<(SequenceNumber, NewRecord)> = Vec::new();
    {
        let streams = EmbeddedStreams::open(dir.path(), config())
            .await
            .expect("open");
        streams
            .create_stream(StreamSpec {
                name: "s".into(),
                mode: StreamMode::Provisioned,
                shard_count: 1,
                retention_hours: 24,
            })
            .await
            .expect("create");
        for put in puts {
            let outcomes = streams.put_records("s", put.clone()).await.expect("put");
            for (outcome, record) in outcomes.into_iter().zip(put) {
                acked.push((outcome.expect("appended").sequence, record));
            }
        }
    }
    // Which records live in the newest segment, and where its frames end.
    let files = segments(dir.path());
    let tail = files.last().expect("a segment").clone();
    let tail_len = std::fs::metadata(&tail).expect("meta").len();
    let mut before_tail = acked.len();
    let mut tail_bytes = 0;
    while tail_bytes < tail_len {
        before_tail -= 1;
        tail_bytes += frame_len(&acked[before_tail].1);
    }
    assert_eq!(tail_bytes, tail_len, "frames fill the segment exactly");
    let mut ends = Vec::new();
    let mut offset = 0;
    for (_, record) in &acked[before_tail..] {
        offset += frame_len(record);
        ends.push(offset);
    }
    // Damage the tail and work out how many records must survive.
    let mut bytes = std::fs::read(&tail).expect("read tail");
    let survivors = match damage {
        Damage::Cut(at) => {
            let cut = (at * tail_len as f64) as u64;
            bytes.truncate(cut as usize);
            before_tail + ends.iter().filter(|end| **end <= cut).count()
        }
        Damage::Flip(at, x) => {
            let at = ((at * tail_len as f64) as u64).min(tail_len.saturating_sub(1));
            if tail_len > 0 {
                bytes[at as usize] ^= x;
            }
            before_tail + ends.iter().filter(|end| **end <= at).count()
        }
        Damage::Garbage(ref garbage) => {
            bytes.extend_from_slice(garbage);
            acked.len()
        }
    };
    std::fs::write(&tail, &bytes).expect("write tail");

    let streams = EmbeddedStreams::open(dir.path(), config())
        .await
        .expect("reopen");
    let read = read_all(&streams).await;
    for (record, (sequence, original)) in read.iter().zip(&acked) {
        assert_eq!(record.sequence, *sequence);
        assert_eq!(record.partition_key, original.partition_key);
        assert_eq!(record.data, original.data);
    }
    assert_eq!(
        read.len(),
        survivors,
        "nothing from the damage on is served"
    );
    let newest = acked.iter().map(|(s, _)| *s).max().expect("acked");
    let next = NewRecord {
        partition_key: "after".into(),
        explicit_hash_key: None,
        data: Bytes::from_static(b"after the damage"),
    };
    let outcome = streams
        .put_records("s", vec![next.clone()])
        .await
        .expect("put");
    let sequence = outcome[0].as_ref().expect("appended").sequence;
    assert!(sequence > newest, "no sequence number is handed out twice");
    let read = read_all(&streams).await;
    assert_eq!(read.len(), survivors + 1);
    assert_eq!(read.last().map(|r| r.data.clone()), Some(next.data));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_damaged_tail_is_cut_back_to_its_last_valid_record(puts in records(), damage in damage()) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(damaged_tail_case(puts, damage));
    }
}
