//! Late materialization of a top-N over a Parquet table (`SELECT <columns> FROM t [WHERE ...]
//! ORDER BY ... LIMIT n`): the engine first finds the n winning rows reading only the columns
//! the filter and the ordering need, plus each row's file and position in it; the other
//! selected columns are then read for those n rows alone, with a Parquet row selection (a page
//! without a winner is skipped undecoded, and not even fetched when the file has an offset
//! index, as the datastore writer's files do).
//!
//! Why not DataFusion's own form of this, Parquet filter pushdown: it decodes the late columns
//! for every row that passes the filter, and a filter that keeps a few percent of the rows
//! keeps some on every page; measured slower than no pushdown (BENCHMARKS.md, #16).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::DataType;
use datafusion::arrow::array::new_null_array;
use datafusion::arrow::compute::{cast, concat, concat_batches, take};
use datafusion::common::ScalarValue;
use datafusion::common::utils::take_function_args;
use datafusion::common::{Column, DataFusionError, Result, TableReference};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::DefaultParquetFileReaderFactory;
use datafusion::functions::core::expr_fn::{file_row_index, input_file_name};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExpressionPlacement, LogicalPlan, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, SortExpr, Volatility,
};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::prelude::{DataFrame, SessionContext};
use futures_util::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection, RowSelector};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::file::metadata::PageIndexPolicy;

/// The largest n read late: the second read fetches each winner's pages, so beyond a small n
/// it reads as much as the first one saved.
const MAX_ROWS: usize = 1024;

/// The bytes read from the end of a file for its footer in the second read.
const FOOTER_READ: usize = 64 * 1024;

/// The first read's column holding each winner's file.
const FILE_COLUMN: &str = "__fleetcore_late_file";

/// The first read's column holding each winner's row in its file.
const ROW_COLUMN: &str = "__fleetcore_late_row";

/// `file_key(input_file_name())`: a row's file as a dictionary of that one name. The scan
/// gives `input_file_name()` as a literal of each file, which a projection copies into every
/// row (1M copies of a 60-byte path: a third of the first read's time, measured); as a
/// dictionary literal it costs a 4-byte key a row. Placed like its argument, so the scan
/// evaluates it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct FileKey {
    signature: Signature,
}

/// The type of a [`FileKey`].
fn file_key_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

impl ScalarUDFImpl for FileKey {
    fn name(&self) -> &str {
        "fleetcore_file_key"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(file_key_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [name] = take_function_args(self.name(), args.args)?;
        Ok(match name {
            ColumnarValue::Scalar(name) => ColumnarValue::Scalar(ScalarValue::Dictionary(
                Box::new(DataType::Int32),
                Box::new(name),
            )),
            ColumnarValue::Array(names) => ColumnarValue::Array(cast(&names, &file_key_type())?),
        })
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        if args == [ExpressionPlacement::MoveTowardsLeafNodes] {
            ExpressionPlacement::MoveTowardsLeafNodes
        } else {
            ExpressionPlacement::KeepInPlace
        }
    }
}

/// A row's file, as [`FileKey`] gives it.
fn file_key() -> Expr {
    ScalarUDF::new_from_impl(FileKey {
        signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
    })
    .call(vec![input_file_name()])
}

/// A Parquet table whose top-Ns may be read late.
pub(crate) struct ParquetTable {
    /// The store its files are in (the paths the engine's `input_file_name()` gives).
    pub store: Arc<dyn ObjectStore>,
    /// Its partition columns (they come from the folder names, never from a file).
    pub partitions: Vec<String>,
}

/// A top-N that can be read late, taken from an optimized plan.
#[derive(Debug)]
struct TopN<'a> {
    /// The table it scans.
    table: &'a TableReference,
    /// The selected columns, in output order.
    outputs: Vec<Column>,
    /// The ordering.
    sort: &'a [SortExpr],
    /// n.
    fetch: usize,
    /// The row filter (the scan's filters and the filter above it).
    predicates: Vec<Expr>,
}

