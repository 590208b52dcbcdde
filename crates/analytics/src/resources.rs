//! Creating, reading, updating and deleting channels, datastores, pipelines and datasets, and
//! their tags. Every request is checked in full before anything is stored: what this server
//! cannot run (a container action) is refused here, and a customer-managed channel's or
//! datastore's bucket is checked to be there and take writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use fleetcore_core::WriteBatch;
use serde_json::Value;

use crate::Analytics;
use crate::bucket::CustomerS3;
use crate::catalog::Catalog;
use crate::error::AnalyticsError;
use crate::model::{
    ChannelRecord, Column, ColumnKind, DatasetRecord, DatastoreRecord, PipelineRecord, now_seconds,
};
use crate::pipeline::Plan;

/// Tags of a resource, key to value.
pub type Tags = BTreeMap<String, String>;

fn invalid(message: impl Into<String>) -> AnalyticsError {
    AnalyticsError::Invalid(message.into())
}

/// Names are 1 to 128 letters, digits and `_` (AWS's pattern; a datastore's is its table name).
fn check_name(kind: &str, name: &str) -> Result<(), AnalyticsError> {
    if name.is_empty()
        || name.len() > 128
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(invalid(format!(
            "{kind} name `{name}` is not valid: 1 to 128 letters, digits and _"
        )));
    }
    Ok(())
}

/// Checks a channel's or datastore's storage (`kind`: `channel` or `datastore`):
/// service-managed, or a customer-managed bucket.
fn check_storage(kind: &str, storage: &Value) -> Result<(), AnalyticsError> {
    CustomerS3::of(kind, storage).map(|_| ()).map_err(invalid)
}

/// The storage an update leaves a channel or datastore with (none given: unchanged), checked
/// to keep its place: service-managed, or the same bucket and key prefix, as AWS keeps it (the
/// role may change).
fn updated_storage(kind: &str, current: &Value, storage: Value) -> Result<Value, AnalyticsError> {
    check_storage(kind, &storage)?;
    if storage.is_null() {
        return Ok(current.clone());
    }
    let place = |s: &Value| CustomerS3::of(kind, s).ok().flatten();
    if place(&storage) != place(current) {
        return Err(invalid(format!(
            "the storage of a {kind} (service-managed, or its bucket and key prefix) cannot change after it is created"
        )));
    }
    Ok(storage)
}

fn check_retention(retention: &Value) -> Result<(), AnalyticsError> {
    if retention.get("unlimited").and_then(Value::as_bool) == Some(true)
        && retention.get("numberOfDays").is_some_and(|d| !d.is_null())
    {
        return Err(invalid(
            "retentionPeriod is either unlimited or numberOfDays, not both",
        ));
    }
    match retention.get("numberOfDays") {
        None | Some(Value::Null) => Ok(()),
        Some(days) if days.as_u64().is_some_and(|d| d >= 1) => Ok(()),
        Some(_) => Err(invalid("retentionPeriod.numberOfDays must be at least 1")),
    }
}

/// `[{key, value}]` as a map.
pub fn tag_list(tags: &Value) -> Result<Tags, AnalyticsError> {
    let mut out = Tags::new();
    for tag in tags.as_array().map(Vec::as_slice).unwrap_or_default() {
        let (Some(key), Some(value)) = (
            tag.get("key").and_then(Value::as_str),
            tag.get("value").and_then(Value::as_str),
        ) else {
            return Err(invalid("each tag needs a key and a value"));
        };
        out.insert(key.to_string(), value.to_string());
    }
    Ok(out)
}

/// What CreateDatastore carries.
#[derive(Debug, Default)]
pub struct NewDatastore {
    /// `datastoreName`.
    pub name: String,
    /// `datastoreStorage`.
    pub storage: Value,
    /// `retentionPeriod`.
    pub retention: Value,
    /// `fileFormatConfiguration`.
    pub file_format: Value,
    /// `datastorePartitions`.
    pub partitions: Value,
}

