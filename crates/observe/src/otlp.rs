//! OpenTelemetry export of the platform's metrics: every interval, the registry (what
//! `/metrics` renders) is sent to an OTLP/HTTP receiver as one JSON `ExportMetricsServiceRequest`
//! (`POST <endpoint>/v1/metrics`, `application/json`). Counters and the `_sum` / `_count` of
//! summaries become cumulative monotonic sums, gauges gauges; labels become attributes.
//!
//! Hand-written rather than the `opentelemetry` + `opentelemetry-otlp` crates: none of them is in
//! the tree, they would add their SDK, `prost` and an HTTP stack to a 2-core CI build, while this
//! needs one JSON document and the `reqwest` client the rules and notify crates already build.
//! Traces go to the same receiver ([`crate::trace`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::task::JoinHandle;

use crate::Render;
use crate::cloudwatch::now_secs;
use crate::sampler::{Sample, parse_exposition};

/// Where and how often to export.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The receiver's base URL (`http://collector:4318`); `/v1/metrics` is appended.
    pub endpoint: String,
    /// Time between exports.
    pub interval: Duration,
    /// `service.instance.id` of the resource (the server's HTTP address, say).
    pub instance: String,
}

/// Checks an endpoint given in the configuration: an `http://` or `https://` URL.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    match reqwest::Url::parse(endpoint) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        Ok(_) => Err(format!(
            "the OTLP endpoint {endpoint} must be an http:// or https:// URL"
        )),
        Err(e) => Err(format!("the OTLP endpoint {endpoint} is not a URL: {e}")),
    }
}

fn nanos(secs: f64) -> String {
    format!("{}", (secs * 1e9) as u128)
}

fn attributes(labels: &BTreeMap<String, String>) -> Vec<Json> {
    labels
        .iter()
        .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}}))
        .collect()
}

/// The `ExportMetricsServiceRequest` of one reading of the registry.
pub fn request(samples: &[Sample], config: &OtlpConfig, start: f64, now: f64) -> Json {
    let mut metrics: BTreeMap<&str, (bool, Vec<Json>)> = BTreeMap::new();
    for s in samples {
        let point = if s.cumulative {
            json!({
                "attributes": attributes(&s.labels),
                "startTimeUnixNano": nanos(start),
                "timeUnixNano": nanos(now),
                "asDouble": s.value,
            })
        } else {
            json!({
                "attributes": attributes(&s.labels),
                "timeUnixNano": nanos(now),
                "asDouble": s.value,
            })
        };
        metrics
            .entry(s.name.as_str())
            .or_insert_with(|| (s.cumulative, Vec::new()))
            .1
            .push(point);
    }
    let metrics: Vec<Json> = metrics
        .into_iter()
        .map(|(name, (cumulative, points))| {
            if cumulative {
                // aggregationTemporality 2: AGGREGATION_TEMPORALITY_CUMULATIVE.
                json!({"name": name, "sum": {
                    "dataPoints": points, "aggregationTemporality": 2, "isMonotonic": true}})
            } else {
                json!({"name": name, "gauge": {"dataPoints": points}})
            }
        })
        .collect();
    json!({"resourceMetrics": [{
        "resource": {"attributes": resource_attributes(config)},
        "scopeMetrics": [{"scope": {"name": "fleetcore"}, "metrics": metrics}],
    }]})
}

/// The attributes of the resource (this server) metrics and spans are exported under.
pub fn resource_attributes(config: &OtlpConfig) -> Json {
    json!([
        {"key": "service.name", "value": {"stringValue": "fleetcore"}},
        {"key": "service.version", "value": {"stringValue": env!("CARGO_PKG_VERSION")}},
        {"key": "service.instance.id", "value": {"stringValue": config.instance}},
    ])
}

/// Starts exporting `render`'s registry to `config.endpoint` every `config.interval`. A failed
/// export is logged and counted (`fleetcore_observe_otlp_export_failures_total`); the next one
/// sends the cumulative values again, so nothing is lost but resolution.
pub fn start(config: OtlpConfig, render: Render) -> JoinHandle<()> {
    tokio::spawn(async move {
        let url = format!("{}/v1/metrics", config.endpoint.trim_end_matches('/'));
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "the OTLP exporter cannot build its HTTP client");
                return;
            }
        };
        let started = now_secs();
        let mut tick = tokio::time::interval(config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let body = request(&parse_exposition(&render()), &config, started, now_secs());
            let sent = client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string())
                .send()
                .await
                .and_then(reqwest::Response::error_for_status);
            if let Err(error) = sent {
                metrics::counter!("fleetcore_observe_otlp_export_failures_total").increment(1);
                tracing::warn!(%error, %url, "OTLP metrics export failed");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_become_cumulative_sums_and_gauges_gauges() {
        let text = "# TYPE fleetcore_a_total counter\nfleetcore_a_total{rule=\"r\"} 3\n\
                    # TYPE fleetcore_g gauge\nfleetcore_g 7\n";
        let config = OtlpConfig {
            endpoint: "http://x".into(),
            interval: Duration::from_secs(1),
            instance: "i".into(),
        };
        let body = request(&parse_exposition(text), &config, 1.0, 2.0);
        let metrics = &body["resourceMetrics"][0]["scopeMetrics"][0]["metrics"];
        assert_eq!(metrics[0]["name"], "fleetcore_a_total");
        let point = &metrics[0]["sum"]["dataPoints"][0];
        assert_eq!(point["asDouble"], 3.0);
        assert_eq!(point["startTimeUnixNano"], "1000000000");
        assert_eq!(point["attributes"][0]["key"], "rule");
        assert_eq!(metrics[0]["sum"]["isMonotonic"], true);
        assert_eq!(metrics[1]["gauge"]["dataPoints"][0]["asDouble"], 7.0);
        assert!(check_endpoint("http://127.0.0.1:4318").is_ok());
        assert!(check_endpoint("ftp://x").is_err() && check_endpoint("nope").is_err());
    }
}
