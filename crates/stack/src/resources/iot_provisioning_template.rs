//! `aws_iot_provisioning_template`: CreateProvisioningTemplate; a new `template_body` is a new
//! default version (CreateProvisioningTemplateVersion), the other settings change through
//! UpdateProvisioningTemplate. Tags are refused (the server keeps none on templates).

use http::Method;
use serde_json::{Value, json};

use super::{ResourceType, Rest, block, opt_s, pick, s, unexpected};
use crate::api::{Api, ApiError, label};
use crate::schema::{Arg, BlockSpec, Schema};

pub struct ProvisioningTemplate;

/// The type.
pub static TYPE: ProvisioningTemplate = ProvisioningTemplate;

static HOOK: Schema = Schema::args(&[
    Arg::required("target_arn"),
    Arg::optional("payload_version"),
]);

static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("name").force_new(),
        Arg::required("provisioning_role_arn"),
        Arg::required("template_body"),
        Arg::optional("description"),
        Arg::optional("enabled"),
        Arg::optional("type").force_new(),
        Arg::optional("tags"),
    ],
    blocks: &[BlockSpec::new("pre_provisioning_hook", &HOOK)],
    computed: &["arn", "id", "default_version_id"],
};

fn rest(args: &Value) -> Rest<'static> {
    Rest {
        service: "iot",
        path: format!("/provisioning-templates/{}", label(s(args, "name"))),
        describe: "DescribeProvisioningTemplate",
        delete: "DeleteProvisioningTemplate",
    }
}

fn hook(args: &Value) -> Option<Value> {
    block(args, "pre_provisioning_hook").map(|h| {
        json!({
            "targetArn": s(h, "target_arn"),
            "payloadVersion": opt_s(h, "payload_version").unwrap_or("2020-04-01"),
        })
    })
}

#[async_trait::async_trait]
impl ResourceType for ProvisioningTemplate {
    fn name(&self) -> &'static str {
        "aws_iot_provisioning_template"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    fn validate(&self, args: &Value) -> Result<(), String> {
        if args
            .get("tags")
            .and_then(Value::as_object)
            .is_some_and(|t| !t.is_empty())
        {
            return Err("`tags` on provisioning templates are not supported by fleetcore".into());
        }
        Ok(())
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let mut b = json!({
            "templateName": s(args, "name"),
            "templateBody": s(args, "template_body"),
            "provisioningRoleArn": s(args, "provisioning_role_arn"),
            "enabled": args.get("enabled").and_then(Value::as_bool).unwrap_or(false),
        });
        if let Some(d) = opt_s(args, "description") {
            b["description"] = json!(d);
        }
        if let Some(t) = opt_s(args, "type") {
            b["type"] = json!(t);
        }
        if let Some(h) = hook(args) {
            b["preProvisioningHook"] = h;
        }
        let out = api
            .rest(
                "iot",
                "CreateProvisioningTemplate",
                Method::POST,
                "/provisioning-templates",
                Some(&b),
            )
            .await?;
        let arn = opt_s(&out, "templateArn")
            .ok_or_else(|| unexpected("CreateProvisioningTemplate", "no templateArn"))?;
        Ok(json!({
            "arn": arn,
            "id": s(args, "name"),
            "default_version_id": out.get("defaultVersionId").cloned().unwrap_or(json!(1)),
        }))
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let answer = rest(args).get(api).await?;
        Ok(answer.map(|a| {
            pick(
                &a,
                &[
                    ("template_body", "/templateBody"),
                    ("description", "/description"),
                    ("enabled", "/enabled"),
                    ("provisioning_role_arn", "/provisioningRoleArn"),
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
        let path = rest(args).path;
        let mut attrs = attrs.clone();
        if before.get("template_body") != args.get("template_body") {
            let out = api
                .rest(
                    "iot",
                    "CreateProvisioningTemplateVersion",
                    Method::POST,
                    &format!("{path}/versions?setAsDefault=true"),
                    Some(&json!({"templateBody": s(args, "template_body")})),
                )
                .await?;
            if let Some(v) = out.get("versionId") {
                attrs["default_version_id"] = v.clone();
            }
        }
        let mut b = json!({
            "enabled": args.get("enabled").and_then(Value::as_bool).unwrap_or(false),
            "provisioningRoleArn": s(args, "provisioning_role_arn"),
            "description": opt_s(args, "description").unwrap_or_default(),
        });
        match hook(args) {
            Some(h) => b["preProvisioningHook"] = h,
            None if hook(before).is_some() => b["removePreProvisioningHook"] = json!(true),
            None => {}
        }
        api.rest(
            "iot",
            "UpdateProvisioningTemplate",
            Method::PATCH,
            &path,
            Some(&b),
        )
        .await?;
        Ok(attrs)
    }
    async fn delete(&self, api: &Api, args: &Value, _: &Value) -> Result<(), ApiError> {
        rest(args).remove(api).await
    }
}