/// `plan` seen through a projection of columns only: those columns (`None`: no projection)
/// and its input (`None` overall: a projection of anything else).
fn through_columns(plan: &LogicalPlan) -> Option<(Option<Vec<Column>>, &LogicalPlan)> {
    let LogicalPlan::Projection(projection) = plan else {
        return Some((None, plan));
    };
    let columns = projection
        .expr
        .iter()
        .map(|e| match e {
            Expr::Column(c) => Some(c.clone()),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some((Some(columns), projection.input.as_ref()))
}

/// The top-N of `plan`: `[columns] <- Sort with fetch <- [columns] <- [Filter] <- TableScan`
/// (`[columns]`: a projection of columns only).
fn top_n(plan: &LogicalPlan) -> Option<TopN<'_>> {
    let (outer, below) = through_columns(plan)?;
    let LogicalPlan::Sort(sort) = below else {
        return None;
    };
    let fetch = sort.fetch.filter(|n| *n <= MAX_ROWS)?;
    let (inner, below) = through_columns(sort.input.as_ref())?;
    let (filter, scan) = match below {
        LogicalPlan::Filter(filter) => (Some(&filter.predicate), filter.input.as_ref()),
        other => (None, other),
    };
    let LogicalPlan::TableScan(scan) = scan else {
        return None;
    };
    if scan.fetch.is_some() {
        return None;
    }
    let outputs = outer
        .or(inner)
        .unwrap_or_else(|| scan.projected_schema.columns());
    let mut predicates = scan.filters.clone();
    for p in filter.map(split_conjunction).unwrap_or_default() {
        if !predicates.contains(p) {
            predicates.push(p.clone());
        }
    }
    let own = |c: &Column| c.relation.as_ref().is_none_or(|r| r == &scan.table_name);
    let columns_own = outputs.iter().all(own)
        && sort
            .expr
            .iter()
            .all(|s| s.expr.column_refs().into_iter().all(own));
    columns_own.then_some(TopN {
        table: &scan.table_name,
        outputs,
        sort: &sort.expr,
        fetch,
        predicates,
    })
}

/// Whether a planned (not yet optimized) statement ends in a LIMIT, as a top-N does: only
/// then is it optimized here to see whether it is one.
fn ends_in_limit(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Limit(_) => true,
        LogicalPlan::Projection(p) => matches!(p.input.as_ref(), LogicalPlan::Limit(_)),
        _ => false,
    }
}

