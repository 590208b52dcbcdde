//! The resource types: one module per type behind [`ResourceType`], listed once in
//! [`REGISTRY`]. A new type is a new file and one line in that list.

use http::Method;
use serde_json::{Map, Value};

use crate::api::{Api, ApiError};
use crate::schema::Schema;

mod cloudwatch_dashboard;
mod cloudwatch_log_group;
mod cloudwatch_metric_alarm;
mod iot_certificate;
mod iot_policy;
mod iot_policy_attachment;
mod iot_provisioning_template;
mod iot_security_profile;
mod iot_thing;
mod iot_thing_group;
mod iot_thing_principal_attachment;
mod iot_thing_type;
mod iot_topic_rule;
mod iotanalytics;
mod iotevents_alarm_model;
mod iotevents_detector_model;
mod iotevents_input;
mod kinesis_firehose_delivery_stream;
mod kinesis_stream;
mod lambda_event_source_mapping;
mod lambda_function;
mod not_managed;
mod sns_topic;
mod sns_topic_subscription;

/// What plan decided for one resource instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do.
    NoOp,
    /// Create it.
    Create,
    /// Change these top-level arguments in place.
    Update(Vec<String>),
    /// Delete and create again, because these arguments cannot change in place.
    Replace(Vec<String>),
    /// Delete it.
    Delete,
}

/// One resource type of the Terraform AWS (or awscc) provider, done through fleetcore's API.
#[async_trait::async_trait]
pub trait ResourceType: Send + Sync {
    /// The type name, e.g. `aws_kinesis_stream`.
    fn name(&self) -> &'static str;

    /// The arguments, nested blocks and computed attributes it accepts.
    fn schema(&self) -> &'static Schema;

    /// Refuses arguments fleetcore cannot honour, before anything is created.
    fn validate(&self, args: &Value) -> Result<(), String> {
        let _ = args;
        Ok(())
    }

    /// For a type fleetcore accepts but does not manage on the server (IAM roles, S3 buckets):
    /// its attributes, computed locally, and a note saying what happens to it. `None` for
    /// managed types.
    fn not_managed(&self, args: &Value) -> Option<(Value, &'static str)> {
        let _ = args;
        None
    }

    /// What to do to go from `current` (the arguments last applied) to `desired`.
    fn plan(&self, desired: &Value, current: Option<&Value>) -> Action {
        let Some(current) = current else {
            return Action::Create;
        };
        let changed = changed_keys(desired, current);
        if changed.is_empty() {
            Action::NoOp
        } else if changed.iter().any(|k| self.schema().forces_new(k)) {
            Action::Replace(changed)
        } else {
            Action::Update(changed)
        }
    }

    /// Creates it; returns the computed attributes (`arn`, `id`, ...).
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError>;

    /// Reads it back from the server: `None` when it is gone, else the arguments as the server
    /// reports them, as far as this type reads them back (an object with only those keys; `{}`
    /// when it reads none). Refresh compares them with the state to find changes made behind
    /// the stack's back.
    async fn read(&self, api: &Api, args: &Value, attrs: &Value)
    -> Result<Option<Value>, ApiError>;

    /// Changes it in place from `before` to `args`; returns the computed attributes.
    async fn update(
        &self,
        api: &Api,
        before: &Value,
        args: &Value,
        attrs: &Value,
    ) -> Result<Value, ApiError> {
        let _ = (api, before, args, attrs);
        Err(ApiError {
            operation: format!("update {}", self.name()),
            code: "NotSupported".to_string(),
            status: 0,
            message: "this type is only replaced, never updated".to_string(),
        })
    }

    /// Deletes it.
    async fn delete(&self, api: &Api, args: &Value, attrs: &Value) -> Result<(), ApiError>;
}

/// Every resource type fleetcore knows.
pub static REGISTRY: &[&dyn ResourceType] = &[
    &iot_thing_type::TYPE,
    &iot_thing::TYPE,
    &iot_thing_group::TYPE,
    &iot_policy::TYPE,
    &iot_policy_attachment::TYPE,
    &iot_certificate::TYPE,
    &iot_thing_principal_attachment::TYPE,
    &iot_topic_rule::TYPE,
    &kinesis_stream::TYPE,
    &kinesis_firehose_delivery_stream::TYPE,
    &lambda_function::TYPE,
    &lambda_event_source_mapping::TYPE,
    &sns_topic::TYPE,
    &sns_topic_subscription::TYPE,
    &cloudwatch_metric_alarm::TYPE,
    &cloudwatch_dashboard::TYPE,
    &cloudwatch_log_group::TYPE,
    &iotevents_input::TYPE,
    &iotevents_detector_model::TYPE,
    &iotevents_alarm_model::TYPE,
    &iot_provisioning_template::TYPE,
    &iot_security_profile::TYPE,
    &iotanalytics::CHANNEL,
    &iotanalytics::DATASTORE,
    &iotanalytics::PIPELINE,
    &iotanalytics::DATASET,
    &not_managed::S3_BUCKET,
    &not_managed::IAM_ROLE,
    &not_managed::IAM_ROLE_POLICY,
    &not_managed::IAM_ROLE_POLICY_ATTACHMENT,
];

