//! `aws_cloudwatch_dashboard`: PutDashboard (an upsert), DeleteDashboards.

use serde_json::{Value, json};

use super::{ResourceType, found, gone, opt_s, pick, s};
use crate::api::{Api, ApiError};
use crate::schema::{Arg, Schema};

pub struct Dashboard;

/// The type.
pub static TYPE: Dashboard = Dashboard;

static SCHEMA: Schema = Schema {
    args: &[
        Arg::required("dashboard_name").force_new(),
        Arg::required("dashboard_body"),
    ],
    blocks: &[],
    computed: &["dashboard_arn", "id"],
};

async fn call(api: &Api, op: &str, body: Value) -> Result<Value, ApiError> {
    api.json_rpc(
        "monitoring",
        "GraniteServiceVersion20100801",
        "1.0",
        op,
        &body,
    )
    .await
}

async fn put(api: &Api, args: &Value) -> Result<Value, ApiError> {
    let name = s(args, "dashboard_name");
    call(
        api,
        "PutDashboard",
        json!({"DashboardName": name, "DashboardBody": s(args, "dashboard_body")}),
    )
    .await?;
    let out = call(api, "GetDashboard", json!({"DashboardName": name})).await?;
    Ok(json!({"dashboard_arn": opt_s(&out, "DashboardArn").unwrap_or_default(), "id": name}))
}

#[async_trait::async_trait]
impl ResourceType for Dashboard {
    fn name(&self) -> &'static str {
        "aws_cloudwatch_dashboard"
    }
    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
    fn validate(&self, args: &Value) -> Result<(), String> {
        serde_json::from_str::<Value>(s(args, "dashboard_body"))
            .map(|_| ())
            .map_err(|e| format!("dashboard_body is not JSON: {e}"))
    }
    async fn create(&self, api: &Api, args: &Value) -> Result<Value, ApiError> {
        put(api, args).await
    }
    async fn read(&self, api: &Api, args: &Value, _: &Value) -> Result<Option<Value>, ApiError> {
        let answer = found(
            call(
                api,
                "GetDashboard",
                json!({"DashboardName": s(args, "dashboard_name")}),
            )
            .await,
        )?;
        Ok(answer.map(|a| pick(&a, &[("dashboard_body", "/DashboardBody")])))
    }
    async fn update(
        &self,
        api: &Api,
        _: &Value,
        args: &Value,
        _: &Value,
    ) -> Result<Value, ApiError> {
        put(api, args).await
    }
    async fn delete(&self, api: &Api, args: &Value, _: &Value) -> Result<(), ApiError> {
        gone(
            call(
                api,
                "DeleteDashboards",
                json!({"DashboardNames": [s(args, "dashboard_name")]}),
            )
            .await,
        )
    }
}
