//! Lambda's Kinesis event (`{"Records": [{"kinesis": {...}, "eventSource": "aws:kinesis", ...}]}`),
//! serialized straight from the stream's records: each record's data is base64-encoded into the
//! output as it is written, with no intermediate JSON tree or string per record.

use std::fmt;

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use fleetcore_stream::{Record, ShardId};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// The event of one batch of `records` read from `shard` of the stream `source_arn`.
pub(super) struct KinesisEvent<'a> {
    /// The batch.
    pub records: &'a [Record],
    /// The shard they were read from.
    pub shard: ShardId,
    /// `eventSourceARN`.
    pub source_arn: &'a str,
    /// `awsRegion`.
    pub region: &'a str,
    /// `invokeIdentityArn`.
    pub identity_arn: &'a str,
}

impl KinesisEvent<'_> {
    /// The event as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // About 330 bytes of fields per record beside its data, which base64 grows by a third.
        let size: usize = self
            .records
            .iter()
            .map(|r| 400 + r.data.len() * 4 / 3)
            .sum();
        let mut out = Vec::with_capacity(size + 16);
        // Writing to a Vec cannot fail, and every field serializes.
        if let Err(error) = serde_json::to_writer(&mut out, self) {
            tracing::error!(%error, "could not serialize a Kinesis event");
        }
        out
    }
}

impl Serialize for KinesisEvent<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut event = serializer.serialize_map(Some(1))?;
        event.serialize_entry("Records", &Records(self))?;
        event.end()
    }
}

struct Records<'a, 'b>(&'b KinesisEvent<'a>);

impl Serialize for Records<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event = self.0;
        let mut records = serializer.serialize_seq(Some(event.records.len()))?;
        for record in event.records {
            records.serialize_element(&EventRecord { event, record })?;
        }
        records.end()
    }
}

struct EventRecord<'a, 'b> {
    event: &'b KinesisEvent<'a>,
    record: &'b Record,
}

impl Serialize for EventRecord<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (event, record) = (self.event, self.record);
        let mut map = serializer.serialize_map(Some(8))?;
        map.serialize_entry("kinesis", &KinesisData(record))?;
        map.serialize_entry("eventSource", "aws:kinesis")?;
        map.serialize_entry("eventVersion", "1.0")?;
        map.serialize_entry("eventID", &Displayed(EventId(event.shard, record)))?;
        map.serialize_entry("eventName", "aws:kinesis:record")?;
        map.serialize_entry("invokeIdentityArn", event.identity_arn)?;
        map.serialize_entry("awsRegion", event.region)?;
        map.serialize_entry("eventSourceARN", event.source_arn)?;
        map.end()
    }
}

struct KinesisData<'a>(&'a Record);

impl Serialize for KinesisData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let record = self.0;
        let mut map = serializer.serialize_map(Some(5))?;
        map.serialize_entry("kinesisSchemaVersion", "1.0")?;
        map.serialize_entry("partitionKey", &record.partition_key)?;
        map.serialize_entry("sequenceNumber", &Displayed(&record.sequence))?;
        map.serialize_entry(
            "data",
            &Displayed(Base64Display::new(&record.data, &STANDARD)),
        )?;
        map.serialize_entry(
            "approximateArrivalTimestamp",
            &crate::clock::epoch_seconds(record.arrival),
        )?;
        map.end()
    }
}

/// `shardId-000000000000:<sequence number>`.
struct EventId<'a>(ShardId, &'a Record);

impl fmt::Display for EventId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0, self.1.sequence)
    }
}

/// A value serialized as the string its `Display` writes.
struct Displayed<T>(T);

impl<T: fmt::Display> Serialize for Displayed<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use bytes::Bytes;
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn the_event_has_lambdas_kinesis_shape_and_the_data_in_base64() {
        let records: Vec<Record> = [("k1", "1", &b"{\"t\":1}"[..]), ("k2", "22", b"\x00\xff")]
            .iter()
            .map(|(key, sequence, data)| Record {
                sequence: sequence.parse().expect("a sequence number"),
                arrival: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
                partition_key: (*key).to_string(),
                data: Bytes::copy_from_slice(data),
            })
            .collect();
        let event = KinesisEvent {
            records: &records,
            shard: "shardId-000000000003".parse().expect("a shard id"),
            source_arn: "arn:aws:kinesis:us-east-1:000000000000:stream/in",
            region: "us-east-1",
            identity_arn: "arn:aws:iam::000000000000:role/fleetcore",
        };
        let parsed: Value = serde_json::from_slice(&event.to_json()).expect("JSON");
        let expected = |key: &str, sequence: &str, data: &str| {
            json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": key,
                    "sequenceNumber": sequence,
                    "data": data,
                    "approximateArrivalTimestamp": crate::clock::epoch_seconds(records[0].arrival),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("shardId-000000000003:{sequence}"),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::000000000000:role/fleetcore",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:000000000000:stream/in",
            })
        };
        assert_eq!(
            parsed,
            json!({"Records": [expected("k1", "1", "eyJ0IjoxfQ=="), expected("k2", "22", "AP8=")]})
        );
    }
}
