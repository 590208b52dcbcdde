//! `fleetcore sql "SELECT ..."`: runs SQL with the analytics engine over the Parquet or JSON
//! files of a data folder's datastores (each a table by its name) and any other Hive-partitioned
//! folder of such files (`--table name=folder`, e.g. a lake prefix) or bucket prefix of the lake
//! (`--table name=s3://bucket/prefix/`, e.g. a customer-managed datastore, with the `[lake]`
//! settings the server uses), reading the files directly: it needs no running server, and the
//! server may run while it reads.

use std::path::PathBuf;

use anyhow::Context;
use fleetcore_analytics::bucket::Buckets;
use fleetcore_analytics::query::{self, FileFormat, Source, Table};

use crate::analytics::LakeBuckets;
use crate::config::LakeArgs;

/// How the rows are printed.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// A text table.
    Table,
    /// CSV with a header line.
    Csv,
    /// A JSON array of objects.
    Json,
}

/// The arguments of `fleetcore sql`.
#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// The query, e.g. "SELECT deviceId, avg(temp) FROM telemetry GROUP BY deviceId".
    query: String,
    /// The data folder whose datastores are the tables.
    #[arg(long, env = "FLEETCORE_DATA_DIR", default_value = "fleetcore-data")]
    data_dir: PathBuf,
    /// Another table: NAME=FOLDER, a folder of (Hive-partitioned) Parquet or JSON-lines files,
    /// or NAME=s3://BUCKET/PREFIX/, such objects under a prefix of a bucket of the lake.
    #[arg(long = "table", value_name = "NAME=FOLDER|s3://BUCKET/PREFIX/")]
    tables: Vec<String>,
    /// The lake `s3://` tables are read from (the server's `[lake]` settings).
    #[command(flatten)]
    lake: LakeArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Also print, on standard error, how long the query took from finding the tables to the
    /// formatted rows (the engine's time, without the process's start and exit).
    #[arg(long)]
    timing: bool,
}

impl SqlArgs {
    /// The tables: every datastore folder, then the `--table` ones (each in the format of
    /// its first file).
    async fn tables(&self) -> anyhow::Result<Vec<Table>> {
        let mut tables = Vec::new();
        let datastores = crate::analytics::root(&self.data_dir).join("datastores");
        if let Ok(entries) = std::fs::read_dir(&datastores) {
            for entry in entries.filter_map(Result::ok) {
                // A datastore nothing was written to yet has no schema to read: no table.
                if let Some(format) = query::folder_format(&entry.path()) {
                    tables.push(Table {
                        name: entry.file_name().to_string_lossy().to_string(),
                        source: Source::Folder(entry.path()),
                        format,
                        schema: None,
                        partitions: None,
                    });
                }
            }
        }
        let mut buckets: Option<LakeBuckets> = None;
        for spec in &self.tables {
            let (name, place) = spec.split_once('=').with_context(|| {
                format!("--table {spec}: expected NAME=FOLDER or NAME=s3://BUCKET/PREFIX/")
            })?;
            let (source, format) = match place.strip_prefix("s3://") {
                Some(path) => {
                    let bucket = path.split('/').next().unwrap_or_default();
                    if bucket.is_empty() {
                        anyhow::bail!("--table {spec}: the URL names no bucket");
                    }
                    let lake = match &buckets {
                        Some(lake) => lake,
                        None => buckets.insert(LakeBuckets::new(self.lake.config(&self.data_dir)?)),
                    };
                    let store = lake
                        .store(bucket)
                        .map_err(anyhow::Error::msg)
                        .with_context(|| format!("--table {spec}: bucket {bucket}"))?;
                    let prefix = path[bucket.len()..].trim_start_matches('/');
                    let format = query::object_format(store.as_ref(), prefix)
                        .await
                        .with_context(|| format!("--table {spec}"))?;
                    let source = Source::Objects {
                        url: place.to_string(),
                        store,
                    };
                    (source, format)
                }
                None => {
                    let folder = PathBuf::from(place);
                    let format = query::folder_format(&folder);
                    (Source::Folder(folder), format)
                }
            };
            tables.retain(|t| t.name != name);
            tables.push(Table {
                name: name.to_string(),
                source,
                format: format.unwrap_or(FileFormat::Parquet),
                schema: None,
                partitions: None,
            });
        }
        Ok(tables)
    }

    /// Runs the query and prints the rows.
    pub async fn run(self) -> anyhow::Result<()> {
        tracing::debug!("sql started");
        let started = std::time::Instant::now();
        let tables = self.tables().await?;
        let batches = query::run(&tables, &self.query).await?;
        let out = match self.format {
            Format::Table => {
                let mut text = query::pretty(&batches)?;
                text.push('\n');
                text.into_bytes()
            }
            Format::Csv => query::csv(&batches)?,
            Format::Json => {
                let mut json = query::json(&batches)?;
                json.push(b'\n');
                json
            }
        };
        if self.timing {
            eprintln!(
                "query time: {:.3} ms",
                started.elapsed().as_secs_f64() * 1e3
            );
        }
        std::io::Write::write_all(&mut std::io::stdout().lock(), &out)?;
        tracing::debug!("sql printed");
        Ok(())
    }
}
