//! Messages (JSON objects) as Arrow columns and back: the column types learned from the
//! messages' attributes, a record batch of messages, and Arrow values as JSON.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use datafusion::arrow::compute::cast;
use serde_json::{Map, Number, Value};

use crate::model::{Column, ColumnKind};

/// One message as the pipeline handles it: a JSON object.
pub type Message = Map<String, Value>;

fn kind_of(value: &Value) -> Option<ColumnKind> {
    match value {
        Value::Null => None,
        Value::Bool(_) => Some(ColumnKind::Boolean),
        Value::Number(n) if n.is_i64() => Some(ColumnKind::Bigint),
        Value::Number(_) => Some(ColumnKind::Double),
        _ => Some(ColumnKind::String),
    }
}

/// Widens `columns` (in place, keeping their order, new ones at the end in key order) to hold every
/// attribute of `messages`, leaving out `skip` (partition attributes); true if it changed.
pub fn learn<'a>(
    columns: &mut Vec<Column>,
    messages: impl IntoIterator<Item = &'a Message>,
    skip: &[&str],
) -> bool {
    let mut changed = false;
    for message in messages {
        for (name, value) in message {
            let Some(kind) = kind_of(value) else { continue };
            if skip.contains(&name.as_str()) {
                continue;
            }
            match columns.iter_mut().find(|c| &c.name == name) {
                Some(column) => {
                    let wider = column.kind.widen(kind);
                    if wider != column.kind {
                        column.kind = wider;
                        changed = true;
                    }
                }
                None => {
                    columns.push(Column {
                        name: name.clone(),
                        kind,
                    });
                    changed = true;
                }
            }
        }
    }
    changed
}

/// The Arrow type of a column kind.
pub fn data_type(kind: ColumnKind) -> DataType {
    match kind {
        ColumnKind::Bigint => DataType::Int64,
        ColumnKind::Double => DataType::Float64,
        ColumnKind::Boolean => DataType::Boolean,
        ColumnKind::String => DataType::Utf8,
    }
}

/// The Arrow schema of `columns` (every column nullable).
pub fn schema(columns: &[Column]) -> Schema {
    Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, data_type(c.kind), true))
            .collect::<Vec<_>>(),
    )
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The messages as a record batch of `columns`; a value that does not fit its column's type
/// (text in a bigint column) is null.
pub fn batch(columns: &[Column], messages: &[&Message]) -> Result<RecordBatch, String> {
    let arrays: Vec<ArrayRef> = columns
        .iter()
        .map(|column| {
            let values = messages.iter().map(|m| m.get(&column.name));
            match column.kind {
                ColumnKind::Bigint => {
                    let mut b = Int64Builder::with_capacity(messages.len());
                    values.for_each(|v| b.append_option(v.and_then(Value::as_i64)));
                    Arc::new(b.finish()) as ArrayRef
                }
                ColumnKind::Double => {
                    let mut b = Float64Builder::with_capacity(messages.len());
                    values.for_each(|v| b.append_option(v.and_then(Value::as_f64)));
                    Arc::new(b.finish())
                }
                ColumnKind::Boolean => {
                    let mut b = BooleanBuilder::with_capacity(messages.len());
                    values.for_each(|v| b.append_option(v.and_then(Value::as_bool)));
                    Arc::new(b.finish())
                }
                ColumnKind::String => {
                    let mut b = StringBuilder::with_capacity(messages.len(), messages.len() * 8);
                    values.for_each(|v| b.append_option(v.filter(|v| !v.is_null()).map(text)));
                    Arc::new(b.finish())
                }
            }
        })
        .collect();
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(messages.len()));
    RecordBatch::try_new_with_options(Arc::new(schema(columns)), arrays, &options)
        .map_err(|e| e.to_string())
}

/// Row `row` of `array` as a JSON value (null for nulls; numbers, booleans and text as such,
/// anything else as its text).
pub fn json_value(array: &ArrayRef, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    let as_type = |t: &DataType| cast(array, t).ok();
    match array.data_type() {
        DataType::Boolean => as_type(&DataType::Boolean)
            .and_then(|a| {
                a.as_any()
                    .downcast_ref::<arrow_array::BooleanArray>()
                    .map(|a| Value::Bool(a.value(row)))
            })
            .unwrap_or(Value::Null),
        t if t.is_integer() => as_type(&DataType::Int64)
            .and_then(|a| {
                a.as_any()
                    .downcast_ref::<arrow_array::Int64Array>()
                    .map(|a| Value::from(a.value(row)))
            })
            .unwrap_or(Value::Null),
        t if t.is_floating() || matches!(t, DataType::Decimal128(..)) => {
            as_type(&DataType::Float64)
                .and_then(|a| {
                    a.as_any()
                        .downcast_ref::<arrow_array::Float64Array>()
                        .and_then(|a| Number::from_f64(a.value(row)).map(Value::Number))
                })
                .unwrap_or(Value::Null)
        }
        _ => as_type(&DataType::Utf8)
            .and_then(|a| {
                a.as_any()
                    .downcast_ref::<arrow_array::StringArray>()
                    .map(|a| Value::String(a.value(row).to_string()))
            })
            .unwrap_or(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(v: Value) -> Message {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn learns_and_widens_columns() {
        let a = message(json!({"t": 1, "id": "d1", "ok": true}));
        let b = message(json!({"t": 1.5, "id": 7, "extra": {"x": 1}}));
        let mut columns = Vec::new();
        assert!(learn(&mut columns, [&a], &[]));
        assert!(!learn(&mut columns, [&a], &[]));
        assert!(learn(&mut columns, [&b], &["extra"]));
        let kinds: Vec<_> = columns.iter().map(|c| (c.name.as_str(), c.kind)).collect();
        assert_eq!(
            kinds,
            // serde_json's maps are ordered by key
            [
                ("id", ColumnKind::String),
                ("ok", ColumnKind::Boolean),
                ("t", ColumnKind::Double)
            ]
        );
        let batch = batch(&columns, &[&a, &b]).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(json_value(batch.column(2), 1), json!(1.5));
        assert_eq!(json_value(batch.column(0), 1), json!("7"));
        assert_eq!(json_value(batch.column(1), 1), Value::Null);
    }
}
