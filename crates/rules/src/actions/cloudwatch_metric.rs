//! `cloudwatchMetric`: stores one metric value per message through the `CloudWatchSink` seam
//! (implemented by the observability capability). Every member is a substitution template, as
//! in AWS; a value that is not a number, or a bad unit, fails the message (errorAction).

use std::sync::Arc;

use async_trait::async_trait;
use fleetcore_core::{CloudWatchSink, MetricValue};

use super::{Action, ActionSpec, Destinations, Members, Prepared};
use crate::sql::Template;

/// The members of a cloudwatchMetric action, as templates:
/// `[namespace, name, value, unit, timestamp?]`.
pub(super) struct CloudWatchMetricSpec {
    templates: Vec<Template>,
}

impl ActionSpec for CloudWatchMetricSpec {
    const KIND: &'static str = "cloudwatchMetric";

    fn parse(members: &Members<'_>) -> Result<CloudWatchMetricSpec, String> {
        let mut templates = vec![
            members.required_template("metricNamespace")?,
            members.required_template("metricName")?,
            members.required_template("metricValue")?,
            members.required_template("metricUnit")?,
        ];
        templates.extend(members.template("metricTimestamp")?);
        Ok(CloudWatchMetricSpec { templates })
    }

    fn start(self, destinations: &Destinations) -> Result<Arc<dyn Action>, String> {
        let sink = destinations
            .cloudwatch
            .clone()
            .ok_or_else(|| "this server runs no CloudWatch".to_string())?;
        Ok(Arc::new(CloudWatchMetric { sink, spec: self }))
    }
}

/// The cloudwatchMetric action.
struct CloudWatchMetric {
    sink: Arc<dyn CloudWatchSink>,
    spec: CloudWatchMetricSpec,
}

fn metric(params: &[String]) -> Result<MetricValue, String> {
    let [namespace, name, value, unit, rest @ ..] = params else {
        return Err("the action's parameters are incomplete".into());
    };
    let value: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("metricValue '{value}' is not a number"))?;
    // AWS takes the timestamp in epoch seconds.
    let timestamp = match rest.first() {
        Some(t) if !t.is_empty() => Some(
            t.trim()
                .parse::<f64>()
                .map_err(|_| format!("metricTimestamp '{t}' is not epoch seconds"))?,
        ),
        _ => None,
    };
    Ok(MetricValue {
        namespace: namespace.clone(),
        name: name.clone(),
        value,
        unit: Some(unit.clone()).filter(|u| !u.is_empty()),
        timestamp,
    })
}

#[async_trait]
impl Action for CloudWatchMetric {
    fn name(&self) -> &'static str {
        "CloudwatchMetricAction"
    }

    fn resource(&self, params: &[String]) -> String {
        match params {
            [namespace, name, ..] => format!("{namespace}/{name}"),
            _ => String::new(),
        }
    }

    fn templates(&self) -> &[Template] {
        &self.spec.templates
    }

    async fn deliver(&self, items: &[Prepared]) -> Vec<Result<(), String>> {
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            let outcome = match metric(&item.params) {
                Ok(m) => self.sink.put_metric(m).await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            outcomes.push(outcome);
        }
        outcomes
    }
}