/// Runs `frame` as a late-read top-N if it is one over a table of `tables` with a selected
/// column that neither the filter nor the ordering needs (`None`: it is not; run it as usual).
pub(crate) async fn run(
    ctx: &SessionContext,
    frame: &DataFrame,
    tables: &HashMap<String, ParquetTable>,
) -> Result<Option<Vec<RecordBatch>>> {
    if tables.is_empty() || !ends_in_limit(frame.logical_plan()) {
        return Ok(None);
    }
    let plan = frame.clone().into_optimized_plan()?;
    let plan = &plan;
    let Some(top) = top_n(plan) else {
        return Ok(None);
    };
    let Some(table) = tables.get(top.table.table()) else {
        return Ok(None);
    };
    let ordering: HashSet<&str> = top
        .sort
        .iter()
        .flat_map(|s| s.expr.column_refs())
        .map(|c| c.name.as_str())
        .collect();
    // A column the filter reads is decoded for every row anyway: it stays in the first read.
    let filtered: HashSet<&str> = top
        .predicates
        .iter()
        .flat_map(|p| p.column_refs())
        .map(|c| c.name.as_str())
        .collect();
    let is_late = |c: &Column| {
        let name = c.name.as_str();
        !ordering.contains(name)
            && !filtered.contains(name)
            && !table.partitions.iter().any(|p| p == name)
    };
    let mut late: Vec<&Column> = Vec::new();
    let mut early: Vec<&Column> = Vec::new();
    for column in &top.outputs {
        let side = if is_late(column) {
            &mut late
        } else {
            &mut early
        };
        if !side.iter().any(|c| c.name == column.name) {
            side.push(column);
        }
    }
    if late.is_empty() {
        return Ok(None);
    }

    // The winners, with their file and row.
    let mut first = ctx.table(top.table.clone()).await?;
    if let Some(predicate) = conjunction(top.predicates.iter().cloned()) {
        first = first.filter(predicate)?;
    }
    let mut selected: Vec<Expr> = early.iter().map(|c| Expr::Column((*c).clone())).collect();
    for name in &ordering {
        if !early.iter().any(|c| c.name == *name) {
            selected.push(Expr::Column(Column::new(Some(top.table.clone()), *name)));
        }
    }
    selected.push(file_key().alias(FILE_COLUMN));
    selected.push(file_row_index().alias(ROW_COLUMN));
    let winners = first
        .select(selected)?
        .sort(top.sort.to_vec())?
        .limit(0, Some(top.fetch))?
        .collect()
        .await?;
    let Some(schema) = winners.first().map(RecordBatch::schema) else {
        return Ok(Some(Vec::new()));
    };
    let winners = concat_batches(&schema, &winners)?;
    if winners.num_rows() == 0 {
        return Ok(Some(Vec::new()));
    }

    // The late columns of the winners, file by file.
    let output_schema = Arc::new(plan.schema().as_arrow().clone());
    let late_types: Vec<(String, DataType)> = late
        .iter()
        .map(|c| {
            let field = plan.schema().field_with_unqualified_name(&c.name)?;
            Ok((c.name.clone(), field.data_type().clone()))
        })
        .collect::<Result<_>>()?;
    let late_columns = read_late(&table.store, &winners, &late_types).await?;
    let late_columns: HashMap<&str, &ArrayRef> = late_types
        .iter()
        .map(|(name, _)| name.as_str())
        .zip(&late_columns)
        .collect();

    let columns = top
        .outputs
        .iter()
        .map(|c| match late_columns.get(c.name.as_str()) {
            Some(array) => Ok(Arc::clone(*array)),
            None => winners.column_by_name(&c.name).cloned().ok_or_else(|| {
                DataFusionError::Internal(format!("late top-N: no column {}", c.name))
            }),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(vec![RecordBatch::try_new(output_schema, columns)?]))
}

/// The `columns` of the `winners` (their file and row in [`FILE_COLUMN`] and [`ROW_COLUMN`]),
/// in the winners' order: each file's rows read at once, the files concurrently.
async fn read_late(
    store: &Arc<dyn ObjectStore>,
    winners: &RecordBatch,
    columns: &[(String, DataType)],
) -> Result<Vec<ArrayRef>> {
    let files = winners
        .column_by_name(FILE_COLUMN)
        .map(|keys| cast(keys, &DataType::Utf8))
        .transpose()?;
    let files = files
        .as_ref()
        .and_then(|a| a.as_any().downcast_ref::<StringArray>())
        .filter(|a| a.null_count() == 0)
        .ok_or_else(|| DataFusionError::Internal(format!("late top-N: no {FILE_COLUMN}")))?;
    let rows = winners
        .column_by_name(ROW_COLUMN)
        .and_then(|a| a.as_any().downcast_ref::<Int64Array>())
        .filter(|a| a.null_count() == 0)
        .ok_or_else(|| DataFusionError::Internal(format!("late top-N: no {ROW_COLUMN}")))?;
    let row = |i: usize| {
        usize::try_from(rows.value(i))
            .map_err(|_| DataFusionError::Internal("late top-N: a negative row".into()))
    };
    let mut by_file: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for i in 0..winners.num_rows() {
        by_file.entry(files.value(i)).or_default().push(row(i)?);
    }
    for file_rows in by_file.values_mut() {
        file_rows.sort_unstable();
        file_rows.dedup();
    }
    let read = futures_util::future::try_join_all(
        by_file
            .iter()
            .map(|(file, file_rows)| read_rows(store, file, file_rows, columns)),
    )
    .await?;
    // Where each (file, row) is once the files' rows are put one after the other.
    let position: HashMap<(&str, usize), u32> = by_file
        .iter()
        .flat_map(|(file, file_rows)| file_rows.iter().map(move |r| (*file, *r)))
        .zip(0..)
        .collect();
    let order = (0..winners.num_rows())
        .map(|i| {
            position
                .get(&(files.value(i), row(i)?))
                .copied()
                .ok_or_else(|| DataFusionError::Internal("late top-N: a winner not read".into()))
        })
        .collect::<Result<UInt32Array>>()?;
    (0..columns.len())
        .map(|c| {
            let parts: Vec<&dyn Array> = read.iter().map(|arrays| arrays[c].as_ref()).collect();
            Ok(take(concat(&parts)?.as_ref(), &order, None)?)
        })
        .collect()
}

/// `file`'s `columns` (cast to the given types; all null where the file lacks one) at `rows`
/// (ascending), read with a row selection.
async fn read_rows(
    store: &Arc<dyn ObjectStore>,
    file: &str,
    rows: &[usize],
    columns: &[(String, DataType)],
) -> Result<Vec<ArrayRef>> {
    let location = ObjectPath::parse(file).map_err(|e| DataFusionError::External(e.into()))?;
    let meta = store.head(&location).await?;
    // (`AsyncFileReader` is `Send` already: the reader is one without the redundant bound.)
    let reader: Box<dyn AsyncFileReader> = DefaultParquetFileReaderFactory::new(Arc::clone(store))
        .create_reader(
            0,
            PartitionedFile::new_from_meta(meta),
            Some(FOOTER_READ),
            &ExecutionPlanMetricsSet::new(),
        )?;
    // The offset index, where the file has one, lets the reader fetch only the winners' pages
    // (the engine's reader loads the page index by the column index's policy: both are asked).
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    let builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, options).await?;
    let roots: Vec<usize> = columns
        .iter()
        .filter_map(|(name, _)| builder.schema().index_of(name).ok())
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let stream = builder
        .with_projection(mask)
        .with_row_selection(selection(rows))
        .with_batch_size(rows.len())
        .build()?;
    let read_schema = stream.schema().clone();
    let batches: Vec<RecordBatch> = stream.try_collect().await?;
    let read = concat_batches(&read_schema, &batches)?;
    if read.num_rows() != rows.len() {
        return Err(DataFusionError::Execution(format!(
            "{file}: {} of {} rows read (the file changed during the query)",
            read.num_rows(),
            rows.len()
        )));
    }
    columns
        .iter()
        .map(|(name, data_type)| match read.column_by_name(name) {
            Some(array) => Ok(cast(array, data_type)?),
            None => Ok(new_null_array(data_type, rows.len())),
        })
        .collect()
}

