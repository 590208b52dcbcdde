//! Evaluating expressions: the context (`var`, `local`, `path`, resources, `count`, `each`)
//! and the Terraform functions fleetcore provides through hcl-rs's function table.

use hcl::eval::{Context, Evaluate, FuncArgs, FuncDef, ParamType};
use serde_json::Value;

use crate::error::{Location, StackError};
use crate::schema::Schema;
use crate::source::SourceBlock;

/// What a value not known until apply (an `arn` of a resource still to be created) reads as
/// in a plan.
pub const UNKNOWN: &str = "(known after apply)";

/// Evaluates `expr` in `ctx`; an error names the place.
pub fn evaluate(expr: &hcl::Expression, ctx: &Context, at: &Location) -> Result<Value, StackError> {
    let value = expr
        .evaluate(ctx)
        .map_err(|e| StackError::config(at, format!("cannot evaluate: {e}")))?;
    hcl_to_json(value, at)
}

/// An hcl value as JSON.
pub fn hcl_to_json(value: hcl::Value, at: &Location) -> Result<Value, StackError> {
    serde_json::to_value(value).map_err(|e| StackError::config(at, e.to_string()))
}

/// A JSON value as an hcl value.
pub fn json_to_hcl(value: &Value) -> hcl::Value {
    hcl::to_value(value).unwrap_or(hcl::Value::Null)
}

/// A context with fleetcore's functions declared.
pub fn base_context<'a>() -> Context<'a> {
    let mut ctx = Context::new();
    let any = || FuncDef::builder().param(ParamType::Any);
    let string = || FuncDef::builder().param(ParamType::String);
    ctx.declare_func("jsonencode", any().build(jsonencode));
    ctx.declare_func("jsondecode", string().build(jsondecode));
    ctx.declare_func("file", string().build(file));
    ctx.declare_func("filebase64", string().build(filebase64));
    ctx.declare_func("filebase64sha256", string().build(filebase64sha256));
    ctx.declare_func(
        "lower",
        string().build(|a| Ok(str_arg(&a, 0).to_lowercase().into())),
    );
    ctx.declare_func(
        "upper",
        string().build(|a| Ok(str_arg(&a, 0).to_uppercase().into())),
    );
    ctx.declare_func("tostring", any().build(tostring));
    ctx.declare_func("length", any().build(length));
    ctx.declare_func(
        "replace",
        string()
            .param(ParamType::String)
            .param(ParamType::String)
            .build(|a| {
                Ok(str_arg(&a, 0)
                    .replace(str_arg(&a, 1), str_arg(&a, 2))
                    .into())
            }),
    );
    ctx.declare_func(
        "join",
        string()
            .param(ParamType::array_of(ParamType::Any))
            .build(join),
    );
    ctx.declare_func(
        "format",
        string().variadic_param(ParamType::Any).build(format),
    );
    ctx.declare_func(
        "merge",
        FuncDef::builder()
            .variadic_param(ParamType::Any)
            .build(merge),
    );
    ctx.declare_func("keys", any().build(keys));
    ctx.declare_func("toset", any().build(|a| Ok(a[0].clone())));
    ctx.declare_func("tolist", any().build(|a| Ok(a[0].clone())));
    ctx.declare_func("tomap", any().build(|a| Ok(a[0].clone())));
    ctx
}

fn str_arg(args: &FuncArgs, i: usize) -> &str {
    args.get(i).and_then(hcl::Value::as_str).unwrap_or_default()
}

fn jsonencode(args: FuncArgs) -> Result<hcl::Value, String> {
    let json = serde_json::to_string(&args[0]).map_err(|e| e.to_string())?;
    Ok(json.into())
}

fn jsondecode(args: FuncArgs) -> Result<hcl::Value, String> {
    let json: Value = serde_json::from_str(str_arg(&args, 0)).map_err(|e| e.to_string())?;
    Ok(json_to_hcl(&json))
}

fn file(args: FuncArgs) -> Result<hcl::Value, String> {
    let path = str_arg(&args, 0);
    std::fs::read_to_string(path)
        .map(hcl::Value::from)
        .map_err(|e| format!("file(\"{path}\"): {e}"))
}

fn filebase64(args: FuncArgs) -> Result<hcl::Value, String> {
    use base64::Engine;
    let path = str_arg(&args, 0);
    std::fs::read(path)
        .map(|bytes| {
            base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into()
        })
        .map_err(|e| format!("filebase64(\"{path}\"): {e}"))
}

fn filebase64sha256(args: FuncArgs) -> Result<hcl::Value, String> {
    use base64::Engine;
    use sha2::Digest;
    let path = str_arg(&args, 0);
    std::fs::read(path)
        .map(|bytes| {
            let digest = sha2::Sha256::digest(bytes);
            base64::engine::general_purpose::STANDARD
                .encode(digest)
                .into()
        })
        .map_err(|e| format!("filebase64sha256(\"{path}\"): {e}"))
}

fn tostring(args: FuncArgs) -> Result<hcl::Value, String> {
    Ok(match &args[0] {
        hcl::Value::String(s) => s.clone().into(),
        hcl::Value::Number(n) => n.to_string().into(),
        hcl::Value::Bool(b) => b.to_string().into(),
        other => return Err(format!("tostring: cannot convert {other} to a string")),
    })
}

