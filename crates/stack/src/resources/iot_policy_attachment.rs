//! `aws_iot_policy_attachment`: AttachPolicy / DetachPolicy of a policy to a target (a
//! certificate ARN or a thing group ARN).

use http::Method;
use serde_json::{Value, json};

use super::{ResourceType, found, gone, s};
use crate::api::{Api, ApiError, label};
use crate::schema::{Arg, Schema};

pub struct PolicyAttachment;

/// The type.
pub static TYPE: PolicyAttachment = PolicyAttachment;

static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("policy").force_new(),
        Arg::required("target").force_new(),
    ],
    blocks: &[],
    computed: &["id"],
};

#[async_trait::async_trait]
impl ResourceType for PolicyAttachment {
    fn name(&self) -> &'static str {
        "aws_iot_policy_attachment"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let path = format!("/target-policies/{}", label(s(args, "policy")));
        let body = json!({"target": s(args, "target")});
        api.rest("iot", "AttachPolicy", Method::PUT, &path, Some(&body))
            .await?;
        Ok(json!({"id": format!("{}|{}", s(args, "policy"), s(args, "target"))}))
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let path = format!("/attached-policies/{}", label(s(args, "target")));
        let answer = found(
            api.rest("iot", "ListAttachedPolicies", Method::POST, &path, None)
                .await,
        )?;
        let attached = answer.is_some_and(|out| {
            out.get("policies")
                .and_then(Value::as_array)
                .is_some_and(|l| {
                    l.iter().any(|p| {
                        p.get("policyName").and_then(Value::as_str) == Some(s(args, "policy"))
                    })
                })
        });
        Ok(attached.then(|| json!({})))
    }
    async fn delete(&self, api: &Api, args: &Value, _: &Value) -> Result<(), ApiError> {
        let path = format!("/target-policies/{}", label(s(args, "policy")));
        let body = json!({"target": s(args, "target")});
        gone(
            api.rest("iot", "DetachPolicy", Method::POST, &path, Some(&body))
                .await,
        )
    }
}
