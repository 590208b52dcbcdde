//! Record format conversion: JSON records to one Parquet file.
//!
//! Columns are top-level fields of each record. With a configured column list (the
//! `fleetcore:parquet-schema` tag, see [`crate::config::PARQUET_SCHEMA_TAG`]) every object has
//! exactly those columns; without one, the columns are inferred per object from its records
//! (first-seen order; boolean if every value is, else bigint if every value is an integer, else
//! double if every value is a number, else string). A missing or null field is a null. A record
//! that is not a JSON object, or whose field cannot be read as its column's type, fails
//! conversion and goes to the error output (`format-conversion-failed`).

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, GzipLevel};
use parquet::file::properties::WriterProperties;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

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

/// One record's top-level fields, in record order (a later duplicate key wins, as in
/// `serde_json::Value`). Keys and strings borrow from the record when they have no escapes.
type Row<'a> = Vec<(Cow<'a, str>, Cell<'a>)>;

/// A field's value as far as the columns care.
#[derive(Debug, Clone, PartialEq)]
enum Cell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    /// An object or array, as JSON text.
    Json(String),
}

fn field<'r, 'a>(row: &'r Row<'a>, name: &str) -> Option<&'r Cell<'a>> {
    row.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .filter(|v| !matches!(v, Cell::Null))
}