/// What CreateDataset carries.
#[derive(Debug, Default)]
pub struct NewDataset {
    /// `datasetName`.
    pub name: String,
    /// `actions`.
    pub actions: Vec<Value>,
    /// `triggers`.
    pub triggers: Vec<Value>,
    /// `contentDeliveryRules`.
    pub delivery_rules: Value,
    /// `retentionPeriod`.
    pub retention: Value,
    /// `versioningConfiguration`.
    pub versioning: Value,
    /// `lateDataRules`.
    pub late_data_rules: Value,
}

impl Analytics {
    fn exists_error(&self, kind: &'static str, name: &str) -> AnalyticsError {
        AnalyticsError::AlreadyExists {
            kind,
            name: name.to_string(),
            arn: self.arn(kind, name),
        }
    }

    fn create<T: serde::Serialize>(
        &self,
        kind: &'static str,
        name: &str,
        record: &T,
        tags: Tags,
    ) -> Result<(), AnalyticsError> {
        if self.catalog.get::<Value>(kind, name)?.is_some() {
            return Err(self.exists_error(kind, name));
        }
        let mut batch = WriteBatch::new();
        Catalog::stage(&mut batch, kind, name, record);
        if !tags.is_empty() {
            Catalog::stage(&mut batch, "tags", &self.arn(kind, name), &tags);
        }
        self.catalog.apply(batch)
    }

    fn get_record<T: serde::de::DeserializeOwned>(
        &self,
        kind: &'static str,
        name: &str,
    ) -> Result<T, AnalyticsError> {
        self.catalog
            .get(kind, name)?
            .ok_or_else(|| AnalyticsError::not_found(kind, name))
    }

    fn delete_record(&self, kind: &'static str, name: &str) -> Result<(), AnalyticsError> {
        self.get_record::<Value>(kind, name)?;
        let mut batch = WriteBatch::new();
        Catalog::stage_delete(&mut batch, kind, name);
        Catalog::stage_delete(&mut batch, "tags", &self.arn(kind, name));
        if kind == "pipeline" {
            Catalog::stage_delete(&mut batch, "checkpoint", name);
            self.drop_reprocessings(name, &mut batch)?;
        }
        if kind == "dataset" {
            Catalog::stage_delete_prefix(&mut batch, "content", &format!("{name}/"));
            Catalog::stage_delete(&mut batch, "schedule", name);
            Catalog::stage_delete(&mut batch, "delta", name);
        }
        self.catalog.apply(batch)
    }

    /// The ARN of `kind` (`channel`, `datastore`, `pipeline`, `dataset`) `name`.
    pub fn resource_arn(&self, kind: &str, name: &str) -> String {
        self.arn(kind, name)
    }

    /// CreateChannel (a customer-managed bucket is checked to be there and take writes; its
    /// stream source, if its tags name one, starts at once).
    pub async fn create_channel(
        self: &Arc<Self>,
        name: &str,
        storage: Value,
        retention: Value,
        tags: Tags,
    ) -> Result<ChannelRecord, AnalyticsError> {
        check_name("channel", name)?;
        check_storage("channel", &storage)?;
        check_retention(&retention)?;
        if self.catalog.get::<Value>("channel", name)?.is_some() {
            return Err(self.exists_error("channel", name));
        }
        let now = now_seconds();
        let record = ChannelRecord {
            name: name.to_string(),
            source: self.source_for(name, None, &tags).await?,
            storage,
            retention,
            created: now,
            updated: now,
        };
        self.channels.create(&record).await?;
        self.create("channel", name, &record, tags)?;
        self.run_source(&record);
        Ok(record)
    }

    /// DescribeChannel.
    pub fn channel(&self, name: &str) -> Result<ChannelRecord, AnalyticsError> {
        self.get_record("channel", name)
    }

    /// ListChannels.
    pub fn channels(&self) -> Result<Vec<ChannelRecord>, AnalyticsError> {
        self.catalog.list("channel", "")
    }

