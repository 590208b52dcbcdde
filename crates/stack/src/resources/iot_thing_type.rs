//! `aws_iot_thing_type`: CreateThingType; deleted after DeprecateThingType. Every argument
//! replaces it (AWS has no UpdateThingType for these).

use http::Method;
use serde_json::{Value, json};

use super::{ResourceType, Rest, gone, opt_s, pick, s, unexpected};
use crate::api::{Api, ApiError, label};
use crate::schema::{Arg, BlockSpec, Schema};

pub struct ThingType;

/// The type.
pub static TYPE: ThingType = ThingType;

static PROPERTIES: Schema = Schema::args(&[
    Arg::optional("description"),
    Arg::optional("searchable_attributes"),
]);

static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("name").force_new(),
        Arg::optional("deprecated"),
        Arg::optional("tags"),
    ],
    blocks: &[BlockSpec::new("properties", &PROPERTIES).force_new()],
    computed: &["arn", "id"],
};

#[async_trait::async_trait]
impl ResourceType for ThingType {
    fn name(&self) -> &'static str {
        "aws_iot_thing_type"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let name = s(args, "name");
        let mut props = json!({});
        if let Some(p) = super::block(args, "properties") {
            if let Some(d) = opt_s(p, "description") {
                props["thingTypeDescription"] = json!(d);
            }
            if let Some(a) = p.get("searchable_attributes") {
                props["searchableAttributes"] = a.clone();
            }
        }
        let body = json!({"thingTypeProperties": props, "tags": super::tag_list(args)});
        let path = format!("/thing-types/{}", label(name));
        let out = api
            .rest("iot", "CreateThingType", Method::POST, &path, Some(&body))
            .await?;
        let arn = opt_s(&out, "thingTypeArn")
            .ok_or_else(|| unexpected("CreateThingType", "no thingTypeArn"))?;
        if args.get("deprecated") == Some(&Value::Bool(true)) {
            self.deprecate(api, name, false).await?;
        }
        Ok(json!({"arn": arn, "id": name}))
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let answer = rest(args).get(api).await?;
        Ok(answer.map(|a| pick(&a, &[("deprecated", "/thingTypeMetadata/deprecated")])))
    }
    async fn update(
        &self,
        api: &Api,
        _: &Value,
        args: &Value,
        attrs: &Value,
    ) -> Result<Value, ApiError> {
        let deprecated = args.get("deprecated") == Some(&Value::Bool(true));
        self.deprecate(api, s(args, "name"), !deprecated).await?;
        Ok(attrs.clone())
    }
    async fn delete(&self, api: &Api, args: &Value, _: &Value) -> Result<(), ApiError> {
        gone(self.deprecate(api, s(args, "name"), false).await)?;
        rest(args).remove(api).await
    }
}

impl ThingType {
    async fn deprecate(&self, api: &Api, name: &str, undo: bool) -> Result<(), ApiError> {
        let path = format!("/thing-types/{}/deprecate", label(name));
        let body = json!({"undoDeprecate": undo});
        api.rest(
            "iot",
            "DeprecateThingType",
            Method::POST,
            &path,
            Some(&body),
        )
        .await
        .map(|_| ())
    }
}

fn rest(args: &Value) -> Rest<'static> {
    Rest {
        service: "iot",
        path: format!("/thing-types/{}", label(s(args, "name"))),
        describe: "DescribeThingType",
        delete: "DeleteThingType",
    }
}
