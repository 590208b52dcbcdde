//! `aws_iot_thing_group`: CreateThingGroup / UpdateThingGroup / DeleteThingGroup.

use http::Method;
use serde_json::{Value, json};

use super::{ResourceType, Rest, opt_s, s, unexpected};
use crate::api::{Api, ApiError, label};
use crate::schema::{Arg, BlockSpec, Schema};

pub struct ThingGroup;

/// The type.
pub static TYPE: ThingGroup = ThingGroup;

static ATTRIBUTE_PAYLOAD: Schema = Schema::args(&[Arg::optional("attributes")]);
static PROPERTIES: Schema = Schema {
    args: &[Arg::optional("description")],
    blocks: &[BlockSpec::new("attribute_payload", &ATTRIBUTE_PAYLOAD)],
    computed: &[],
};
static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("name").force_new(),
        Arg::optional("parent_group_name").force_new(),
        Arg::optional("tags"),
    ],
    blocks: &[BlockSpec::new("properties", &PROPERTIES)],
    computed: &["arn", "id", "version"],
};

fn properties(args: &Value) -> Value {
    let mut props = json!({});
    if let Some(p) = super::block(args, "properties") {
        if let Some(d) = opt_s(p, "description") {
            props["thingGroupDescription"] = json!(d);
        }
        if let Some(a) = super::block(p, "attribute_payload") {
            props["attributePayload"] =
                json!({"attributes": a.get("attributes").cloned().unwrap_or(json!({}))});
        }
    }
    props
}

#[async_trait::async_trait]
impl ResourceType for ThingGroup {
    fn name(&self) -> &'static str {
        "aws_iot_thing_group"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let name = s(args, "name");
        let mut body =
            json!({"thingGroupProperties": properties(args), "tags": super::tag_list(args)});
        if let Some(p) = opt_s(args, "parent_group_name") {
            body["parentGroupName"] = json!(p);
        }
        let path = format!("/thing-groups/{}", label(name));
        let out = api
            .rest("iot", "CreateThingGroup", Method::POST, &path, Some(&body))
            .await?;
        let arn = opt_s(&out, "thingGroupArn")
            .ok_or_else(|| unexpected("CreateThingGroup", "no thingGroupArn"))?;
        Ok(json!({"arn": arn, "id": name}))
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let answer = rest(args).get(api).await?;
        Ok(answer.map(|_| json!({})))
    }
    async fn update(
        &self,
        api: &Api,
        _: &Value,
        args: &Value,
        attrs: &Value,
    ) -> Result<Value, ApiError> {
        let path = format!("/thing-groups/{}", label(s(args, "name")));
        let body = json!({"thingGroupProperties": properties(args)});
        api.rest("iot", "UpdateThingGroup", Method::PATCH, &path, Some(&body))
            .await?;
        Ok(attrs.clone())
    }
    async fn delete(&self, api: &Api, args: &Value, _: &Value) -> Result<(), ApiError> {
        rest(args).remove(api).await
    }
}

fn rest(args: &Value) -> Rest<'static> {
    Rest {
        service: "iot",
        path: format!("/thing-groups/{}", label(s(args, "name"))),
        describe: "DescribeThingGroup",
        delete: "DeleteThingGroup",
    }
}
