//! One task per pipeline: it reads the channel's new files after its checkpoint, runs them
//! through the activities and writes the result to the datastore. Before a batch of files it
//! records their range as in flight; after a crash that range is redone first, into the same
//! file names, so each message reaches the datastore exactly once. An activity that fails drops
//! its messages (counted in `fleetcore_analytics_pipeline_errors_total`) and never stops the
//! pipeline; a storage failure is retried without advancing the checkpoint.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Analytics;
use crate::channel::Stored;
use crate::columns;
use crate::error::AnalyticsError;
use crate::model::{DatastoreRecord, PipelineRecord, now_seconds};
use crate::pipeline::Plan;

/// Most channel files one batch takes.
const FILES_PER_BATCH: usize = 64;

/// Where a pipeline is in its channel.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// The last channel file fully written to the datastore.
    pub done: u64,
    /// The files being processed (first, last), to redo after a crash.
    pub in_flight: Option<(u64, u64)>,
}

/// Runs pipeline `name` until it is deleted or the task is aborted.
pub(crate) async fn run(analytics: Arc<Analytics>, name: String) {
    loop {
        match step(&analytics, &name).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(pipeline = %name, error = %e, "pipeline batch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One batch (or one wait for the channel); false when the pipeline is gone.
async fn step(analytics: &Arc<Analytics>, name: &str) -> Result<bool, AnalyticsError> {
    let Some(record) = analytics.catalog.get::<PipelineRecord>("pipeline", name)? else {
        return Ok(false);
    };
    let plan =
        Plan::build(&record.activities, &analytics.services).map_err(AnalyticsError::Invalid)?;
    let mut checkpoint: Checkpoint = analytics
        .catalog
        .get("checkpoint", name)?
        .unwrap_or_default();
    let (first, last, files) = match checkpoint.in_flight {
        Some((first, last)) => {
            let files = analytics
                .channels
                .after(&plan.channel, first - 1, (last - first + 1) as usize)
                .await?;
            (first, last, files)
        }
        None => {
            let mut watch = analytics.channels.watch(&plan.channel).await?;
            let files = analytics
                .channels
                .after(&plan.channel, checkpoint.done, FILES_PER_BATCH)
                .await?;
            let (Some(first), Some(last)) = (files.first(), files.last()) else {
                // Nothing new: wait for the channel's writer (or a periodic look, for files
                // that another writer of the folder made).
                let _ = tokio::time::timeout(Duration::from_secs(5), watch.changed()).await;
                return Ok(true);
            };
            let (first, last) = (*first, *last);
            checkpoint.in_flight = Some((first, last));
            analytics.catalog.put("checkpoint", name, &checkpoint)?;
            (first, last, files)
        }
    };
    let mut rows = Vec::new();
    for seq in files.into_iter().filter(|s| *s <= last) {
        rows.extend(analytics.channels.read(&plan.channel, seq).await?);
    }
    let output = transform(&plan, name, rows).await;
    if !output.is_empty() {
        write(
            analytics,
            &plan.datastore,
            &format!("{name}-{first:020}-{last:020}"),
            output,
        )
        .await?;
    }
    analytics.catalog.put(
        "checkpoint",
        name,
        &Checkpoint {
            done: last,
            in_flight: None,
        },
    )?;
    Ok(true)
}

/// Runs the activities over `rows`, one run per arrival time (a run keeps its messages'
/// arrival time for the time partition).
pub(crate) async fn transform(plan: &Plan, pipeline: &str, rows: Vec<Stored>) -> Vec<Stored> {
    let mut output = Vec::with_capacity(rows.len());
    let mut rows = rows.into_iter().peekable();
    while let Some(first) = rows.next() {
        let arrival_ms = first.arrival_ms;
        let mut group = vec![first.message];
        while let Some(next) = rows.next_if(|r| r.arrival_ms == arrival_ms) {
            group.push(next.message);
        }
        let count = group.len();
        match plan.run(group).await {
            Ok(messages) => output.extend(messages.into_iter().map(|message| Stored {
                arrival_ms,
                message,
            })),
            Err(e) => {
                metrics::counter!("fleetcore_analytics_pipeline_errors_total", "pipeline" => pipeline.to_string())
                    .increment(count as u64);
                tracing::warn!(pipeline, messages = count, error = %e, "pipeline activity failed; messages dropped");
            }
        }
    }
    output
}

/// Writes `rows` to `datastore` as files named `stem`, widening its columns first.
pub(crate) async fn write(
    analytics: &Arc<Analytics>,
    datastore: &str,
    stem: &str,
    rows: Vec<Stored>,
) -> Result<(), AnalyticsError> {
    let lock = analytics.datastore_lock(datastore);
    let _guard = lock.lock().await;
    let mut record: DatastoreRecord = analytics
        .catalog
        .get("datastore", datastore)?
        .ok_or_else(|| AnalyticsError::not_found("datastore", datastore))?;
    if !record.fixed_schema {
        let skip: Vec<&str> = record.attribute_partition.as_deref().into_iter().collect();
        columns::learn(&mut record.columns, rows.iter().map(|r| &r.message), &skip);
    }
    record.last_message = Some(now_seconds());
    // The columns are stored before the file that needs them exists, so a query never
    // meets a file column its table does not know.
    analytics.catalog.put("datastore", datastore, &record)?;
    let count = rows.len();
    analytics.datastores.write(&record, stem, rows).await?;
    metrics::counter!("fleetcore_analytics_datastore_rows_total", "datastore" => datastore.to_string())
        .increment(count as u64);
    Ok(())
}