fn length(args: FuncArgs) -> Result<hcl::Value, String> {
    Ok(match &args[0] {
        hcl::Value::String(s) => s.chars().count().into(),
        hcl::Value::Array(a) => a.len().into(),
        hcl::Value::Object(o) => o.len().into(),
        other => return Err(format!("length: {other} has no length")),
    })
}

fn join(args: FuncArgs) -> Result<hcl::Value, String> {
    let sep = str_arg(&args, 0);
    let parts: Vec<String> = args[1]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(parts.join(sep).into())
}

fn format(args: FuncArgs) -> Result<hcl::Value, String> {
    let spec = str_arg(&args, 0);
    let mut values = args.iter().skip(1);
    let mut out = String::new();
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('s' | 'd' | 'v') => match values.next() {
                Some(hcl::Value::String(s)) => out.push_str(s),
                Some(other) => out.push_str(&other.to_string()),
                None => return Err(format!("format(\"{spec}\"): too few arguments")),
            },
            other => {
                return Err(format!(
                    "format: unsupported verb %{}",
                    other.unwrap_or(' ')
                ));
            }
        }
    }
    Ok(out.into())
}

fn merge(args: FuncArgs) -> Result<hcl::Value, String> {
    let mut out = hcl::Map::new();
    for arg in args.iter() {
        match arg {
            hcl::Value::Object(o) => out.extend(o.clone()),
            hcl::Value::Null => {}
            other => return Err(format!("merge: {other} is not an object")),
        }
    }
    Ok(hcl::Value::Object(out))
}

fn keys(args: FuncArgs) -> Result<hcl::Value, String> {
    match &args[0] {
        hcl::Value::Object(o) => Ok(hcl::Value::Array(
            o.keys().map(|k| hcl::Value::from(k.clone())).collect(),
        )),
        other => Err(format!("keys: {other} is not an object")),
    }
}

/// Evaluates a resource's (or nested block's) body into its arguments object, checked against
/// `schema`: nested blocks become lists of objects under their name; an unknown argument or
/// block, a missing required argument, or a meta-argument fleetcore does not support is an
/// error naming the place. `skip` names meta-arguments handled by the caller.
pub fn evaluate_body(
    block: &SourceBlock,
    schema: &Schema,
    what: &str,
    ctx: &Context,
    skip: &[&str],
) -> Result<Value, StackError> {
    let mut out = serde_json::Map::new();
    for attribute in &block.attributes {
        if skip.contains(&attribute.name.as_str()) {
            continue;
        }
        if schema.arg(&attribute.name).is_none() {
            return Err(StackError::config(
                &attribute.at,
                format!(
                    "{what}: unknown argument `{}` (it takes: {})",
                    attribute.name,
                    schema.names()
                ),
            ));
        }
        let value = evaluate(&attribute.expr, ctx, &attribute.at)?;
        if !value.is_null() {
            out.insert(attribute.name.clone(), value);
        }
    }
    for nested in &block.blocks {
        if nested.kind == "dynamic" {
            return Err(StackError::config(
                &nested.at,
                format!("{what}: `dynamic` blocks are not supported; write the blocks out"),
            ));
        }
        if skip.contains(&nested.kind.as_str()) {
            continue;
        }
        let Some(spec) = schema.block(&nested.kind) else {
            return Err(StackError::config(
                &nested.at,
                format!(
                    "{what}: unknown block `{}` (it takes: {})",
                    nested.kind,
                    schema.names()
                ),
            ));
        };
        let value = evaluate_body(
            nested,
            spec.schema,
            &format!("{what}.{}", nested.kind),
            ctx,
            &[],
        )?;
        if let Some(list) = out
            .entry(nested.kind.clone())
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
        {
            list.push(value);
        }
    }
    for arg in schema.args.iter().filter(|a| a.required) {
        if !out.contains_key(arg.name) {
            return Err(StackError::config(
                &block.at,
                format!("{what}: the argument `{}` is required", arg.name),
            ));
        }
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str, ctx: &Context) -> Value {
        let expr: hcl::Expression = hcl::edit::parser::parse_expr(text).unwrap().into();
        let at = Location {
            file: std::sync::Arc::new("t.tf".into()),
            line: 1,
        };
        evaluate(&expr, ctx, &at).unwrap()
    }

    #[test]
    fn functions_and_templates_evaluate() {
        let mut ctx = base_context();
        ctx.declare_var(
            "var",
            json_to_hcl(&serde_json::json!({"prefix": "devices", "n": 3})),
        );
        assert_eq!(
            eval("\"${var.prefix}/+/telemetry\"", &ctx),
            "devices/+/telemetry"
        );
        assert_eq!(
            eval("jsonencode({a = var.n, b = [\"x\"]})", &ctx),
            r#"{"a":3,"b":["x"]}"#
        );
        assert_eq!(eval("format(\"%s-%d\", \"t\", 7)", &ctx), "t-7");
        assert_eq!(eval("upper(join(\",\", [\"a\", \"b\"]))", &ctx), "A,B");
        assert_eq!(
            eval("merge({a = 1}, {b = 2})", &ctx),
            serde_json::json!({"a": 1, "b": 2})
        );
        assert_eq!(eval("var.n > 2 ? \"big\" : \"small\"", &ctx), "big");
    }
}
