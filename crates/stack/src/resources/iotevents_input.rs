//! `awscc_iotevents_input` (the `aws` provider has no IoT Events types): CreateInput /
//! UpdateInput / DeleteInput. awscc's snake_case properties become the API's camelCase.

use http::Method;
use serde_json::{Value, json};

use super::{ResourceType, Rest, camel_keys, opt_s, pick, s};
use crate::api::{Api, ApiError, label};
use crate::schema::{Arg, Schema};

pub struct Input;

/// The type.
pub static TYPE: Input = Input;

static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("input_name").force_new(),
        Arg::required("input_definition"),
        Arg::optional("input_description"),
        Arg::optional("tags").force_new(),
    ],
    blocks: &[],
    computed: &["arn", "id"],
};

fn body(args: &Value) -> Value {
    let mut b = json!({"inputDefinition": camel_keys(args.get("input_definition").unwrap_or(&Value::Null))});
    if let Some(d) = opt_s(args, "input_description") {
        b["inputDescription"] = json!(d);
    }
    b
}

#[async_trait::async_trait]
impl ResourceType for Input {
    fn name(&self) -> &'static str {
        "awscc_iotevents_input"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let mut b = body(args);
        b["inputName"] = json!(s(args, "input_name"));
        if let Some(tags) = args.get("tags") {
            b["tags"] = camel_keys(tags);
        }
        let out = api
            .rest(
                "iotevents",
                "CreateInput",
                Method::POST,
                "/inputs",
                Some(&b),
            )
            .await?;
        let arn = out
            .pointer("/inputConfiguration/inputArn")
            .cloned()
            .unwrap_or_default();
        Ok(json!({"arn": arn, "id": s(args, "input_name")}))
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let answer = rest(args).get(api).await?;
        Ok(answer.map(|a| {
            pick(
                &a,
                &[(
                    "input_description",
                    "/input/inputConfiguration/inputDescription",
                )],
            )
        }))
    }
    async fn update(
        &self,
        api: &Api,
        _: &Value,
        args: &Value,
        attrs: &Value,
    ) -> Result<Value, ApiError> {
        let path = format!("/inputs/{}", label(s(args, "input_name")));
        api.rest(
            "iotevents",
            "UpdateInput",
            Method::PUT,
            &path,
            Some(&body(args)),
        )
        .await?;
        Ok(attrs.clone())
    }
    async fn delete(&self, api: &Api, args: &Value, _: &Value) -> Result<(), ApiError> {
        rest(args).remove(api).await
    }
}

fn rest(args: &Value) -> Rest<'static> {
    Rest {
        service: "iotevents",
        path: format!("/inputs/{}", label(s(args, "input_name"))),
        describe: "DescribeInput",
        delete: "DeleteInput",
    }
}
