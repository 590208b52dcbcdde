//! `kinesis`: appends the rule's output to a stream of the user's stream store (durable on
//! return), with the partition key from its template or, without one, a random one.

use std::sync::Arc;

use async_trait::async_trait;
use fleetcore_stream::{NewRecord, Stream};

use super::{Action, ActionSpec, Destinations, Members, Prepared};
use crate::sql::Template;

/// The members of a kinesis action.
pub(super) struct KinesisSpec {
    stream_name: String,
    /// `[partitionKey]` when one is given.
    templates: Vec<Template>,
}

impl ActionSpec for KinesisSpec {
    const KIND: &'static str = "kinesis";

    fn parse(members: &Members<'_>) -> Result<KinesisSpec, String> {
        Ok(KinesisSpec {
            stream_name: members.required_str("streamName")?.to_string(),
            templates: members.template("partitionKey")?.into_iter().collect(),
        })
    }

    fn start(self, destinations: &Destinations) -> Result<Arc<dyn Action>, String> {
        Ok(Arc::new(Kinesis {
            streams: Arc::clone(&destinations.streams),
            spec: self,
        }))
    }
}

/// The kinesis action.
struct Kinesis {
    streams: Arc<dyn Stream>,
    spec: KinesisSpec,
}

fn random_key() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // The key only spreads records over shards; the clock spreads them well enough.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = now.to_le_bytes();
    }
    fleetcore_core::sigv4::hex(&bytes)
}

#[async_trait]
impl Action for Kinesis {
    fn name(&self) -> &'static str {
        "KinesisAction"
    }

    fn resource(&self, _params: &[String]) -> String {
        self.spec.stream_name.clone()
    }

    fn templates(&self) -> &[Template] {
        &self.spec.templates
    }

    async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>> {
        let mut outcomes: Vec<Result<(), String>> = Vec::with_capacity(items.len());
        let mut records = Vec::new();
        for item in items {
            let key = match item.params.first() {
                // At most 256 characters, as Kinesis allows.
                Some(key) if !key.is_empty() => match key.char_indices().nth(256) {
                    Some((cut, _)) => key[..cut].to_string(),
                    None => key.clone(),
                },
                Some(_) => {
                    outcomes.push(Err("the partition key template expanded to nothing".into()));
                    continue;
                }
                None => random_key(),
            };
            outcomes.push(Ok(()));
            records.push(NewRecord {
                partition_key: key,
                explicit_hash_key: None,
                data: item.body.clone(),
            });
        }
        let mut results = Vec::with_capacity(records.len());
        // Moved into the store one put's worth at a time (no copy of the records).
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            let chunk: Vec<NewRecord> = records
                .by_ref()
                .take(fleetcore_stream::MAX_PUT_RECORDS)
                .collect();
            let count = chunk.len();
            match self
                .streams
                .put_records(&self.spec.stream_name, chunk)
                .await
            {
                Ok(put) => results.extend(
                    put.into_iter()
                        .map(|r| r.map(|_| ()).map_err(|f| format!("{f:?}"))),
                ),
                Err(e) => {
                    let error = e.to_string();
                    results.extend((0..count).map(|_| Err(error.clone())));
                }
            }
        }
        let mut results = results.into_iter();
        for outcome in &mut outcomes {
            if outcome.is_ok() {
                *outcome = results.next().unwrap_or(Err("no outcome".into()));
            }
        }
        outcomes
    }
}
