//! Channels fed from a Kinesis-API stream (the reference's stream -> channel). IoT Analytics
//! has no such source in its API, so a channel takes one from its tag [`SOURCE_TAG`] (a stream
//! ARN or name), which every client can send: CreateChannel's tags or TagResource, and
//! UntagResource stops it. A stream that does not exist is refused when the tag is set.
//!
//! A source is one member of the consumer group [`StreamSource::group`] (stream crate: leases
//! and checkpoints). Each batch of records goes to the channel as one put that carries the
//! batch's mark (shard and next position, written in the same channel file, atomically with the
//! messages), and only then is the batch checkpointed. One batch is in flight at a time, so only
//! the newest marked batch can be in the channel without its checkpoint: after a crash the
//! source reads the newest mark of its group and skips the records before it (counted in
//! `fleetcore_analytics_source_duplicates_total`). Each record thus reaches the channel once,
//! and the pipeline's own checkpoints carry it to the datastore once. A record that is not a
//! valid message is dropped and counted in `fleetcore_analytics_source_invalid_total`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetcore_core::Arn;
use fleetcore_stream::{ConsumerConfig, ConsumerGroup, StartingPosition, Stream, StreamError};

use crate::Analytics;
use crate::channel::Mark;
use crate::error::AnalyticsError;
use crate::model::{ChannelRecord, StreamSource};
use crate::resources::Tags;

/// The channel tag that names the stream a channel is fed from.
pub const SOURCE_TAG: &str = "fleetcore:sourceStreamArn";

/// First wait before retrying after a failure (doubling up to [`MAX_BACKOFF`]).
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The stream name a [`SOURCE_TAG`] value names: `arn:aws:kinesis:<region>:<account>:stream/<name>`
/// or the bare name.
fn stream_name(value: &str) -> Result<String, AnalyticsError> {
    let refused = || {
        AnalyticsError::Invalid(format!(
            "tag {SOURCE_TAG} must name a Kinesis stream (arn:aws:kinesis:<region>:<account>:stream/<name>, or its name), not `{value}`"
        ))
    };
    let name = if value.starts_with("arn:") {
        let arn = Arn::parse(value).map_err(|_| refused())?;
        if arn.service != "kinesis" {
            return Err(refused());
        }
        arn.resource
            .strip_prefix("stream/")
            .ok_or_else(refused)?
            .to_string()
    } else {
        value.to_string()
    };
    if name.is_empty() || name.contains(['/', ':']) {
        return Err(refused());
    }
    Ok(name)
}