    /// UpdateChannel.
    pub fn update_channel(
        self: &Arc<Self>,
        name: &str,
        storage: Value,
        retention: Value,
    ) -> Result<(), AnalyticsError> {
        let mut record = self.channel(name)?;
        let storage = updated_storage("channel", &record.storage, storage)?;
        check_retention(&retention)?;
        record.storage = storage;
        record.retention = retention;
        record.updated = now_seconds();
        self.catalog.put("channel", name, &record)?;
        self.sweep_soon();
        Ok(())
    }

    /// DeleteChannel: its stored messages go too; a customer-managed channel's objects stay in
    /// the customer's bucket.
    pub fn delete_channel(&self, name: &str) -> Result<(), AnalyticsError> {
        self.delete_record("channel", name)?;
        self.stop_source(name);
        self.channels.remove(name)
    }

    /// The bytes a channel's files hold.
    pub async fn channel_size(&self, name: &str) -> Result<u64, AnalyticsError> {
        self.channels.size(name).await
    }

    /// CreateDatastore (a customer-managed bucket is checked to be there and take writes).
    pub async fn create_datastore(
        &self,
        request: NewDatastore,
        tags: Tags,
    ) -> Result<DatastoreRecord, AnalyticsError> {
        check_name("datastore", &request.name)?;
        check_storage("datastore", &request.storage)?;
        check_retention(&request.retention)?;
        let (fixed_schema, columns) = file_format(&request.file_format)?;
        let (attribute_partition, timestamp_partition) = partitions(&request.partitions)?;
        if let Some(attribute) = &attribute_partition
            && columns.iter().any(|c| &c.name == attribute)
        {
            return Err(invalid(format!(
                "{attribute} partitions the datastore, so it cannot also be a column of its schema"
            )));
        }
        let now = now_seconds();
        let record = DatastoreRecord {
            name: request.name.clone(),
            storage: request.storage,
            retention: request.retention,
            file_format: request.file_format,
            partitions: request.partitions,
            attribute_partition,
            timestamp_partition,
            fixed_schema,
            columns,
            created: now,
            updated: now,
            last_message: None,
        };
        if self
            .catalog
            .get::<Value>("datastore", &record.name)?
            .is_some()
        {
            return Err(self.exists_error("datastore", &record.name));
        }
        self.datastores.create(&record).await?;
        self.create("datastore", &request.name, &record, tags)?;
        Ok(record)
    }

    /// DescribeDatastore.
    pub fn datastore(&self, name: &str) -> Result<DatastoreRecord, AnalyticsError> {
        self.get_record("datastore", name)
    }

    /// ListDatastores.
    pub fn datastores(&self) -> Result<Vec<DatastoreRecord>, AnalyticsError> {
        self.catalog.list("datastore", "")
    }

    /// The bytes a datastore's files hold.
    pub async fn datastore_size(&self, name: &str) -> Result<u64, AnalyticsError> {
        self.datastores.size(&self.datastore(name)?).await
    }

    /// UpdateDatastore (retention, and the storage's role; the file format, partitions and
    /// where the files are stay, as AWS keeps them).
    pub fn update_datastore(
        self: &Arc<Self>,
        name: &str,
        storage: Value,
        retention: Value,
    ) -> Result<(), AnalyticsError> {
        let mut record = self.datastore(name)?;
        let storage = updated_storage("datastore", &record.storage, storage)?;
        check_retention(&retention)?;
        record.storage = storage;
        record.retention = retention;
        record.updated = now_seconds();
        self.catalog.put("datastore", name, &record)?;
        self.sweep_soon();
        Ok(())
    }

    /// DeleteDatastore: its files go too.
    /// A customer-managed datastore's objects stay in the customer's bucket.
    pub fn delete_datastore(&self, name: &str) -> Result<(), AnalyticsError> {
        let record = self.datastore(name)?;
        self.delete_record("datastore", name)?;
        self.datastores.remove(&record)
    }

    /// Checks a pipeline's activities against the existing channel and datastore.
    fn check_plan(&self, activities: &[Value]) -> Result<Plan, AnalyticsError> {
        let plan = Plan::build(activities, &self.services).map_err(AnalyticsError::Invalid)?;
        self.channel(&plan.channel)?;
        self.datastore(&plan.datastore)?;
        Ok(plan)
    }