/// The resource type named `name`.
pub fn lookup(name: &str) -> Option<&'static dyn ResourceType> {
    REGISTRY.iter().copied().find(|t| t.name() == name)
}

/// The top-level keys whose values differ between two argument objects.
pub fn changed_keys(desired: &Value, current: &Value) -> Vec<String> {
    let empty = Map::new();
    let d = desired.as_object().unwrap_or(&empty);
    let c = current.as_object().unwrap_or(&empty);
    let mut keys: Vec<String> = d
        .keys()
        .chain(c.keys())
        .filter(|k| d.get(*k).unwrap_or(&Value::Null) != c.get(*k).unwrap_or(&Value::Null))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The string argument `name` (empty when absent).
pub fn s<'a>(args: &'a Value, name: &str) -> &'a str {
    args.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// The optional string argument `name`.
pub fn opt_s<'a>(args: &'a Value, name: &str) -> Option<&'a str> {
    args.get(name).and_then(Value::as_str)
}

/// The single nested block `name` (the first of its list), if given.
pub fn block<'a>(args: &'a Value, name: &str) -> Option<&'a Value> {
    args.get(name)
        .and_then(Value::as_array)
        .and_then(|l| l.first())
}

/// The nested blocks `name` (empty when none).
pub fn blocks<'a>(args: &'a Value, name: &str) -> &'a [Value] {
    args.get(name)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A `tags` map as AWS's `[{Key, Value}]` list.
pub fn tag_list(args: &Value) -> Value {
    let tags = args
        .get("tags")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(
                    |(k, v)| serde_json::json!({"Key": k, "Value": v.as_str().unwrap_or_default()}),
                )
                .collect()
        })
        .unwrap_or_default();
    Value::Array(tags)
}

/// Turns "not found" into `Ok(None)` for [`ResourceType::read`].
pub fn found(result: Result<Value, ApiError>) -> Result<Option<Value>, ApiError> {
    match result {
        Ok(answer) => Ok(Some(answer)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// One REST resource at `path`: read with `GET` by its describe operation, removed with
/// `DELETE` by its delete operation, "not found" meaning gone for both.
pub struct Rest<'a> {
    /// The signing name of the service.
    pub service: &'static str,
    /// The resource's path, labels already encoded.
    pub path: String,
    /// The describe operation's name.
    pub describe: &'a str,
    /// The delete operation's name.
    pub delete: &'a str,
}

impl Rest<'_> {
    /// The describe answer, or `None` when the resource is gone.
    pub async fn get(&self, api: &Api) -> Result<Option<Value>, ApiError> {
        found(
            api.rest(self.service, self.describe, Method::GET, &self.path, None)
                .await,
        )
    }

    /// Deletes it; already gone counts as deleted.
    pub async fn remove(&self, api: &Api) -> Result<(), ApiError> {
        gone(
            api.rest(self.service, self.delete, Method::DELETE, &self.path, None)
                .await,
        )
    }
}

/// The readable arguments `picked` out of a describe answer: `(argument, answer member)` pairs,
/// members absent from the answer left out.
pub fn pick(answer: &Value, picked: &[(&str, &str)]) -> Value {
    Value::Object(
        picked
            .iter()
            .filter_map(|(arg, pointer)| {
                let v = answer.pointer(pointer)?;
                (!v.is_null()).then(|| (arg.to_string(), v.clone()))
            })
            .collect(),
    )
}

/// Turns "not found" into success for [`ResourceType::delete`] (already gone).
pub fn gone<T>(result: Result<T, ApiError>) -> Result<(), ApiError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// An error of a resource's own making (an answer without a field it needs).
pub fn unexpected(operation: &str, message: impl Into<String>) -> ApiError {
    ApiError {
        operation: operation.to_string(),
        code: "UnexpectedAnswer".to_string(),
        status: 0,
        message: message.into(),
    }
}

/// `snake_case` as `camelCase`.
pub fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// An awscc value (CloudFormation properties in snake_case) with every object key in the
/// API's camelCase.
pub fn camel_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (camel(k), camel_keys(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(camel_keys).collect()),
        other => other.clone(),
    }
}
