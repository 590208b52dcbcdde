//! Dataset contents: CreateDatasetContent runs the dataset's SQL over every datastore in the
//! background (state CREATING), writes the rows as `datasets/<dataset>/<version>.csv` and marks
//! the version SUCCEEDED, or FAILED with the engine's message. The CSV is downloaded from
//! `/iotanalytics/contents/<token>` on the HTTP port, the token (random, per version) standing in
//! for a presigned URL's signature. `versioningConfiguration.maxVersions` keeps that many.

use std::path::PathBuf;
use std::sync::Arc;

use crate::Analytics;
use crate::error::AnalyticsError;
use crate::model::{ContentRecord, ContentState, DatasetRecord, now_seconds};
use crate::query;

/// The public path prefix contents are served under.
pub const CONTENT_PATH: &str = "/iotanalytics/contents";

fn content_dir(analytics: &Analytics, dataset: &str) -> PathBuf {
    analytics.config.root.join("datasets").join(dataset)
}

fn content_key(dataset: &str, version: &str) -> String {
    format!("{dataset}/{version}")
}

/// Marks contents left CREATING by a stop as FAILED (their query died with the process).
pub(crate) fn fail_interrupted(analytics: &Analytics) -> Result<(), AnalyticsError> {
    for dataset in analytics.catalog.list::<DatasetRecord>("dataset", "")? {
        for mut content in analytics
            .catalog
            .list::<ContentRecord>("content", &format!("{}/", dataset.name))?
        {
            if content.state == ContentState::Creating {
                content.state = ContentState::Failed;
                content.reason = Some("the server stopped while the query ran".into());
                content.completed = Some(now_seconds());
                analytics.catalog.put(
                    "content",
                    &content_key(&dataset.name, &content.version),
                    &content,
                )?;
            }
        }
    }
    Ok(())
}

/// Removes every content file of `dataset`.
pub(crate) fn remove_files(analytics: &Analytics, dataset: &str) -> Result<(), AnalyticsError> {
    match std::fs::remove_dir_all(content_dir(analytics, dataset)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AnalyticsError::io(
            format!("removing the contents of dataset {dataset}"),
            e,
        )),
        _ => Ok(()),
    }
}

impl Analytics {
    /// CreateDatasetContent: starts the query; the new version id.
    pub fn create_content(self: &Arc<Self>, dataset: &str) -> Result<String, AnalyticsError> {
        let record = self.dataset(dataset)?;
        let version = uuid::Uuid::new_v4().to_string();
        let content = ContentRecord {
            version: version.clone(),
            state: ContentState::Creating,
            reason: None,
            token: uuid::Uuid::new_v4().simple().to_string(),
            created: now_seconds(),
            completed: None,
        };
        self.catalog
            .put("content", &content_key(dataset, &version), &content)?;
        let analytics = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = analytics.run_content(&record, &content.version).await;
            if let Err(e) = analytics.finish_content(&record, content, outcome) {
                tracing::error!(dataset = %record.name, error = %e, "could not record a dataset content");
            }
        });
        Ok(version)
    }

    /// Runs the dataset's query and writes its CSV; `Err` is the reason it failed.
    async fn run_content(&self, dataset: &DatasetRecord, version: &str) -> Result<(), String> {
        let tables = self.tables().map_err(|e| e.to_string())?;
        let batches = query::run(&tables, &dataset.sql)
            .await
            .map_err(|e| e.to_string())?;
        let csv = query::csv(&batches).map_err(|e| e.to_string())?;
        let dir = content_dir(self, &dataset.name);
        let version = version.to_string();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join(format!(".{version}.tmp"));
            std::fs::write(&tmp, &csv)?;
            std::fs::rename(&tmp, dir.join(format!("{version}.csv")))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("writing the content: {e}"))
    }

    fn finish_content(
        &self,
        dataset: &DatasetRecord,
        mut content: ContentRecord,
        outcome: Result<(), String>,
    ) -> Result<(), AnalyticsError> {
        if self
            .catalog
            .get::<DatasetRecord>("dataset", &dataset.name)?
            .is_none()
        {
            return remove_files(self, &dataset.name);
        }
        match outcome {
            Ok(()) => content.state = ContentState::Succeeded,
            Err(reason) => {
                content.state = ContentState::Failed;
                content.reason = Some(reason);
            }
        }
        content.completed = Some(now_seconds());
        self.catalog.put(
            "content",
            &content_key(&dataset.name, &content.version),
            &content,
        )?;
        if let Some(max) = dataset
            .versioning
            .get("maxVersions")
            .and_then(|v| v.as_u64())
        {
            let contents = self.contents(&dataset.name)?;
            for old in contents.iter().skip(max as usize) {
                self.delete_content(&dataset.name, Some(&old.version))?;
            }
        }
        Ok(())
    }

    /// ListDatasetContents: newest first.
    pub fn contents(&self, dataset: &str) -> Result<Vec<ContentRecord>, AnalyticsError> {
        self.dataset(dataset)?;
        let mut contents = self
            .catalog
            .list::<ContentRecord>("content", &format!("{dataset}/"))?;
        contents.sort_by(|a, b| b.created.total_cmp(&a.created));
        Ok(contents)
    }

    /// The content `version` names: `$LATEST` (the default), `$LATEST_SUCCEEDED` or an id.
    pub fn content(
        &self,
        dataset: &str,
        version: Option<&str>,
    ) -> Result<ContentRecord, AnalyticsError> {
        let contents = self.contents(dataset)?;
        let found = match version.unwrap_or("$LATEST") {
            "$LATEST" => contents.into_iter().next(),
            "$LATEST_SUCCEEDED" => contents
                .into_iter()
                .find(|c| c.state == ContentState::Succeeded),
            id => contents.into_iter().find(|c| c.version == id),
        };
        found.ok_or_else(|| AnalyticsError::not_found("dataset content", dataset))
    }

    /// The download URL of a content.
    pub fn content_uri(&self, content: &ContentRecord) -> String {
        format!(
            "{}{CONTENT_PATH}/{}",
            self.config.content_base_url.trim_end_matches('/'),
            content.token
        )
    }

    /// DeleteDatasetContent.
    pub fn delete_content(
        &self,
        dataset: &str,
        version: Option<&str>,
    ) -> Result<(), AnalyticsError> {
        let content = self.content(dataset, version)?;
        let mut batch = fleetcore_core::WriteBatch::new();
        crate::catalog::Catalog::stage_delete(
            &mut batch,
            "content",
            &content_key(dataset, &content.version),
        );
        self.catalog.apply(batch)?;
        let path = content_dir(self, dataset).join(format!("{}.csv", content.version));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AnalyticsError::io(
                format!("removing {}", path.display()),
                e,
            )),
            _ => Ok(()),
        }
    }

    /// The CSV file whose download token is `token`, if it exists and succeeded.
    pub fn content_file(&self, token: &str) -> Result<Option<PathBuf>, AnalyticsError> {
        for dataset in self.datasets()? {
            for content in self.contents(&dataset.name)? {
                if content.token == token && content.state == ContentState::Succeeded {
                    return Ok(Some(
                        content_dir(self, &dataset.name).join(format!("{}.csv", content.version)),
                    ));
                }
            }
        }
        Ok(None)
    }
}