fn epoch_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Analytics {
    /// The source channel `channel` (currently `current`) should have with `tags`, checked: the
    /// stream exists on this server. The current source stays if the tag still names its stream.
    pub(crate) async fn source_for(
        &self,
        channel: &str,
        current: Option<&StreamSource>,
        tags: &Tags,
    ) -> Result<Option<StreamSource>, AnalyticsError> {
        let Some(value) = tags.get(SOURCE_TAG) else {
            return Ok(None);
        };
        let stream = stream_name(value)?;
        if let Some(current) = current.filter(|c| c.stream == stream) {
            return Ok(Some(current.clone()));
        }
        let streams = self.services.streams.as_ref().ok_or_else(|| {
            AnalyticsError::Invalid(format!(
                "tag {SOURCE_TAG}: this server runs no streams to feed a channel from"
            ))
        })?;
        match streams.describe_stream(&stream).await {
            // The Kinesis API does not serve fleetcore's own streams; neither does this.
            Ok(_) if !fleetcore_stream::is_internal_stream(&stream) => {}
            Ok(_) | Err(StreamError::NotFound(_)) => {
                return Err(AnalyticsError::Invalid(format!(
                    "tag {SOURCE_TAG}: stream {stream} does not exist"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        let since_ms = epoch_ms(SystemTime::now());
        Ok(Some(StreamSource {
            group: format!("iotanalytics.{channel}.{since_ms}"),
            stream,
            since_ms,
        }))
    }

    /// Starts (or restarts) the source of `channel`, or stops it when it has none.
    pub(crate) fn run_source(self: &Arc<Self>, record: &ChannelRecord) {
        let (Some(source), Some(streams)) = (&record.source, &self.services.streams) else {
            self.stop_source(&record.name);
            return;
        };
        let task = tokio::spawn(run(
            Arc::clone(self),
            record.name.clone(),
            source.clone(),
            Arc::clone(streams),
        ));
        if let Some(old) = self
            .sources
            .lock()
            .insert(record.name.clone(), task.abort_handle())
        {
            old.abort();
        }
    }

    /// Stops the source of `channel`, if it runs.
    pub(crate) fn stop_source(&self, channel: &str) {
        if let Some(task) = self.sources.lock().remove(channel) {
            task.abort();
        }
    }
}

/// Feeds `channel` from `source` until aborted, starting again after a failure.
async fn run(
    analytics: Arc<Analytics>,
    channel: String,
    source: StreamSource,
    streams: Arc<dyn Stream>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Err(e) = consume(&analytics, &channel, &source, &streams, &mut backoff).await;
        tracing::warn!(%channel, stream = %source.stream, error = %e, "channel source failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Reads the stream into the channel, batch by batch (returns only on a failure).
async fn consume(
    analytics: &Arc<Analytics>,
    channel: &str,
    source: &StreamSource,
    streams: &Arc<dyn Stream>,
    backoff: &mut Duration,
) -> Result<std::convert::Infallible, AnalyticsError> {
    // Where the channel already is in each shard: the newest mark (see the module docs).
    let mut written: HashMap<u32, u128> = HashMap::new();
    let newest = analytics.channels.last_mark(channel, &source.group).await?;
    if let Some(mark) = newest {
        written.insert(mark.shard, mark.next);
    }
    let since = UNIX_EPOCH + Duration::from_millis(source.since_ms.max(0) as u64);
    let mut group = ConsumerGroup::new(
        Arc::clone(streams),
        source.stream.clone(),
        source.group.clone(),
        analytics.config.consumer_owner.clone(),
        ConsumerConfig {
            start: StartingPosition::AtTimestamp(since),
            ..ConsumerConfig::default()
        },
    );
    loop {
        let batch = group.next().await?;
        let floor = written.get(&batch.shard.0).copied().unwrap_or(0);
        let mut messages = Vec::with_capacity(batch.records.len());
        let (mut duplicates, mut invalid) = (0u64, 0u64);
        for record in &batch.records {
            if record.sequence.0 < floor {
                duplicates += 1;
                continue;
            }
            match crate::parse_message(&record.data) {
                Ok(message) => messages.push(message),
                Err(reason) => {
                    invalid += 1;
                    tracing::debug!(channel, sequence = %record.sequence, reason, "stream record is not a channel message; dropped");
                }
            }
        }
        if duplicates > 0 {
            metrics::counter!("fleetcore_analytics_source_duplicates_total", "channel" => channel.to_string())
                .increment(duplicates);
        }
        if invalid > 0 {
            metrics::counter!("fleetcore_analytics_source_invalid_total", "channel" => channel.to_string())
                .increment(invalid);
            tracing::warn!(
                channel,
                records = invalid,
                "stream records that are not JSON objects with valid attribute names were dropped"
            );
        }
        if batch.next.0 > floor {
            let mark = Mark {
                group: source.group.clone(),
                shard: batch.shard.0,
                next: batch.next.0,
            };
            analytics
                .channels
                .append(channel, epoch_ms(SystemTime::now()), &messages, Some(&mark))
                .await?;
            written.insert(mark.shard, mark.next);
        }
        group.commit(&batch).await?;
        *backoff = FIRST_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AnalyticsConfig, Services};
    use fleetcore_core::{AccountContext, KvStore, RedbStore};
    use fleetcore_stream::{EmbeddedConfig, EmbeddedStreams, NewRecord, StreamMode, StreamSpec};
    use serde_json::{Value, json};

    async fn setup() -> (Arc<Analytics>, Arc<dyn Stream>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn KvStore> =
            Arc::new(RedbStore::open(&dir.path().join("store.redb")).unwrap());
        let streams: Arc<dyn Stream> = Arc::new(
            EmbeddedStreams::open(&dir.path().join("streams"), EmbeddedConfig::default())
                .await
                .unwrap(),
        );
        streams
            .create_stream(StreamSpec {
                name: "telemetry".into(),
                mode: StreamMode::Provisioned,
                shard_count: 1,
                retention_hours: 24,
            })
            .await
            .unwrap();
        let config = AnalyticsConfig {
            root: dir.path().join("analytics"),
            account: AccountContext::new("us-east-1", "000000000000"),
            content_base_url: "http://127.0.0.1:0".into(),
            consumer_owner: "test-node".into(),
        };
        let services = Services {
            streams: Some(Arc::clone(&streams)),
            ..Services::default()
        };
        let analytics = Analytics::start(store, config, services).unwrap();
        (analytics, streams, dir)
    }

    async fn put(streams: &Arc<dyn Stream>, seqs: std::ops::Range<u64>) -> Vec<u128> {
        let records = seqs
            .map(|seq| NewRecord {
                partition_key: "k".into(),
                explicit_hash_key: None,
                data: bytes::Bytes::from(json!({ "seq": seq }).to_string()),
            })
            .collect();
        streams
            .put_records("telemetry", records)
            .await
            .unwrap()
            .into_iter()
            .map(|outcome| outcome.unwrap().sequence.0)
            .collect()
    }

    /// The `seq` of every message in the channel, in file order.
    fn channel_seqs(analytics: &Analytics, channel: &str) -> Vec<u64> {
        crate::channel::numbered(&analytics.channels.dir(channel))
            .unwrap()
            .iter()
            .flat_map(|(_, path)| crate::channel::read_file(path).unwrap())
            .filter_map(|stored| stored.message.get("seq").and_then(Value::as_u64))
            .collect()
    }

    async fn wait_for_seqs(analytics: &Analytics, channel: &str, count: usize) -> Vec<u64> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let seqs = channel_seqs(analytics, channel);
            if seqs.len() >= count || tokio::time::Instant::now() > deadline {
                return seqs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn source_tag(value: &str) -> Tags {
        Tags::from([(SOURCE_TAG.to_string(), value.to_string())])
    }

    #[tokio::test]
    async fn a_batch_in_the_channel_but_not_checkpointed_is_not_written_again() {
        let (analytics, streams, _dir) = setup().await;
        let tags = source_tag("arn:aws:kinesis:us-east-1:000000000000:stream/telemetry");
        let record = analytics
            .create_channel("c", json!({}), json!({}), tags)
            .await
            .unwrap();
        let source = record.source.clone().unwrap();
        put(&streams, 0..10).await;
        assert_eq!(
            wait_for_seqs(&analytics, "c", 10).await,
            (0..10).collect::<Vec<_>>()
        );

        // A crash between the channel file and the checkpoint: the source stops, then the
        // next batch (records 10..15) is in the channel with its mark but not checkpointed.
        analytics.stop_source("c");
        let sequences = put(&streams, 10..15).await;
        let messages: Vec<_> = (10..15)
            .map(|seq| crate::parse_message(json!({ "seq": seq }).to_string().as_bytes()).unwrap())
            .collect();
        let mark = Mark {
            group: source.group.clone(),
            shard: 0,
            next: sequences[4] + 1,
        };
        analytics
            .channels
            .append("c", 0, &messages, Some(&mark))
            .await
            .unwrap();
        put(&streams, 15..20).await;
        analytics.run_source(&record);
        let seqs = wait_for_seqs(&analytics, "c", 20).await;
        assert_eq!(
            seqs,
            (0..20).collect::<Vec<_>>(),
            "each record once, in order"
        );
        // Nothing more arrives later either.
        put(&streams, 20..21).await;
        assert_eq!(wait_for_seqs(&analytics, "c", 21).await.len(), 21);
    }

    #[tokio::test]
    async fn a_missing_stream_is_refused_and_untagging_stops_the_source() {
        let (analytics, streams, _dir) = setup().await;
        let refused = analytics
            .create_channel("c", json!({}), json!({}), source_tag("nope"))
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("stream nope does not exist"),
            "{refused}"
        );
        assert!(analytics.channel("c").is_err(), "nothing stored");

        analytics
            .create_channel("c", json!({}), json!({}), Tags::new())
            .await
            .unwrap();
        let arn = analytics.resource_arn("channel", "c");
        analytics.tag(&arn, source_tag("telemetry")).await.unwrap();
        put(&streams, 0..3).await;
        assert_eq!(wait_for_seqs(&analytics, "c", 3).await.len(), 3);
        analytics
            .untag(&arn, &[SOURCE_TAG.to_string()])
            .await
            .unwrap();
        assert!(analytics.channel("c").unwrap().source.is_none());
        assert!(!analytics.sources.lock().contains_key("c"));
    }

    #[test]
    fn tag_values() {
        assert_eq!(
            stream_name("arn:aws:kinesis:us-east-1:000000000000:stream/telemetry").unwrap(),
            "telemetry"
        );
        assert_eq!(stream_name("telemetry").unwrap(), "telemetry");
        for bad in [
            "arn:aws:sqs:us-east-1:000000000000:queue",
            "arn:aws:kinesis:us-east-1:000000000000:telemetry",
            "",
            "a/b",
        ] {
            assert!(stream_name(bad).is_err(), "{bad}");
        }
    }
}
