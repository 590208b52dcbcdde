//! Types fleetcore accepts without managing them on the server: S3 buckets (the lake is a
//! local folder or the configured S3 store; a bucket name is a top folder in it, created by
//! the first delivery) and IAM roles and policies (fleetcore authorises with its own admin
//! credentials and IoT policies, so roles have no effect). Their `arn`s are computed locally so
//! that references like `aws_iam_role.rules.arn` keep working.

use serde_json::{Value, json};

use super::{ApiError, ResourceType, s};
use crate::api::Api;
use crate::schema::{Arg, Schema};

/// A type accepted and not managed.
pub struct NotManaged {
    name: &'static str,
    schema: &'static Schema,
    note: &'static str,
    attributes: fn(&Value) -> Value,
}

static BUCKET: Schema = Schema {
    args: &[
        Arg::optional("bucket"),
        Arg::optional("force_destroy"),
        Arg::optional("tags"),
    ],
    blocks: &[],
    computed: &["arn", "id"],
};
static ROLE: Schema = Schema {
    args: &[
        Arg::optional("name"),
        Arg::required("assume_role_policy"),
        Arg::optional("description"),
        Arg::optional("path"),
        Arg::optional("managed_policy_arns"),
        Arg::optional("tags"),
    ],
    blocks: &[],
    computed: &["arn", "id", "unique_id"],
};
static ROLE_POLICY: Schema = Schema {
    args: &[
        Arg::optional("name"),
        Arg::required("role"),
        Arg::required("policy"),
    ],
    blocks: &[],
    computed: &["id"],
};
static ROLE_POLICY_ATTACHMENT: Schema = Schema {
    args: &[Arg::required("role"), Arg::required("policy_arn")],
    blocks: &[],
    computed: &["id"],
};

/// `aws_s3_bucket`: the lake.
pub static S3_BUCKET: NotManaged = NotManaged {
    name: "aws_s3_bucket",
    schema: &BUCKET,
    note: "S3 buckets map to fleetcore's lake; the bucket is a top folder there, made by the first delivery (nothing is created now)",
    attributes: |a| json!({"arn": format!("arn:aws:s3:::{}", s(a, "bucket")), "id": s(a, "bucket")}),
};

/// `aws_iam_role`: ignored.
pub static IAM_ROLE: NotManaged = NotManaged {
    name: "aws_iam_role",
    schema: &ROLE,
    note: "IAM roles are ignored: fleetcore authorises with its own credentials (references to its arn still work)",
    attributes: |a| json!({"arn": format!("arn:aws:iam::000000000000:role/{}", s(a, "name")), "id": s(a, "name"), "unique_id": s(a, "name")}),
};

/// `aws_iam_role_policy`: ignored.
pub static IAM_ROLE_POLICY: NotManaged = NotManaged {
    name: "aws_iam_role_policy",
    schema: &ROLE_POLICY,
    note: "IAM role policies are ignored: fleetcore authorises with its own credentials",
    attributes: |a| json!({"id": format!("{}:{}", s(a, "role"), s(a, "name"))}),
};

/// `aws_iam_role_policy_attachment`: ignored.
pub static IAM_ROLE_POLICY_ATTACHMENT: NotManaged = NotManaged {
    name: "aws_iam_role_policy_attachment",
    schema: &ROLE_POLICY_ATTACHMENT,
    note: "IAM policy attachments are ignored: fleetcore authorises with its own credentials",
    attributes: |a| json!({"id": format!("{}-{}", s(a, "role"), s(a, "policy_arn"))}),
};

#[async_trait::async_trait]
impl ResourceType for NotManaged {
    fn name(&self) -> &'static str {
        self.name
    }
    fn schema(&self) -> &'static Schema {
        self.schema
    }
    fn not_managed(&self, args: &Value) -> Option<(Value, &'static str)> {
        Some(((self.attributes)(args), self.note))
    }
    async fn create(&self, _: &Api, args: &Value) -> Result<Value, ApiError> {
        Ok((self.attributes)(args))
    }
    async fn read(&self, api: &Api, _: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let _ = api;
        Ok(Some(Value::Object(Default::default())))
    }
    async fn delete(&self, _: &Api, _: &Value, _: &Value) -> Result<(), ApiError> {
        Ok(())
    }
}
