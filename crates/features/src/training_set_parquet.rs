//! A point-in-time [`TrainingSet`] as one Parquet file (`cascade features training-set`).
//!
//! Columns: `ts` (timestamp, ms, UTC), `user`, `item`, each context field (as strings), `label`
//! (the type every label shares: int, float, bool, else string), then per feature
//! `view:feature` (typed as the feature) and `view:feature:status` (`present`, `default`,
//! `stale_outside_ttl`, `not_found`). Rows in label order, in record batches of 64k rows,
//! zstd-compressed.

use crate::{FeatureError, Result, Status, TrainingSet};
use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use cascade_core::{FieldType, Value};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

/// Rows per record batch.
const BATCH_ROWS: usize = 64 * 1024;

/// The context columns of a training set: every entity field any row carries (key parts such
/// as `device`, request context), by name.
pub fn context_columns(ts: &TrainingSet) -> Vec<String> {
    ts.rows
        .iter()
        .flat_map(|r| r.entities.fields.iter().map(|(n, _)| n.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Writes `ts` to `path` (created or truncated) with the columns of the module docs; `context`
/// names the context columns, in order (usually [`context_columns`]). A context value that is
/// not a string is written as its JSON text.
pub fn write(path: &Path, ts: &TrainingSet, context: &[String]) -> Result<()> {
    let label_ty = label_type(ts);
    let mut fields = vec![
        Field::new("ts", data_type(FieldType::Timestamp), false),
        Field::new("user", DataType::Utf8, true),
        Field::new("item", DataType::Utf8, true),
    ];
    fields.extend(context.iter().map(|c| Field::new(c.as_str(), DataType::Utf8, true)));
    fields.push(Field::new("label", data_type(label_ty), true));
    for c in &ts.columns {
        fields.push(Field::new(c.name(), data_type(c.ty), true));
        fields.push(Field::new(format!("{}:status", c.name()), DataType::Utf8, false));
    }
    let schema = Arc::new(Schema::new(fields));
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?)).build();
    let file = std::fs::File::create(path).map_err(FeatureError::io(path))?;
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
    for rows in ts.rows.chunks(BATCH_ROWS) {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(rows.iter().map(|r| Some(r.ts.0)).collect::<TimestampMillisecondArray>().with_timezone("UTC")),
            column(
                FieldType::String,
                rows.iter()
                    .map(|r| r.entities.user.clone().map(Value::String))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(Option::as_ref),
            ),
            column(
                FieldType::String,
                rows.iter()
                    .map(|r| r.entities.item.clone().map(Value::String))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(Option::as_ref),
            ),
        ];
        for c in context {
            let strings: Vec<Option<Value>> = rows
                .iter()
                .map(|r| {
                    r.entities.field(c).map(|v| match v {
                        Value::String(s) => Value::String(s.clone()),
                        other => Value::String(other.to_json().to_string()),
                    })
                })
                .collect();
            cols.push(column(FieldType::String, strings.iter().map(Option::as_ref)));
        }
        cols.push(column(label_ty, rows.iter().map(|r| r.label.as_ref())));
        for (i, c) in ts.columns.iter().enumerate() {
            cols.push(column(c.ty, rows.iter().map(|r| r.values[i].value.as_ref())));
            let mut b = StringBuilder::new();
            rows.iter().for_each(|r| b.append_value(status_name(r.values[i].status)));
            cols.push(Arc::new(b.finish()));
        }
        writer.write(&RecordBatch::try_new(schema.clone(), cols)?)?;
    }
    writer.close()?;
    Ok(())
}

fn data_type(ty: FieldType) -> DataType {
    match ty {
        FieldType::Bool => DataType::Boolean,
        FieldType::Int => DataType::Int64,
        FieldType::Float => DataType::Float64,
        FieldType::String => DataType::Utf8,
        FieldType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        FieldType::StringList => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
    }
}