    /// CreatePipeline: it processes the messages that arrive from now on.
    pub async fn create_pipeline(
        self: &Arc<Self>,
        name: &str,
        activities: Vec<Value>,
        tags: Tags,
    ) -> Result<PipelineRecord, AnalyticsError> {
        check_name("pipeline", name)?;
        let plan = self.check_plan(&activities)?;
        let now = now_seconds();
        let record = PipelineRecord {
            name: name.to_string(),
            activities,
            created: now,
            updated: now,
        };
        let checkpoint = crate::runner::Checkpoint {
            done: self.channels.last(&plan.channel).await?,
            in_flight: None,
        };
        if self.catalog.get::<Value>("pipeline", name)?.is_some() {
            return Err(self.exists_error("pipeline", name));
        }
        let mut batch = WriteBatch::new();
        Catalog::stage(&mut batch, "pipeline", name, &record);
        Catalog::stage(&mut batch, "checkpoint", name, &checkpoint);
        if !tags.is_empty() {
            Catalog::stage(&mut batch, "tags", &self.arn("pipeline", name), &tags);
        }
        self.catalog.apply(batch)?;
        self.start_pipeline(name);
        Ok(record)
    }

    /// DescribePipeline.
    pub fn pipeline(&self, name: &str) -> Result<PipelineRecord, AnalyticsError> {
        self.get_record("pipeline", name)
    }

    /// ListPipelines.
    pub fn pipelines(&self) -> Result<Vec<PipelineRecord>, AnalyticsError> {
        self.catalog.list("pipeline", "")
    }

    /// UpdatePipeline: new activities from the next batch on (a new channel is read from its
    /// current end).
    pub async fn update_pipeline(
        self: &Arc<Self>,
        name: &str,
        activities: Vec<Value>,
    ) -> Result<(), AnalyticsError> {
        let mut record = self.pipeline(name)?;
        let plan = self.check_plan(&activities)?;
        let old = Plan::build(&record.activities, &self.services).ok();
        let mut batch = WriteBatch::new();
        if old.is_none_or(|old| old.channel != plan.channel) {
            let checkpoint = crate::runner::Checkpoint {
                done: self.channels.last(&plan.channel).await?,
                in_flight: None,
            };
            Catalog::stage(&mut batch, "checkpoint", name, &checkpoint);
        }
        record.activities = activities;
        record.updated = now_seconds();
        Catalog::stage(&mut batch, "pipeline", name, &record);
        self.stop_pipeline(name);
        self.catalog.apply(batch)?;
        self.start_pipeline(name);
        Ok(())
    }

    /// DeletePipeline.
    pub fn delete_pipeline(&self, name: &str) -> Result<(), AnalyticsError> {
        self.stop_pipeline(name);
        self.delete_record("pipeline", name)
    }

