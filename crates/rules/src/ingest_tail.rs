//! The newest durable records of one ingest partition, kept in memory by its writer so that a
//! partition reader that keeps up takes them from here instead of reading back what was just
//! written (a blocking-pool read, a copy and a record allocation per message). A reader that
//! is behind the oldest record held (after a restart, or after falling far behind) reads the
//! log as before.
//!
//! Bounded: at most [`MAX_RECORDS`] records and [`MAX_BYTES`] bytes; the oldest are dropped
//! first (they stay in the log), which moves the position from which the tail is complete.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fleetcore_stream::{Position, Record, SequenceNumber};
use parking_lot::Mutex;
use tokio::sync::watch;

/// Most records held.
const MAX_RECORDS: usize = 8192;
/// Most bytes of record data held.
const MAX_BYTES: usize = 16 << 20;

struct Held {
    records: VecDeque<Record>,
    bytes: usize,
    /// Every record of the log at or after this position is held (or not appended yet).
    complete_from: Position,
}

/// What a reader at some position gets from the tail.
#[derive(Debug)]
pub enum TailRead {
    /// The records at and after the position (empty: none appended since).
    Records(Vec<Record>),
    /// The tail no longer holds everything after the position: read the log.
    Behind,
}

/// The newest durable records of one partition.
pub struct IngestTail {
    held: Mutex<Held>,
    /// Where the next appended record will be: moves after each append.
    end: watch::Sender<Position>,
}

impl IngestTail {
    /// An empty tail of a log whose next record will be at or after `next`.
    pub fn new(next: Position) -> IngestTail {
        IngestTail {
            held: Mutex::new(Held {
                records: VecDeque::new(),
                bytes: 0,
                complete_from: next,
            }),
            end: watch::channel(next).0,
        }
    }

    /// Adds records just made durable, in log order, with their sequence numbers. The arrival
    /// time is now, when the rules engine receives them (AWS's `timestamp()`), to the
    /// millisecond as the log keeps it.
    pub fn push(&self, appended: impl IntoIterator<Item = (SequenceNumber, Bytes)>) {
        let now = UNIX_EPOCH
            + Duration::from_millis(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            );
        let mut held = self.held.lock();
        let mut last = None;
        for (sequence, data) in appended {
            held.bytes += data.len();
            held.records.push_back(Record {
                sequence,
                arrival: now,
                // The reader never looks at it: every ingest record has the same key.
                partition_key: String::new(),
                data,
            });
            last = Some(sequence);
        }
        while held.records.len() > MAX_RECORDS || held.bytes > MAX_BYTES {
            let Some(dropped) = held.records.pop_front() else {
                break;
            };
            held.bytes -= dropped.data.len();
            held.complete_from = Position::after(dropped.sequence);
        }
        drop(held);
        if let Some(last) = last {
            self.end.send_replace(Position::after(last));
        }
    }

    /// Up to `limit` records at and after `from`, or [`TailRead::Behind`] if some of them are
    /// no longer held.
    pub fn read(&self, from: Position, limit: usize) -> TailRead {
        let held = self.held.lock();
        if from.0 < held.complete_from.0 {
            return TailRead::Behind;
        }
        let start = held.records.partition_point(|r| r.sequence.0 < from.0);
        TailRead::Records(held.records.range(start..).take(limit).cloned().collect())
    }

    /// Resolves once a record at or after `from` has been appended, or after `timeout`.
    pub async fn wait_past(&self, from: Position, timeout: Duration) {
        let mut end = self.end.subscribe();
        let _ = tokio::time::timeout(timeout, end.wait_for(|end| end.0 > from.0)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(read: TailRead) -> Vec<u128> {
        match read {
            TailRead::Records(records) => records.iter().map(|r| r.sequence.0).collect(),
            TailRead::Behind => panic!("behind"),
        }
    }

    fn appended(range: std::ops::Range<u128>) -> Vec<(SequenceNumber, Bytes)> {
        range
            .map(|n| (SequenceNumber(n), Bytes::from(vec![0u8; 10])))
            .collect()
    }

    #[test]
    fn a_reader_that_keeps_up_gets_every_record_in_order() {
        let tail = IngestTail::new(Position(100));
        assert!(seqs(tail.read(Position(100), 10)).is_empty());
        tail.push(appended(100..105));
        assert_eq!(seqs(tail.read(Position(100), 3)), [100, 101, 102]);
        assert_eq!(seqs(tail.read(Position(103), 10)), [103, 104]);
        assert!(seqs(tail.read(Position(105), 10)).is_empty());
        // A reader before where the tail started must read the log.
        assert!(matches!(tail.read(Position(99), 10), TailRead::Behind));
    }

    #[test]
    fn dropping_the_oldest_sends_a_reader_behind_them_to_the_log() {
        let tail = IngestTail::new(Position(0));
        tail.push(appended(0..(MAX_RECORDS as u128 + 5)));
        assert!(matches!(tail.read(Position(4), 1), TailRead::Behind));
        assert_eq!(seqs(tail.read(Position(5), 1)), [5]);
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_when_records_arrive() {
        let tail = std::sync::Arc::new(IngestTail::new(Position(7)));
        let waiter = {
            let tail = std::sync::Arc::clone(&tail);
            tokio::spawn(async move {
                tail.wait_past(Position(7), Duration::from_secs(30)).await;
                seqs(tail.read(Position(7), 10))
            })
        };
        tail.push(appended(7..9));
        let got = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(got, [7, 8]);
    }
}
