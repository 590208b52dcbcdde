//! The ingest writer over the embedded stream store: more messages than one put may take
//! (500) queue up at once; the writer appends them in several puts, the watermark reaches the
//! last ticket, and the ingest stream holds every record in order. With several partitions,
//! each publisher's messages go to one partition, in order, and each partition's watermark
//! covers its own tickets. The in-memory tail a caught-up rules reader takes holds the same
//! records as the log.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fleetcore_mqtt::broker::{IngestLog, Ingested, Message, Publisher};
use fleetcore_mqtt::protocol::{PublishProperties, QoS, Utf8};
use fleetcore_rules::ingest::{
    INGEST_STREAM, IngestConfig, IngestFilter, IngestPartition, IngestRecord, IngestWriter,
};
use fleetcore_rules::ingest_tail::TailRead;
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

async fn partition(dir: &std::path::Path) -> Arc<IngestPartition> {
    let store: Arc<dyn Stream> = Arc::new(
        EmbeddedStreams::open(dir, EmbeddedConfig::default())
            .await
            .expect("store"),
    );
    Arc::new(IngestPartition::open(store, 24).await.expect("partition"))
}

/// Every record of a partition, decoded: (client id, topic).
async fn stored(partition: &IngestPartition) -> Vec<(String, String)> {
    let mut from = Position(0);
    let mut out = Vec::new();
    loop {
        let batch = partition
            .stream
            .read(INGEST_STREAM, partition.shard, from, 10_000)
            .await
            .expect("read");
        if batch.records.is_empty() {
            return out;
        }
        for record in &batch.records {
            let stored = IngestRecord::decode(&record.data).expect("decodes");
            out.push((
                stored.client_id.as_deref().unwrap_or("").to_string(),
                stored.topic.to_string(),
            ));
        }
        from = batch.next;
    }
}

/// Wants the topics under `t/`.
struct UnderT;

impl IngestFilter for UnderT {
    fn wants(&self, topic: &str) -> bool {
        topic.starts_with("t/")
    }
}

#[tokio::test]
async fn large_backlogs_are_appended_in_several_puts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let partition = partition(dir.path()).await;
    let writer = IngestWriter::start(
        std::slice::from_ref(&partition),
        Arc::new(UnderT),
        IngestConfig::default(),
    );
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
    let mut durable = writer.durable(publisher);
    tokio::time::timeout(Duration::from_secs(30), durable.wait_for(|w| *w >= last))
        .await
        .expect("durable in time")
        .expect("writer alive");
    let topics: Vec<String> = stored(&partition)
        .await
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let expected: Vec<String> = (0..1230).map(|i| format!("t/{i}")).collect();
    assert_eq!(topics, expected);

    // What a rules reader that keeps up takes from memory is what the log holds: the same
    // records, sequence numbers and bytes, in order; before them it is sent to the log.
    let logged = logged(&partition).await;
    let first = Position(logged[0].0);
    let TailRead::Records(recent) = partition.recent.read(first, 10_000) else {
        panic!("the tail holds every record appended since the partition opened");
    };
    let recent: Vec<(u128, Bytes)> = recent.into_iter().map(|r| (r.sequence.0, r.data)).collect();
    assert_eq!(recent, logged);
    assert!(matches!(
        partition.recent.read(Position(first.0 - 1), 1),
        TailRead::Behind
    ));
}

/// Every record of a partition's log: (sequence number, bytes).
async fn logged(partition: &IngestPartition) -> Vec<(u128, Bytes)> {
    let mut from = Position(0);
    let mut out = Vec::new();
    loop {
        let batch = partition
            .stream
            .read(INGEST_STREAM, partition.shard, from, 10_000)
            .await
            .expect("read");
        if batch.records.is_empty() {
            return out;
        }
        out.extend(batch.records.into_iter().map(|r| (r.sequence.0, r.data)));
        from = batch.next;
    }
}

#[tokio::test]
async fn each_publisher_keeps_to_one_partition_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut partitions = Vec::new();
    for n in 0..4 {
        partitions.push(partition(&dir.path().join(format!("p{n}"))).await);
    }
    let writer = IngestWriter::start(&partitions, Arc::new(UnderT), IngestConfig::default());
    let clients: Vec<String> = (0..16).map(|c| format!("client-{c}")).collect();
    let mut last = vec![0u64; clients.len()];
    for i in 0..200 {
        for (c, client) in clients.iter().enumerate() {
            let publisher = Publisher {
                client_id: Some(client),
                principal: None,
            };
            match writer.ingest(&message(&format!("t/{i}"), vec![1]), publisher) {
                Ingested::Accepted(ticket) => last[c] = ticket,
                other => panic!("not accepted: {other:?}"),
            }
        }
    }
    // Each publisher's watermark (its partition's) reaches its last ticket.
    for (c, client) in clients.iter().enumerate() {
        let publisher = Publisher {
            client_id: Some(client),
            principal: None,
        };
        let mut durable = writer.durable(publisher);
        tokio::time::timeout(Duration::from_secs(30), durable.wait_for(|w| *w >= last[c]))
            .await
            .expect("durable in time")
            .expect("writer alive");
    }
    let mut used = 0;
    let mut seen = std::collections::BTreeMap::<String, Vec<String>>::new();
    let mut home = std::collections::BTreeMap::<String, usize>::new();
    for (number, partition) in partitions.iter().enumerate() {
        let records = stored(partition).await;
        if !records.is_empty() {
            used += 1;
        }
        for (client, topic) in records {
            let at = *home.entry(client.clone()).or_insert(number);
            assert_eq!(at, number, "{client} is in more than one partition");
            seen.entry(client).or_default().push(topic);
        }
    }
    assert!(
        used > 1,
        "16 publishers spread over more than one of 4 partitions"
    );
    let expected: Vec<String> = (0..200).map(|i| format!("t/{i}")).collect();
    assert_eq!(seen.len(), clients.len());
    for (client, topics) in seen {
        assert_eq!(topics, expected, "{client}: all in one partition, in order");
    }
}
