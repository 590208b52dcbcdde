//! The web console's pages fed by the capabilities this binary wires: things (identity),
//! functions, streams, stream consumers' lag, delivery streams, detector models and Device
//! Defender's violations. Each is a
//! `fleetcore_observe::console::Section`; a capability that wants a page adds one here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use fleetcore_archive::Archive;
use fleetcore_defender::Defender;
use fleetcore_events::Events;
use fleetcore_functions::{Functions, Mappings};
use fleetcore_identity::IdentityService;
use fleetcore_identity::registry::{PageRequest, ThingFilter};
use fleetcore_observe::console::section::MAX_ROWS;
use fleetcore_observe::console::{Section, SectionFuture, Table};
use fleetcore_stream::{Position, StartingPosition, Stream, StreamError};
use serde_json::json;

/// The registry's things: how many, and the first names.
pub struct Things(pub Arc<IdentityService>);

impl Section for Things {
    fn id(&self) -> &'static str {
        "things"
    }

    fn title(&self) -> &'static str {
        "Things"
    }

    fn read(&self) -> SectionFuture<'_> {
        Box::pin(async move {
            let identity = Arc::clone(&self.0);
            tokio::task::spawn_blocking(move || {
                let registry = identity.registry();
                let count = registry.count_things().map_err(|e| e.to_string())?;
                let page = registry
                    .list_things(
                        &ThingFilter::default(),
                        &PageRequest {
                            max_results: Some(MAX_ROWS as i64),
                            next_token: None,
                        },
                    )
                    .map_err(|e| e.to_string())?;
                Ok(Table {
                    summary: vec![("things".into(), json!(count))],
                    columns: vec!["thing".into(), "type".into(), "attributes".into()],
                    rows: page
                        .items
                        .into_iter()
                        .map(|t| {
                            vec![
                                json!(t.name),
                                json!(t.thing_type_name.unwrap_or_default()),
                                json!(t.attributes.len()),
                            ]
                        })
                        .collect(),
                })
            })
            .await
            .map_err(|e| e.to_string())?
        })
    }
}

/// The functions and their configuration.
pub struct FunctionList(pub Arc<Functions>);

impl Section for FunctionList {
    fn id(&self) -> &'static str {
        "functions"
    }

    fn title(&self) -> &'static str {
        "Functions"
    }

    fn read(&self) -> SectionFuture<'_> {
        Box::pin(async move {
            let all = self.0.list();
            Ok(Table {
                summary: vec![("functions".into(), json!(all.len()))],
                columns: [
                    "function",
                    "runtime",
                    "memory (MB)",
                    "timeout (s)",
                    "modified",
                ]
                .map(String::from)
                .to_vec(),
                rows: all
                    .into_iter()
                    .take(MAX_ROWS)
                    .map(|f| {
                        vec![
                            json!(f.name),
                            json!(f.runtime),
                            json!(f.memory_size),
                            json!(f.timeout),
                            json!(f.last_modified),
                        ]
                    })
                    .collect(),
            })
        })
    }
}

/// The Kinesis streams (internal ones hidden) with their shards and retention.
pub struct StreamList(pub Arc<dyn Stream>);

impl Section for StreamList {
    fn id(&self) -> &'static str {
        "streams"
    }

    fn title(&self) -> &'static str {
        "Streams"
    }

    fn read(&self) -> SectionFuture<'_> {
        Box::pin(async move {
            let names = self.0.list_streams().await.map_err(|e| e.to_string())?;
            let names: Vec<String> = names
                .into_iter()
                .filter(|n| !fleetcore_stream::is_internal_stream(n))
                .collect();
            let mut rows = Vec::new();
            for name in names.iter().take(MAX_ROWS) {
                // A stream deleted between the listing and here is skipped.
                let Ok(info) = self.0.describe_stream(name).await else {
                    continue;
                };
                let open = info.shards.iter().filter(|s| s.is_open()).count();
                rows.push(vec![
                    json!(info.name),
                    json!(format!("{:?}", info.status)),
                    json!(open),
                    json!(info.retention_hours),
                ]);
            }
            Ok(Table {
                summary: vec![("streams".into(), json!(names.len()))],
                columns: ["stream", "status", "open shards", "retention (h)"]
                    .map(String::from)
                    .to_vec(),
                rows,
            })
        })
    }
}

