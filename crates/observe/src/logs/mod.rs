//! The `logs` service (CloudWatch Logs, JSON 1.1, `X-Amz-Target: Logs_20140328.<Op>`): log
//! groups and streams, PutLogEvents, GetLogEvents, FilterLogEvents, retention; stored in
//! `<data>/logs/logs.redb`. The platform writes its own events here too ([`LogStore::append`]).

mod chunk;
pub mod filter;
pub mod lambda;
pub mod platform;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use fleetcore_api::extract::content_decoded;
use fleetcore_api::{ApiError, RequestContext};
use redb::{
    Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle, WriteTransaction,
};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::cloudwatch::now_secs;
pub use chunk::StoredEvent;
use filter::FilterPattern;

/// Group name to `{"created": ms, "retention": days|null}`.
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
/// `(group, stream)` to `{"created": ms, "first": ms, "last": ms, "ingested": ms, "bytes": n}`.
const STREAMS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("streams");
/// `(group, stream, first timestamp ms, first sequence)` to a chunk of events ([`chunk`]).
const CHUNKS: TableDefinition<(&str, &str, i64, u64), &[u8]> = TableDefinition::new("chunks");
/// A store written before chunks: `(group, stream, timestamp ms, sequence)` to
/// `{"m": message, "i": ingestion ms}`, one row per event; moved into chunks when opened.
const EVENTS: TableDefinition<(&str, &str, i64, u64), &[u8]> = TableDefinition::new("events");

/// Retention values AWS accepts, in days.
const RETENTION_DAYS: &[i64] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];
/// Most events per PutLogEvents.
const MAX_BATCH: usize = 10_000;
/// Most bytes per PutLogEvents (each event counts 26 bytes more, as AWS counts).
const MAX_BATCH_BYTES: usize = 1_048_576;
/// Largest event message.
const MAX_EVENT_BYTES: usize = 1_048_550;
/// Events a GetLogEvents / FilterLogEvents page returns at most.
const MAX_PAGE: usize = 10_000;

/// A Logs API failure, in the Logs service's codes (all 400, as AWS answers them).
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// `InvalidParameterException`.
    #[error("{0}")]
    Invalid(String),
    /// `ResourceNotFoundException`.
    #[error("{0}")]
    NotFound(String),
    /// `ResourceAlreadyExistsException`.
    #[error("{0}")]
    Exists(String),
    /// `ServiceUnavailableException` (the store failed).
    #[error("log store: {0}")]
    Store(String),
}

