//! Retained messages cluster-wide, on a JetStream key-value bucket (`<prefix>_retained`): the
//! last retained message of each topic, whichever node it was published on.
//!
//! A service tap hands every retained publish of this node to a bounded queue (4,096; full: not
//! shared with the other nodes, counted as `fleetcore_cluster_dropped_total{reason="retained_full"}`)
//! that one task writes to the bucket in order (key: the topic in unpadded URL-safe base64; value:
//! a format byte, the QoS, the payload; an empty payload clears the topic), retrying a failed
//! write until it is stored. Every node watches the bucket from its last value per key on (so a
//! node that starts, or comes back, gets the whole current set) and applies each entry to its own
//! retained store, its own writes included: the bucket's order decides, so all nodes end with the
//! same message per topic even when several publish on one topic at once (a node may show its
//! own newer message a moment before the bucket's copy of an older one passes by).
//!
//! Why JetStream KV rather than PostgreSQL: the nodes already share NATS, and a watch gives each
//! node the current set and then every change in one ordered feed; retained messages are broker
//! state that a cluster without PostgreSQL (embedded state per node) needs as well.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::{BufMut, Bytes, BytesMut};
use fleetcore_mqtt::broker::{Message, Router, ServiceTap};
use fleetcore_mqtt::protocol::{PublishProperties, QoS, Utf8};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::{ClusterConfig, ClusterError};

/// The format byte leading every value.
const FORMAT: u8 = 1;
/// Retained publishes waiting to be written to the bucket.
const QUEUE: usize = 4096;
/// The longest pause between two attempts of a failed write or watch.
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Hands this node's retained publishes to the writer; never blocks.
struct RetainedTap {
    queue: mpsc::Sender<Arc<Message>>,
}

impl ServiceTap for RetainedTap {
    fn on_message(&self, message: &Arc<Message>) {
        if !message.retain {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(Arc::clone(message)) {
            metrics::counter!("fleetcore_cluster_dropped_total", "reason" => "retained_full")
                .increment(1);
        }
    }
}

/// Opens (or creates) the bucket, taps this node's retained publishes and starts applying the
/// bucket to `router`'s retained store.
pub(crate) async fn start(
    config: &ClusterConfig,
    client: &async_nats::Client,
    router: Arc<Router>,
) -> Result<(), ClusterError> {
    let js = jetstream::new(client.clone());
    let name = format!("{}_retained", config.subject_prefix);
    let bucket = crate::kv_bucket::bucket(&js, &name, "fleetcore retained messages, one per topic")
        .await
        .map_err(|message| ClusterError::JetStream {
            stream: format!("KV_{name}"),
            message,
        })?;
    let (queue, writes) = mpsc::channel(QUEUE);
    router.add_tap(vec!["#".into()], Arc::new(RetainedTap { queue }))?;
    tokio::spawn(write(bucket.clone(), writes));
    tokio::spawn(apply(bucket, router));
    Ok(())
}

/// The bucket key of `topic`.
fn key(topic: &str) -> String {
    URL_SAFE_NO_PAD.encode(topic)
}

/// The bucket value of a retained message.
fn value(message: &Message) -> Bytes {
    let mut out = BytesMut::with_capacity(2 + message.payload.len());
    out.put_u8(FORMAT);
    out.put_u8(message.qos as u8);
    out.put_slice(&message.payload);
    out.freeze()
}

/// The retained message of a bucket entry, or `None` if it is not one.
fn decode(key: &str, value: &Bytes) -> Option<Message> {
    let topic = String::from_utf8(URL_SAFE_NO_PAD.decode(key).ok()?).ok()?;
    let (&format, rest) = value.split_first()?;
    let (&qos, _) = rest.split_first()?;
    if format != FORMAT {
        return None;
    }
    Some(Message {
        topic: Utf8::new(topic)?,
        payload: value.slice(2..),
        qos: QoS::from_u8(qos)?,
        retain: true,
        properties: PublishProperties::default(),
        expires_at: None,
        origin: None,
    })
}

/// Writes this node's retained publishes to the bucket, in order.
async fn write(bucket: kv::Store, mut writes: mpsc::Receiver<Arc<Message>>) {
    while let Some(message) = writes.recv().await {
        let (key, value) = (key(&message.topic), value(&message));
        let mut pause = Duration::from_millis(50);
        while let Err(e) = bucket.put(&key, value.clone()).await {
            metrics::counter!("fleetcore_cluster_retained_retries_total").increment(1);
            tracing::warn!(error = %e, topic = %&*message.topic,
                "a retained message could not be shared with the other nodes: retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
}

/// Applies the bucket (its current set, then every change) to this node's retained store.
async fn apply(bucket: kv::Store, router: Arc<Router>) {
    loop {
        match bucket.watch_with_history(">").await {
            Ok(mut entries) => {
                while let Some(entry) = entries.next().await {
                    match entry {
                        Ok(entry) if entry.operation == kv::Operation::Put => {
                            match decode(&entry.key, &entry.value) {
                                Some(message) => router.retain(&Arc::new(message)),
                                None => tracing::warn!(key = %entry.key,
                                    "ignoring a malformed retained message from the cluster"),
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "watching the cluster's retained messages");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch the cluster's retained messages"),
        }
        // Watching again replays the current set: applying it twice changes nothing.
        tokio::time::sleep(MAX_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retained_message_survives_its_key_and_value() {
        for topic in ["a/b", "with space/+x/#/", "/", "ünï/cødé", "$aws/x"] {
            let message = Message {
                topic: Utf8::new(topic).expect("topic"),
                payload: Bytes::from_static(b"payload \x00\xff"),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: PublishProperties::default(),
                expires_at: None,
                origin: None,
            };
            let k = key(topic);
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{k} is a valid KV key"
            );
            let back = decode(&k, &value(&message)).expect("decodes");
            assert_eq!(
                (&*back.topic, &back.payload[..], back.qos),
                (topic, &message.payload[..], QoS::AtLeastOnce)
            );
        }
        assert!(decode("!!", &Bytes::from_static(b"\x01\x01x")).is_none());
        assert!(decode(&key("t"), &Bytes::from_static(b"\x09\x01x")).is_none());
        assert!(decode(&key("t"), &Bytes::new()).is_none());
    }
}
