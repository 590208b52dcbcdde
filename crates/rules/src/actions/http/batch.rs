//! `http` with `enableBatching`, as AWS batches: messages for the same URL (and, unless
//! `batchAcrossTopics`, from the same topic) wait up to `maxBatchOpenMs` for each other and go
//! out as one POST whose body is a JSON array of the rule's outputs. A batch closes at whichever
//! limit it reaches first: its age, `maxBatchSize` messages, or `maxBatchSizeBytes` of body (a
//! message that would push the body past the limit starts the next batch; one larger than the
//! limit goes alone, as an array of one). The request carries the header values of the last
//! message added. The answer is the outcome of every message of the batch: a failure fails each
//! of them, and the lane retries them (in new batches), then hands them to the error action one
//! by one.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use super::Sender;
use crate::actions::{Members, Prepared};

/// `maxBatchOpenMs`: least, most, default (AWS's BatchConfig).
const OPEN_MS: Limits = Limits {
    min: 5,
    max: 200,
    default: 20,
};
/// `maxBatchSize`, in messages.
const SIZE: Limits = Limits {
    min: 2,
    max: 10,
    default: 10,
};
/// `maxBatchSizeBytes`.
const SIZE_BYTES: Limits = Limits {
    min: 100,
    max: 131_072,
    default: 5_120,
};

/// The valid range of an integer member and its value when absent.
struct Limits {
    min: u64,
    max: u64,
    default: u64,
}

/// The checked `batchConfig` of an http action with `enableBatching`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BatchConfig {
    /// How long a batch waits for more messages after its first.
    pub open: Duration,
    /// Most messages in one batch.
    pub max_messages: usize,
    /// Most bytes of one batch's body (the JSON array).
    pub max_bytes: usize,
    /// Messages of different topics share batches.
    pub across_topics: bool,
}

impl BatchConfig {
    /// `enableBatching` and `batchConfig` of an http action: `None` without batching. The
    /// limits are checked against AWS's ranges whether or not batching is enabled.
    pub(super) fn parse(members: &Members<'_>) -> Result<Option<BatchConfig>, String> {
        let config = match members.get("batchConfig") {
            None => None,
            Some(Value::Object(config)) => Some(config),
            Some(_) => return Err("http.batchConfig must be an object".into()),
        };
        let member = |field: &str| config.and_then(|c| c.get(field)).filter(|v| !v.is_null());
        let int = |field: &str, limits: &Limits| -> Result<u64, String> {
            match member(field) {
                None => Ok(limits.default),
                Some(value) => value
                    .as_u64()
                    .filter(|n| (limits.min..=limits.max).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "http.batchConfig.{field} must be an integer from {} to {}, not {value}",
                            limits.min, limits.max
                        )
                    }),
            }
        };
        let open = int("maxBatchOpenMs", &OPEN_MS)?;
        let max_messages = int("maxBatchSize", &SIZE)?;
        let max_bytes = int("maxBatchSizeBytes", &SIZE_BYTES)?;
        let across_topics = match member("batchAcrossTopics") {
            None => false,
            Some(Value::Bool(across)) => *across,
            Some(_) => return Err("http.batchConfig.batchAcrossTopics must be a boolean".into()),
        };
        if !members.bool("enableBatching", false)? {
            return Ok(None);
        }
        Ok(Some(BatchConfig {
            open: Duration::from_millis(open),
            // The ranges above fit any usize.
            max_messages: usize::try_from(max_messages).unwrap_or(usize::MAX),
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            across_topics,
        }))
    }
}

/// Where one message's outcome goes.
type Reply = oneshot::Sender<Result<(), String>>;

/// A batch still taking messages.
struct Open {
    /// Tells this batch from a later one of the same key (for its timer).
    id: u64,
    /// `[` and the outputs so far, comma-separated (`]` is added when it closes).
    body: Vec<u8>,
    /// The last message's expanded parameters (URL and header values).
    params: Vec<String>,
    replies: Vec<Reply>,
    /// The task that closes the batch when its time is up.
    timer: Option<AbortHandle>,
}

/// The open batches of one http action, by URL and topic.
pub(super) struct Batcher {
    config: BatchConfig,
    open: Mutex<HashMap<String, Open>>,
    next_id: AtomicU64,
}

