//! The web console's pages fed by the capabilities this binary wires: things (identity),
//! functions, streams, delivery streams and Device Defender's violations. Each is a
//! `fleetcore_observe::console::Section`; a capability that wants a page adds one here.

use std::sync::Arc;

use fleetcore_archive::Archive;
use fleetcore_defender::Defender;
use fleetcore_functions::Functions;
use fleetcore_identity::IdentityService;
use fleetcore_identity::registry::{PageRequest, ThingFilter};
use fleetcore_observe::console::section::MAX_ROWS;
use fleetcore_observe::console::{Section, SectionFuture, Table};
use fleetcore_stream::Stream;
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