/// One typed column from values (`None` and values of another type are null).
fn column<'a>(ty: FieldType, values: impl Iterator<Item = Option<&'a Value>>) -> ArrayRef {
    match ty {
        FieldType::Bool => {
            let mut b = BooleanBuilder::new();
            values.for_each(|v| b.append_option(if let Some(Value::Bool(x)) = v { Some(*x) } else { None }));
            Arc::new(b.finish())
        }
        FieldType::Int => {
            let mut b = Int64Builder::new();
            values.for_each(|v| b.append_option(if let Some(Value::Int(x)) = v { Some(*x) } else { None }));
            Arc::new(b.finish())
        }
        FieldType::Float => {
            let mut b = Float64Builder::new();
            values.for_each(|v| {
                b.append_option(match v {
                    Some(Value::Float(x)) => Some(*x),
                    Some(Value::Int(x)) => Some(*x as f64),
                    _ => None,
                })
            });
            Arc::new(b.finish())
        }
        FieldType::String => {
            let mut b = StringBuilder::new();
            values.for_each(|v| b.append_option(if let Some(Value::String(x)) = v { Some(x) } else { None }));
            Arc::new(b.finish())
        }
        FieldType::Timestamp => Arc::new(
            values
                .map(|v| if let Some(Value::Timestamp(t)) = v { Some(t.0) } else { None })
                .collect::<TimestampMillisecondArray>()
                .with_timezone("UTC"),
        ),
        FieldType::StringList => {
            let mut b = ListBuilder::new(StringBuilder::new());
            for v in values {
                match v {
                    Some(Value::StringList(l)) => {
                        l.iter().for_each(|s| b.values().append_value(s));
                        b.append(true);
                    }
                    _ => b.append(false),
                }
            }
            Arc::new(b.finish())
        }
    }
}

/// The type every label shares: int, float (ints and floats), bool, else string.
fn label_type(ts: &TrainingSet) -> FieldType {
    let types: BTreeSet<&str> =
        ts.rows.iter().filter_map(|r| r.label.as_ref()).map(|v| v.field_type().name()).collect();
    match types.iter().copied().collect::<Vec<_>>().as_slice() {
        ["int"] => FieldType::Int,
        ["float"] | ["float", "int"] => FieldType::Float,
        ["bool"] | [] => FieldType::Bool,
        _ => FieldType::String,
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Present => "present",
        Status::Default => "default",
        Status::StaleOutsideTtl => "stale_outside_ttl",
        Status::NotFound => "not_found",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Entities, FeatureValue, TrainingRow};
    use arrow_array::{Array, Float64Array, Int64Array, StringArray};
    use cascade_core::Timestamp;

    fn value(v: Option<Value>, status: Status) -> FeatureValue {
        FeatureValue { value: v, status, event_time: None, age: None }
    }

    fn sample() -> TrainingSet {
        let column = |feature: &str, ty| crate::Column { view: "v".into(), feature: feature.into(), version: 1, ty };
        let row = |user: &str, device: Option<Value>, label, n: Option<i64>, status| TrainingRow {
            entities: Entities {
                user: Some(user.into()),
                item: None,
                fields: device.map(|d| ("device".to_string(), d)).into_iter().collect(),
            },
            ts: Timestamp(1_000),
            label,
            values: vec![value(n.map(Value::Int), status), value(Some(Value::Float(0.5)), Status::Default)],
        };
        TrainingSet {
            columns: vec![column("n", FieldType::Int), column("x", FieldType::Float)],
            rows: vec![
                row("u1", Some(Value::String("ios".into())), Some(Value::Int(1)), Some(3), Status::Present),
                row("u2", Some(Value::Int(7)), Some(Value::Float(0.5)), None, Status::NotFound),
                row("u3", None, None, Some(0), Status::StaleOutsideTtl),
            ],
            late_dropped: Vec::new(),
        }
    }

    #[test]
    fn columns_types_and_statuses_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.parquet");
        let ts = sample();
        let context = context_columns(&ts);
        assert_eq!(context, ["device"]);
        write(&path, &ts, &context).unwrap();
        let batches = crate::offline::read(&path).unwrap();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        let schema = b.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["ts", "user", "item", "device", "label", "v:n", "v:n:status", "v:x", "v:x:status"]);
        let col = |name: &str| b.column(schema.index_of(name).unwrap()).clone();
        let device = col("device");
        let device = device.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((device.value(0), device.value(1), device.is_null(2)), ("ios", "7", true));
        // Int and float labels share the float type.
        let label = col("label");
        let label = label.as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!((label.value(0), label.value(1), label.is_null(2)), (1.0, 0.5, true));
        let n = col("v:n");
        let n = n.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!((n.value(0), n.is_null(1), n.value(2)), (3, true, 0));
        let status = col("v:n:status");
        let status = status.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((0..3).map(|i| status.value(i)).collect::<Vec<_>>(), ["present", "not_found", "stale_outside_ttl"]);
    }

    #[test]
    fn an_unwritable_path_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("train.parquet");
        let err = write(&path, &sample(), &[]).unwrap_err();
        assert!(matches!(err, FeatureError::Io { .. }), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
