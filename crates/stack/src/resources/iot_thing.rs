//! `aws_iot_thing`: CreateThing / UpdateThing / DeleteThing.

use http::Method;
use serde_json::{Value, json};

use super::{ResourceType, Rest, opt_s, pick, s, unexpected};
use crate::api::{Api, ApiError, label};
use crate::schema::{Arg, Schema};

pub struct Thing;

/// The type.
pub static TYPE: Thing = Thing;

static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("name").force_new(),
        Arg::optional("attributes"),
        Arg::optional("thing_type_name"),
    ],
    blocks: &[],
    computed: &["arn", "id", "default_client_id", "version"],
};

fn attribute_payload(args: &Value) -> Value {
    json!({"attributes": args.get("attributes").cloned().unwrap_or(json!({}))})
}

#[async_trait::async_trait]
impl ResourceType for Thing {
    fn name(&self) -> &'static str {
        "aws_iot_thing"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let name = s(args, "name");
        let mut body = json!({"attributePayload": attribute_payload(args)});
        if let Some(t) = opt_s(args, "thing_type_name") {
            body["thingTypeName"] = json!(t);
        }
        let path = format!("/things/{}", label(name));
        let out = api
            .rest("iot", "CreateThing", Method::POST, &path, Some(&body))
            .await?;
        let arn =
            opt_s(&out, "thingArn").ok_or_else(|| unexpected("CreateThing", "no thingArn"))?;
        Ok(json!({"arn": arn, "id": name, "default_client_id": name}))
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let answer = rest(args).get(api).await?;
        Ok(answer.map(|a| {
            pick(
                &a,
                &[
                    ("thing_type_name", "/thingTypeName"),
                    ("attributes", "/attributes"),
                ],
            )
        }))
    }
    async fn update(
        &self,
        api: &Api,
        before: &Value,
        args: &Value,
        attrs: &Value,
    ) -> Result<Value, ApiError> {
        // merge=false (the default): the attributes given replace them all.
        let mut body = json!({"attributePayload": attribute_payload(args)});
        match opt_s(args, "thing_type_name") {
            Some(t) => body["thingTypeName"] = json!(t),
            None if before.get("thing_type_name").is_some() => {
                body["removeThingType"] = json!(true)
            }
            None => {}
        }
        let path = format!("/things/{}", label(s(args, "name")));
        api.rest("iot", "UpdateThing", Method::PATCH, &path, Some(&body))
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
        path: format!("/things/{}", label(s(args, "name"))),
        describe: "DescribeThing",
        delete: "DeleteThing",
    }
}