macro_rules! store_error {
    ($($t:ty),*) => {$(
        impl From<$t> for LogsError {
            fn from(e: $t) -> LogsError {
                LogsError::Store(e.to_string())
            }
        }
    )*};
}
store_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl LogsError {
    fn to_api(&self) -> ApiError {
        let (code, status) = match self {
            LogsError::Invalid(_) => ("InvalidParameterException", StatusCode::BAD_REQUEST),
            LogsError::NotFound(_) => ("ResourceNotFoundException", StatusCode::BAD_REQUEST),
            LogsError::Exists(_) => ("ResourceAlreadyExistsException", StatusCode::BAD_REQUEST),
            LogsError::Store(_) => (
                "ServiceUnavailableException",
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        };
        ApiError::new(code, status, self.to_string()).json11()
    }
}

fn json_of(bytes: &[u8]) -> Json {
    serde_json::from_slice(bytes).unwrap_or(Json::Null)
}

fn now_ms() -> i64 {
    (now_secs() * 1000.0) as i64
}

/// One event to append.
#[derive(Debug, Clone, Deserialize)]
pub struct InputEvent {
    /// When it happened, epoch milliseconds.
    pub timestamp: i64,
    /// Its text.
    pub message: String,
}

/// Events of one log stream the platform appends ([`LogStore::append_all`]): borrowed
/// `(timestamp ms, message)` pairs.
pub struct Appended<'a> {
    /// The log group (created if missing).
    pub group: &'a str,
    /// The log stream (created if missing).
    pub stream: &'a str,
    /// The events; any order (they are stored in timestamp order).
    pub events: Vec<(i64, &'a str)>,
}

/// What [`LogStore::store_events`] refused, by PutLogEvents' `rejectedLogEventsInfo` keys.
type Rejected = serde_json::Map<String, Json>;

/// The log store.
pub struct LogStore {
    db: Database,
    seq: AtomicU64,
    region: String,
    account_id: String,
}

impl LogStore {
    /// Opens (or creates) the store in `dir`; a store written before chunks is converted.
    pub fn open(
        dir: &std::path::Path,
        region: &str,
        account_id: &str,
    ) -> Result<LogStore, LogsError> {
        std::fs::create_dir_all(dir).map_err(|e| LogsError::Store(e.to_string()))?;
        let db = Database::create(dir.join("logs.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(GROUPS)?;
        txn.open_table(STREAMS)?;
        txn.open_table(CHUNKS)?;
        migrate_events(&txn)?;
        txn.commit()?;
        Ok(LogStore {
            db,
            // Microseconds since the epoch: later than any sequence of an earlier run.
            seq: AtomicU64::new((now_secs() * 1e6) as u64),
            region: region.to_string(),
            account_id: account_id.to_string(),
        })
    }

    fn group_arn(&self, group: &str) -> String {
        format!(
            "arn:aws:logs:{}:{}:log-group:{group}",
            self.region, self.account_id
        )
    }

    /// CreateLogGroup.
    pub fn create_group(&self, name: &str, retention: Option<i64>) -> Result<(), LogsError> {
        check_group_name(name)?;
        let txn = self.db.begin_write()?;
        if !insert_group(&txn, name, retention)? {
            return Err(LogsError::Exists(
                "The specified log group already exists".into(),
            ));
        }
        txn.commit()?;
        Ok(())
    }

    /// CreateLogStream.
    pub fn create_stream(&self, group: &str, stream: &str) -> Result<(), LogsError> {
        check_stream_name(stream)?;
        let txn = self.db.begin_write()?;
        if txn.open_table(GROUPS)?.get(group)?.is_none() {
            return Err(no_group());
        }
        if !insert_stream(&txn, group, stream)? {
            return Err(LogsError::Exists(
                "The specified log stream already exists".into(),
            ));
        }
        txn.commit()?;
        Ok(())
    }

    /// Appends events (the platform's own writer): creates the group and stream if needed.
    pub fn append(
        &self,
        group: &str,
        stream: &str,
        events: &[InputEvent],
    ) -> Result<(), LogsError> {
        self.append_all(vec![Appended {
            group,
            stream,
            events: events
                .iter()
                .map(|e| (e.timestamp, e.message.as_str()))
                .collect(),
        }])
    }

    /// Appends events of several streams in one transaction (one commit), creating groups and
    /// streams as needed. Events outside the time window PutLogEvents accepts (or past their
    /// group's retention) are left out, as PutLogEvents leaves them out.
    pub fn append_all(&self, parts: Vec<Appended<'_>>) -> Result<(), LogsError> {
        let txn = self.db.begin_write()?;
        let now = now_ms();
        for mut part in parts {
            insert_group(&txn, part.group, None)?;
            insert_stream(&txn, part.group, part.stream)?;
            part.events.sort_by_key(|(timestamp, _)| *timestamp);
            self.store_events(&txn, part.group, part.stream, &part.events, now)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// PutLogEvents: the accepted events are stored; too old / too new / expired ones are
    /// reported by index, as AWS does. Sequence tokens are accepted and ignored (AWS today).
    pub fn put(&self, group: &str, stream: &str, events: &[InputEvent]) -> Result<Json, LogsError> {
        if events.is_empty() || events.len() > MAX_BATCH {
            return Err(LogsError::Invalid(format!(
                "logEvents must hold 1 to {MAX_BATCH} events"
            )));
        }
        let bytes: usize = events.iter().map(|e| e.message.len() + 26).sum();
        if bytes > MAX_BATCH_BYTES {
            return Err(LogsError::Invalid(format!(
                "the batch is {bytes} bytes; at most {MAX_BATCH_BYTES}"
            )));
        }
        if events.iter().any(|e| e.message.len() > MAX_EVENT_BYTES) {
            return Err(LogsError::Invalid(format!(
                "an event message is larger than {MAX_EVENT_BYTES} bytes"
            )));
        }
        if events.windows(2).any(|w| w[1].timestamp < w[0].timestamp) {
            return Err(LogsError::Invalid(
                "Log events in a single PutLogEvents request must be in chronological order."
                    .into(),
            ));
        }
        if events.last().map(|e| e.timestamp) > events.first().map(|e| e.timestamp + 86_400_000) {
            return Err(LogsError::Invalid(
                "The batch of log events in a single PutLogEvents request cannot span more than 24 hours."
                    .into(),
            ));
        }
        let events: Vec<(i64, &str)> = events
            .iter()
            .map(|e| (e.timestamp, e.message.as_str()))
            .collect();
        let txn = self.db.begin_write()?;
        if txn.open_table(GROUPS)?.get(group)?.is_none() {
            return Err(no_group());
        }
        if txn.open_table(STREAMS)?.get((group, stream))?.is_none() {
            return Err(LogsError::NotFound(
                "The specified log stream does not exist.".into(),
            ));
        }
        let rejected = self.store_events(&txn, group, stream, &events, now_ms())?;
        txn.commit()?;
        let mut out =
            json!({"nextSequenceToken": format!("{:056}", self.seq.load(Ordering::Relaxed))});
        if !rejected.is_empty() {
            out["rejectedLogEventsInfo"] = Json::Object(rejected);
        }
        Ok(out)
    }

    /// Stores `events` (timestamp order) of an existing stream in `txn` as chunks, with the
    /// stream's figures; returns what it refused (too old, too new, past retention).
    fn store_events(
        &self,
        txn: &WriteTransaction,
        group: &str,
        stream: &str,
        events: &[(i64, &str)],
        now: i64,
    ) -> Result<Rejected, LogsError> {
        let retention = match txn.open_table(GROUPS)?.get(group)? {
            Some(v) => json_of(v.value())["retention"].as_i64(),
            None => return Err(no_group()),
        };
        let mut streams = txn.open_table(STREAMS)?;
        let mut record = match streams.get((group, stream))? {
            Some(v) => json_of(v.value()),
            None => {
                return Err(LogsError::NotFound(
                    "The specified log stream does not exist.".into(),
                ));
            }
        };
        let too_old = now - 14 * 86_400_000;
        let expired = retention.map(|d| now - d * 86_400_000);
        let too_new = now + 2 * 3_600_000;
        let mut rejected = Rejected::new();
        let mut accepted = Vec::with_capacity(events.len());
        for (i, &(timestamp, message)) in events.iter().enumerate() {
            if expired.is_some_and(|e| timestamp < e) {
                rejected.insert("expiredLogEventEndIndex".into(), json!(i + 1));
            } else if timestamp < too_old {
                rejected.insert("tooOldLogEventEndIndex".into(), json!(i + 1));
            } else if timestamp > too_new {
                rejected
                    .entry("tooNewLogEventStartIndex")
                    .or_insert(json!(i));
            } else {
                accepted.push((timestamp, message));
            }
        }
        let first_seq = self.seq.fetch_add(accepted.len() as u64, Ordering::Relaxed);
        let mut chunks = txn.open_table(CHUNKS)?;
        let mut value = Vec::new();
        for run in chunk::runs(&accepted) {
            let events = &accepted[run.clone()];
            chunk::encode(now, events, &mut value);
            chunks.insert(
                (group, stream, events[0].0, first_seq + run.start as u64),
                value.as_slice(),
            )?;
        }
        if let (Some(first), Some(last)) = (accepted.first(), accepted.last()) {
            if record["first"].as_i64().is_none_or(|f| first.0 < f) {
                record["first"] = json!(first.0);
            }
            if record["last"].as_i64().is_none_or(|l| last.0 > l) {
                record["last"] = json!(last.0);
            }
        }
        let stored: u64 = accepted.iter().map(|(_, m)| m.len() as u64).sum();
        record["ingested"] = json!(now);
        record["bytes"] = json!(record["bytes"].as_u64().unwrap_or(0) + stored);
        streams.insert((group, stream), record.to_string().as_bytes())?;
        Ok(rejected)
    }

    /// DeleteLogGroup, with its streams and events.
    pub fn delete_group(&self, group: &str) -> Result<(), LogsError> {
        let txn = self.db.begin_write()?;
        {
            if txn.open_table(GROUPS)?.remove(group)?.is_none() {
                return Err(no_group());
            }
            let mut streams = txn.open_table(STREAMS)?;
            let names: Vec<String> = streams
                .range((group, "")..)?
                .map(|e| e.map(|(k, _)| (k.value().0.to_string(), k.value().1.to_string())))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .take_while(|(g, _)| g == group)
                .map(|(_, s)| s)
                .collect();
            let mut chunks = txn.open_table(CHUNKS)?;
            for stream in &names {
                streams.remove((group, stream.as_str()))?;
                chunks.retain_in(
                    (group, stream.as_str(), i64::MIN, 0)
                        ..=(group, stream.as_str(), i64::MAX, u64::MAX),
                    |_, _| false,
                )?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// PutRetentionPolicy (`None`: DeleteRetentionPolicy).
    pub fn set_retention(&self, group: &str, days: Option<i64>) -> Result<(), LogsError> {
        if let Some(d) = days
            && !RETENTION_DAYS.contains(&d)
        {
            return Err(LogsError::Invalid(format!(
                "retentionInDays {d} is not one of {RETENTION_DAYS:?}"
            )));
        }
        let txn = self.db.begin_write()?;
        {
            let mut groups = txn.open_table(GROUPS)?;
            let mut record = match groups.get(group)? {
                Some(v) => json_of(v.value()),
                None => return Err(no_group()),
            };
            record["retention"] = json!(days);
            groups.insert(group, record.to_string().as_bytes())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Deletes events older than their group's retention; returns how many. A chunk holding
    /// events on both sides of the cutoff is written again with the newer ones.
    pub fn expire(&self, now: i64) -> Result<usize, LogsError> {
        let txn = self.db.begin_write()?;
        let mut removed = 0;
        {
            let groups: Vec<(String, i64)> = txn
                .open_table(GROUPS)?
                .iter()?
                .filter_map(|e| {
                    let (k, v) = e.ok()?;
                    let days = json_of(v.value())["retention"].as_i64()?;
                    Some((k.value().to_string(), days))
                })
                .collect();
            let streams = txn.open_table(STREAMS)?;
            let mut chunks = txn.open_table(CHUNKS)?;
            for (group, days) in groups {
                let cutoff = now - days * 86_400_000;
                for entry in streams.range((group.as_str(), "")..)? {
                    let (k, _) = entry?;
                    let (g, s) = k.value();
                    if g != group {
                        break;
                    }
                    // Chunks that start before the cutoff, with the events they keep.
                    let mut kept: Vec<(Vec<StoredEvent>, usize)> = Vec::new();
                    for entry in chunks.range((g, s, i64::MIN, 0)..(g, s, cutoff, 0))? {
                        let (k, v) = entry?;
                        let mut events = Vec::new();
                        chunk::read_into(k.value().3, v.value(), i64::MIN, i64::MAX, &mut events)?;
                        let total = events.len();
                        events.retain(|e| e.timestamp >= cutoff);
                        kept.push((events, total));
                    }
                    chunks.retain_in((g, s, i64::MIN, 0)..(g, s, cutoff, 0), |_, _| false)?;
                    let mut value = Vec::new();
                    for (events, total) in kept {
                        removed += total - events.len();
                        let Some(first) = events.first() else {
                            continue;
                        };
                        let pairs: Vec<(i64, &str)> = events
                            .iter()
                            .map(|e| (e.timestamp, e.message.as_str()))
                            .collect();
                        chunk::encode(first.ingestion, &pairs, &mut value);
                        chunks.insert((g, s, first.timestamp, first.seq), value.as_slice())?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(removed)
    }

    fn describe_groups(&self, prefix: Option<&str>) -> Result<Json, LogsError> {
        let txn = self.db.begin_read()?;
        let groups = txn.open_table(GROUPS)?;
        let streams = txn.open_table(STREAMS)?;
        let mut out = Vec::new();
        for entry in groups.iter()? {
            let (k, v) = entry?;
            let name = k.value();
            if prefix.is_some_and(|p| !name.starts_with(p)) {
                continue;
            }
            let record = json_of(v.value());
            let mut bytes = 0;
            for s in streams.range((name, "")..)? {
                let (sk, sv) = s?;
                if sk.value().0 != name {
                    break;
                }
                bytes += json_of(sv.value())["bytes"].as_u64().unwrap_or(0);
            }
            let arn = self.group_arn(name);
            let mut group = json!({
                "logGroupName": name,
                "creationTime": record["created"],
                "metricFilterCount": 0,
                "arn": format!("{arn}:*"),
                "logGroupArn": arn,
                "storedBytes": bytes,
                "logGroupClass": "STANDARD",
            });
            if let Some(days) = record["retention"].as_i64() {
                group["retentionInDays"] = json!(days);
            }
            out.push(group);
        }
        Ok(json!({ "logGroups": out }))
    }

    fn describe_streams(
        &self,
        group: &str,
        prefix: Option<&str>,
        by_last_event: bool,
        descending: bool,
    ) -> Result<Json, LogsError> {
        let txn = self.db.begin_read()?;
        if txn.open_table(GROUPS)?.get(group)?.is_none() {
            return Err(no_group());
        }
        let streams = txn.open_table(STREAMS)?;
        let mut out = Vec::new();
        for entry in streams.range((group, prefix.unwrap_or(""))..)? {
            let (k, v) = entry?;
            let (g, name) = k.value();
            if g != group || prefix.is_some_and(|p| !name.starts_with(p)) {
                break;
            }
            let record = json_of(v.value());
            let mut stream = json!({
                "logStreamName": name,
                "creationTime": record["created"],
                "arn": format!("{}:log-stream:{name}", self.group_arn(group)),
                "storedBytes": record["bytes"],
            });
            for (key, field) in [
                ("first", "firstEventTimestamp"),
                ("last", "lastEventTimestamp"),
                ("ingested", "lastIngestionTime"),
            ] {
                if !record[key].is_null() {
                    stream[field] = record[key].clone();
                }
            }
            out.push(stream);
        }
        if by_last_event {
            out.sort_by_key(|s| s["lastEventTimestamp"].as_i64().unwrap_or(0));
        }
        if descending {
            out.reverse();
        }
        Ok(json!({ "logStreams": out }))
    }

    /// The events of one stream in `[start, end)` after/before a position, in order.
    fn stream_events(
        &self,
        group: &str,
        stream: &str,
        start: i64,
        end: i64,
    ) -> Result<Vec<StoredEvent>, LogsError> {
        let txn = self.db.begin_read()?;
        if txn.open_table(STREAMS)?.get((group, stream))?.is_none() {
            return Err(if txn.open_table(GROUPS)?.get(group)?.is_none() {
                no_group()
            } else {
                LogsError::NotFound("The specified log stream does not exist.".into())
            });
        }
        let chunks = txn.open_table(CHUNKS)?;
        let mut out = Vec::new();
        // A chunk spans at most CHUNK_SPAN_MS: one that starts that long before `start` may
        // still hold events of the range.
        let from = start.saturating_sub(chunk::CHUNK_SPAN_MS);
        for entry in chunks.range((group, stream, from, 0)..(group, stream, end, 0))? {
            let (k, v) = entry?;
            chunk::read_into(k.value().3, v.value(), start, end, &mut out)?;
        }
        // Chunks whose times overlap (puts of older events) interleave.
        out.sort_by_key(|e| (e.timestamp, e.seq));
        Ok(out)
    }

    fn get_events(&self, input: GetInput) -> Result<Json, LogsError> {
        let group = input.group()?;
        let stream = input
            .log_stream_name
            .as_deref()
            .ok_or_else(|| missing("logStreamName"))?;
        let limit = input.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
        let all = self.stream_events(
            &group,
            stream,
            input.start_time.unwrap_or(i64::MIN),
            input.end_time.unwrap_or(i64::MAX),
        )?;
        let position = |token: &str| -> Result<(bool, (i64, u64)), LogsError> {
            let bad = || LogsError::Invalid("The specified nextToken is invalid.".into());
            let (dir, rest) = token.split_once('/').ok_or_else(bad)?;
            let (ts, seq) = rest.split_once(':').ok_or_else(bad)?;
            let pos = (
                ts.parse().map_err(|_| bad())?,
                seq.parse().map_err(|_| bad())?,
            );
            match dir {
                "f" => Ok((true, pos)),
                "b" => Ok((false, pos)),
                _ => Err(bad()),
            }
        };
        let page: Vec<&StoredEvent> = match input.next_token.as_deref() {
            Some(token) => {
                let (forward, pos) = position(token)?;
                if forward {
                    all.iter()
                        .filter(|e| (e.timestamp, e.seq) > pos)
                        .take(limit)
                        .collect()
                } else {
                    let before: Vec<_> =
                        all.iter().filter(|e| (e.timestamp, e.seq) < pos).collect();
                    before[before.len().saturating_sub(limit)..].to_vec()
                }
            }
            None if input.start_from_head.unwrap_or(false) => all.iter().take(limit).collect(),
            None => all[all.len().saturating_sub(limit)..].iter().collect(),
        };
        // With nothing further the token given comes back, as AWS does.
        let forward = match page.last() {
            Some(e) => format!("f/{}:{}", e.timestamp, e.seq),
            None => match input.next_token.as_deref() {
                Some(t) if t.starts_with("f/") => t.to_string(),
                _ => format!("f/{}:{}", i64::MIN, 0),
            },
        };
        let backward = match page.first() {
            Some(e) => format!("b/{}:{}", e.timestamp, e.seq),
            None => match input.next_token.as_deref() {
                Some(t) if t.starts_with("b/") => t.to_string(),
                _ => format!("b/{}:{}", i64::MAX, u64::MAX),
            },
        };
        let events: Vec<Json> = page
            .iter()
            .map(|e| json!({"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.ingestion}))
            .collect();
        Ok(json!({"events": events, "nextForwardToken": forward, "nextBackwardToken": backward}))
    }

    fn filter_events(&self, input: FilterInput) -> Result<Json, LogsError> {
        let group = input.group()?;
        let pattern = FilterPattern::parse(input.filter_pattern.as_deref().unwrap_or(""))
            .map_err(|e| LogsError::Invalid(format!("Invalid filter pattern: {e}")))?;
        if !input.log_stream_names.is_empty() && input.log_stream_name_prefix.is_some() {
            return Err(LogsError::Invalid(
                "logStreamNames and logStreamNamePrefix are mutually exclusive".into(),
            ));
        }
        let streams = self.describe_streams(
            &group,
            input.log_stream_name_prefix.as_deref(),
            false,
            false,
        )?;
        let names: Vec<String> = streams["logStreams"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["logStreamName"].as_str().map(str::to_string))
            .filter(|n| input.log_stream_names.is_empty() || input.log_stream_names.contains(n))
            .collect();
        let after: Option<(i64, u64)> = match input.next_token.as_deref() {
            Some(t) => {
                let bad = || LogsError::Invalid("The specified nextToken is invalid.".into());
                let (ts, seq) = t.split_once(':').ok_or_else(bad)?;
                Some((
                    ts.parse().map_err(|_| bad())?,
                    seq.parse().map_err(|_| bad())?,
                ))
            }
            None => None,
        };
        let mut matched = Vec::new();
        for name in &names {
            for event in self.stream_events(
                &group,
                name,
                input.start_time.unwrap_or(i64::MIN),
                input.end_time.unwrap_or(i64::MAX),
            )? {
                if after.is_some_and(|a| (event.timestamp, event.seq) <= a) {
                    continue;
                }
                if pattern.matches(&event.message) {
                    matched.push((name.as_str(), event));
                }
            }
        }
        matched.sort_by_key(|(_, e)| (e.timestamp, e.seq));
        let limit = input.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
        let more = matched.len() > limit;
        matched.truncate(limit);
        let mut out = json!({
            "events": matched.iter().map(|(stream, e)| json!({
                "logStreamName": stream,
                "timestamp": e.timestamp,
                "message": e.message,
                "ingestionTime": e.ingestion,
                "eventId": format!("{}-{}", e.timestamp, e.seq),
            })).collect::<Vec<_>>(),
            "searchedLogStreams": names.iter().map(|n| json!({"logStreamName": n, "searchedCompletely": true})).collect::<Vec<_>>(),
        });
        if more && let Some((_, e)) = matched.last() {
            out["nextToken"] = json!(format!("{}:{}", e.timestamp, e.seq));
        }
        Ok(out)
    }
}

/// Creates log group `name` in `txn` unless it exists; true if it was created.
fn insert_group(
    txn: &WriteTransaction,
    name: &str,
    retention: Option<i64>,
) -> Result<bool, LogsError> {
    let mut groups = txn.open_table(GROUPS)?;
    if groups.get(name)?.is_some() {
        return Ok(false);
    }
    check_group_name(name)?;
    let record = json!({"created": now_ms(), "retention": retention});
    groups.insert(name, record.to_string().as_bytes())?;
    Ok(true)
}

/// Creates log stream `stream` of the existing `group` in `txn` unless it exists; true if it
/// was created.
fn insert_stream(txn: &WriteTransaction, group: &str, stream: &str) -> Result<bool, LogsError> {
    let mut streams = txn.open_table(STREAMS)?;
    if streams.get((group, stream))?.is_some() {
        return Ok(false);
    }
    check_stream_name(stream)?;
    let record = json!({"created": now_ms(), "bytes": 0});
    streams.insert((group, stream), record.to_string().as_bytes())?;
    Ok(true)
}

/// Moves the events of a store written before chunks (one row each, table `events`) into
/// chunks, then drops that table. A chunk needs consecutive sequences and one ingestion time,
/// so consecutive rows of one stream share a chunk while theirs continue (the rows of one old
/// put did), within [`chunk::runs`]' limits.
fn migrate_events(txn: &WriteTransaction) -> Result<(), LogsError> {
    if !txn.list_tables()?.any(|t| t.name() == EVENTS.name()) {
        return Ok(());
    }
    {
        let events = txn.open_table(EVENTS)?;
        let mut chunks = txn.open_table(CHUNKS)?;
        let mut value = Vec::new();
        let mut run: Vec<StoredEvent> = Vec::new();
        let mut run_stream: Option<(String, String)> = None;
        let mut run_bytes = 0;
        let mut flush = |stream: &Option<(String, String)>,
                         run: &mut Vec<StoredEvent>|
         -> Result<(), LogsError> {
            if let (Some((g, s)), Some(first)) = (stream, run.first()) {
                let pairs: Vec<(i64, &str)> = run
                    .iter()
                    .map(|e| (e.timestamp, e.message.as_str()))
                    .collect();
                chunk::encode(first.ingestion, &pairs, &mut value);
                chunks.insert(
                    (g.as_str(), s.as_str(), first.timestamp, first.seq),
                    value.as_slice(),
                )?;
            }
            run.clear();
            Ok(())
        };
        for entry in events.iter()? {
            let (k, v) = entry?;
            let (g, s, timestamp, seq) = k.value();
            let doc = json_of(v.value());
            let event = StoredEvent {
                timestamp,
                seq,
                ingestion: doc["i"].as_i64().unwrap_or(0),
                message: doc["m"].as_str().unwrap_or_default().to_string(),
            };
            let same_stream = run_stream
                .as_ref()
                .is_some_and(|(rg, rs)| rg == g && rs == s);
            let continues = same_stream
                && run.first().zip(run.last()).is_some_and(|(first, last)| {
                    last.seq.checked_add(1) == Some(seq)
                        && last.ingestion == event.ingestion
                        && chunk::fits(first.timestamp, run.len(), run_bytes, timestamp)
                });
            if !continues {
                flush(&run_stream, &mut run)?;
                run_bytes = 0;
                if !same_stream {
                    run_stream = Some((g.to_string(), s.to_string()));
                }
            }
            run_bytes += event.message.len();
            run.push(event);
        }
        flush(&run_stream, &mut run)?;
    }
    txn.delete_table(EVENTS)?;
    Ok(())
}

fn no_group() -> LogsError {
    LogsError::NotFound("The specified log group does not exist.".into())
}

fn missing(what: &str) -> LogsError {
    LogsError::Invalid(format!("{what} is required"))
}

fn check_group_name(name: &str) -> Result<(), LogsError> {
    check_name(name, "log group", |c| {
        c.is_ascii_alphanumeric() || "_-/.#".contains(c)
    })
}

fn check_stream_name(name: &str) -> Result<(), LogsError> {
    check_name(name, "log stream", |c| c != ':' && c != '*')
}

fn check_name(name: &str, what: &str, allowed: impl Fn(char) -> bool) -> Result<(), LogsError> {
    if name.is_empty() || name.len() > 512 || !name.chars().all(allowed) {
        return Err(LogsError::Invalid(format!(
            "The {what} name '{name}' is not valid"
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupInput {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_group_name_prefix: Option<String>,
    log_stream_name: Option<String>,
    log_stream_name_prefix: Option<String>,
    retention_in_days: Option<i64>,
    order_by: Option<String>,
    descending: Option<bool>,
    #[serde(default)]
    log_events: Vec<InputEvent>,
}

/// Names a log group by name or by ARN (`logGroupIdentifier`).
fn group_of(name: &Option<String>, identifier: &Option<String>) -> Result<String, LogsError> {
    match (name, identifier) {
        (Some(n), None) => Ok(n.clone()),
        (None, Some(id)) => Ok(id
            .split_once(":log-group:")
            .map_or(id.as_str(), |(_, g)| g.trim_end_matches(":*"))
            .to_string()),
        (Some(_), Some(_)) => Err(LogsError::Invalid(
            "logGroupName and logGroupIdentifier are mutually exclusive".into(),
        )),
        (None, None) => Err(missing("logGroupName")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetInput {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    next_token: Option<String>,
    limit: Option<usize>,
    start_from_head: Option<bool>,
}

impl GetInput {
    fn group(&self) -> Result<String, LogsError> {
        group_of(&self.log_group_name, &self.log_group_identifier)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterInput {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    #[serde(default)]
    log_stream_names: Vec<String>,
    log_stream_name_prefix: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    filter_pattern: Option<String>,
    next_token: Option<String>,
    limit: Option<usize>,
}

impl FilterInput {
    fn group(&self) -> Result<String, LogsError> {
        group_of(&self.log_group_name, &self.log_group_identifier)
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            "SerializationException",
            StatusCode::BAD_REQUEST,
            format!("The request body is not valid: {e}"),
        )
        .json11()
    })
}

/// The service's router, for `ControlPlane::service("logs", ...)`.
pub fn routes(store: Arc<LogStore>) -> Router {
    Router::new().route(
        "/",
        post(
            move |ctx: RequestContext, headers: HeaderMap, body: Bytes| {
                let store = Arc::clone(&store);
                async move {
                    let op = headers
                        .get("x-amz-target")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|t| t.split_once('.'))
                        .map(|(_, op)| op.to_string())
                        .unwrap_or_default();
                    let result = match content_decoded(&headers, body) {
                        Ok(body) => tokio::task::spawn_blocking(move || handle(&store, &op, &body))
                            .await
                            .unwrap_or_else(|e| Err(ApiError::internal(e.to_string()).json11())),
                        Err(e) => Err(e.json11()),
                    };
                    let _ = ctx;
                    match result {
                        Ok(value) => (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/x-amz-json-1.1",
                            )],
                            value.to_string(),
                        )
                            .into_response(),
                        Err(e) => e.into_response(),
                    }
                }
            },
        ),
    )
}

fn handle(store: &LogStore, op: &str, body: &[u8]) -> Result<Json, ApiError> {
    let api = |e: LogsError| e.to_api();
    let empty = json!({});
    match op {
        "GetLogEvents" => return store.get_events(parse(body)?).map_err(api),
        "FilterLogEvents" => return store.filter_events(parse(body)?).map_err(api),
        _ => {}
    }
    let input: GroupInput = parse(body)?;
    let group = || group_of(&input.log_group_name, &input.log_group_identifier).map_err(api);
    let stream = || {
        input
            .log_stream_name
            .clone()
            .ok_or_else(|| missing("logStreamName"))
            .map_err(api)
    };
    match op {
        "CreateLogGroup" => {
            if let Some(d) = input.retention_in_days
                && !RETENTION_DAYS.contains(&d)
            {
                return Err(api(LogsError::Invalid(format!(
                    "retentionInDays {d} is not one of {RETENTION_DAYS:?}"
                ))));
            }
            store.create_group(&group()?, input.retention_in_days).map_err(api)?;
            Ok(empty)
        }
        "DeleteLogGroup" => store.delete_group(&group()?).map(|()| empty).map_err(api),
        "DescribeLogGroups" => store
            .describe_groups(input.log_group_name_prefix.as_deref())
            .map_err(api),
        "CreateLogStream" => store
            .create_stream(&group()?, &stream()?)
            .map(|()| empty)
            .map_err(api),
        "DescribeLogStreams" => store
            .describe_streams(
                &group()?,
                input.log_stream_name_prefix.as_deref(),
                input.order_by.as_deref() == Some("LastEventTime"),
                input.descending.unwrap_or(false),
            )
            .map_err(api),
        "PutLogEvents" => store
            .put(&group()?, &stream()?, &input.log_events)
            .map_err(api),
        "PutRetentionPolicy" => {
            let days = input
                .retention_in_days
                .ok_or_else(|| api(missing("retentionInDays")))?;
            store.set_retention(&group()?, Some(days)).map(|()| empty).map_err(api)
        }
        "DeleteRetentionPolicy" => store.set_retention(&group()?, None).map(|()| empty).map_err(api),
        other => Err(ApiError::new(
            "UnknownOperationException",
            StatusCode::BAD_REQUEST,
            format!("Operation Logs_20140328.{other} of service 'logs' is not implemented by this server."),
        )
        .json11()),
    }
}

#[cfg(test)]
mod tests;