    /// Checks CreateDataset/UpdateDataset's members; the SQL of the query action.
    fn check_dataset(&self, request: &NewDataset) -> Result<String, AnalyticsError> {
        let [action] = request.actions.as_slice() else {
            return Err(invalid("a dataset has exactly one action"));
        };
        if action.get("containerAction").is_some() {
            return Err(invalid(
                "containerAction is not supported by this server: it runs no containers; use a queryAction (SQL)",
            ));
        }
        let query = action
            .get("queryAction")
            .ok_or_else(|| invalid("the dataset's action needs a queryAction"))?;
        crate::dataset::delta_of(action).map_err(invalid)?;
        self.check_triggers(&request.name, &request.triggers)?;
        if request
            .delivery_rules
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            return Err(invalid(
                "contentDeliveryRules are not supported by this server: download contents from their dataURI",
            ));
        }
        if request
            .late_data_rules
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            return Err(invalid("lateDataRules are not supported by this server"));
        }
        check_retention(&request.retention)?;
        if let Some(max) = request.versioning.get("maxVersions")
            && !max.as_u64().is_some_and(|m| (1..=1000).contains(&m))
        {
            return Err(invalid(
                "versioningConfiguration.maxVersions must be 1 to 1000",
            ));
        }
        let sql = query
            .get("sqlQuery")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| invalid("queryAction needs sqlQuery"))?;
        Ok(sql.to_string())
    }

    /// Checks `triggers`: at most five, each a schedule expression or an existing dataset, and
    /// no dataset that (through others) triggers `dataset` itself.
    fn check_triggers(&self, dataset: &str, triggers: &[Value]) -> Result<(), AnalyticsError> {
        if triggers.len() > 5 {
            return Err(invalid("a dataset has at most 5 triggers"));
        }
        for trigger in triggers {
            if let Some(expression) = trigger.pointer("/schedule/expression") {
                let expression = expression
                    .as_str()
                    .ok_or_else(|| invalid("schedule.expression must be a string"))?;
                crate::schedule::Schedule::parse(expression).map_err(invalid)?;
            } else if let Some(name) = trigger.pointer("/dataset/name") {
                let name = name
                    .as_str()
                    .ok_or_else(|| invalid("dataset.name must be a string"))?;
                let mut seen = vec![name.to_string()];
                let mut next = vec![name.to_string()];
                while let Some(current) = next.pop() {
                    if current == dataset {
                        return Err(invalid(format!(
                            "dataset {name} cannot trigger {dataset}: {dataset} would trigger itself"
                        )));
                    }
                    for upstream in
                        crate::dataset::dataset_triggers(&self.dataset(&current)?.triggers)
                    {
                        if !seen.contains(&upstream) {
                            seen.push(upstream.clone());
                            next.push(upstream);
                        }
                    }
                }
            } else {
                return Err(invalid(
                    "each trigger is a schedule ({\"schedule\": {\"expression\": ...}}) or a dataset ({\"dataset\": {\"name\": ...}})",
                ));
            }
        }
        Ok(())
    }

    /// CreateDataset.
    pub fn create_dataset(
        &self,
        request: NewDataset,
        tags: Tags,
    ) -> Result<DatasetRecord, AnalyticsError> {
        check_name("dataset", &request.name)?;
        let sql = self.check_dataset(&request)?;
        let now = now_seconds();
        let record = DatasetRecord {
            name: request.name.clone(),
            actions: request.actions,
            sql,
            retention: request.retention,
            versioning: request.versioning,
            delivery_rules: request.delivery_rules,
            triggers: request.triggers,
            created: now,
            updated: now,
        };
        self.create("dataset", &request.name, &record, tags)?;
        Ok(record)
    }

    /// DescribeDataset.
    pub fn dataset(&self, name: &str) -> Result<DatasetRecord, AnalyticsError> {
        self.get_record("dataset", name)
    }

    /// ListDatasets.
    pub fn datasets(&self) -> Result<Vec<DatasetRecord>, AnalyticsError> {
        self.catalog.list("dataset", "")
    }

    /// UpdateDataset.
    pub fn update_dataset(&self, request: NewDataset) -> Result<(), AnalyticsError> {
        let mut record = self.dataset(&request.name)?;
        record.sql = self.check_dataset(&request)?;
        record.actions = request.actions;
        record.retention = request.retention;
        record.versioning = request.versioning;
        record.triggers = request.triggers;
        record.updated = now_seconds();
        let mut batch = WriteBatch::new();
        Catalog::stage(&mut batch, "dataset", &record.name, &record);
        // The schedule is worked out again from the new triggers.
        Catalog::stage_delete(&mut batch, "schedule", &record.name);
        self.catalog.apply(batch)
    }

    /// DeleteDataset: its contents go too.
    pub fn delete_dataset(&self, name: &str) -> Result<(), AnalyticsError> {
        self.delete_record("dataset", name)?;
        crate::dataset::remove_files(self, name)
    }

    /// The resource an ARN of this service names, checked to exist: its kind and name.
    fn tagged<'a>(&self, arn: &'a str) -> Result<(&'static str, &'a str), AnalyticsError> {
        let prefix = self.arn("", "");
        let resource = arn
            .strip_prefix(prefix.trim_end_matches('/'))
            .ok_or_else(|| invalid(format!("{arn} is not an IoT Analytics ARN of this server")))?;
        let (kind, name) = resource
            .split_once('/')
            .ok_or_else(|| invalid(format!("{arn} names no resource")))?;
        let kind: &'static str = match kind {
            "channel" => "channel",
            "datastore" => "datastore",
            "pipeline" => "pipeline",
            "dataset" => "dataset",
            _ => {
                return Err(invalid(format!(
                    "{arn} names no channel, datastore, pipeline or dataset"
                )));
            }
        };
        self.get_record::<Value>(kind, name)?;
        Ok((kind, name))
    }

    /// ListTagsForResource.
    pub fn tags(&self, arn: &str) -> Result<Tags, AnalyticsError> {
        self.tagged(arn)?;
        Ok(self.catalog.get("tags", arn)?.unwrap_or_default())
    }

    /// TagResource.
    pub async fn tag(self: &Arc<Self>, arn: &str, tags: Tags) -> Result<(), AnalyticsError> {
        let mut all = self.tags(arn)?;
        all.extend(tags);
        self.retag(arn, all).await
    }

    /// UntagResource.
    pub async fn untag(self: &Arc<Self>, arn: &str, keys: &[String]) -> Result<(), AnalyticsError> {
        let mut all = self.tags(arn)?;
        all.retain(|k, _| !keys.contains(k));
        self.retag(arn, all).await
    }

    /// Stores the tags of `arn`; for a channel, starts, changes or stops its stream source.
    async fn retag(self: &Arc<Self>, arn: &str, tags: Tags) -> Result<(), AnalyticsError> {
        let ("channel", name) = self.tagged(arn)? else {
            return self.catalog.put("tags", arn, &tags);
        };
        let mut record = self.channel(name)?;
        let source = self.source_for(name, record.source.as_ref(), &tags).await?;
        let mut batch = WriteBatch::new();
        Catalog::stage(&mut batch, "tags", arn, &tags);
        let changed = source != record.source;
        if changed {
            record.source = source;
            Catalog::stage(&mut batch, "channel", name, &record);
        }
        self.catalog.apply(batch)?;
        if changed {
            self.run_source(&record);
        }
        Ok(())
    }

    /// SampleChannelData: up to `max` of the latest messages that arrived in [start, end).
    pub async fn sample(
        &self,
        channel: &str,
        max: usize,
        start_ms: Option<i64>,
        end_ms: Option<i64>,
    ) -> Result<Vec<Vec<u8>>, AnalyticsError> {
        self.channel(channel)?;
        let files = self.channels.after(channel, 0, usize::MAX).await?;
        let mut out = Vec::new();
        for seq in files.into_iter().rev() {
            let mut stored = self.channels.read(channel, seq).await?;
            stored.retain(|s| {
                start_ms.is_none_or(|t| s.arrival_ms >= t)
                    && end_ms.is_none_or(|t| s.arrival_ms < t)
            });
            for s in stored.into_iter().rev() {
                if out.len() == max {
                    out.reverse();
                    return Ok(out);
                }
                out.push(serde_json::to_vec(&s.message).unwrap_or_default());
            }
        }
        out.reverse();
        Ok(out)
    }

    /// RunPipelineActivity: one activity over the payloads (JSON objects).
    pub async fn run_activity(
        &self,
        activity: &Value,
        payloads: Vec<Vec<u8>>,
    ) -> Result<Vec<Vec<u8>>, AnalyticsError> {
        let (kind, members) = activity
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.iter().next())
            .ok_or_else(|| invalid("pipelineActivity must name exactly one activity"))?;
        if kind == "channel" || kind == "datastore" {
            return Err(invalid(format!(
                "a {kind} activity cannot be run on its own"
            )));
        }
        let built = crate::pipeline::build_activity(kind, members, &self.services)
            .map_err(AnalyticsError::Invalid)?;
        let mut messages = Vec::with_capacity(payloads.len());
        for (i, payload) in payloads.iter().enumerate() {
            messages.push(
                crate::parse_message(payload).map_err(|e| invalid(format!("payload {i}: {e}")))?,
            );
        }
        let out = built
            .apply(messages)
            .await
            .map_err(AnalyticsError::Invalid)?;
        Ok(out
            .iter()
            .map(|m| serde_json::to_vec(m).unwrap_or_default())
            .collect())
    }
}

