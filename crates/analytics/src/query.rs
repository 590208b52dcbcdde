//! SQL over Parquet or newline-delimited JSON folders with DataFusion: each datastore (or any
//! Hive-partitioned folder of such files) is a table; partition columns are known, so `WHERE __dt >= '...'` reads only the
//! matching folders, and Parquet statistics prune row groups. Identifiers are case-sensitive
//! as written (attribute names keep their case, as IoT Analytics' SQL reads them), and the
//! functions of [`crate::functions`] are registered. A table's files are a local folder or
//! objects of a bucket (its object store registered with the session).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Schema};
use datafusion::common::TableReference;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;

use crate::error::AnalyticsError;
use crate::late::{self, ParquetTable};

/// The bytes read from the end of a local Parquet file to get its footer (a larger footer takes
/// a second read).
const LOCAL_FOOTER_READ: usize = 64 * 1024;

/// One table of a query: a folder of Parquet or JSON files.
#[derive(Debug, Clone)]
pub struct Table {
    /// The table's name in SQL.
    pub name: String,
    /// Where its files are.
    pub source: Source,
    /// The format of its files.
    pub format: FileFormat,
    /// The files' columns (`None`: read from the files).
    pub schema: Option<Schema>,
    /// The partition columns, outermost first (`None`: read from the folder names).
    pub partitions: Option<Vec<String>>,
}

/// The format of a table's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileFormat {
    /// Parquet (`.parquet`).
    #[default]
    Parquet,
    /// One JSON object a line (`.json`).
    Json,
}

impl FileFormat {
    /// The extension of its files, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Json => "json",
        }
    }

    /// The format of a file named `name`, if it is a data file.
    pub fn of_file(name: &str) -> Option<FileFormat> {
        let (_, extension) = name.rsplit_once('.')?;
        [FileFormat::Parquet, FileFormat::Json]
            .into_iter()
            .find(|f| f.extension() == extension)
    }
}

/// Where a table's files are.
#[derive(Debug, Clone)]
pub enum Source {
    /// A local folder.
    Folder(PathBuf),
    /// The objects under a prefix of an object store.
    Objects {
        /// `s3://<bucket>/<prefix>/`: the store is registered for `s3://<bucket>`.
        url: String,
        /// The bucket's store.
        store: Arc<dyn ObjectStore>,
    },
}

/// A DataFusion session with identifiers kept as written; its other settings are DataFusion's
/// defaults, or what the engine's own `DATAFUSION_*` environment variables set (e.g.
/// `DATAFUSION_EXECUTION_TARGET_PARTITIONS=1`); a variable with a value the setting does not
/// take is an error. (Parquet filter pushdown stays off by default: measured, it made the
/// filtered top-N slower, 52 -> 69-74 ms CPU; see BENCHMARKS.md.)
pub(crate) fn session() -> Result<SessionContext, AnalyticsError> {
    let mut config = SessionConfig::from_env()
        .map_err(|e| engine(format!("a DATAFUSION_* environment variable: {e}")))?;
    config.options_mut().sql_parser.enable_ident_normalization = false;
    let ctx = SessionContext::new_with_config(config);
    for udf in crate::functions::udfs() {
        ctx.register_udf(udf);
    }
    Ok(ctx)
}

/// The partition columns of a Hive folder: the `key=` names along its first branch.
pub fn partition_columns(dir: &Path) -> Vec<String> {
    let mut keys = Vec::new();
    let mut current = dir.to_path_buf();
    loop {
        let Ok(entries) = std::fs::read_dir(&current) else {
            return keys;
        };
        let next = entries.filter_map(Result::ok).find_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let key = partition_key(&name)?;
            e.path().is_dir().then(|| (key.to_string(), e.path()))
        });
        match next {
            Some((key, path)) => {
                keys.push(key);
                current = path;
            }
            None => return keys,
        }
    }
}

/// The partition columns of the Hive objects under `prefix`: the `key=` names along the first
/// branch of their keys.
pub async fn object_partition_columns(
    store: &dyn ObjectStore,
    prefix: &str,
) -> Result<Vec<String>, AnalyticsError> {
    let mut keys = Vec::new();
    let mut current = ObjectPath::from(prefix);
    loop {
        let listed = store
            .list_with_delimiter(Some(&current))
            .await
            .map_err(engine)?;
        let next = listed.common_prefixes.into_iter().find_map(|p| {
            let key = partition_key(p.filename()?)?.to_string();
            Some((key, p))
        });
        match next {
            Some((key, path)) => {
                keys.push(key);
                current = path;
            }
            None => return Ok(keys),
        }
    }
}

