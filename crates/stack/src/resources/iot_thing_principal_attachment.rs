//! `aws_iot_thing_principal_attachment`: AttachThingPrincipal / DetachThingPrincipal (the
//! principal, a certificate ARN, in the `x-amzn-principal` header).

use http::Method;
use serde_json::{Value, json};

use super::{ResourceType, found, gone, s};
use crate::api::{Api, ApiError, label};
use crate::schema::{Arg, Schema};

pub struct ThingPrincipalAttachment;

/// The type.
pub static TYPE: ThingPrincipalAttachment = ThingPrincipalAttachment;

static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("thing").force_new(),
        Arg::required("principal").force_new(),
        Arg::optional("thing_principal_type").force_new(),
    ],
    blocks: &[],
    computed: &["id"],
};

#[async_trait::async_trait]
impl ResourceType for ThingPrincipalAttachment {
    fn name(&self) -> &'static str {
        "aws_iot_thing_principal_attachment"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let path = format!("/things/{}/principals", label(s(args, "thing")));
        let headers = vec![("x-amzn-principal", s(args, "principal").to_string())];
        api.rest_with(
            "iot",
            "AttachThingPrincipal",
            Method::PUT,
            &path,
            headers,
            None,
        )
        .await?;
        Ok(json!({"id": format!("{}|{}", s(args, "principal"), s(args, "thing"))}))
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let path = format!("/things/{}/principals", label(s(args, "thing")));
        let answer = found(
            api.rest("iot", "ListThingPrincipals", Method::GET, &path, None)
                .await,
        )?;
        let attached = answer.is_some_and(|out| {
            out.get("principals")
                .and_then(Value::as_array)
                .is_some_and(|l| l.iter().any(|p| p.as_str() == Some(s(args, "principal"))))
        });
        Ok(attached.then(|| json!({})))
    }
    async fn delete(&self, api: &Api, args: &Value, _: &Value) -> Result<(), ApiError> {
        let path = format!("/things/{}/principals", label(s(args, "thing")));
        let headers = vec![("x-amzn-principal", s(args, "principal").to_string())];
        gone(
            api.rest_with(
                "iot",
                "DetachThingPrincipal",
                Method::DELETE,
                &path,
                headers,
                None,
            )
            .await,
        )
    }
}