/// Converts `records` to one Parquet file.
pub fn convert(
    records: &[&[u8]],
    columns: Option<&[Column]>,
    compression: ParquetCompression,
) -> Result<Converted, String> {
    let mut rows: Vec<Row<'_>> = Vec::with_capacity(records.len());
    let mut kept: Vec<usize> = Vec::with_capacity(records.len());
    let mut failures = Vec::new();
    for (i, data) in records.iter().enumerate() {
        let mut de = serde_json::Deserializer::from_slice(data);
        match de
            .deserialize_any(RowVisitor)
            .and_then(|row| de.end().map(|()| row))
        {
            Ok(Some(row)) => {
                rows.push(row);
                kept.push(i);
            }
            Ok(None) => failures.push((i, "the record is not a JSON object".to_string())),
            Err(e) => failures.push((i, format!("the record is not JSON: {e}"))),
        }
    }
    let columns = match columns {
        Some(c) => c.to_vec(),
        None => infer(&rows),
    };
    // A row whose field does not fit its column fails as a whole.
    let mut bad_rows = vec![None::<String>; rows.len()];
    for column in &columns {
        for (r, row) in rows.iter().enumerate() {
            if bad_rows[r].is_none()
                && let Err(why) = check(column, field(row, &column.name))
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
    let good: Vec<&Row<'_>> = rows
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

fn infer(rows: &[Row<'_>]) -> Vec<Column> {
    let mut columns: Vec<(String, Option<ColumnType>)> = Vec::new();
    for row in rows {
        for (name, value) in row {
            let at = match columns.iter().position(|(n, _)| n == name) {
                Some(at) => at,
                None => {
                    columns.push((name.to_string(), None));
                    columns.len() - 1
                }
            };
            let this = match value {
                Cell::Null => continue,
                Cell::Bool(_) => ColumnType::Boolean,
                Cell::Int(_) => ColumnType::BigInt,
                Cell::Float(_) => ColumnType::Double,
                Cell::Str(_) | Cell::Json(_) => ColumnType::String,
            };
            let seen = &mut columns[at].1;
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

fn check(column: &Column, value: Option<&Cell<'_>>) -> Result<(), String> {
    let ok = match (column.kind, value) {
        (_, None) | (ColumnType::String, _) => true,
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
            value.map(as_text).unwrap_or_default()
        ))
    }
}

fn as_i64(v: &Cell<'_>) -> Option<i64> {
    match v {
        Cell::Int(i) => Some(*i),
        Cell::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_f64(v: &Cell<'_>) -> Option<f64> {
    match v {
        Cell::Int(i) => Some(*i as f64),
        Cell::Float(f) => Some(*f),
        Cell::Str(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_bool(v: &Cell<'_>) -> Option<bool> {
    match v {
        Cell::Bool(b) => Some(*b),
        Cell::Str(s) => s.parse().ok(),
        _ => None,
    }
}

/// A value as a string column holds it: strings as they are, the rest as JSON text.
fn as_text(v: &Cell<'_>) -> String {
    match v {
        Cell::Null => "null".into(),
        Cell::Bool(b) => b.to_string(),
        Cell::Int(i) => i.to_string(),
        Cell::Float(f) => {
            serde_json::Number::from_f64(*f).map_or_else(|| f.to_string(), |n| n.to_string())
        }
        Cell::Str(s) => s.to_string(),
        Cell::Json(j) => j.clone(),
    }
}

fn build(column: &Column, rows: &[&Row<'_>]) -> ArrayRef {
    let values = rows.iter().map(|row| field(row, &column.name));
    match column.kind {
        ColumnType::String => {
            let mut b = StringBuilder::new();
            for v in values {
                match v {
                    Some(Cell::Str(s)) => b.append_value(s),
                    Some(other) => b.append_value(as_text(other)),
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

/// Reads a record: `Some(row)` for an object, `None` for any other JSON value.
struct RowVisitor;

impl<'de> Visitor<'de> for RowVisitor {
    type Value = Option<Row<'de>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut row = Vec::new();
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            let cell = map.next_value::<Cell<'de>>()?;
            row.push((key, cell));
        }
        Ok(Some(row))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// A string that borrows from the input when it can.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Cell<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cell<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Cell<'de>, E> {
                Ok(Cell::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Cell<'de>, E> {
                Ok(Cell::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cell<'de>, E> {
                Ok(Cell::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cell<'de>, E> {
                Ok(i64::try_from(v).map_or(Cell::Float(v as f64), Cell::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cell<'de>, E> {
                Ok(Cell::Float(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cell<'de>, E> {
                Ok(Cell::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Cell<'de>, E> {
                Ok(Cell::Str(Cow::Owned(v.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Cell<'de>, A::Error> {
                let value = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Cell::Json(value.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Cell<'de>, A::Error> {
                let value = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Cell::Json(value.to_string()))
            }
        }
        d.deserialize_any(V)
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
        let parsed: Vec<Row<'_>> = records
            .iter()
            .map(|r| {
                serde_json::Deserializer::from_slice(r)
                    .deserialize_any(RowVisitor)
                    .expect("json")
                    .expect("object")
            })
            .collect();
        let cols = infer(&parsed);
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

    fn parse(r: &[u8]) -> Option<Row<'_>> {
        let mut de = serde_json::Deserializer::from_slice(r);
        de.deserialize_any(RowVisitor)
            .and_then(|row| de.end().map(|()| row))
            .ok()
            .flatten()
    }

    #[test]
    fn records_are_read_like_serde_json_values() {
        let row = parse(
            br#"{"a\"b":1,"a\"b":2,"big":18446744073709551615,"o":{"x":[1,"y"]},"s":"t\u00e9"}"#,
        )
        .expect("object");
        assert_eq!(
            field(&row, "a\"b"),
            Some(&Cell::Int(2)),
            "a later duplicate wins"
        );
        assert_eq!(
            field(&row, "big"),
            Some(&Cell::Float(18446744073709551615.0))
        );
        assert_eq!(
            field(&row, "o").map(as_text).as_deref(),
            Some(r#"{"x":[1,"y"]}"#)
        );
        assert_eq!(field(&row, "s").map(as_text).as_deref(), Some("t\u{e9}"));
        for not_object in [
            &b"[1]"[..],
            b"1",
            b"\"x\"",
            b"null",
            b"true",
            b"{\"a\":1} x",
            b"{",
        ] {
            assert_eq!(
                parse(not_object),
                None,
                "{}",
                String::from_utf8_lossy(not_object)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn conversion_never_panics(records in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), 1..8),
                                   json in r#"\{("[a-c]":(1|-2|2.5|"x"|true|null|\[\]|\{\}),?){0,4}\}"#) {
            let mut all: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            all.push(json.as_bytes());
            let out = convert(&all, None, ParquetCompression::Uncompressed).expect("convert");
            proptest::prop_assert!(out.failures.iter().all(|(i, _)| *i < all.len()));
        }
    }
}