impl Batcher {
    /// No batch open yet.
    pub(super) fn new(config: BatchConfig) -> Batcher {
        Batcher {
            config,
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// The configuration.
    pub(super) fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Adds every message to its batch; the outcome of each once its batch is answered.
    /// `params` of a message are the URL, the header values and, last, its topic.
    pub(super) async fn deliver(
        self: &Arc<Self>,
        sender: &Arc<Sender>,
        items: &[Prepared],
    ) -> Vec<Result<(), String>> {
        let waiting: Vec<_> = items.iter().map(|item| self.add(sender, item)).collect();
        let mut outcomes = Vec::with_capacity(waiting.len());
        for wait in waiting {
            outcomes.push(match wait {
                Ok(answer) => answer
                    .await
                    .unwrap_or_else(|_| Err("the batch was dropped before it was sent".into())),
                Err(error) => Err(error),
            });
        }
        outcomes
    }

    /// Adds one message to the open batch of its key (opening one, closing one that is full).
    fn add(
        self: &Arc<Self>,
        sender: &Arc<Sender>,
        item: &Prepared,
    ) -> Result<oneshot::Receiver<Result<(), String>>, String> {
        if serde_json::from_slice::<serde::de::IgnoredAny>(&item.body).is_err() {
            return Err(
                "a batched http action sends a JSON array of the rule's outputs, and this output is not JSON"
                    .into(),
            );
        }
        let (params, topic) = match item.params.split_last() {
            Some((topic, params)) if !params.is_empty() => (params, topic.as_str()),
            _ => return Err("the batched http action's parameters are missing".into()),
        };
        let url = params[0].as_str();
        let key = if self.config.across_topics {
            url.to_owned()
        } else {
            // A URL holds no newline, so the pair is unambiguous.
            format!("{url}\n{topic}")
        };
        let (reply, answer) = oneshot::channel();
        let mut ready = Vec::new();
        {
            let mut open = self.open.lock();
            let mut slot = match open.entry(key) {
                Entry::Occupied(slot) => slot,
                Entry::Vacant(slot) => {
                    let fresh = self.open_batch(sender, slot.key().clone());
                    slot.insert_entry(fresh)
                }
            };
            // A message that would push the body past the limit starts the next batch.
            if !slot.get().replies.is_empty()
                && slot.get().body.len() + 2 + item.body.len() > self.config.max_bytes
            {
                let fresh = self.open_batch(sender, slot.key().clone());
                ready.push(std::mem::replace(slot.get_mut(), fresh));
            }
            let batch = slot.get_mut();
            batch
                .body
                .push(if batch.replies.is_empty() { b'[' } else { b',' });
            batch.body.extend_from_slice(&item.body);
            batch.params.clear();
            batch.params.extend_from_slice(params);
            batch.replies.push(reply);
            if batch.replies.len() >= self.config.max_messages
                || batch.body.len() + 1 >= self.config.max_bytes
            {
                ready.push(slot.remove());
            }
        }
        for mut full in ready {
            if let Some(timer) = full.timer.take() {
                timer.abort();
            }
            tokio::spawn(send(Arc::clone(sender), full));
        }
        Ok(answer)
    }

    /// A new empty batch for `key`, with the timer that closes it.
    fn open_batch(self: &Arc<Self>, sender: &Arc<Sender>, key: String) -> Open {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let timer = tokio::spawn(Arc::clone(self).close_later(Arc::clone(sender), key, id));
        Open {
            id,
            body: Vec::with_capacity(self.config.max_bytes.min(16 * 1024)),
            params: Vec::new(),
            replies: Vec::with_capacity(self.config.max_messages),
            timer: Some(timer.abort_handle()),
        }
    }

    /// Closes batch `id` of `key` once its time is up, if it is still open, and sends it.
    async fn close_later(self: Arc<Self>, sender: Arc<Sender>, key: String, id: u64) {
        tokio::time::sleep(self.config.open).await;
        let due = {
            let mut open = self.open.lock();
            match open.get(&key) {
                Some(batch) if batch.id == id => open.remove(&key),
                _ => None,
            }
        };
        if let Some(mut batch) = due {
            // This task is the timer: nothing to abort.
            batch.timer = None;
            send(sender, batch).await;
        }
    }
}

/// POSTs a closed batch and tells each of its messages the outcome.
async fn send(sender: Arc<Sender>, batch: Open) {
    let Open {
        mut body,
        params,
        replies,
        ..
    } = batch;
    body.push(b']');
    let outcome = sender.post(&params, Bytes::from(body)).await;
    for reply in replies {
        // A message whose deliver call is gone (its rule was replaced) needs no answer.
        let _ = reply.send(outcome.clone());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sql::SqlVersion;

    fn parse(members: serde_json::Value) -> Result<Option<BatchConfig>, String> {
        BatchConfig::parse(&Members::new("http", &members, SqlVersion::V2016_03_23))
    }

    #[test]
    fn defaults_are_aws_s() {
        let config = parse(json!({"url": "https://a.test/", "enableBatching": true}))
            .expect("valid")
            .expect("batching");
        assert_eq!(
            config,
            BatchConfig {
                open: Duration::from_millis(20),
                max_messages: 10,
                max_bytes: 5_120,
                across_topics: false,
            }
        );
        assert_eq!(
            parse(json!({"url": "https://a.test/", "batchConfig": {"maxBatchSize": 2}})),
            Ok(None),
            "no batching without enableBatching"
        );
    }

    #[test]
    fn limits_outside_aws_ranges_are_refused() {
        for (config, field) in [
            (json!({"maxBatchOpenMs": 4}), "maxBatchOpenMs"),
            (json!({"maxBatchOpenMs": 201}), "maxBatchOpenMs"),
            (json!({"maxBatchSize": 1}), "maxBatchSize"),
            (json!({"maxBatchSize": 11}), "maxBatchSize"),
            (json!({"maxBatchSizeBytes": 99}), "maxBatchSizeBytes"),
            (json!({"maxBatchSizeBytes": 131_073}), "maxBatchSizeBytes"),
            (json!({"maxBatchSize": "5"}), "maxBatchSize"),
            (json!({"maxBatchSize": 2.5}), "maxBatchSize"),
            (json!({"batchAcrossTopics": "yes"}), "batchAcrossTopics"),
        ] {
            let error = parse(json!({"url": "https://a.test/", "enableBatching": true,
                                     "batchConfig": config}))
            .expect_err("refused");
            assert!(error.contains(field), "{config}: {error}");
        }
        let edges = parse(json!({"url": "https://a.test/", "enableBatching": true,
            "batchConfig": {"maxBatchOpenMs": 200, "maxBatchSize": 2, "maxBatchSizeBytes": 100,
                            "batchAcrossTopics": true}}))
        .expect("valid")
        .expect("batching");
        assert_eq!(edges.max_messages, 2);
        assert_eq!(edges.max_bytes, 100);
        assert!(edges.across_topics);
    }
}
