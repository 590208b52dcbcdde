//! The JSON Lambda answers with.

use serde_json::{Value, json};

use crate::model::{AliasRecord, LATEST, VersionConfig};
use crate::service::Functions;

/// `FunctionConfiguration` of one version.
pub fn configuration(functions: &Functions, config: &VersionConfig) -> Value {
    let qualifier = (config.version != LATEST).then_some(config.version.as_str());
    let mut v = json!({
        "FunctionName": config.name,
        "FunctionArn": functions.arn(&config.name, qualifier),
        "Runtime": config.runtime,
        "Role": config.role,
        "Handler": config.handler,
        "CodeSize": config.code_size,
        "Description": config.description,
        "Timeout": config.timeout,
        "MemorySize": config.memory_size,
        "LastModified": config.last_modified,
        "CodeSha256": config.code_sha256,
        "Version": config.version,
        "TracingConfig": {"Mode": "PassThrough"},
        "RevisionId": config.revision_id,
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": [std::env::consts::ARCH.replace("aarch64", "arm64")],
        "EphemeralStorage": {"Size": 512},
        "LoggingConfig": {"LogFormat": "Text", "LogGroup": format!("/aws/lambda/{}", config.name)},
    });
    if !config.environment.is_empty() {
        v["Environment"] = json!({"Variables": config.environment});
    }
    v
}

/// `AliasConfiguration`.
pub fn alias(functions: &Functions, function: &str, alias: &AliasRecord) -> Value {
    json!({
        "AliasArn": functions.arn(function, Some(&alias.name)),
        "Name": alias.name,
        "FunctionVersion": alias.function_version,
        "Description": alias.description,
        "RevisionId": alias.revision_id,
    })
}