/// The selection of `rows` (ascending, distinct) of a file.
fn selection(rows: &[usize]) -> RowSelection {
    let mut selectors = Vec::with_capacity(rows.len() * 2);
    let mut next = 0;
    for &row in rows {
        if row > next {
            selectors.push(RowSelector::skip(row - next));
        }
        selectors.push(RowSelector::select(1));
        next = row + 1;
    }
    RowSelection::from(selectors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::{self, FileFormat, Source, Table};
    use arrow_array::Float64Array;
    use arrow_schema::{Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::{EnabledStatistics, WriterProperties};

    /// One reading of the generated table.
    #[derive(Debug, Clone, PartialEq)]
    struct Reading {
        day: &'static str,
        device: Option<String>,
        ts: i64,
        temp: Option<f64>,
        extra: Option<i64>,
    }

    /// Two days of two files each, in row groups of 300 rows and pages of 50, one file of
    /// each day without an offset index; the second file of each day has a column the first
    /// lacks. Temperatures are distinct (no ties to order), every 7th is null, every 11th
    /// device is null.
    fn write_table(dir: &std::path::Path) -> Vec<Reading> {
        let mut readings = Vec::new();
        let mut n = 0_i64;
        for day in ["2025-12-01", "2025-12-02"] {
            for file in 0..2 {
                let rows: Vec<Reading> = (0..1000)
                    .map(|_| {
                        n += 1;
                        Reading {
                            day,
                            device: (n % 11 != 0).then(|| format!("d{}", n % 37)),
                            ts: 1_764_547_200_000 + n,
                            // A permutation of 0..4000 scaled: distinct values.
                            temp: (n % 7 != 0).then(|| ((n * 1_543) % 4_001) as f64 / 40.0),
                            extra: (file == 1).then_some(n * 10),
                        }
                    })
                    .collect();
                let mut fields = vec![
                    Field::new("deviceId", DataType::Utf8, true),
                    Field::new("ts", DataType::Int64, false),
                    Field::new("temp", DataType::Float64, true),
                ];
                let mut columns: Vec<ArrayRef> = vec![
                    Arc::new(StringArray::from_iter(
                        rows.iter().map(|r| r.device.clone()),
                    )),
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.ts))),
                    Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.temp))),
                ];
                if file == 1 {
                    fields.push(Field::new("extra", DataType::Int64, true));
                    columns.push(Arc::new(Int64Array::from_iter(
                        rows.iter().map(|r| r.extra),
                    )));
                }
                let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
                let props = WriterProperties::builder()
                    .set_max_row_group_row_count(Some(300))
                    .set_data_page_row_count_limit(50)
                    .set_write_batch_size(50)
                    .set_statistics_enabled(EnabledStatistics::Chunk)
                    .set_offset_index_disabled(file == 0)
                    .build();
                let folder = dir.join(format!("__dt={day}"));
                std::fs::create_dir_all(&folder).unwrap();
                let out = std::fs::File::create(folder.join(format!("f{file}.parquet"))).unwrap();
                let mut writer = ArrowWriter::try_new(out, batch.schema(), Some(props)).unwrap();
                writer.write(&batch).unwrap();
                writer.close().unwrap();
                readings.extend(rows);
            }
        }
        readings
    }

    /// The rows of `batches` as text, one line a row, cells as the CSV writer prints them.
    fn lines(batches: &[RecordBatch]) -> Vec<String> {
        let csv = String::from_utf8(query::csv(batches).unwrap()).unwrap();
        csv.lines().skip(1).map(str::to_string).collect()
    }

    fn cell<T: ToString>(v: &Option<T>) -> String {
        v.as_ref().map(ToString::to_string).unwrap_or_default()
    }

    /// A temperature as the CSV writer prints it (`1.0`, `50.025`), or nothing for a null.
    fn temp(v: &Option<f64>) -> String {
        v.map(|t| format!("{t:?}")).unwrap_or_default()
    }

    /// The Parquet folder `dir` as table `t`.
    fn parquet_table(dir: &std::path::Path) -> Vec<Table> {
        vec![Table {
            name: "t".into(),
            source: Source::Folder(dir.to_path_buf()),
            format: FileFormat::Parquet,
            schema: None,
            partitions: None,
        }]
    }

    /// Runs `sql` late (it must be a late top-N) and as the engine plans it; both answers.
    async fn both(dir: &std::path::Path, sql: &str) -> (Vec<String>, Vec<String>) {
        let tables = parquet_table(dir);
        let ctx = query::session().unwrap();
        let parquet = query::register(&ctx, &tables, None, &[]).await.unwrap();
        let frame = ctx.sql(sql).await.unwrap();
        let late = run(&ctx, &frame, &parquet).await.unwrap();
        let late = late.unwrap_or_else(|| panic!("not read late: {sql}"));
        let engine = frame.collect().await.unwrap();
        (lines(&late), lines(&engine))
    }

    #[tokio::test]
    async fn a_top_n_read_late_gives_the_rows_the_engine_gives() {
        let dir = tempfile::tempdir().unwrap();
        let readings = write_table(dir.path());
        let by_temp_desc = |r: &&Reading| std::cmp::Reverse((r.temp.unwrap() * 40.0) as i64);

        // One day, a filter, the hottest first.
        let sql = "SELECT deviceId, ts, temp FROM t WHERE __dt = '2025-12-02' AND temp > 50 \
                   ORDER BY temp DESC LIMIT 7";
        let mut expected: Vec<&Reading> = readings
            .iter()
            .filter(|r| r.day == "2025-12-02" && r.temp.is_some_and(|t| t > 50.0))
            .collect();
        expected.sort_by_key(by_temp_desc);
        let expected: Vec<String> = expected[..7]
            .iter()
            .map(|r| format!("{},{},{}", cell(&r.device), r.ts, temp(&r.temp)))
            .collect();
        let (late, engine) = both(dir.path(), sql).await;
        assert_eq!(late, expected);
        assert_eq!(engine, expected);

        // Every day, a column only some files have, a partition column, the coolest first.
        let sql = "SELECT extra, __dt, deviceId, temp FROM t WHERE temp < 20 \
                   ORDER BY temp LIMIT 40";
        let mut expected: Vec<&Reading> = readings
            .iter()
            .filter(|r| r.temp.is_some_and(|t| t < 20.0))
            .collect();
        expected.sort_by_key(|r| (r.temp.unwrap() * 40.0) as i64);
        let expected: Vec<String> = expected[..40]
            .iter()
            .map(|r| {
                let (extra, device) = (cell(&r.extra), cell(&r.device));
                format!("{extra},{},{device},{}", r.day, temp(&r.temp))
            })
            .collect();
        assert!(
            expected.iter().any(|l| l.starts_with(',')),
            "some rows lack extra"
        );
        assert!(
            expected.iter().any(|l| !l.starts_with(',')),
            "some rows have it"
        );
        let (late, engine) = both(dir.path(), sql).await;
        assert_eq!(late, expected);
        assert_eq!(engine, expected);

        // No filter, every column, the latest first.
        let (late, engine) = both(dir.path(), "SELECT * FROM t ORDER BY ts DESC LIMIT 5").await;
        assert_eq!(late.len(), 5);
        assert_eq!(late, engine);
        assert!(late[0].starts_with("d4,1764547204000,"), "{late:?}");

        // Nothing passes the filter: no rows, as the engine gives none.
        let sql = "SELECT deviceId, temp FROM t WHERE temp > 1000 ORDER BY temp LIMIT 3";
        let (late, engine) = both(dir.path(), sql).await;
        assert!(late.is_empty() && engine.is_empty());
    }

    /// A dataset's delta-time window makes the table a view: such a top-N runs as one engine
    /// query (it is not read late), and keeps to the window.
    #[tokio::test]
    async fn a_top_n_through_a_delta_time_window_keeps_to_the_window() {
        let dir = tempfile::tempdir().unwrap();
        write_table(dir.path());
        let tables = parquet_table(dir.path());
        let window = query::Window {
            expression: "to_timestamp_millis(ts)".into(),
            start_ms: Some(1_764_547_201_000),
            end_ms: 1_764_547_203_000,
        };
        let sql = "SELECT deviceId, ts, temp FROM t WHERE temp > 10 ORDER BY temp DESC LIMIT 6";
        let windowed = query::run_in(&tables, sql, Some(&window)).await.unwrap();
        let explicit = query::run(
            &tables,
            "SELECT deviceId, ts, temp FROM t WHERE temp > 10 \
             AND ts >= 1764547201000 AND ts < 1764547203000 ORDER BY temp DESC LIMIT 6",
        )
        .await
        .unwrap();
        let rows = lines(&windowed);
        assert_eq!(rows.len(), 6);
        assert_eq!(rows, lines(&explicit));
    }

    #[tokio::test]
    async fn only_a_top_n_with_a_column_to_read_late_is_one() {
        let dir = tempfile::tempdir().unwrap();
        write_table(dir.path());
        let tables = parquet_table(dir.path());
        let ctx = query::session().unwrap();
        let parquet = query::register(&ctx, &tables, None, &[]).await.unwrap();
        for sql in [
            // Nothing to read late: the ordering and the filter need every selected column.
            "SELECT temp FROM t WHERE temp > 3 ORDER BY temp LIMIT 3",
            "SELECT temp, __dt FROM t ORDER BY temp LIMIT 3",
            // No LIMIT, an OFFSET, a computed column, an aggregate, too many rows.
            "SELECT deviceId, temp FROM t ORDER BY temp",
            "SELECT deviceId, temp FROM t ORDER BY temp LIMIT 3 OFFSET 2",
            "SELECT upper(deviceId), temp FROM t ORDER BY temp LIMIT 3",
            "SELECT deviceId, max(temp) AS m FROM t GROUP BY deviceId ORDER BY m LIMIT 3",
            "SELECT deviceId, temp FROM t ORDER BY temp LIMIT 5000",
        ] {
            let frame = ctx.sql(sql).await.unwrap();
            assert!(
                run(&ctx, &frame, &parquet).await.unwrap().is_none(),
                "{sql}"
            );
        }
    }
}
