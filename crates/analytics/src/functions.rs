//! The SQL functions IoT Analytics' SQL (Presto) has that DataFusion lacks, as UDFs:
//! `json_extract_scalar(json, '$.a.b[0]')`, the text of a scalar at a JSON path (null when the
//! text is not JSON, the path is missing or names an object or array). Enrich activities store
//! their documents as JSON text columns; this reads fields out of them.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, StringArray};
use arrow_schema::DataType;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use serde_json::Value;

/// One step of a JSON path.
enum Step {
    Key(String),
    Index(usize),
}

/// Parses `$.a.b[0]["c d"]`-style paths (the subset Presto documents for json_extract).
fn parse_path(path: &str) -> Option<Vec<Step>> {
    let mut rest = path.strip_prefix('$')?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return None;
            }
            steps.push(Step::Key(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("[\"") {
            let end = r.find("\"]")?;
            steps.push(Step::Key(r[..end].to_string()));
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            steps.push(Step::Index(r[..end].trim().parse().ok()?));
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

fn extract(json: &str, steps: &[Step]) -> Option<String> {
    let mut value: Value = serde_json::from_str(json).ok()?;
    for step in steps {
        value = match (step, value) {
            (Step::Key(k), Value::Object(mut m)) => m.remove(k)?,
            (Step::Index(i), Value::Array(mut a)) if *i < a.len() => a.swap_remove(*i),
            _ => return None,
        };
    }
    match value {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn json_extract_scalar(args: &[ColumnarValue]) -> Result<ColumnarValue, DataFusionError> {
    let [json, path] = args else {
        return Err(DataFusionError::Plan(
            "json_extract_scalar takes a JSON text and a path".into(),
        ));
    };
    let path = match path {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(p))) => p.clone(),
        _ => {
            return Err(DataFusionError::Plan(
                "json_extract_scalar's path must be a text literal such as '$.a.b'".into(),
            ));
        }
    };
    let steps = parse_path(&path).ok_or_else(|| {
        DataFusionError::Plan(format!("{path} is not a JSON path such as $.a.b[0]"))
    })?;
    let json = json.clone().into_array(1)?;
    let json = datafusion::arrow::compute::cast(&json, &DataType::Utf8)?;
    let json = json
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DataFusionError::Internal("json_extract_scalar: not text".into()))?;
    let out: StringArray = (0..json.len())
        .map(|i| {
            if json.is_null(i) {
                None
            } else {
                extract(json.value(i), &steps)
            }
        })
        .collect();
    Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
}

/// The UDFs every analytics session registers.
pub(crate) fn udfs() -> Vec<ScalarUDF> {
    vec![create_udf(
        "json_extract_scalar",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(json_extract_scalar),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_scalars_at_paths() {
        let doc =
            r#"{"attributes": {"site": "north", "n": 3}, "list": [true, {"x": 1}], "a b": "c"}"#;
        let at = |p: &str| extract(doc, &parse_path(p).unwrap());
        assert_eq!(at("$.attributes.site").as_deref(), Some("north"));
        assert_eq!(at("$.attributes.n").as_deref(), Some("3"));
        assert_eq!(at("$.list[0]").as_deref(), Some("true"));
        assert_eq!(at("$.list[1].x").as_deref(), Some("1"));
        assert_eq!(at("$[\"a b\"]").as_deref(), Some("c"));
        assert_eq!(at("$.attributes"), None);
        assert_eq!(at("$.missing"), None);
        assert!(parse_path("attributes").is_none());
        assert!(parse_path("$..a").is_none());
    }
}
