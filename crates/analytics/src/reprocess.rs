//! StartPipelineReprocessing: runs the messages that arrived in a channel during
//! [startTime, endTime), or those of the channel files named by `channelMessages.s3Paths`,
//! through the pipeline's current activities into its datastore again, in a background task
//! beside the pipeline's own runner. Its progress (the last channel file
//! done) is stored after each batch and its output files are named after the reprocessing and
//! the files they came from, so after a restart it resumes and each message lands once per
//! reprocessing. One reprocessing runs per pipeline at a time; CancelPipelineReprocessing stops
//! it (what it wrote stays, as AWS's does). Its status is in DescribePipeline's
//! `reprocessingSummaries`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::Analytics;
use crate::catalog::Catalog;
use crate::error::AnalyticsError;
use crate::model::{PipelineRecord, now_seconds};
use crate::pipeline::Plan;

/// Channel files one reprocessing batch takes.
const FILES_PER_BATCH: usize = 64;

/// The state of a reprocessing, as AWS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ReprocessingStatus {
    /// Still running.
    Running,
    /// Every message of the window went through.
    Succeeded,
    /// Stopped by CancelPipelineReprocessing.
    Cancelled,
    /// Stopped by an error (the pipeline or its channel went away).
    Failed,
}

/// What a reprocessing runs through the pipeline again.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The messages that arrived in [start, end) (epoch seconds; open when absent).
    Window {
        /// `startTime`.
        start: Option<f64>,
        /// `endTime`.
        end: Option<f64>,
    },
    /// Every message of the channel files with these object keys (`channelMessages.s3Paths`).
    Paths(Vec<String>),
}

/// The channel files a reprocessing of `channelMessages.s3Paths` takes, resolved at the call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chosen {
    /// The pipeline's channel when the call was made.
    pub channel: String,
    /// The numbers of its files, ascending.
    pub files: Vec<u64>,
}

/// One reprocessing of a pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reprocessing {
    /// `reprocessingId`.
    pub id: String,
    /// The status.
    pub status: ReprocessingStatus,
    /// The window start (inclusive), epoch milliseconds.
    pub start_ms: Option<i64>,
    /// The window end (exclusive), epoch milliseconds.
    pub end_ms: Option<i64>,
    /// The channel files named by `channelMessages.s3Paths` (`None`: the time window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen: Option<Chosen>,
    /// The last channel file done.
    pub done: u64,
    /// Creation, epoch seconds.
    pub created: f64,
}

fn key(pipeline: &str, id: &str) -> String {
    format!("{pipeline}/{id}")
}

impl Analytics {
    /// StartPipelineReprocessing of `input`; the id. Every path of `channelMessages.s3Paths`
    /// is checked to be a file of the pipeline's channel now, so a bad one fails the call.
    pub async fn start_reprocessing(
        self: &Arc<Self>,
        pipeline: &str,
        input: Input,
    ) -> Result<String, AnalyticsError> {
        let record = self.pipeline(pipeline)?;
        let (start, end, chosen) = match input {
            Input::Window { start, end } => {
                if let (Some(s), Some(e)) = (start, end)
                    && s >= e
                {
                    return Err(AnalyticsError::Invalid(
                        "startTime must be before endTime".into(),
                    ));
                }
                (start, end, None)
            }
            Input::Paths(paths) => {
                let plan = Plan::build(&record.activities, &self.services)
                    .map_err(AnalyticsError::Invalid)?;
                let files = self.channels.files_of_keys(&plan.channel, &paths).await?;
                let chosen = Chosen {
                    channel: plan.channel,
                    files,
                };
                (None, None, Some(chosen))
            }
        };
        if let Some(running) = self
            .reprocessings(pipeline)?
            .into_iter()
            .find(|r| r.status == ReprocessingStatus::Running)
        {
            return Err(AnalyticsError::AlreadyExists {
                kind: "reprocessing",
                name: running.id,
                arn: self.arn("pipeline", pipeline),
            });
        }
        let record = Reprocessing {
            id: uuid::Uuid::new_v4().to_string(),
            status: ReprocessingStatus::Running,
            start_ms: start.map(|s| (s * 1000.0) as i64),
            end_ms: end.map(|e| (e * 1000.0) as i64),
            chosen,
            done: 0,
            created: now_seconds(),
        };
        self.catalog
            .put("reprocess", &key(pipeline, &record.id), &record)?;
        self.spawn_reprocessing(pipeline, &record.id);
        Ok(record.id)
    }

    /// CancelPipelineReprocessing.
    pub fn cancel_reprocessing(&self, pipeline: &str, id: &str) -> Result<(), AnalyticsError> {
        self.pipeline(pipeline)?;
        // Status changes hold the task table's lock, so a finishing task cannot undo a cancel.
        let mut tasks = self.reprocessing_tasks.lock();
        let mut record: Reprocessing = self
            .catalog
            .get("reprocess", &key(pipeline, id))?
            .ok_or_else(|| AnalyticsError::not_found("reprocessing", id))?;
        if record.status != ReprocessingStatus::Running {
            return Err(AnalyticsError::Invalid(format!(
                "reprocessing {id} is not running (it is {:?})",
                record.status
            )));
        }
        if let Some(task) = tasks.remove(id) {
            task.abort();
        }
        record.status = ReprocessingStatus::Cancelled;
        self.catalog.put("reprocess", &key(pipeline, id), &record)
    }

