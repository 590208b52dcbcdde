//! Dataset contents: CreateDatasetContent runs the dataset's SQL over every datastore in the
//! background (state CREATING), writes the rows as `datasets/<dataset>/<version>.csv` and marks
//! the version SUCCEEDED, or FAILED with the engine's message. The CSV is downloaded from
//! `/iotanalytics/contents/<token>` on the HTTP port, the token (random, per version) standing in
//! for a presigned URL's signature. Versions kept: `versioningConfiguration.maxVersions` of
//! them, all when `unlimited`, else (AWS's default) the latest and the latest succeeded.
//! A query action's `deltaTime` filter reads only the rows whose time expression falls after
//! the previous successful content's window, up to the run time plus `offsetSeconds` (a
//! negative offset leaves late messages to the next window); the first window has no start.
//! A content that succeeds starts the contents of the datasets it triggers.

use std::path::PathBuf;
use std::sync::Arc;

use crate::Analytics;
use crate::error::AnalyticsError;
use crate::model::{ContentRecord, ContentState, DatasetRecord, now_seconds};
use crate::query;
use serde_json::Value;

/// The `deltaTime` filter of a dataset action, checked: (offsetSeconds, timeExpression).
pub(crate) fn delta_of(action: &Value) -> Result<Option<(i64, String)>, String> {
    let filters = match action.pointer("/queryAction/filters") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(f)) => f,
        Some(_) => return Err("queryAction.filters must be a list".into()),
    };
    let delta = match filters.as_slice() {
        [] => return Ok(None),
        [filter] => filter
            .get("deltaTime")
            .ok_or("the only filter this server (and AWS) knows is deltaTime")?,
        _ => return Err("queryAction.filters holds at most one deltaTime".into()),
    };
    let offset = delta
        .get("offsetSeconds")
        .and_then(Value::as_i64)
        .ok_or("deltaTime.offsetSeconds must be a whole number of seconds")?;
    let expression = delta
        .get("timeExpression")
        .and_then(Value::as_str)
        .filter(|e| !e.trim().is_empty())
        .ok_or("deltaTime.timeExpression must be an expression giving the time of a row")?;
    Ok(Some((offset, expression.to_string())))
}

/// The names of the datasets in `triggers` whose contents trigger a content.
pub(crate) fn dataset_triggers(triggers: &[Value]) -> Vec<String> {
    triggers
        .iter()
        .filter_map(|t| t.pointer("/dataset/name")?.as_str().map(str::to_string))
        .collect()
}

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
        let window = self.window(dataset).map_err(|e| e.to_string())?;
        let batches = query::run_in(&tables, &dataset.sql, window.as_ref())
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
        .map_err(|e| format!("writing the content: {e}"))?;
        if let Some(window) = window {
            self.catalog
                .put("delta", &dataset.name, &window.end_ms)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The delta window of the dataset's next content, if its action has a `deltaTime`.
    fn window(&self, dataset: &DatasetRecord) -> Result<Option<query::Window>, AnalyticsError> {
        let Some((offset, expression)) = dataset
            .actions
            .first()
            .and_then(|a| delta_of(a).ok().flatten())
        else {
            return Ok(None);
        };
        Ok(Some(query::Window {
            expression,
            start_ms: self.catalog.get("delta", &dataset.name)?,
            end_ms: crate::retention::now_ms() + offset * 1000,
        }))
    }

    fn finish_content(
        self: &Arc<Self>,
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
        self.prune_versions(dataset)?;
        if content.state == ContentState::Succeeded {
            for follower in self.datasets()? {
                if dataset_triggers(&follower.triggers).contains(&dataset.name) {
                    self.create_content(&follower.name)?;
                }
            }
        }
        Ok(())
    }

    /// Deletes the versions `versioningConfiguration` does not keep.
    fn prune_versions(&self, dataset: &DatasetRecord) -> Result<(), AnalyticsError> {
        if dataset.versioning.get("unlimited").and_then(Value::as_bool) == Some(true) {
            return Ok(());
        }
        let contents = self.contents(&dataset.name)?;
        let keep: Vec<&str> = match dataset
            .versioning
            .get("maxVersions")
            .and_then(Value::as_u64)
        {
            Some(max) => contents
                .iter()
                .take(max as usize)
                .map(|c| c.version.as_str())
                .collect(),
            None => contents
                .first()
                .into_iter()
                .chain(contents.iter().find(|c| c.state == ContentState::Succeeded))
                .map(|c| c.version.as_str())
                .collect(),
        };
        for old in contents
            .iter()
            .filter(|c| !keep.contains(&c.version.as_str()) && c.state != ContentState::Creating)
        {
            self.delete_content(&dataset.name, Some(&old.version))?;
        }
        Ok(())
    }

    /// Deletes the versions of every dataset older than its `retentionPeriod` (90 days when
    /// none was given, as AWS keeps them), as of `now` (epoch seconds).
    pub(crate) fn expire_contents(&self, now: f64) -> Result<(), AnalyticsError> {
        for dataset in self.datasets()? {
            if dataset.retention.get("unlimited").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let days = crate::retention::days(&dataset.retention).unwrap_or(90);
            let cutoff = now - days as f64 * 86_400.0;
            for old in self
                .contents(&dataset.name)?
                .iter()
                .filter(|c| c.created < cutoff && c.state != ContentState::Creating)
            {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::model::ContentState;
    use crate::resources::NewDataset;
    use crate::test_support::analytics;

    #[tokio::test]
    async fn versions_and_retention_of_contents() {
        let (analytics, _dir) = analytics();
        let new = |name: &str, versioning| NewDataset {
            name: name.into(),
            actions: vec![
                json!({"actionName": "q", "queryAction": {"sqlQuery": "SELECT 1 AS one"}}),
            ],
            versioning,
            retention: json!({"numberOfDays": 2}),
            ..Default::default()
        };
        analytics
            .create_dataset(new("two", json!({"maxVersions": 2})), Default::default())
            .unwrap();
        analytics
            .create_dataset(new("default", serde_json::Value::Null), Default::default())
            .unwrap();
        for _ in 0..3 {
            for name in ["two", "default"] {
                analytics.create_content(name).unwrap();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                while analytics.content(name, None).unwrap().state == ContentState::Creating {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the content never finished"
                    );
                    tokio::task::yield_now().await;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        }
        assert_eq!(analytics.contents("two").unwrap().len(), 2);
        assert_eq!(analytics.contents("default").unwrap().len(), 1);
        let now = crate::model::now_seconds();
        analytics.expire_contents(now + 86_400.0).unwrap();
        assert_eq!(analytics.contents("two").unwrap().len(), 2);
        analytics.expire_contents(now + 3.0 * 86_400.0).unwrap();
        assert!(analytics.contents("two").unwrap().is_empty());
        assert!(analytics.contents("default").unwrap().is_empty());
    }
}
