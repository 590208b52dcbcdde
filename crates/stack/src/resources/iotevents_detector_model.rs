//! `awscc_iotevents_detector_model`: CreateDetectorModel / UpdateDetectorModel /
//! DeleteDetectorModel. awscc's snake_case properties become the API's camelCase; the server
//! checks the definition at create and names the place of a mistake.

use http::Method;
use serde_json::{Value, json};

use super::{ResourceType, Rest, camel_keys, opt_s, pick, s};
use crate::api::{Api, ApiError, label};
use crate::schema::{Arg, Schema};

pub struct DetectorModel;

/// The type.
pub static TYPE: DetectorModel = DetectorModel;

static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("detector_model_name").force_new(),
        Arg::required("detector_model_definition"),
        Arg::required("role_arn"),
        Arg::optional("detector_model_description"),
        Arg::optional("evaluation_method"),
        Arg::optional("key").force_new(),
        Arg::optional("tags").force_new(),
    ],
    blocks: &[],
    computed: &["arn", "id"],
};

fn body(args: &Value) -> Value {
    let mut b = json!({
        "detectorModelDefinition": camel_keys(args.get("detector_model_definition").unwrap_or(&Value::Null)),
        "roleArn": s(args, "role_arn"),
    });
    if let Some(d) = opt_s(args, "detector_model_description") {
        b["detectorModelDescription"] = json!(d);
    }
    if let Some(m) = opt_s(args, "evaluation_method") {
        b["evaluationMethod"] = json!(m);
    }
    b
}

#[async_trait::async_trait]
impl ResourceType for DetectorModel {
    fn name(&self) -> &'static str {
        "awscc_iotevents_detector_model"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let mut b = body(args);
        b["detectorModelName"] = json!(s(args, "detector_model_name"));
        if let Some(k) = opt_s(args, "key") {
            b["key"] = json!(k);
        }
        if let Some(tags) = args.get("tags") {
            b["tags"] = camel_keys(tags);
        }
        let out = api
            .rest(
                "iotevents",
                "CreateDetectorModel",
                Method::POST,
                "/detector-models",
                Some(&b),
            )
            .await?;
        let arn = out
            .pointer("/detectorModelConfiguration/detectorModelArn")
            .cloned()
            .unwrap_or_default();
        Ok(json!({"arn": arn, "id": s(args, "detector_model_name")}))
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let answer = rest(args).get(api).await?;
        let config = "/detectorModel/detectorModelConfiguration";
        Ok(answer.map(|a| {
            pick(
                &a,
                &[
                    (
                        "detector_model_description",
                        &format!("{config}/detectorModelDescription"),
                    ),
                    ("evaluation_method", &format!("{config}/evaluationMethod")),
                ],
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
        let path = format!("/detector-models/{}", label(s(args, "detector_model_name")));
        api.rest(
            "iotevents",
            "UpdateDetectorModel",
            Method::POST,
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
        path: format!("/detector-models/{}", label(s(args, "detector_model_name"))),
        describe: "DescribeDetectorModel",
        delete: "DeleteDetectorModel",
    }
}
