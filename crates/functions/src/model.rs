//! What a function is: its configuration per version, aliases, permissions, and the checks
//! Lambda applies to names, runtimes, limits and environment variables.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::FunctionsError;

/// The version name of the editable configuration.
pub const LATEST: &str = "$LATEST";

/// Default and allowed timeouts (seconds), as Lambda.
pub const DEFAULT_TIMEOUT: u32 = 3;
const MAX_TIMEOUT: u32 = 900;
/// Default and allowed memory sizes (MB), as Lambda.
pub const DEFAULT_MEMORY: u32 = 128;
const MIN_MEMORY: u32 = 128;
const MAX_MEMORY: u32 = 10_240;
/// Largest total size of the environment variables (Lambda: 4 KB).
const MAX_ENVIRONMENT_BYTES: usize = 4096;

/// Variables the runtime sets and a function may not override (Lambda refuses them too).
const RESERVED_VARIABLES: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// How a function's code is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// `python3.x`: the shipped Python runtime interface client in a worker process.
    Python,
    /// `nodejs*`: the shipped Node.js runtime interface client in a worker process.
    Node,
    /// `provided*` with an executable `bootstrap` in the code: run as on Lambda.
    Bootstrap,
    /// `provided*` whose handler names a `.wasm` / `.wat` file: run in process (wasmi).
    Wasm,
}

impl Engine {
    /// The engine for `runtime` and `handler`, or a Lambda-worded refusal.
    pub fn of(runtime: &str, handler: &str) -> Result<Engine, FunctionsError> {
        let python = runtime
            .strip_prefix("python3.")
            .is_some_and(|minor| !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit()));
        let node = runtime
            .strip_prefix("nodejs")
            .and_then(|rest| rest.strip_suffix(".x"))
            .is_some_and(|major| !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()));
        if python {
            Ok(Engine::Python)
        } else if node {
            Ok(Engine::Node)
        } else if matches!(runtime, "provided" | "provided.al2" | "provided.al2023") {
            if handler.ends_with(".wasm") || handler.ends_with(".wat") {
                Ok(Engine::Wasm)
            } else {
                Ok(Engine::Bootstrap)
            }
        } else {
            Err(FunctionsError::InvalidParameter(format!(
                "Value {runtime} at 'runtime' failed to satisfy constraint: this server runs \
                 python3.x, nodejs*.x and provided / provided.al2 / provided.al2023 (a bootstrap \
                 executable, or a WebAssembly module named by the handler)"
            )))
        }
    }
}

/// One version of a function: everything Invoke needs and GetFunctionConfiguration shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionConfig {
    /// The function's name.
    pub name: String,
    /// `$LATEST` or a published number.
    pub version: String,
    /// The runtime identifier as given (`python3.12`, `nodejs20.x`, `provided.al2023`).
    pub runtime: String,
    /// The handler (`module.function`, `index.handler`, `module.wasm`).
    pub handler: String,
    /// The execution role (stored and shown; fleetcore does not assume roles).
    pub role: String,
    /// Free text.
    pub description: String,
    /// Seconds an invocation may run.
    pub timeout: u32,
    /// Memory limit in MB.
    pub memory_size: u32,
    /// The function's own environment variables.
    pub environment: BTreeMap<String, String>,
    /// Base64 SHA-256 of the deployment package (Lambda's `CodeSha256`).
    pub code_sha256: String,
    /// Hex SHA-256 of the package: the folder its files are unpacked into.
    pub code_id: String,
    /// Size of the deployment package in bytes.
    pub code_size: u64,
    /// `2024-01-01T00:00:00.000+0000`.
    pub last_modified: String,
    /// Changes with every update (optimistic locking, as Lambda's `RevisionId`).
    pub revision_id: String,
}

/// An alias: a name for a published version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRecord {
    /// The alias's name.
    pub name: String,
    /// The version it points at.
    pub function_version: String,
    /// Free text.
    pub description: String,
    /// Changes with every update.
    pub revision_id: String,
}

