//! `aws_iot_policy`: CreatePolicy; a changed document becomes a new default version
//! (CreatePolicyVersion with setAsDefault), as the provider does.

use http::Method;
use serde_json::{Value, json};

use super::{ResourceType, Rest, gone, opt_s, pick, s, unexpected};
use crate::api::{Api, ApiError, label};
use crate::schema::{Arg, Schema};

pub struct Policy;

/// The type.
pub static TYPE: Policy = Policy;

static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("name").force_new(),
        Arg::required("policy"),
        Arg::optional("tags"),
    ],
    blocks: &[],
    computed: &["arn", "id", "default_version_id"],
};

#[async_trait::async_trait]
impl ResourceType for Policy {
    fn name(&self) -> &'static str {
        "aws_iot_policy"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let name = s(args, "name");
        let body = json!({"policyDocument": s(args, "policy"), "tags": super::tag_list(args)});
        let path = format!("/policies/{}", label(name));
        let out = api
            .rest("iot", "CreatePolicy", Method::POST, &path, Some(&body))
            .await?;
        let arn =
            opt_s(&out, "policyArn").ok_or_else(|| unexpected("CreatePolicy", "no policyArn"))?;
        Ok(
            json!({"arn": arn, "id": name, "default_version_id": out.get("policyVersionId").cloned().unwrap_or(json!("1"))}),
        )
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let answer = rest(args).get(api).await?;
        Ok(answer.map(|a| pick(&a, &[("policy", "/policyDocument")])))
    }
    async fn update(
        &self,
        api: &Api,
        _: &Value,
        args: &Value,
        attrs: &Value,
    ) -> Result<Value, ApiError> {
        let name = s(args, "name");
        let path = format!("/policies/{}/version?setAsDefault=true", label(name));
        let body = json!({"policyDocument": s(args, "policy")});
        let out = api
            .rest(
                "iot",
                "CreatePolicyVersion",
                Method::POST,
                &path,
                Some(&body),
            )
            .await?;
        let mut attrs = attrs.clone();
        if let Some(v) = out.get("policyVersionId") {
            attrs["default_version_id"] = v.clone();
        }
        Ok(attrs)
    }
    async fn delete(&self, api: &Api, args: &Value, _: &Value) -> Result<(), ApiError> {
        let name = s(args, "name");
        // Versions other than the default must go first.
        let path = format!("/policies/{}/version", label(name));
        if let Ok(list) = api
            .rest("iot", "ListPolicyVersions", Method::GET, &path, None)
            .await
        {
            for v in list
                .get("policyVersions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if v.get("isDefaultVersion") == Some(&Value::Bool(true)) {
                    continue;
                }
                if let Some(id) = opt_s(v, "versionId") {
                    let p = format!("/policies/{}/version/{}", label(name), label(id));
                    gone(
                        api.rest("iot", "DeletePolicyVersion", Method::DELETE, &p, None)
                            .await,
                    )?;
                }
            }
        }
        rest(args).remove(api).await
    }
}

fn rest(args: &Value) -> Rest<'static> {
    Rest {
        service: "iot",
        path: format!("/policies/{}", label(s(args, "name"))),
        describe: "GetPolicy",
        delete: "DeletePolicy",
    }
}
