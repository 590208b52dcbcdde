//! The functions' invocation logs in CloudWatch Logs, where Lambda writes them: log group
//! `/aws/lambda/<function>`, stream `YYYY/MM/DD/[<version>]<instance>` (one instance id per
//! server run, as Lambda has one per execution environment), one event per line (`START`, each
//! line the function wrote, `END`, `REPORT`).
//!
//! The functions capability hands each framed log through core's [`InvocationLogSink`] seam
//! (the binary wires it). Why this direction rather than reading the functions' log files at
//! query time: the files hold no timestamps (GetLogEvents and FilterLogEvents select by time),
//! and reading them would re-parse every file on every query; here the text is copied once, into
//! the queue, and stored once, with retention and filter patterns working as for any group.
//!
//! The queue holds [`QUEUE_DEPTH`] hand-offs (an invocation's log, or a batch's); when it is full
//! the log is dropped and counted (`fleetcore_observe_function_logs_dropped_total`): an
//! invocation never waits for the store. The writer commits at most once per [`PACE`], all it
//! finds queued in one transaction: a commit is an fsync, and one per hand-off cost more CPU
//! than storing the lines (logs show up at most that much later).

use std::sync::Arc;

use fleetcore_core::InvocationLogSink;
use tokio::sync::mpsc;

use super::{Appended, LogStore};
use crate::cloudwatch::now_secs;

/// Invocation logs waiting for the writer before new ones are dropped.
pub const QUEUE_DEPTH: usize = 4096;
/// Hand-offs the writer takes from the queue at once.
const DRAIN: usize = 1024;
/// Least time between two commits of the writer.
pub const PACE: std::time::Duration = std::time::Duration::from_millis(50);

/// One invocation's log (or a batch of invocations' logs), for one stream.
struct Entry {
    group: String,
    stream: String,
    timestamp: i64,
    /// Framed lines; each line, its `\n` kept, is one event.
    text: String,
}

/// The seam's implementation: a bounded queue drained into the log store by [`start`]'s task.
pub struct LambdaLogFeed {
    queue: mpsc::Sender<Entry>,
    instance: String,
}

/// The group of `function`'s logs.
pub fn group_name(function: &str) -> String {
    format!("/aws/lambda/{function}")
}

/// Starts the writer of invocation logs into `store`; the returned feed is what the functions
/// capability is given.
pub fn start(store: Arc<LogStore>) -> Arc<LambdaLogFeed> {
    let (queue, mut receiver) = mpsc::channel::<Entry>(QUEUE_DEPTH);
    tokio::spawn(async move {
        let mut taken = Vec::with_capacity(DRAIN);
        let mut last = tokio::time::Instant::now();
        while receiver.recv_many(&mut taken, DRAIN).await > 0 {
            // Let a burst gather: at most one commit per PACE.
            tokio::time::sleep_until(last + PACE).await;
            while taken.len() < DRAIN
                && let Ok(entry) = receiver.try_recv()
            {
                taken.push(entry);
            }
            last = tokio::time::Instant::now();
            let entries = std::mem::take(&mut taken);
            let store = Arc::clone(&store);
            let written = tokio::task::spawn_blocking(move || write(&store, &entries)).await;
            if let Ok(Err(e)) = written {
                tracing::warn!(error = %e, "function invocation logs not stored");
            }
        }
    });
    Arc::new(LambdaLogFeed {
        queue,
        instance: format!("{:032x}", (now_secs() * 1e9) as u128),
    })
}

/// Stores the entries in one transaction: one line, one event; consecutive entries of the
/// same stream together (the store cuts them into chunks).
fn write(store: &LogStore, entries: &[Entry]) -> Result<(), super::LogsError> {
    let mut parts: Vec<Appended<'_>> = Vec::new();
    for entry in entries {
        let lines = entry
            .text
            .split_inclusive('\n')
            .map(|line| (entry.timestamp, line));
        match parts.last_mut() {
            Some(part) if part.group == entry.group && part.stream == entry.stream => {
                part.events.extend(lines);
            }
            _ => parts.push(Appended {
                group: &entry.group,
                stream: &entry.stream,
                events: lines.collect(),
            }),
        }
    }
    store.append_all(parts)
}

/// `2026/12/06`, the date part of a Lambda log stream name (UTC).
fn date_of(ms: i64) -> String {
    let format = time::macros::format_description!("[year]/[month]/[day]");
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

impl InvocationLogSink for LambdaLogFeed {
    fn invocation_log(&self, function: &str, version: &str, log: &str) {
        let timestamp = (now_secs() * 1000.0) as i64;
        let entry = Entry {
            group: group_name(function),
            stream: format!("{}/[{version}]{}", date_of(timestamp), self.instance),
            timestamp,
            text: log.to_string(),
        };
        if self.queue.try_send(entry).is_err() {
            metrics::counter!("fleetcore_observe_function_logs_dropped_total").increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn invocation_logs_land_in_the_function_group_one_event_per_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Arc::new(LogStore::open(dir.path(), "us-east-1", "000000000000").expect("open"));
        let feed = start(Arc::clone(&store));
        feed.invocation_log(
            "f1",
            "$LATEST",
            "START RequestId: r1 Version: $LATEST\nhello\nEND RequestId: r1\nREPORT RequestId: r1\tDuration: 1.00 ms\t\n",
        );
        // The stream is created before its events are stored: wait for all four events.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let (name, events) = loop {
            let streams = store.describe_streams("/aws/lambda/f1", None, false, false);
            let name = streams.ok().and_then(|s| {
                s["logStreams"][0]["logStreamName"]
                    .as_str()
                    .map(str::to_string)
            });
            if let Some(name) = name
                && let Ok(events) = store.stream_events("/aws/lambda/f1", &name, i64::MIN, i64::MAX)
                && events.len() == 4
            {
                break (name, events);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the events did not appear"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert!(name.contains("/[$LATEST]"), "{name}");
        assert_eq!(name.len(), "2026/12/06/[$LATEST]".len() + 32, "{name}");
        let lines: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[1], "hello\n");
        assert!(lines[3].starts_with("REPORT RequestId: r1"));
    }
}
