//! Record format conversion: JSON records to one Parquet file.
//!
//! Columns are top-level fields of each record. With a configured column list (the
//! `fleetcore:parquet-schema` tag, see [`crate::config::PARQUET_SCHEMA_TAG`]) every object has
//! exactly those columns; without one, the columns are inferred per object from its records
//! (first-seen order; boolean if every value is, else bigint if every value is an integer, else
//! double if every value is a number, else string). A missing or null field is a null. A record
//! that is not a JSON object, or whose field cannot be read as its column's type, fails
//! conversion and goes to the error output (`format-conversion-failed`).

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, GzipLevel};
use parquet::file::properties::WriterProperties;
use serde_json::{Map, Value};

/// A column's type (Glue/Hive names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `string`: strings as they are; numbers and booleans as their JSON text; objects and
    /// arrays as JSON.
    String,
    /// `bigint` (or `int`): integers, or strings holding one.
    BigInt,
    /// `double` (or `float`): numbers, or strings holding one.
    Double,
    /// `boolean`: booleans, or the strings `true`/`false`.
    Boolean,
}

/// One Parquet column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The record field it is read from, and its name.
    pub name: String,
    /// Its type.
    pub kind: ColumnType,
}

impl Column {
    /// Parses `name:type`.
    pub fn parse(text: &str) -> Result<Column, String> {
        let (name, kind) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?} is not name:type"))?;
        if name.is_empty() {
            return Err(format!("{text:?} has no column name"));
        }
        let kind = match kind.to_ascii_lowercase().as_str() {
            "string" => ColumnType::String,
            "bigint" | "int" => ColumnType::BigInt,
            "double" | "float" => ColumnType::Double,
            "boolean" => ColumnType::Boolean,
            other => {
                return Err(format!(
                    "column {name}: type {other:?} is not supported (string, bigint, int, double, float, boolean)"
                ));
            }
        };
        Ok(Column {
            name: name.to_string(),
            kind,
        })
    }

    fn data_type(&self) -> DataType {
        match self.kind {
            ColumnType::String => DataType::Utf8,
            ColumnType::BigInt => DataType::Int64,
            ColumnType::Double => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
        }
    }
}

/// `ParquetSerDe.Compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParquetCompression {
    /// SNAPPY (Firehose's default).
    Snappy,
    /// GZIP.
    Gzip,
    /// UNCOMPRESSED.
    Uncompressed,
}

/// The outcome of converting a buffer of records.
pub struct Converted {
    /// The Parquet file (None when no record converted).
    pub file: Option<Vec<u8>>,
    /// Records that failed: their index in the input and why.
    pub failures: Vec<(usize, String)>,
}

/// Converts `records` to one Parquet file.
pub fn convert(
    records: &[&[u8]],
    columns: Option<&[Column]>,
    compression: ParquetCompression,
) -> Result<Converted, String> {
    let mut rows: Vec<Map<String, Value>> = Vec::with_capacity(records.len());
    let mut failures = Vec::new();
    for (i, data) in records.iter().enumerate() {
        match serde_json::from_slice::<Value>(data) {
            Ok(Value::Object(map)) => rows.push(map),
            Ok(_) => failures.push((i, "the record is not a JSON object".to_string())),
            Err(e) => failures.push((i, format!("the record is not JSON: {e}"))),
        }
    }
    // Indices of `rows` in `records`, to report per-column failures against the input.
    let kept: Vec<usize> = (0..records.len())
        .filter(|i| !failures.iter().any(|(f, _)| f == i))
        .collect();
    let columns = match columns {
        Some(c) => c.to_vec(),
        None => infer(&rows),
    };
    // A row whose field does not fit its column fails as a whole.
    let mut bad_rows = vec![None::<String>; rows.len()];
    for column in &columns {
        for (r, row) in rows.iter().enumerate() {
            if bad_rows[r].is_none()
                && let Err(why) = check(column, row.get(&column.name))
            {
                bad_rows[r] = Some(why);
            }
        }
    }
    for (r, why) in bad_rows.iter().enumerate() {
        if let Some(why) = why {
            failures.push((kept[r], why.clone()));
        }
    }
    failures.sort_by_key(|(i, _)| *i);
    let good: Vec<&Map<String, Value>> = rows
        .iter()
        .zip(&bad_rows)
        .filter(|(_, bad)| bad.is_none())
        .map(|(row, _)| row)
        .collect();
    if good.is_empty() || columns.is_empty() {
        return Ok(Converted {
            file: None,
            failures: if columns.is_empty() && !good.is_empty() {
                // Every record was `{}`: nothing to make a column of.
                kept.iter()
                    .map(|&i| (i, "the record has no field to convert".to_string()))
                    .chain(failures)
                    .collect()
            } else {
                failures
            },
        });
    }
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type(), true))
            .collect::<Vec<_>>(),
    ));
    let arrays: Vec<ArrayRef> = columns.iter().map(|c| build(c, &good)).collect();
    let batch = RecordBatch::try_new(Arc::clone(&schema), arrays).map_err(|e| e.to_string())?;
    let props = WriterProperties::builder()
        .set_compression(match compression {
            ParquetCompression::Snappy => Compression::SNAPPY,
            ParquetCompression::Gzip => Compression::GZIP(GzipLevel::default()),
            ParquetCompression::Uncompressed => Compression::UNCOMPRESSED,
        })
        .build();
    let mut writer =
        ArrowWriter::try_new(Vec::new(), schema, Some(props)).map_err(|e| e.to_string())?;
    writer.write(&batch).map_err(|e| e.to_string())?;
    let file = writer.into_inner().map_err(|e| e.to_string())?;
    Ok(Converted {
        file: Some(file),
        failures,
    })
}

