//! `awscc_iotanalytics_channel`, `_datastore`, `_pipeline` and `_dataset`: the four IoT
//! Analytics resources share one shape (create `POST /{collection}` with the name member,
//! update `PUT /{collection}/{name}`, delete and describe at that path, tags through
//! TagResource/UntagResource), so one [`Analytics`] value per type describes each.
//! awscc's snake_case properties become the API's camelCase; what the server does not build
//! (schedules, S3 datastores, ...) it refuses at create, naming the member.

use http::Method;
use serde_json::{Map, Value, json};

use super::{ResourceType, Rest, camel, s, unexpected};
use crate::api::{Api, ApiError, label};
use crate::schema::{Arg, Schema};

/// One IoT Analytics resource type.
pub struct Analytics {
    kind: &'static str,
    /// The REST collection: `channels`, `datastores`, `pipelines`, `datasets`.
    collection: &'static str,
    /// The argument holding the name (`channel_name`, ...); the API member is its camelCase.
    name_arg: &'static str,
    /// The describe answer's top member (`channel`, ...).
    member: &'static str,
    /// The name in the operations (`Channel` of CreateChannel, ...).
    title: &'static str,
    /// awscc property names whose API member is named differently (after camelCase).
    renames: &'static [(&'static str, &'static str)],
    schema: &'static Schema,
}

/// `awscc_iotanalytics_channel`.
pub static CHANNEL: Analytics = Analytics {
    kind: "awscc_iotanalytics_channel",
    collection: "channels",
    name_arg: "channel_name",
    member: "channel",
    title: "Channel",
    renames: &[],
    schema: &Schema {
        args: &[
            Arg::required("channel_name").force_new(),
            Arg::optional("channel_storage"),
            Arg::optional("retention_period"),
            Arg::optional("tags"),
        ],
        blocks: &[],
        computed: &["arn", "id"],
    },
};

/// `awscc_iotanalytics_datastore`.
pub static DATASTORE: Analytics = Analytics {
    kind: "awscc_iotanalytics_datastore",
    collection: "datastores",
    name_arg: "datastore_name",
    member: "datastore",
    title: "Datastore",
    // CloudFormation's `Partition` is the API's `attributePartition`.
    renames: &[("partition", "attributePartition")],
    schema: &Schema {
        args: &[
            Arg::required("datastore_name").force_new(),
            Arg::optional("datastore_storage"),
            Arg::optional("datastore_partitions").force_new(),
            Arg::optional("file_format_configuration"),
            Arg::optional("retention_period"),
            Arg::optional("tags"),
        ],
        blocks: &[],
        computed: &["arn", "id"],
    },
};

/// `awscc_iotanalytics_pipeline`.
pub static PIPELINE: Analytics = Analytics {
    kind: "awscc_iotanalytics_pipeline",
    collection: "pipelines",
    name_arg: "pipeline_name",
    member: "pipeline",
    title: "Pipeline",
    renames: &[],
    schema: &Schema {
        args: &[
            Arg::required("pipeline_name").force_new(),
            Arg::required("pipeline_activities"),
            Arg::optional("tags"),
        ],
        blocks: &[],
        computed: &["arn", "id"],
    },
};

/// `awscc_iotanalytics_dataset`.
pub static DATASET: Analytics = Analytics {
    kind: "awscc_iotanalytics_dataset",
    collection: "datasets",
    name_arg: "dataset_name",
    member: "dataset",
    title: "Dataset",
    renames: &[],
    schema: &Schema {
        args: &[
            Arg::required("dataset_name").force_new(),
            Arg::required("actions"),
            Arg::optional("triggers"),
            Arg::optional("content_delivery_rules"),
            Arg::optional("late_data_rules"),
            Arg::optional("retention_period"),
            Arg::optional("versioning_configuration"),
            Arg::optional("tags"),
        ],
        blocks: &[],
        computed: &["arn", "id"],
    },
};

impl Analytics {
    fn path(&self, args: &Value) -> String {
        format!("/{}/{}", self.collection, label(s(args, self.name_arg)))
    }