/// The columns a `fileFormatConfiguration` fixes, if any (true: given by the user). A JSON
/// datastore (`jsonConfiguration`, an empty object as on AWS) learns its columns.
fn file_format(format: &Value) -> Result<(bool, Vec<Column>), AnalyticsError> {
    match format {
        Value::Null => {}
        Value::Object(members) => {
            let given = |key: &str| members.get(key).is_some_and(|v| !v.is_null());
            if let Some(key) = members
                .keys()
                .find(|k| *k != "jsonConfiguration" && *k != "parquetConfiguration")
            {
                return Err(invalid(format!(
                    "fileFormatConfiguration.{key} is not a file format: use jsonConfiguration or parquetConfiguration"
                )));
            }
            if given("jsonConfiguration") && given("parquetConfiguration") {
                return Err(invalid(
                    "fileFormatConfiguration is either jsonConfiguration or parquetConfiguration, not both",
                ));
            }
            if members
                .get("jsonConfiguration")
                .is_some_and(|j| !j.is_null() && !j.is_object())
            {
                return Err(invalid(
                    "fileFormatConfiguration.jsonConfiguration must be an object ({})",
                ));
            }
        }
        _ => return Err(invalid("fileFormatConfiguration must be an object")),
    }
    let Some(columns) = format
        .pointer("/parquetConfiguration/schemaDefinition/columns")
        .and_then(Value::as_array)
    else {
        return Ok((false, Vec::new()));
    };
    let mut out = Vec::with_capacity(columns.len());
    for column in columns {
        let (Some(name), Some(kind)) = (
            column.get("name").and_then(Value::as_str),
            column.get("type").and_then(Value::as_str),
        ) else {
            return Err(invalid("each schema column needs a name and a type"));
        };
        let kind = ColumnKind::from_glue(kind).ok_or_else(|| {
            invalid(format!(
                "column {name}: type {kind} is not supported (bigint, double, boolean, string)"
            ))
        })?;
        out.push(Column {
            name: name.to_string(),
            kind,
        });
    }
    Ok((!out.is_empty(), out))
}