/// The delivery streams (their backlog and lag come from the metrics, per stream).
pub struct DeliveryStreams(pub Arc<Archive>);

impl Section for DeliveryStreams {
    fn id(&self) -> &'static str {
        "delivery-streams"
    }

    fn title(&self) -> &'static str {
        "Delivery streams"
    }

    fn read(&self) -> SectionFuture<'_> {
        Box::pin(async move {
            let (names, more) = self.0.list(None, None, MAX_ROWS);
            Ok(Table {
                summary: vec![(
                    "delivery streams".into(),
                    json!(if more {
                        format!("{}+", names.len())
                    } else {
                        names.len().to_string()
                    }),
                )],
                columns: vec!["delivery stream".into()],
                rows: names.into_iter().map(|n| vec![json!(n)]).collect(),
            })
        })
    }
}

/// Device Defender's violations in force, newest first.
pub struct Violations(pub Arc<Defender>);

impl Section for Violations {
    fn id(&self) -> &'static str {
        "violations"
    }

    fn title(&self) -> &'static str {
        "Defender violations"
    }

    fn read(&self) -> SectionFuture<'_> {
        Box::pin(async move {
            let mut active = self.0.violations().active_where(|_| true);
            active.sort_by(|a, b| b.violation_start_time.total_cmp(&a.violation_start_time));
            let total = active.len();
            Ok(Table {
                summary: vec![("violations in force".into(), json!(total))],
                columns: [
                    "thing",
                    "security profile",
                    "behavior",
                    "since",
                    "last value",
                ]
                .map(String::from)
                .to_vec(),
                rows: active
                    .into_iter()
                    .take(MAX_ROWS)
                    .map(|v| {
                        vec![
                            json!(v.thing_name),
                            json!(v.security_profile_name),
                            json!(v.behavior.name),
                            json!(rfc3339(v.violation_start_time)),
                            json!(
                                serde_json::to_string(&v.last_violation_value).unwrap_or_default()
                            ),
                        ]
                    })
                    .collect(),
            })
        })
    }
}