fn infer(rows: &[Map<String, Value>]) -> Vec<Column> {
    let mut columns: Vec<(String, Option<ColumnType>)> = Vec::new();
    for row in rows {
        for (name, value) in row {
            let seen = match columns.iter_mut().find(|(n, _)| n == name) {
                Some((_, seen)) => seen,
                None => {
                    columns.push((name.clone(), None));
                    &mut columns.last_mut().expect("just pushed").1
                }
            };
            let this = match value {
                Value::Null => continue,
                Value::Bool(_) => ColumnType::Boolean,
                Value::Number(n) if n.is_i64() => ColumnType::BigInt,
                Value::Number(_) => ColumnType::Double,
                _ => ColumnType::String,
            };
            *seen = Some(match (*seen, this) {
                (None, t) => t,
                (Some(a), b) if a == b => a,
                (Some(ColumnType::BigInt), ColumnType::Double)
                | (Some(ColumnType::Double), ColumnType::BigInt) => ColumnType::Double,
                _ => ColumnType::String,
            });
        }
    }
    columns
        .into_iter()
        .map(|(name, kind)| Column {
            name,
            kind: kind.unwrap_or(ColumnType::String),
        })
        .collect()
}

fn check(column: &Column, value: Option<&Value>) -> Result<(), String> {
    let ok = match (column.kind, value) {
        (_, None | Some(Value::Null)) | (ColumnType::String, _) => true,
        (ColumnType::BigInt, Some(v)) => as_i64(v).is_some(),
        (ColumnType::Double, Some(v)) => as_f64(v).is_some(),
        (ColumnType::Boolean, Some(v)) => as_bool(v).is_some(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "field {:?} cannot be read as {:?}: {}",
            column.name,
            column.kind,
            value.map(Value::to_string).unwrap_or_default()
        ))
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn build(column: &Column, rows: &[&Map<String, Value>]) -> ArrayRef {
    let values = rows
        .iter()
        .map(|row| row.get(&column.name).filter(|v| !v.is_null()));
    match column.kind {
        ColumnType::String => {
            let mut b = StringBuilder::new();
            for v in values {
                match v {
                    Some(Value::String(s)) => b.append_value(s),
                    Some(other) => b.append_value(other.to_string()),
                    None => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        ColumnType::BigInt => {
            let mut b = Int64Builder::new();
            for v in values {
                b.append_option(v.and_then(as_i64));
            }
            Arc::new(b.finish())
        }
        ColumnType::Double => {
            let mut b = Float64Builder::new();
            for v in values {
                b.append_option(v.and_then(as_f64));
            }
            Arc::new(b.finish())
        }
        ColumnType::Boolean => {
            let mut b = BooleanBuilder::new();
            for v in values {
                b.append_option(v.and_then(as_bool));
            }
            Arc::new(b.finish())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn rows(file: Vec<u8>) -> (Vec<String>, i64) {
        let reader = SerializedFileReader::new(bytes::Bytes::from(file)).expect("parquet");
        let meta = reader.metadata();
        let names = meta
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        (names, meta.file_metadata().num_rows())
    }

    #[test]
    fn configured_columns_convert_and_misfits_fail() {
        let columns = vec![
            Column::parse("device:string").expect("col"),
            Column::parse("temp:double").expect("col"),
            Column::parse("n:bigint").expect("col"),
        ];
        let records: Vec<&[u8]> = vec![
            br#"{"device":"d1","temp":21.5,"n":1,"extra":true}"#,
            br#"{"device":"d2","temp":"22","n":null}"#,
            b"[1,2]",
            br#"{"device":"d3","temp":"hot"}"#,
        ];
        let out = convert(&records, Some(&columns), ParquetCompression::Snappy).expect("convert");
        assert_eq!(out.failures.iter().map(|f| f.0).collect::<Vec<_>>(), [2, 3]);
        let (names, n) = rows(out.file.expect("file"));
        assert_eq!(names, ["device", "temp", "n"]);
        assert_eq!(n, 2);
    }

    #[test]
    fn columns_are_inferred_without_a_schema() {
        let records: Vec<&[u8]> = vec![br#"{"a":1,"b":true}"#, br#"{"a":1.5,"c":{"x":1}}"#];
        let cols = infer(
            &records
                .iter()
                .map(|r| serde_json::from_slice(r).expect("json"))
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            cols.iter()
                .map(|c| (c.name.as_str(), c.kind))
                .collect::<Vec<_>>(),
            [
                ("a", ColumnType::Double),
                ("b", ColumnType::Boolean),
                ("c", ColumnType::String)
            ]
        );
        let out = convert(&records, None, ParquetCompression::Gzip).expect("convert");
        assert!(out.failures.is_empty());
        assert_eq!(rows(out.file.expect("file")).1, 2);
    }
}
