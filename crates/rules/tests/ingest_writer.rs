//! The ingest writer over the embedded stream store: more messages than one put may take
//! (500) queue up at once; the writer appends them in several puts, the watermark reaches the
//! last ticket, and the ingest stream holds every record in order.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetcore_mqtt::broker::{IngestLog, Ingested, Message, Publisher};
use fleetcore_mqtt::protocol::{PublishProperties, QoS, Utf8};
use fleetcore_rules::ingest::{
    INGEST_STREAM, IngestConfig, IngestFilters, IngestRecord, IngestWriter,
};
use fleetcore_stream::{EmbeddedConfig, EmbeddedStreams, Position, Stream};

fn message(topic: &str, payload: Vec<u8>) -> Arc<Message> {
    Arc::new(Message {
        topic: Utf8::new(topic).expect("topic"),
        payload: Bytes::from(payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: PublishProperties::default(),
        expires_at: None,
        origin: None,
    })
}

#[tokio::test]
async fn large_backlogs_are_appended_in_several_puts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let streams: Arc<dyn Stream> = Arc::new(
        EmbeddedStreams::open(dir.path(), EmbeddedConfig::default())
            .await
            .expect("store"),
    );
    let filters = Arc::new(IngestFilters::default());
    filters.set(vec!["t/#".into()]);
    let writer = IngestWriter::start(Arc::clone(&streams), filters, IngestConfig::default())
        .await
        .expect("writer");
    let publisher = Publisher {
        client_id: Some("c"),
        principal: Some("p"),
    };
    assert_eq!(
        writer.ingest(&message("other", vec![1]), publisher),
        Ingested::NotWanted
    );
    // 1,200 small messages and 30 of 500 KiB (more than 10 MiB together): several puts.
    let mut last = 0;
    for i in 0..1230u32 {
        let payload = if i >= 1200 {
            vec![7u8; 500 << 10]
        } else {
            i.to_be_bytes().to_vec()
        };
        match writer.ingest(&message(&format!("t/{i}"), payload), publisher) {
            Ingested::Accepted(ticket) => last = ticket,
            other => panic!("message {i} not accepted: {other:?}"),
        }
    }
    let mut durable = writer.durable();
    tokio::time::timeout(Duration::from_secs(30), durable.wait_for(|w| *w >= last))
        .await
        .expect("durable in time")
        .expect("writer alive");

    let shard = streams
        .describe_stream(INGEST_STREAM)
        .await
        .expect("stream")
        .shards[0]
        .id;
    let mut from = Position(0);
    let mut topics = Vec::new();
    loop {
        let batch = streams
            .read(INGEST_STREAM, shard, from, 10_000)
            .await
            .expect("read");
        if batch.records.is_empty() {
            break;
        }
        for record in &batch.records {
            let stored = IngestRecord::decode(&record.data).expect("decodes");
            assert_eq!(stored.client_id.as_deref(), Some("c"));
            topics.push(stored.topic.to_string());
        }
        from = batch.next;
    }
    let expected: Vec<String> = (0..1230).map(|i| format!("t/{i}")).collect();
    assert_eq!(topics, expected);
}
