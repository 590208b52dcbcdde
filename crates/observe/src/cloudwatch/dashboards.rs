//! PutDashboard, GetDashboard, ListDashboards, DeleteDashboards. The body is AWS's dashboard
//! JSON, checked for shape (an object with a `widgets` array of typed widgets).

use std::sync::Arc;

use fleetcore_api::RequestContext;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::now_secs;
use crate::error::{ObserveError, invalid};

/// Name to `{"body": ..., "modified": ...}`.
const DASHBOARDS: TableDefinition<&str, &[u8]> = TableDefinition::new("dashboards");

/// Widget types of AWS's dashboard body.
const WIDGET_TYPES: &[&str] = &["metric", "text", "log", "alarm", "explorer", "custom"];

/// The dashboards, stored in the observability database.
pub struct Dashboards {
    db: Arc<Database>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutInput {
    dashboard_name: Option<String>,
    dashboard_body: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetInput {
    dashboard_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListInput {
    dashboard_name_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteInput {
    #[serde(default)]
    dashboard_names: Vec<String>,
}

/// The problems of a dashboard body, as `(DataPath, Message)`.
pub fn validate(body: &str) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let value: Json = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return vec![(String::new(), format!("The body is not JSON: {e}"))],
    };
    let Some(widgets) = value.get("widgets") else {
        return vec![(
            String::new(),
            "Should have required property 'widgets'".into(),
        )];
    };
    let Some(widgets) = widgets.as_array() else {
        return vec![("/widgets".into(), "Should be array".into())];
    };
    for (i, widget) in widgets.iter().enumerate() {
        let path = format!("/widgets/{i}");
        let Some(w) = widget.as_object() else {
            problems.push((path, "Should be object".into()));
            continue;
        };
        match w.get("type").and_then(Json::as_str) {
            Some(t) if WIDGET_TYPES.contains(&t) => {}
            Some(t) => {
                problems.push((format!("{path}/type"), format!("Invalid widget type '{t}'")))
            }
            None => problems.push((path.clone(), "Should have required property 'type'".into())),
        }
        for field in ["x", "y", "width", "height"] {
            if let Some(v) = w.get(field)
                && v.as_u64().is_none_or(|n| n > 1000)
            {
                problems.push((
                    format!("{path}/{field}"),
                    "Should be a non-negative integer".into(),
                ));
            }
        }
        if w.get("type").and_then(Json::as_str) != Some("text")
            && w.get("properties").is_some_and(|p| !p.is_object())
        {
            problems.push((format!("{path}/properties"), "Should be object".into()));
        }
        if let Some(metrics) = w.get("properties").and_then(|p| p.get("metrics"))
            && !metrics.is_array()
        {
            problems.push((
                format!("{path}/properties/metrics"),
                "Should be array".into(),
            ));
        }
    }
    problems
}

fn name_of(name: Option<String>) -> Result<String, ObserveError> {
    let name =
        name.ok_or_else(|| ObserveError::MissingParameter("DashboardName is required.".into()))?;
    if name.is_empty()
        || name.len() > 255
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(
            "The dashboard name may hold A-Z, a-z, 0-9, '-' and '_' (1 to 255 characters).",
        ));
    }
    Ok(name)
}

impl Dashboards {
    /// The dashboards stored in `db`.
    pub fn open(db: Arc<Database>) -> Result<Dashboards, ObserveError> {
        let txn = db.begin_write()?;
        txn.open_table(DASHBOARDS)?;
        txn.commit()?;
        Ok(Dashboards { db })
    }

    /// PutDashboard: an invalid body is refused (InvalidParameterInput) with its messages.
    pub fn put(&self, input: PutInput) -> Result<Json, ObserveError> {
        let name = name_of(input.dashboard_name)?;
        let body = input
            .dashboard_body
            .ok_or_else(|| ObserveError::MissingParameter("DashboardBody is required.".into()))?;
        let problems = validate(&body);
        if !problems.is_empty() {
            return Err(ObserveError::InvalidDashboard(problems));
        }
        let record = json!({"body": body, "modified": now_secs().floor() as i64});
        let txn = self.db.begin_write()?;
        txn.open_table(DASHBOARDS)?
            .insert(name.as_str(), serde_json::to_vec(&record)?.as_slice())?;
        txn.commit()?;
        Ok(json!({"DashboardValidationMessages": []}))
    }

    fn record(&self, name: &str) -> Result<Option<Json>, ObserveError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DASHBOARDS)?;
        Ok(match table.get(name)? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    /// GetDashboard.
    pub fn get(&self, ctx: &RequestContext, input: GetInput) -> Result<Json, ObserveError> {
        let name = name_of(input.dashboard_name)?;
        let record = self
            .record(&name)?
            .ok_or_else(|| ObserveError::NotFound(format!("Dashboard {name} does not exist")))?;
        Ok(json!({
            "DashboardName": name,
            "DashboardArn": arn(ctx, &name),
            "DashboardBody": record["body"],
        }))
    }

    /// ListDashboards.
    pub fn list(&self, ctx: &RequestContext, input: ListInput) -> Result<Json, ObserveError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DASHBOARDS)?;
        let mut entries = Vec::new();
        for entry in table.iter()? {
            let (name, value) = entry?;
            let name = name.value();
            if input
                .dashboard_name_prefix
                .as_deref()
                .is_some_and(|p| !name.starts_with(p))
            {
                continue;
            }
            let record: Json = serde_json::from_slice(value.value())?;
            entries.push(json!({
                "DashboardName": name,
                "DashboardArn": arn(ctx, name),
                "LastModified": record["modified"],
                "Size": record["body"].as_str().map_or(0, str::len),
            }));
        }
        Ok(json!({ "DashboardEntries": entries }))
    }

    /// DeleteDashboards: all or none (a missing name fails the call).
    pub fn delete(&self, input: DeleteInput) -> Result<Json, ObserveError> {
        if input.dashboard_names.is_empty() {
            return Err(ObserveError::MissingParameter(
                "DashboardNames is required.".into(),
            ));
        }
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(DASHBOARDS)?;
            for name in &input.dashboard_names {
                if table.remove(name.as_str())?.is_none() {
                    return Err(ObserveError::NotFound(format!(
                        "Dashboard {name} does not exist"
                    )));
                }
            }
        }
        txn.commit()?;
        Ok(json!({}))
    }
}

fn arn(ctx: &RequestContext, name: &str) -> String {
    format!("arn:aws:cloudwatch::{}:dashboard/{name}", ctx.account_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked_for_shape() {
        assert!(
            validate(r#"{"widgets":[{"type":"metric","x":0,"y":0,"width":6,"height":6,"properties":{"metrics":[["AWS/IoT","PublishIn.Success"]]}}]}"#)
                .is_empty()
        );
        assert_eq!(
            validate("{}")[0].1,
            "Should have required property 'widgets'"
        );
        let problems = validate(r#"{"widgets":[{"type":"pie","x":-1}]}"#);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].0, "/widgets/0/type");
        assert!(!validate("nope").is_empty());
    }
}