/// The format of the first data file (`.parquet` or `.json`) in folder `dir`, at any depth
/// (`None`: it holds none yet).
pub fn folder_format(dir: &Path) -> Option<FileFormat> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut folders = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            folders.push(path);
        } else if let Some(format) = FileFormat::of_file(&entry.file_name().to_string_lossy()) {
            return Some(format);
        }
    }
    folders.iter().find_map(|f| folder_format(f))
}

/// The format of the first data file under `prefix` of `store` (`None`: none there yet).
pub async fn object_format(
    store: &dyn ObjectStore,
    prefix: &str,
) -> Result<Option<FileFormat>, AnalyticsError> {
    use futures_util::StreamExt;
    let mut listed = store.list(Some(&ObjectPath::from(prefix)));
    while let Some(meta) = listed.next().await {
        let meta = meta.map_err(engine)?;
        if let Some(format) = meta.location.filename().and_then(FileFormat::of_file) {
            return Ok(Some(format));
        }
    }
    Ok(None)
}

/// The key of a Hive partition folder name (`key=value`).
fn partition_key(name: &str) -> Option<&str> {
    let (key, _) = name.split_once('=')?;
    (!key.is_empty()).then_some(key)
}

fn engine(e: impl std::fmt::Display) -> AnalyticsError {
    AnalyticsError::Query(e.to_string())
}

/// A delta time window: the tables a query reads hold only the rows whose `expression` (a
/// timestamp, e.g. `from_unixtime(time)`) is in [start, end).
#[derive(Debug, Clone)]
pub struct Window {
    /// The time expression (`deltaTime.timeExpression`).
    pub expression: String,
    /// The start (inclusive), epoch milliseconds; none for the first window.
    pub start_ms: Option<i64>,
    /// The end (exclusive), epoch milliseconds.
    pub end_ms: i64,
}

/// Runs `sql` over `tables`; the error is the engine's message.
pub async fn run(tables: &[Table], sql: &str) -> Result<Vec<RecordBatch>, AnalyticsError> {
    run_in(tables, sql, None).await
}

/// The names of the tables `sql` reads (none when it does not parse: running it will say why).
fn referenced(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    state
        .sql_to_statement(sql, &dialect)
        .and_then(|statement| state.resolve_table_references(&statement))
        .map(|refs| refs.iter().map(|r| r.table().to_string()).collect())
        .unwrap_or_default()
}

/// Runs `sql` over `tables`, each read through `window` if one is given.
pub async fn run_in(
    tables: &[Table],
    sql: &str,
    window: Option<&Window>,
) -> Result<Vec<RecordBatch>, AnalyticsError> {
    let ctx = session()?;
    tracing::debug!("query session ready");
    let windowed = window.map(|_| referenced(&ctx, sql)).unwrap_or_default();
    let parquet_tables = register(&ctx, tables, window, &windowed).await?;
    let frame = ctx.sql(sql).await.map_err(engine)?;
    tracing::debug!("query planned");
    if let Some(batches) = late::run(&ctx, &frame, &parquet_tables)
        .await
        .map_err(engine)?
    {
        tracing::debug!("query ran, its top-N's other columns read late");
        return Ok(batches);
    }
    let batches = frame.collect().await.map_err(engine)?;
    tracing::debug!("query ran");
    Ok(batches)
}

