//! The stored resources: channels, pipelines, datastores, datasets and dataset contents, with
//! the members AWS's Describe operations return kept as the client sent them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A channel: raw messages kept in the channel's folder or a customer's bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelRecord {
    /// The name.
    pub name: String,
    /// `channelStorage` as given (`serviceManagedS3` or `customerManagedS3`).
    pub storage: Value,
    /// `retentionPeriod` as given.
    pub retention: Value,
    /// Creation, epoch seconds.
    pub created: f64,
    /// Last update, epoch seconds.
    pub updated: f64,
    /// The stream the channel is fed from, if any (tag [`crate::SOURCE_TAG`]).
    #[serde(default)]
    pub source: Option<StreamSource>,
}

impl ChannelRecord {
    /// The customer-managed bucket its files are in (`None`: the server's data folder).
    pub fn customer_s3(&self) -> Option<crate::bucket::CustomerS3> {
        // Checked at create, so an error cannot come back here.
        crate::bucket::CustomerS3::of("channel", &self.storage)
            .ok()
            .flatten()
    }
}

/// A channel's stream source: a consumer group that appends the stream's records to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSource {
    /// The stream's name.
    pub stream: String,
    /// The consumer group (named after the channel and the time the source was set, so a new
    /// source starts afresh).
    pub group: String,
    /// Records that arrived from this time on (epoch milliseconds) are read.
    pub since_ms: i64,
}

/// A pipeline: the activities from a channel to a datastore.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineRecord {
    /// The name.
    pub name: String,
    /// `pipelineActivities` as given (checked at create).
    pub activities: Vec<Value>,
    /// Creation, epoch seconds.
    pub created: f64,
    /// Last update, epoch seconds.
    pub updated: f64,
}

/// One column of a datastore's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The attribute name.
    pub name: String,
    /// The Parquet/Arrow type: `bigint`, `double`, `boolean` or `string`.
    pub kind: ColumnKind,
}

/// The column types a datastore holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// 64-bit integers.
    Bigint,
    /// 64-bit floats.
    Double,
    /// Booleans.
    Boolean,
    /// UTF-8 text (objects and arrays as JSON text).
    String,
}

impl ColumnKind {
    /// The kind that holds values of both (integers widen to doubles, anything else to text).
    pub fn widen(self, other: ColumnKind) -> ColumnKind {
        use ColumnKind::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Bigint, Double) | (Double, Bigint) => Double,
            _ => String,
        }
    }

    /// The kind of a Glue-style type name (`parquetConfiguration.schemaDefinition`).
    pub fn from_glue(name: &str) -> Option<ColumnKind> {
        match name.to_ascii_lowercase().as_str() {
            "bigint" | "int" | "integer" | "smallint" | "tinyint" => Some(ColumnKind::Bigint),
            "double" | "float" | "decimal" => Some(ColumnKind::Double),
            "boolean" => Some(ColumnKind::Boolean),
            "string" | "varchar" | "char" => Some(ColumnKind::String),
            _ => None,
        }
    }
}

/// A datastore: Hive-partitioned Parquet or JSON files in the datastore's folder or bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatastoreRecord {
    /// The name (also its table name in SQL).
    pub name: String,
    /// `datastoreStorage` as given.
    pub storage: Value,
    /// `retentionPeriod` as given.
    pub retention: Value,
    /// `fileFormatConfiguration` as given.
    pub file_format: Value,
    /// `datastorePartitions` as given.
    pub partitions: Value,
    /// The attribute whose value partitions the files (after the time), if any.
    pub attribute_partition: Option<String>,
    /// The attribute holding the time that partitions the files (arrival time when absent).
    pub timestamp_partition: Option<String>,
    /// Whether the columns were given by the user (never widened) or learned from messages.
    pub fixed_schema: bool,
    /// The columns of its table, in order of first appearance (key order within a message).
    pub columns: Vec<Column>,
    /// Creation, epoch seconds.
    pub created: f64,
    /// Last update, epoch seconds.
    pub updated: f64,
    /// Last message written, epoch seconds.
    #[serde(default)]
    pub last_message: Option<f64>,
}

impl DatastoreRecord {
    /// The customer-managed bucket its files are in (`None`: the server's data folder).
    pub fn customer_s3(&self) -> Option<crate::bucket::CustomerS3> {
        // Checked at create, so an error cannot come back here.
        crate::bucket::CustomerS3::of("datastore", &self.storage)
            .ok()
            .flatten()
    }

    /// The format of its files (`fileFormatConfiguration`: Parquet unless `jsonConfiguration`).
    pub fn format(&self) -> crate::query::FileFormat {
        if self
            .file_format
            .get("jsonConfiguration")
            .is_some_and(|j| !j.is_null())
        {
            crate::query::FileFormat::Json
        } else {
            crate::query::FileFormat::Parquet
        }
    }
}

/// A dataset: a SQL query over the datastores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetRecord {
    /// The name.
    pub name: String,
    /// `actions` as given (one queryAction).
    pub actions: Vec<Value>,
    /// The query action's SQL.
    pub sql: String,
    /// `retentionPeriod` as given.
    pub retention: Value,
    /// `versioningConfiguration` as given.
    pub versioning: Value,
    /// `contentDeliveryRules` as given.
    pub delivery_rules: Value,
    /// `triggers` as given (checked at create: schedules and datasets).
    #[serde(default)]
    pub triggers: Vec<Value>,
    /// Creation, epoch seconds.
    pub created: f64,
    /// Last update, epoch seconds.
    pub updated: f64,
}

/// The state of one dataset content version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ContentState {
    /// The query runs.
    Creating,
    /// The CSV is ready.
    Succeeded,
    /// The query failed; the reason says why.
    Failed,
}

/// One version of a dataset's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentRecord {
    /// The version id (a UUID).
    pub version: String,
    /// The state.
    pub state: ContentState,
    /// Why it failed.
    pub reason: Option<String>,
    /// The secret part of its download URL.
    pub token: String,
    /// Creation, epoch seconds.
    pub created: f64,
    /// Completion, epoch seconds.
    pub completed: Option<f64>,
}

/// The current time, epoch seconds.
pub fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