    /// The reprocessings of `pipeline`, newest first.
    pub fn reprocessings(&self, pipeline: &str) -> Result<Vec<Reprocessing>, AnalyticsError> {
        let mut all: Vec<Reprocessing> = self.catalog.list("reprocess", &format!("{pipeline}/"))?;
        all.sort_by(|a, b| b.created.total_cmp(&a.created));
        Ok(all)
    }

    /// Stops the reprocessings of a pipeline being deleted, and stages their records' removal.
    pub(crate) fn drop_reprocessings(
        &self,
        pipeline: &str,
        batch: &mut fleetcore_core::WriteBatch,
    ) -> Result<(), AnalyticsError> {
        for r in self.reprocessings(pipeline)? {
            if let Some(task) = self.reprocessing_tasks.lock().remove(&r.id) {
                task.abort();
            }
        }
        Catalog::stage_delete_prefix(batch, "reprocess", &format!("{pipeline}/"));
        Ok(())
    }

    /// Resumes the reprocessings a stop interrupted.
    pub(crate) fn resume_reprocessings(self: &Arc<Self>) -> Result<(), AnalyticsError> {
        for pipeline in self.catalog.list::<PipelineRecord>("pipeline", "")? {
            for r in self.reprocessings(&pipeline.name)? {
                if r.status == ReprocessingStatus::Running {
                    self.spawn_reprocessing(&pipeline.name, &r.id);
                }
            }
        }
        Ok(())
    }

    fn spawn_reprocessing(self: &Arc<Self>, pipeline: &str, id: &str) {
        let analytics = Arc::clone(self);
        let (pipeline, id) = (pipeline.to_string(), id.to_string());
        let task_id = id.clone();
        // Held across the spawn, so the task's own removal of its handle comes after the insert.
        let mut tasks = self.reprocessing_tasks.lock();
        let task = tokio::spawn(async move {
            let status = match analytics.reprocess(&pipeline, &id).await {
                Ok(()) => ReprocessingStatus::Succeeded,
                Err(e) => {
                    tracing::warn!(pipeline = %pipeline, reprocessing = %id, error = %e, "reprocessing failed");
                    ReprocessingStatus::Failed
                }
            };
            let finished = analytics.update_running(&pipeline, &id, |r| r.status = status);
            analytics.reprocessing_tasks.lock().remove(&id);
            if let Err(e) = finished {
                tracing::error!(pipeline = %pipeline, reprocessing = %id, error = %e, "could not record a reprocessing");
            }
        });
        tasks.insert(task_id, task.abort_handle());
    }

    /// Changes a running reprocessing's record (under the task table's lock); false when it
    /// is gone or no longer running.
    fn update_running(
        &self,
        pipeline: &str,
        id: &str,
        change: impl FnOnce(&mut Reprocessing),
    ) -> Result<bool, AnalyticsError> {
        let _tasks = self.reprocessing_tasks.lock();
        let Some(mut record) = self
            .catalog
            .get::<Reprocessing>("reprocess", &key(pipeline, id))?
            .filter(|r| r.status == ReprocessingStatus::Running)
        else {
            return Ok(false);
        };
        change(&mut record);
        self.catalog.put("reprocess", &key(pipeline, id), &record)?;
        Ok(true)
    }

    /// Runs the window through the pipeline from where the reprocessing stopped.
    async fn reprocess(self: &Arc<Self>, pipeline: &str, id: &str) -> Result<(), AnalyticsError> {
        loop {
            let record: PipelineRecord = self.pipeline(pipeline)?;
            let plan =
                Plan::build(&record.activities, &self.services).map_err(AnalyticsError::Invalid)?;
            let Some(progress) = self
                .catalog
                .get::<Reprocessing>("reprocess", &key(pipeline, id))?
                .filter(|r| r.status == ReprocessingStatus::Running)
            else {
                return Ok(());
            };
            let files = match &progress.chosen {
                Some(chosen) if chosen.channel != plan.channel => {
                    return Err(AnalyticsError::Invalid(format!(
                        "the pipeline now reads channel {} instead of {}, whose files were named",
                        plan.channel, chosen.channel
                    )));
                }
                Some(chosen) => chosen
                    .files
                    .iter()
                    .copied()
                    .filter(|seq| *seq > progress.done)
                    .take(FILES_PER_BATCH)
                    .collect(),
                None => {
                    self.channels
                        .after(&plan.channel, progress.done, FILES_PER_BATCH)
                        .await?
                }
            };
            let (Some(first), Some(last)) = (files.first(), files.last()) else {
                return Ok(());
            };
            let (first, last) = (*first, *last);
            let mut rows = Vec::new();
            for seq in files {
                let stored = self.channels.read(&plan.channel, seq).await?;
                rows.extend(stored.into_iter().filter(|s| {
                    progress.start_ms.is_none_or(|t| s.arrival_ms >= t)
                        && progress.end_ms.is_none_or(|t| s.arrival_ms < t)
                }));
            }
            let output = crate::runner::transform(&plan, pipeline, rows).await;
            if !output.is_empty() {
                let short = id.split('-').next().unwrap_or(id);
                crate::runner::write(
                    self,
                    &plan.datastore,
                    &format!("{pipeline}-r{short}-{first:020}-{last:020}"),
                    output,
                )
                .await?;
            }
            if !self.update_running(pipeline, id, |r| r.done = last)? {
                return Ok(());
            }
        }
    }
}