/// Registers `tables` with `ctx` (those named in `windowed` read through `window`); the
/// Parquet ones are returned by the name they are registered under.
pub(crate) async fn register(
    ctx: &SessionContext,
    tables: &[Table],
    window: Option<&Window>,
    windowed: &[String],
) -> Result<HashMap<String, ParquetTable>, AnalyticsError> {
    let mut parquet_tables = HashMap::new();
    for table in tables {
        let (mut location, partitions) = match &table.source {
            Source::Folder(dir) => (
                dir.to_string_lossy().to_string(),
                match &table.partitions {
                    Some(p) => p.clone(),
                    None => partition_columns(dir),
                },
            ),
            Source::Objects { url, store } => {
                let parsed = ListingTableUrl::parse(url).map_err(engine)?;
                ctx.register_object_store(parsed.object_store().as_ref(), Arc::clone(store));
                let partitions = match &table.partitions {
                    Some(p) => p.clone(),
                    None => {
                        object_partition_columns(store.as_ref(), parsed.prefix().as_ref()).await?
                    }
                };
                (url.clone(), partitions)
            }
        };
        if !location.ends_with('/') {
            location.push('/');
        }
        let url = ListingTableUrl::parse(&location).map_err(engine)?;
        let format: Arc<dyn datafusion::datasource::file_format::FileFormat> =
            match (table.format, &table.source) {
                // A local footer is read in one small read (the engine's default, 512 KiB, saves
                // object-store round trips, but from a local file it only costs memory).
                (FileFormat::Parquet, Source::Folder(_)) => Arc::new(
                    ParquetFormat::default().with_metadata_size_hint(Some(LOCAL_FOOTER_READ)),
                ),
                (FileFormat::Parquet, Source::Objects { .. }) => Arc::new(ParquetFormat::default()),
                (FileFormat::Json, _) => Arc::new(JsonFormat::default()),
            };
        let options = ListingOptions::new(format)
            .with_file_extension(format!(".{}", table.format.extension()))
            .with_table_partition_cols(
                partitions
                    .into_iter()
                    .map(|p| (p, DataType::Utf8))
                    .collect(),
            );
        let store_url = url.object_store();
        let config = ListingTableConfig::new(url).with_listing_options(options);
        let config = match &table.schema {
            Some(schema) => config.with_schema(Arc::new(schema.clone())),
            None => config.infer_schema(&ctx.state()).await.map_err(engine)?,
        };
        let listing = ListingTable::try_new(config).map_err(engine)?;
        let registered = match window {
            Some(_) if windowed.contains(&table.name) => format!("__all_{}", table.name),
            _ => table.name.clone(),
        };
        if table.format == FileFormat::Parquet {
            let store = ctx.runtime_env().object_store(&store_url).map_err(engine)?;
            let partitions = listing
                .options()
                .table_partition_cols
                .iter()
                .map(|(name, _)| name.clone())
                .collect();
            parquet_tables.insert(registered, ParquetTable { store, partitions });
        }
        // A bare reference keeps the name's case (a &str would be lowercased).
        match window {
            Some(window) if windowed.contains(&table.name) => {
                let all = format!("__all_{}", table.name);
                ctx.register_table(TableReference::bare(all.clone()), Arc::new(listing))
                    .map_err(engine)?;
                let expression = &window.expression;
                let mut filter = format!("({expression}) < to_timestamp_millis({})", window.end_ms);
                if let Some(start) = window.start_ms {
                    filter.push_str(&format!(
                        " AND ({expression}) >= to_timestamp_millis({start})"
                    ));
                }
                let view = ctx
                    .sql(&format!("SELECT * FROM \"{all}\" WHERE {filter}"))
                    .await
                    .map_err(|e| engine(format!("deltaTime.timeExpression: {e}")))?
                    .into_view();
                ctx.register_table(TableReference::bare(table.name.clone()), view)
                    .map_err(engine)?;
            }
            _ => {
                ctx.register_table(TableReference::bare(table.name.clone()), Arc::new(listing))
                    .map_err(engine)?;
            }
        }
        tracing::debug!(table = %table.name, "query table registered");
    }
    Ok(parquet_tables)
}

/// The rows as CSV with a header line.
pub fn csv(batches: &[RecordBatch]) -> Result<Vec<u8>, AnalyticsError> {
    let mut out = Vec::new();
    {
        let mut writer = datafusion::arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut out);
        for batch in batches {
            writer.write(batch).map_err(engine)?;
        }
    }
    Ok(out)
}

/// The rows as a JSON array of objects.
pub fn json(batches: &[RecordBatch]) -> Result<Vec<u8>, AnalyticsError> {
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    writer.write_batches(&refs).map_err(engine)?;
    writer.finish().map_err(engine)?;
    let mut out = writer.into_inner();
    if out.is_empty() {
        out.extend_from_slice(b"[]");
    }
    Ok(out)
}

/// The rows as a text table.
pub fn pretty(batches: &[RecordBatch]) -> Result<String, AnalyticsError> {
    datafusion::arrow::util::pretty::pretty_format_batches(batches)
        .map(|t| t.to_string())
        .map_err(engine)
}
