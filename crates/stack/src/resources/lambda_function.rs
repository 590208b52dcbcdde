//! `aws_lambda_function`: a `.zip` from `filename` (read when applied, relative to the working
//! directory as Terraform reads it) uploaded inline. As with the provider, a new zip under the
//! same name is seen through `source_code_hash` (e.g. `filebase64sha256(...)`); configuration
//! changes go through UpdateFunctionConfiguration, code through UpdateFunctionCode.

use base64::Engine;
use http::Method;
use serde_json::{Value, json};

use super::{ResourceType, Rest, block, opt_s, pick, s, unexpected};
use crate::api::{Api, ApiError, label};
use crate::schema::{Arg, BlockSpec, Schema};

pub struct LambdaFunction;

/// The type.
pub static TYPE: LambdaFunction = LambdaFunction;

static ENVIRONMENT: Schema = Schema::args(&[Arg::optional("variables")]);
static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("function_name").force_new(),
        Arg::required("role"),
        Arg::optional("handler"),
        Arg::optional("runtime"),
        Arg::optional("filename"),
        Arg::optional("source_code_hash"),
        Arg::optional("description"),
        Arg::optional("timeout"),
        Arg::optional("memory_size"),
        Arg::optional("publish"),
        Arg::optional("package_type").force_new(),
        Arg::optional("architectures"),
        Arg::optional("tags"),
    ],
    blocks: &[BlockSpec::new("environment", &ENVIRONMENT)],
    computed: &["arn", "id", "invoke_arn", "qualified_arn", "version"],
};

const CODE_KEYS: &[&str] = &["filename", "source_code_hash"];

fn zip(args: &Value, operation: &str) -> Result<String, ApiError> {
    let path = s(args, "filename");
    let bytes = std::fs::read(path).map_err(|e| ApiError {
        operation: operation.to_string(),
        code: "InvalidParameterValueException".to_string(),
        status: 0,
        message: format!("filename {path:?}: {e}"),
    })?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn configuration(args: &Value) -> Value {
    let mut c = json!({"Role": s(args, "role")});
    for (from, to) in [
        ("handler", "Handler"),
        ("runtime", "Runtime"),
        ("description", "Description"),
    ] {
        if let Some(v) = opt_s(args, from) {
            c[to] = json!(v);
        }
    }
    for (from, to) in [("timeout", "Timeout"), ("memory_size", "MemorySize")] {
        if let Some(v) = args.get(from) {
            c[to] = v.clone();
        }
    }
    let variables = block(args, "environment")
        .and_then(|e| e.get("variables").cloned())
        .unwrap_or(json!({}));
    c["Environment"] = json!({"Variables": variables});
    c
}

fn attributes(out: &Value) -> Result<Value, ApiError> {
    let arn =
        opt_s(out, "FunctionArn").ok_or_else(|| unexpected("CreateFunction", "no FunctionArn"))?;
    let version = opt_s(out, "Version").unwrap_or("$LATEST");
    Ok(json!({
        "arn": arn,
        "id": opt_s(out, "FunctionName").unwrap_or_default(),
        "version": version,
        "qualified_arn": format!("{arn}:{version}"),
        "invoke_arn": format!("arn:aws:apigateway:lambda:path/2015-03-31/functions/{arn}/invocations"),
    }))
}

#[async_trait::async_trait]
impl ResourceType for LambdaFunction {
    fn name(&self) -> &'static str {
        "aws_lambda_function"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    fn validate(&self, args: &Value) -> Result<(), String> {
        if opt_s(args, "package_type").is_some_and(|p| p != "Zip") {
            return Err(
                "only package_type \"Zip\" is supported (container images are not)".to_string(),
            );
        }
        if args.get("filename").is_none() {
            return Err(
                "`filename` (a .zip) is required: code from S3 or images is not supported"
                    .to_string(),
            );
        }
        Ok(())
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        let mut body = configuration(args);
        body["FunctionName"] = json!(s(args, "function_name"));
        body["Code"] = json!({"ZipFile": zip(args, "CreateFunction")?});
        body["Publish"] = args.get("publish").cloned().unwrap_or(json!(false));
        let out = api
            .rest(
                "lambda",
                "CreateFunction",
                Method::POST,
                "/2015-03-31/functions",
                Some(&body),
            )
            .await?;
        attributes(&out)
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let answer = rest(args).get(api).await?;
        Ok(answer.map(|a| {
            pick(
                &a,
                &[
                    ("handler", "/Configuration/Handler"),
                    ("runtime", "/Configuration/Runtime"),
                    ("timeout", "/Configuration/Timeout"),
                    ("memory_size", "/Configuration/MemorySize"),
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
        let name = label(s(args, "function_name"));
        let changed = super::changed_keys(args, before);
        let mut out = Value::Null;
        if changed.iter().any(|k| !CODE_KEYS.contains(&k.as_str())) {
            let path = format!("/2015-03-31/functions/{name}/configuration");
            out = api
                .rest(
                    "lambda",
                    "UpdateFunctionConfiguration",
                    Method::PUT,
                    &path,
                    Some(&configuration(args)),
                )
                .await?;
        }
        if changed.iter().any(|k| CODE_KEYS.contains(&k.as_str())) {
            let path = format!("/2015-03-31/functions/{name}/code");
            let body = json!({"ZipFile": zip(args, "UpdateFunctionCode")?, "Publish": args.get("publish").cloned().unwrap_or(json!(false))});
            out = api
                .rest(
                    "lambda",
                    "UpdateFunctionCode",
                    Method::PUT,
                    &path,
                    Some(&body),
                )
                .await?;
        }
        attributes(&out).or_else(|_| Ok(attrs.clone()))
    }
    async fn delete(&self, api: &Api, args: &Value, _: &Value) -> Result<(), ApiError> {
        rest(args).remove(api).await
    }
}

fn rest(args: &Value) -> Rest<'static> {
    Rest {
        service: "lambda",
        path: format!("/2015-03-31/functions/{}", label(s(args, "function_name"))),
        describe: "GetFunction",
        delete: "DeleteFunction",
    }
}