/// Everything stored about one function (one value in the store, written whole).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    /// The editable version.
    pub latest: VersionConfig,
    /// Published versions by number.
    pub versions: BTreeMap<u64, VersionConfig>,
    /// The number the next PublishVersion takes.
    pub next_version: u64,
    /// Aliases by name.
    pub aliases: BTreeMap<String, AliasRecord>,
    /// Resource-policy statements (AddPermission), by statement id, as JSON text.
    pub policy: BTreeMap<String, String>,
    /// Reserved concurrency (PutFunctionConcurrency): the most invocations at once.
    pub reserved_concurrency: Option<u32>,
}

impl FunctionRecord {
    /// The configuration a qualifier (none, `$LATEST`, a number or an alias) selects.
    pub fn resolve(&self, qualifier: Option<&str>) -> Option<&VersionConfig> {
        match qualifier {
            None | Some(LATEST) => Some(&self.latest),
            Some(q) if q.bytes().all(|b| b.is_ascii_digit()) => {
                q.parse::<u64>().ok().and_then(|n| self.versions.get(&n))
            }
            Some(alias) => {
                let target = self.aliases.get(alias)?;
                self.resolve(Some(&target.function_version))
            }
        }
    }
}

/// A function name: 1 to 64 letters, digits, hyphens and underscores (Lambda's rule).
pub fn check_name(name: &str) -> Result<(), FunctionsError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(FunctionsError::InvalidParameter(format!(
            "1 validation error detected: Value '{name}' at 'functionName' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9-_]{{1,64}}"
        )));
    }
    Ok(())
}

/// An alias name: 1 to 128 characters, starting with a letter, not only digits.
pub fn check_alias_name(name: &str) -> Result<(), FunctionsError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(FunctionsError::InvalidParameter(format!(
            "Value '{name}' at 'name' failed to satisfy constraint: Member must satisfy regular \
             expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)"
        )))
    }
}

/// Checks timeout, memory and environment, as Lambda words its refusals.
pub fn check_limits(
    timeout: u32,
    memory_size: u32,
    environment: &BTreeMap<String, String>,
) -> Result<(), FunctionsError> {
    if !(1..=MAX_TIMEOUT).contains(&timeout) {
        return Err(FunctionsError::InvalidParameter(format!(
            "1 validation error detected: Value '{timeout}' at 'timeout' failed to satisfy \
             constraint: Member must have value between 1 and {MAX_TIMEOUT}"
        )));
    }
    if !(MIN_MEMORY..=MAX_MEMORY).contains(&memory_size) {
        return Err(FunctionsError::InvalidParameter(format!(
            "1 validation error detected: Value '{memory_size}' at 'memorySize' failed to \
             satisfy constraint: Member must have value between {MIN_MEMORY} and {MAX_MEMORY}"
        )));
    }
    let reserved: Vec<&str> = environment
        .keys()
        .map(String::as_str)
        .filter(|k| RESERVED_VARIABLES.contains(k))
        .collect();
    if !reserved.is_empty() {
        return Err(FunctionsError::InvalidParameter(format!(
            "Lambda was unable to configure your environment variables because the environment \
             variables you have provided contains reserved keys that are currently not supported \
             for modification. Reserved keys used in this request: {}",
            reserved.join(", ")
        )));
    }
    for key in environment.keys() {
        let valid = key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(FunctionsError::InvalidParameter(format!(
                "Lambda was unable to configure your environment variables because the \
                 environment variable name '{key}' is not valid: it must start with a letter and \
                 hold only letters, digits and underscores"
            )));
        }
    }
    let size: usize = environment.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_ENVIRONMENT_BYTES {
        return Err(FunctionsError::InvalidParameter(format!(
            "Lambda was unable to configure your environment variables because the environment \
             variables you have provided exceeded the 4KB limit. String measured: {size}"
        )));
    }
    Ok(())
}

