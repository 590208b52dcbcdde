//! `firehose`: puts the rule's output into a delivery stream (with the separator appended to
//! each record; in batch mode the output must be a JSON array and each element is a record).
//! The delivery streams are reached through [`FirehoseSink`], which the binary implements over
//! the archive service.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;

use super::{Action, ActionSpec, Destinations, Members, Prepared};
use crate::sql::Template;

/// Puts records into delivery streams (the archive's PutRecordBatch).
#[async_trait]
pub trait FirehoseSink: Send + Sync {
    /// Puts `records` into delivery stream `name`; one outcome per record, or an error for the
    /// whole call (unknown stream, service unavailable).
    async fn put_records(
        &self,
        name: &str,
        records: Vec<Bytes>,
    ) -> Result<Vec<Result<(), String>>, String>;
}

/// The members of a firehose action.
pub(super) struct FirehoseSpec {
    stream_name: String,
    separator: &'static str,
    batch_mode: bool,
}

impl ActionSpec for FirehoseSpec {
    const KIND: &'static str = "firehose";

    fn parse(members: &Members<'_>) -> Result<FirehoseSpec, String> {
        let stream_name = members.required_str("deliveryStreamName")?.to_string();
        let separator = match members.str("separator")? {
            None => "",
            Some("\n") => "\n",
            Some("\r\n") => "\r\n",
            Some("\t") => "\t",
            Some(",") => ",",
            Some(other) => {
                return Err(format!(
                    "firehose.separator must be \\n, \\r\\n, \\t or a comma, not {other:?}"
                ));
            }
        };
        Ok(FirehoseSpec {
            stream_name,
            separator,
            batch_mode: members.bool("batchMode", false)?,
        })
    }

    fn start(self, destinations: &Destinations) -> Result<Arc<dyn Action>, String> {
        Ok(Arc::new(Firehose {
            sink: destinations.firehose.clone(),
            spec: self,
        }))
    }
}

/// The firehose action.
struct Firehose {
    sink: Option<Arc<dyn FirehoseSink>>,
    spec: FirehoseSpec,
}

impl FirehoseSpec {
    /// The records of one message.
    fn records(&self, body: &Bytes) -> Result<Vec<Bytes>, String> {
        let with_separator = |data: &[u8]| {
            let mut record = Vec::with_capacity(data.len() + self.separator.len());
            record.extend_from_slice(data);
            record.extend_from_slice(self.separator.as_bytes());
            Bytes::from(record)
        };
        if !self.batch_mode {
            return Ok(vec![with_separator(body)]);
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(items)) if !items.is_empty() && items.len() <= 500 => Ok(items
                .iter()
                .map(|item| with_separator(item.to_string().as_bytes()))
                .collect()),
            _ => Err(
                "batchMode needs the rule output to be a JSON array of 1 to 500 elements".into(),
            ),
        }
    }
}

#[async_trait]
impl Action for Firehose {
    fn name(&self) -> &'static str {
        "FirehoseAction"
    }

    fn resource(&self, _params: &[String]) -> String {
        self.spec.stream_name.clone()
    }

    fn templates(&self) -> &[Template] {
        &[]
    }

    async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>> {
        let Some(sink) = &self.sink else {
            return items
                .iter()
                .map(|_| Err("this server runs no delivery streams".into()))
                .collect();
        };
        // Records of all messages go in one put; each message remembers its span.
        let mut outcomes: Vec<Result<(), String>> = Vec::with_capacity(items.len());
        let mut spans = Vec::with_capacity(items.len());
        let mut records = Vec::new();
        for item in items {
            match self.spec.records(&item.body) {
                Ok(mut r) => {
                    spans.push(Some(records.len()..records.len() + r.len()));
                    records.append(&mut r);
                    outcomes.push(Ok(()));
                }
                Err(e) => {
                    spans.push(None);
                    outcomes.push(Err(e));
                }
            }
        }
        if records.is_empty() {
            return outcomes;
        }
        let mut results: Vec<Result<(), String>> = Vec::with_capacity(records.len());
        for chunk in records.chunks(500) {
            match sink
                .put_records(&self.spec.stream_name, chunk.to_vec())
                .await
            {
                Ok(r) => results.extend(r),
                Err(e) => results.extend(chunk.iter().map(|_| Err(e.clone()))),
            }
        }
        for (outcome, span) in outcomes.iter_mut().zip(spans) {
            if let Some(span) = span
                && let Some(Err(e)) = results[span].iter().find(|r| r.is_err())
            {
                *outcome = Err(e.clone());
            }
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firehose(separator: &'static str, batch_mode: bool) -> FirehoseSpec {
        FirehoseSpec {
            stream_name: "d".into(),
            separator,
            batch_mode,
        }
    }

    #[test]
    fn records_get_the_separator_and_batch_mode_splits_arrays() {
        let plain = firehose("\n", false);
        assert_eq!(
            plain
                .records(&Bytes::from_static(b"{\"a\":1}"))
                .expect("one"),
            vec![Bytes::from_static(b"{\"a\":1}\n")]
        );
        let batch = firehose(",", true);
        assert_eq!(
            batch
                .records(&Bytes::from_static(b"[{\"a\":1},2]"))
                .expect("two"),
            vec![Bytes::from_static(b"{\"a\":1},"), Bytes::from_static(b"2,")]
        );
        assert!(batch.records(&Bytes::from_static(b"{\"a\":1}")).is_err());
        assert!(batch.records(&Bytes::from_static(b"[]")).is_err());
    }
}
