//! `aws_cloudwatch_log_group`: CreateLogGroup, Put/DeleteRetentionPolicy, DeleteLogGroup.

use serde_json::{Value, json};

use super::{ResourceType, gone, pick, s, unexpected};
use crate::api::{Api, ApiError};
use crate::schema::{Arg, Schema};

pub struct LogGroup;

/// The type.
pub static TYPE: LogGroup = LogGroup;

static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("name").force_new(),
        Arg::optional("retention_in_days"),
        Arg::optional("log_group_class").force_new(),
        Arg::optional("skip_destroy"),
        Arg::optional("tags").force_new(),
    ],
    blocks: &[],
    computed: &["arn", "id"],
};

async fn call(api: &Api, op: &str, body: Value) -> Result<Value, ApiError> {
    api.json_rpc("logs", "Logs_20140328", "1.1", op, &body)
        .await
}

async fn describe(api: &Api, name: &str) -> Result<Option<Value>, ApiError> {
    let out = call(
        api,
        "DescribeLogGroups",
        json!({"logGroupNamePrefix": name}),
    )
    .await?;
    Ok(out
        .get("logGroups")
        .and_then(Value::as_array)
        .and_then(|l| {
            l.iter()
                .find(|g| g.get("logGroupName").and_then(Value::as_str) == Some(name))
        })
        .cloned())
}

async fn set_retention(api: &Api, args: &Value) -> Result<(), ApiError> {
    let name = s(args, "name");
    match args
        .get("retention_in_days")
        .and_then(Value::as_u64)
        .filter(|d| *d > 0)
    {
        Some(days) => {
            call(
                api,
                "PutRetentionPolicy",
                json!({"logGroupName": name, "retentionInDays": days}),
            )
            .await?
        }
        None => call(api, "DeleteRetentionPolicy", json!({"logGroupName": name})).await?,
    };
    Ok(())
}

#[async_trait::async_trait]
impl ResourceType for LogGroup {
    fn name(&self) -> &'static str {
        "aws_cloudwatch_log_group"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let name = s(args, "name");
        let mut body = json!({"logGroupName": name});
        if let Some(tags) = args.get("tags") {
            body["tags"] = tags.clone();
        }
        if let Some(class) = args.get("log_group_class") {
            body["logGroupClass"] = class.clone();
        }
        call(api, "CreateLogGroup", body).await?;
        if args.get("retention_in_days").is_some() {
            set_retention(api, args).await?;
        }
        let group = describe(api, name).await?.ok_or_else(|| {
            unexpected("DescribeLogGroups", "the group just created is not listed")
        })?;
        let arn = group.get("arn").and_then(Value::as_str).unwrap_or_default();
        Ok(json!({"arn": arn.trim_end_matches(":*"), "id": name}))
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let group = describe(api, s(args, "name")).await?;
        Ok(group.map(|g| pick(&g, &[("retention_in_days", "/retentionInDays")])))
    }
    async fn update(
        &self,
        api: &Api,
        _: &Value,
        args: &Value,
        attrs: &Value,
    ) -> Result<Value, ApiError> {
        set_retention(api, args).await?;
        Ok(attrs.clone())
    }
    async fn delete(&self, api: &Api, args: &Value, _: &Value) -> Result<(), ApiError> {
        if args.get("skip_destroy") == Some(&Value::Bool(true)) {
            return Ok(());
        }
        gone(
            call(
                api,
                "DeleteLogGroup",
                json!({"logGroupName": s(args, "name")}),
            )
            .await,
        )
    }
}