/// A function named by name, full or partial ARN, with an optional qualifier
/// (`name`, `name:alias`, `arn:aws:lambda:r:a:function:name[:qualifier]`, `a:function:name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    /// The function's name.
    pub name: String,
    /// The version or alias, if the reference carried one.
    pub qualifier: Option<String>,
}

impl FunctionRef {
    /// Parses a `FunctionName` parameter; `qualifier` (the query parameter) must agree with one
    /// carried in the name.
    pub fn parse(text: &str, qualifier: Option<&str>) -> Result<FunctionRef, FunctionsError> {
        let parts: Vec<&str> = text.split(':').collect();
        let (name, carried) = match parts.as_slice() {
            [name] => (*name, None),
            [name, q] => (*name, Some(*q)),
            [_account, "function", name] => (*name, None),
            [_account, "function", name, q] => (*name, Some(*q)),
            [
                "arn",
                _partition,
                "lambda",
                _region,
                _account,
                "function",
                name,
            ] => (*name, None),
            [
                "arn",
                _partition,
                "lambda",
                _region,
                _account,
                "function",
                name,
                q,
            ] => (*name, Some(*q)),
            _ => {
                return Err(FunctionsError::InvalidParameter(format!(
                    "1 validation error detected: Value '{text}' at 'functionName' failed to \
                     satisfy constraint: it must be a function name, a partial ARN or an ARN"
                )));
            }
        };
        check_name(name)?;
        let qualifier = match (carried, qualifier.filter(|q| !q.is_empty())) {
            (Some(a), Some(b)) if a != b => {
                return Err(FunctionsError::InvalidParameter(
                    "The derived qualifier from the function name does not match the specified \
                     qualifier."
                        .into(),
                ));
            }
            (a, b) => a.or(b).map(str::to_string),
        };
        Ok(FunctionRef {
            name: name.to_string(),
            qualifier,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_pick_engines() {
        assert_eq!(Engine::of("python3.12", "m.h").ok(), Some(Engine::Python));
        assert_eq!(Engine::of("nodejs20.x", "i.h").ok(), Some(Engine::Node));
        assert_eq!(
            Engine::of("provided.al2023", "f.wasm").ok(),
            Some(Engine::Wasm)
        );
        assert_eq!(Engine::of("provided", "x").ok(), Some(Engine::Bootstrap));
        assert!(Engine::of("java21", "x").is_err());
        assert!(Engine::of("python3.", "x").is_err());
        assert!(Engine::of("nodejs.x", "x").is_err());
    }

    #[test]
    fn references_parse_names_arns_and_qualifiers() {
        let r = FunctionRef::parse(
            "arn:aws:lambda:us-east-1:000000000000:function:f:prod",
            None,
        )
        .expect("arn");
        assert_eq!(
            (r.name.as_str(), r.qualifier.as_deref()),
            ("f", Some("prod"))
        );
        let r = FunctionRef::parse("f", Some("2")).expect("name");
        assert_eq!(r.qualifier.as_deref(), Some("2"));
        assert!(FunctionRef::parse("f:1", Some("2")).is_err());
        assert!(FunctionRef::parse("bad name", None).is_err());
        assert!(FunctionRef::parse("a:b:c:d:e", None).is_err());
    }

    #[test]
    fn limits_refuse_reserved_and_oversized_environment() {
        let mut env = BTreeMap::new();
        assert!(check_limits(3, 128, &env).is_ok());
        assert!(check_limits(0, 128, &env).is_err());
        assert!(check_limits(3, 64, &env).is_err());
        env.insert("AWS_REGION".to_string(), "x".to_string());
        assert!(check_limits(3, 128, &env).is_err());
        env.clear();
        env.insert("BIG".to_string(), "x".repeat(5000));
        assert!(check_limits(3, 128, &env).is_err());
    }
}
