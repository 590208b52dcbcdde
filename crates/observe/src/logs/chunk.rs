//! The stored form of log events: a *chunk* is one row holding consecutive events of one log
//! stream, written by one put (or one drain of the platform's writers). One row per chunk, not
//! per event: a function's invocation logs arrive a few lines per invocation at tens of
//! thousands of invocations a second, and a B-tree row (its key repeating group and stream
//! names) per line cost more than the line itself.
//!
//! A chunk's key is `(group, stream, first timestamp, first sequence)`. Its events are in
//! `(timestamp, sequence)` order, their sequences consecutive from the key's, and they span at
//! most [`CHUNK_SPAN_MS`] from the first; so the events of `[start, end)` are all in the chunks
//! whose first timestamp is in `[start - CHUNK_SPAN_MS, end)`.
//!
//! Value: a format byte ([`FORMAT`]), the ingestion time (i64 ms), the event count (u32); then
//! per event its timestamp (i64 ms), its message's length (u32) and the message (UTF-8); all
//! integers little-endian.

use super::LogsError;

/// Widest span of timestamps in one chunk (PutLogEvents' own limit for one batch).
pub const CHUNK_SPAN_MS: i64 = 86_400_000;
/// Most events in one chunk.
pub const CHUNK_EVENTS: usize = 10_000;
/// Most message bytes in one chunk (one more event is let in; a message is at most ~1 MiB).
pub const CHUNK_BYTES: usize = 1_048_576;

/// The value layout written by this version.
const FORMAT: u8 = 1;
/// Format byte, ingestion time, count.
const HEADER: usize = 1 + 8 + 4;
/// Timestamp and length in front of each message.
const EVENT_HEADER: usize = 8 + 4;

/// A stored event, as reads return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// When it happened, epoch milliseconds.
    pub timestamp: i64,
    /// Its sequence: unique, and increasing in the order events were stored.
    pub seq: u64,
    /// When the store took it, epoch milliseconds.
    pub ingestion: i64,
    /// Its text.
    pub message: String,
}

/// Whether an event at `timestamp` may join a chunk whose first event is at `first` and which
/// holds `count` events of `bytes` message bytes.
pub fn fits(first: i64, count: usize, bytes: usize, timestamp: i64) -> bool {
    count < CHUNK_EVENTS && bytes < CHUNK_BYTES && timestamp <= first.saturating_add(CHUNK_SPAN_MS)
}

/// Cuts `events` (timestamp order) into runs that each fit one chunk: the index ranges.
pub fn runs(events: &[(i64, &str)]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, (timestamp, message)) in events.iter().enumerate() {
        if i > start && !fits(events[start].0, i - start, bytes, *timestamp) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += message.len();
    }
    if start < events.len() {
        out.push(start..events.len());
    }
    out
}

/// The row value of a chunk holding `events` (timestamp order), taken in at `ingestion`.
pub fn encode(ingestion: i64, events: &[(i64, &str)], out: &mut Vec<u8>) {
    out.clear();
    let bytes: usize = events.iter().map(|(_, m)| EVENT_HEADER + m.len()).sum();
    out.reserve(HEADER + bytes);
    out.push(FORMAT);
    out.extend_from_slice(&ingestion.to_le_bytes());
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for (timestamp, message) in events {
        out.extend_from_slice(&timestamp.to_le_bytes());
        out.extend_from_slice(&(message.len() as u32).to_le_bytes());
        out.extend_from_slice(message.as_bytes());
    }
}

/// Reads a chunk's events one by one: `(timestamp, sequence, ingestion, message)`.
pub struct Events<'a> {
    rest: &'a [u8],
    seq: u64,
    left: u32,
    ingestion: i64,
}

fn corrupt() -> LogsError {
    LogsError::Store("a stored chunk of log events cannot be read".into())
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], LogsError> {
    if bytes.len() < n {
        return Err(corrupt());
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Ok(head)
}

fn int<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N], LogsError> {
    take(bytes, N)?.try_into().map_err(|_| corrupt())
}