/// The attribute partition and timestamp partition of `datastorePartitions`.
fn partitions(partitions: &Value) -> Result<(Option<String>, Option<String>), AnalyticsError> {
    let (mut attribute, mut timestamp) = (None, None);
    for partition in partitions
        .get("partitions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if let Some(name) = partition.pointer("/attributePartition/attributeName") {
            let name = name
                .as_str()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| invalid("attributePartition needs attributeName"))?;
            if attribute.replace(name.to_string()).is_some() {
                return Err(invalid("this server partitions by at most one attribute"));
            }
        } else if let Some(name) = partition.pointer("/timestampPartition/attributeName") {
            let name = name
                .as_str()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| invalid("timestampPartition needs attributeName"))?;
            if partition
                .pointer("/timestampPartition/timestampFormat")
                .is_some()
            {
                return Err(invalid(
                    "timestampPartition.timestampFormat is not supported: the attribute must hold epoch seconds, epoch milliseconds or RFC 3339 text",
                ));
            }
            if timestamp.replace(name.to_string()).is_some() {
                return Err(invalid("a datastore has at most one timestampPartition"));
            }
        } else {
            return Err(invalid(
                "each partition is an attributePartition or a timestampPartition",
            ));
        }
    }
    if attribute.is_some() && attribute == timestamp {
        return Err(invalid("the same attribute cannot be both partitions"));
    }
    Ok((attribute, timestamp))
}