/// Seconds since the epoch as an RFC 3339 UTC time (empty if out of range).
fn rfc3339(seconds: f64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Most records counted behind one checkpoint (the page shows `1000+` beyond).
const LAG_COUNT_LIMIT: usize = 1000;

/// How far each consumer of a Kinesis stream is behind, per shard: the event source mappings
/// (group `lambda-esm:<uuid>`) and the delivery streams reading their source stream. Records
/// behind are counted by reading from the checkpoint (up to [`LAG_COUNT_LIMIT`]); the age is
/// that of the oldest record not yet processed.
pub struct ConsumerLag {
    /// The stream store.
    pub streams: Arc<dyn Stream>,
    /// The event source mappings.
    pub mappings: Arc<Mappings>,
    /// The delivery streams.
    pub archive: Arc<Archive>,
}

impl ConsumerLag {
    /// Every (consumer, stream, group) reading a stream now.
    fn consumers(&self) -> Vec<(String, String, String)> {
        let mut out: Vec<(String, String, String)> = self
            .mappings
            .list(None, None)
            .into_iter()
            .map(|m| {
                let state = if m.enabled { "" } else { " (disabled)" };
                (
                    format!("lambda {} {}{state}", m.function, m.uuid),
                    m.stream,
                    format!("lambda-esm:{}", m.uuid),
                )
            })
            .collect();
        let (names, _) = self.archive.list(None, None, MAX_ROWS);
        for name in names {
            // A delivery stream deleted since the listing is skipped.
            if let Ok(stream) = self.archive.describe(&name) {
                out.push((
                    format!("firehose {name}"),
                    stream.source.stream().to_string(),
                    stream.consumer_group(),
                ));
            }
        }
        out
    }

    /// The rows of one consumer's shards.
    async fn shard_rows(
        &self,
        consumer: &str,
        stream: &str,
        group: &str,
    ) -> Result<Vec<Vec<serde_json::Value>>, StreamError> {
        let info = self.streams.describe_stream(stream).await?;
        let now = SystemTime::now();
        let mut rows = Vec::new();
        for shard in &info.shards {
            let checkpoint = self.streams.checkpoint_of(stream, group, shard.id).await?;
            if checkpoint == Some(Position::SHARD_END) {
                continue;
            }
            let from = match checkpoint {
                Some(position) => position,
                None => {
                    self.streams
                        .resolve(stream, shard.id, StartingPosition::TrimHorizon)
                        .await?
                }
            };
            let latest = self
                .streams
                .resolve(stream, shard.id, StartingPosition::Latest)
                .await?;
            let behind = self
                .streams
                .read(stream, shard.id, from, LAG_COUNT_LIMIT)
                .await?;
            let count = behind.records.len();
            let age = behind.records.first().map_or(0.0, |r| {
                now.duration_since(r.arrival)
                    .map_or(0.0, |d| d.as_secs_f64())
            });
            rows.push(vec![
                json!(consumer),
                json!(stream),
                json!(shard.id.to_string()),
                json!(checkpoint.map_or_else(|| "none".to_string(), |p| p.0.to_string())),
                json!(latest.0.to_string()),
                if count >= LAG_COUNT_LIMIT {
                    json!(format!("{LAG_COUNT_LIMIT}+"))
                } else {
                    json!(count)
                },
                json!((age * 10.0).round() / 10.0),
            ]);
        }
        Ok(rows)
    }
}

impl Section for ConsumerLag {
    fn id(&self) -> &'static str {
        "consumer-lag"
    }

    fn title(&self) -> &'static str {
        "Stream consumer lag"
    }

    fn read(&self) -> SectionFuture<'_> {
        Box::pin(async move {
            let consumers = self.consumers();
            let mut rows = Vec::new();
            for (consumer, stream, group) in &consumers {
                if rows.len() >= MAX_ROWS {
                    break;
                }
                // A stream deleted under its consumer shows no rows rather than failing the page.
                if let Ok(shards) = self.shard_rows(consumer, stream, group).await {
                    rows.extend(shards);
                }
            }
            rows.truncate(MAX_ROWS);
            Ok(Table {
                summary: vec![("stream consumers".into(), json!(consumers.len()))],
                columns: [
                    "consumer",
                    "stream",
                    "shard",
                    "checkpoint",
                    "latest",
                    "records behind",
                    "oldest unprocessed (s)",
                ]
                .map(String::from)
                .to_vec(),
                rows,
            })
        })
    }
}

/// The detector models (IoT Events) with their detectors counted per state.
pub struct DetectorModels(pub Arc<Events>);

impl Section for DetectorModels {
    fn id(&self) -> &'static str {
        "detectors"
    }

    fn title(&self) -> &'static str {
        "Detector models"
    }

    fn read(&self) -> SectionFuture<'_> {
        Box::pin(async move {
            let models = self.0.detector_models();
            let mut rows = Vec::new();
            let mut detectors = 0;
            for model in models.iter().take(MAX_ROWS) {
                // A model deleted since the listing counts no detectors.
                let instances = self.0.detectors(&model.name).await.unwrap_or_default();
                detectors += instances.len();
                let mut states: BTreeMap<&str, usize> = BTreeMap::new();
                for instance in &instances {
                    *states.entry(instance.state.as_str()).or_default() += 1;
                }
                let states: Vec<String> = states
                    .into_iter()
                    .map(|(state, n)| format!("{state}: {n}"))
                    .collect();
                rows.push(vec![
                    json!(model.name),
                    json!(model.version),
                    // Every stored version is active: this server has no activation delay.
                    json!("ACTIVE"),
                    json!(instances.len()),
                    json!(states.join(", ")),
                ]);
            }
            Ok(Table {
                summary: vec![
                    ("detector models".into(), json!(models.len())),
                    ("detectors".into(), json!(detectors)),
                ],
                columns: [
                    "detector model",
                    "version",
                    "status",
                    "detectors",
                    "by state",
                ]
                .map(String::from)
                .to_vec(),
                rows,
            })
        })
    }
}