/// The events of the chunk `value`, whose key's first sequence is `first_seq`.
pub fn events(first_seq: u64, value: &[u8]) -> Result<Events<'_>, LogsError> {
    let mut rest = value;
    if take(&mut rest, 1)? != [FORMAT] {
        return Err(corrupt());
    }
    let ingestion = i64::from_le_bytes(int(&mut rest)?);
    let left = u32::from_le_bytes(int(&mut rest)?);
    Ok(Events {
        rest,
        seq: first_seq,
        left,
        ingestion,
    })
}

impl<'a> Iterator for Events<'a> {
    type Item = Result<(i64, u64, i64, &'a str), LogsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let event = (|| {
            let timestamp = i64::from_le_bytes(int(&mut self.rest)?);
            let len = u32::from_le_bytes(int(&mut self.rest)?) as usize;
            let message = std::str::from_utf8(take(&mut self.rest, len)?).map_err(|_| corrupt())?;
            Ok((timestamp, self.seq, self.ingestion, message))
        })();
        self.seq += 1;
        if event.is_err() {
            self.left = 0;
        }
        Some(event)
    }
}

/// Appends the events of chunk `value` (first sequence `first_seq`) with a timestamp in
/// `[start, end)` to `out`.
pub fn read_into(
    first_seq: u64,
    value: &[u8],
    start: i64,
    end: i64,
    out: &mut Vec<StoredEvent>,
) -> Result<(), LogsError> {
    for event in events(first_seq, value)? {
        let (timestamp, seq, ingestion, message) = event?;
        if timestamp >= end {
            break;
        }
        if timestamp >= start {
            out.push(StoredEvent {
                timestamp,
                seq,
                ingestion,
                message: message.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_reads_back_its_events_with_consecutive_sequences() {
        let mut value = Vec::new();
        encode(77, &[(10, "a\n"), (10, ""), (12, "ünï")], &mut value);
        let mut out = Vec::new();
        read_into(500, &value, i64::MIN, i64::MAX, &mut out).expect("read");
        let got: Vec<_> = out
            .iter()
            .map(|e| (e.timestamp, e.seq, e.ingestion, e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (10, 500, 77, "a\n"),
                (10, 501, 77, ""),
                (12, 502, 77, "ünï")
            ]
        );
        // A time range keeps the sequences of the events it selects.
        out.clear();
        read_into(500, &value, 11, 13, &mut out).expect("read");
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].seq, out[0].message.as_str()), (502, "ünï"));
    }

    #[test]
    fn a_damaged_chunk_is_an_error_not_a_panic() {
        let mut value = Vec::new();
        encode(1, &[(10, "hello")], &mut value);
        for cut in 0..value.len() {
            let mut out = Vec::new();
            assert!(read_into(0, &value[..cut], i64::MIN, i64::MAX, &mut out).is_err());
        }
        value[0] = 9;
        assert!(events(0, &value).is_err());
    }

    #[test]
    fn runs_respect_the_span_the_count_and_the_bytes() {
        let day = CHUNK_SPAN_MS;
        let spread = [(0, "a"), (day, "b"), (day + 1, "c"), (3 * day, "d")];
        assert_eq!(runs(&spread), [0..2, 2..3, 3..4]);
        let many: Vec<(i64, &str)> = (0..CHUNK_EVENTS as i64 + 1).map(|t| (t, "x")).collect();
        assert_eq!(
            runs(&many),
            [0..CHUNK_EVENTS, CHUNK_EVENTS..CHUNK_EVENTS + 1]
        );
        let big = "y".repeat(CHUNK_BYTES / 2);
        let large = [(0, big.as_str()), (0, big.as_str()), (0, "z")];
        assert_eq!(runs(&large), [0..2, 2..3]);
        assert!(runs(&[]).is_empty());
    }
}