    /// The settings as the API's members: every argument but the name and the tags.
    fn settings(&self, args: &Value) -> Map<String, Value> {
        args.as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| *k != self.name_arg && *k != "tags" && !v.is_null())
            .map(|(k, v)| (camel(k), self.api_value(v)))
            .collect()
    }

    /// An awscc value in the API's spelling. Maps under `attributes` (addAttributes' old ->
    /// new names) are the user's names and keep them.
    fn api_value(&self, value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let key = camel(k);
                        let key = self
                            .renames
                            .iter()
                            .find(|(from, _)| *from == key)
                            .map_or(key, |(_, to)| to.to_string());
                        let v = if k == "attributes" && v.is_object() {
                            v.clone()
                        } else {
                            self.api_value(v)
                        };
                        (key, v)
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.api_value(v)).collect()),
            other => other.clone(),
        }
    }

    fn tags(args: &Value) -> Vec<Value> {
        args.get("tags")
            .and_then(Value::as_array)
            .map(|l| l.iter().map(super::camel_keys).collect())
            .unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl ResourceType for Analytics {
    fn name(&self) -> &'static str {
        self.kind
    }
    fn schema(&self) -> &'static Schema {
        self.schema
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let name = s(args, self.name_arg);
        let mut body = self.settings(args);
        body.insert(camel(self.name_arg), json!(name));
        let tags = Self::tags(args);
        if !tags.is_empty() {
            body.insert("tags".to_string(), Value::Array(tags));
        }
        let operation = format!("Create{}", self.title);
        let out = api
            .rest(
                "iotanalytics",
                &operation,
                Method::POST,
                &format!("/{}", self.collection),
                Some(&Value::Object(body)),
            )
            .await?;
        let arn = out
            .get(format!("{}Arn", self.member))
            .and_then(Value::as_str)
            .ok_or_else(|| unexpected(&operation, format!("no {}Arn", self.member)))?;
        Ok(json!({"arn": arn, "id": name}))
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let describe = format!("Describe{}", self.title);
        let rest = Rest {
            service: "iotanalytics",
            path: self.path(args),
            describe: &describe,
            delete: "",
        };
        let answer = rest.get(api).await?;
        Ok(answer
            .filter(|a| a.get(self.member).is_some())
            .map(|_| json!({})))
    }
    async fn update(
        &self,
        api: &Api,
        before: &Value,
        args: &Value,
        attrs: &Value,
    ) -> Result<Value, ApiError> {
        let path = self.path(args);
        let operation = format!("Update{}", self.title);
        let settings = Value::Object(self.settings(args));
        if self.settings(before) != self.settings(args) {
            api.rest(
                "iotanalytics",
                &operation,
                Method::PUT,
                &path,
                Some(&settings),
            )
            .await?;
        }
        if before.get("tags") != args.get("tags") {
            let arn = label(s(attrs, "arn"));
            let keys = |v: &Value| -> Vec<String> {
                Self::tags(v)
                    .iter()
                    .filter_map(|t| t.get("key").and_then(Value::as_str).map(str::to_string))
                    .collect()
            };
            let (old, new) = (keys(before), keys(args));
            let removed: Vec<&String> = old.iter().filter(|k| !new.contains(k)).collect();
            if !removed.is_empty() {
                let query: String = removed
                    .iter()
                    .map(|k| format!("&tagKeys={}", label(k)))
                    .collect();
                api.rest(
                    "iotanalytics",
                    "UntagResource",
                    Method::DELETE,
                    &format!("/tags?resourceArn={arn}{query}"),
                    None,
                )
                .await?;
            }
            let tags = Self::tags(args);
            if !tags.is_empty() {
                api.rest(
                    "iotanalytics",
                    "TagResource",
                    Method::POST,
                    &format!("/tags?resourceArn={arn}"),
                    Some(&json!({ "tags": tags })),
                )
                .await?;
            }
        }
        Ok(attrs.clone())
    }
    async fn delete(&self, api: &Api, args: &Value, _: &Value) -> Result<(), ApiError> {
        let delete = format!("Delete{}", self.title);
        let rest = Rest {
            service: "iotanalytics",
            path: self.path(args),
            describe: "",
            delete: &delete,
        };
        rest.remove(api).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awscc_properties_become_the_apis_members() {
        let args = json!({
            "datastore_name": "d",
            "datastore_partitions": {"partitions": [{"partition": {"attribute_name": "site"}}]},
            "retention_period": {"number_of_days": 3},
            "tags": [{"key": "k", "value": "v"}],
        });
        assert_eq!(
            Value::Object(DATASTORE.settings(&args)),
            json!({
                "datastorePartitions": {"partitions": [{"attributePartition": {"attributeName": "site"}}]},
                "retentionPeriod": {"numberOfDays": 3},
            })
        );
        let pipeline = json!({"pipeline_name": "p", "pipeline_activities": [
            {"add_attributes": {"name": "a", "attributes": {"old_name": "new_name"}, "next": "b"}},
            {"select_attributes": {"name": "b", "attributes": ["x_y"]}},
        ]});
        assert_eq!(
            Value::Object(PIPELINE.settings(&pipeline)),
            json!({"pipelineActivities": [
                {"addAttributes": {"name": "a", "attributes": {"old_name": "new_name"}, "next": "b"}},
                {"selectAttributes": {"name": "b", "attributes": ["x_y"]}},
            ]})
        );
    }
}
