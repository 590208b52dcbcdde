//! `awscc_iot_security_profile`: Device Defender's CreateSecurityProfile /
//! UpdateSecurityProfile / DeleteSecurityProfile, with `target_arns` attached and detached
//! (AttachSecurityProfile / DetachSecurityProfile). awscc's snake_case properties become the
//! API's camelCase; `alert_targets` keeps its keys (`SNS`).

use http::Method;
use serde_json::{Map, Value, json};

use super::{ResourceType, Rest, camel_keys, opt_s, s, unexpected};
use crate::api::{Api, ApiError, label};
use crate::schema::{Arg, Schema};

pub struct SecurityProfile;

/// The type.
pub static TYPE: SecurityProfile = SecurityProfile;

static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("security_profile_name").force_new(),
        Arg::optional("security_profile_description"),
        Arg::optional("behaviors"),
        Arg::optional("alert_targets"),
        Arg::optional("additional_metrics_to_retain_v2"),
        Arg::optional("metrics_export_config"),
        Arg::optional("target_arns"),
        Arg::optional("tags").force_new(),
    ],
    blocks: &[],
    computed: &["arn", "id"],
};

fn rest(args: &Value) -> Rest<'static> {
    Rest {
        service: "iot",
        path: format!(
            "/security-profiles/{}",
            label(s(args, "security_profile_name"))
        ),
        describe: "DescribeSecurityProfile",
        delete: "DeleteSecurityProfile",
    }
}

/// The profile's members (everything but the name, the targets and the tags).
fn body(args: &Value) -> Value {
    let mut b = Map::new();
    for (arg, member) in [
        ("security_profile_description", "securityProfileDescription"),
        ("behaviors", "behaviors"),
        (
            "additional_metrics_to_retain_v2",
            "additionalMetricsToRetainV2",
        ),
        ("metrics_export_config", "metricsExportConfig"),
    ] {
        if let Some(v) = args.get(arg).filter(|v| !v.is_null()) {
            b.insert(member.to_string(), camel_keys(v));
        }
    }
    if let Some(targets) = args.get("alert_targets").and_then(Value::as_object) {
        let targets: Map<String, Value> = targets
            .iter()
            .map(|(k, v)| (k.clone(), camel_keys(v)))
            .collect();
        b.insert("alertTargets".to_string(), Value::Object(targets));
    }
    Value::Object(b)
}

fn targets(args: &Value) -> Vec<&str> {
    args.get("target_arns")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

async fn attach(api: &Api, args: &Value, target: &str, attach: bool) -> Result<(), ApiError> {
    let path = format!(
        "{}/targets?securityProfileTargetArn={}",
        rest(args).path,
        label(target)
    );
    let (operation, method) = if attach {
        ("AttachSecurityProfile", Method::PUT)
    } else {
        ("DetachSecurityProfile", Method::DELETE)
    };
    api.rest("iot", operation, method, &path, None)
        .await
        .map(|_| ())
}

#[async_trait::async_trait]
impl ResourceType for SecurityProfile {
    fn name(&self) -> &'static str {
        "awscc_iot_security_profile"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let mut b = body(args);
        if let Some(tags) = args.get("tags") {
            b["tags"] = camel_keys(tags);
        }
        let path = rest(args).path;
        let out = api
            .rest(
                "iot",
                "CreateSecurityProfile",
                Method::POST,
                &path,
                Some(&b),
            )
            .await?;
        let arn = opt_s(&out, "securityProfileArn")
            .ok_or_else(|| unexpected("CreateSecurityProfile", "no securityProfileArn"))?;
        for target in targets(args) {
            attach(api, args, target, true).await?;
        }
        Ok(json!({"arn": arn, "id": s(args, "security_profile_name")}))
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let Some(answer) = rest(args).get(api).await? else {
            return Ok(None);
        };
        let mut live = json!({});
        if let Some(d) = opt_s(&answer, "securityProfileDescription") {
            live["security_profile_description"] = json!(d);
        }
        let path = format!("{}/targets", rest(args).path);
        let listed = api
            .rest(
                "iot",
                "ListTargetsForSecurityProfile",
                Method::GET,
                &path,
                None,
            )
            .await?;
        let mut attached: Vec<&str> = listed
            .get("securityProfileTargets")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(|t| opt_s(t, "arn")).collect())
            .unwrap_or_default();
        // Reported in the configuration's order when it is the same set.
        let wanted = targets(args);
        let mut sorted = wanted.clone();
        sorted.sort_unstable();
        attached.sort_unstable();
        live["target_arns"] = if sorted == attached {
            json!(wanted)
        } else {
            json!(attached)
        };
        Ok(Some(live))
    }
    async fn update(
        &self,
        api: &Api,
        before: &Value,
        args: &Value,
        attrs: &Value,
    ) -> Result<Value, ApiError> {
        if body(before) != body(args) {
            let mut b = body(args);
            for (arg, flag) in [
                ("behaviors", "deleteBehaviors"),
                ("alert_targets", "deleteAlertTargets"),
            ] {
                if args.get(arg).is_none_or(Value::is_null) {
                    b[flag] = json!(true);
                }
            }
            api.rest(
                "iot",
                "UpdateSecurityProfile",
                Method::PATCH,
                &rest(args).path,
                Some(&b),
            )
            .await?;
        }
        let (old, new) = (targets(before), targets(args));
        for target in old.iter().filter(|t| !new.contains(t)) {
            attach(api, args, target, false).await?;
        }
        for target in new.iter().filter(|t| !old.contains(t)) {
            attach(api, args, target, true).await?;
        }
        Ok(attrs.clone())
    }
    async fn delete(&self, api: &Api, args: &Value, _: &Value) -> Result<(), ApiError> {
        rest(args).remove(api).await
    }
}
