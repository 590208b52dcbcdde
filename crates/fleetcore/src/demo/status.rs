//! The demo's conversation with the server besides its devices: what the status line reads
//! (detector and alarm states by ListDetectors and ListAlarms, Device Defender's active
//! violations, the alerts SNS delivered) and the operator's desired-state changes
//! (UpdateThingShadow) that the devices answer.

use std::collections::BTreeMap;
use std::fmt::Write;

use fleetcore_stack::Api;
use fleetcore_stack::api::label;
use hyper::Method;
use serde_json::Value;

/// The names the reference stack gave the resources the status line reads.
pub struct Watched {
    /// The detector model (`detector_model` output).
    pub detector_model: String,
    /// The alarm model (`alarm_model` output).
    pub alarm_model: String,
    /// The security profile (`security_profile` output).
    pub security_profile: String,
}

/// How many detectors (or alarms) are in each state, over every page of `path`.
async fn states(
    api: &Api,
    operation: &str,
    path: &str,
    list: &str,
    state: &str,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = match &token {
            Some(t) => format!("{path}?maxResults=250&nextToken={}", label(t)),
            None => format!("{path}?maxResults=250"),
        };
        let out = api
            .rest("ioteventsdata", operation, Method::GET, &page, None)
            .await?;
        for item in out
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = item
                .pointer(state)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            *counts.entry(name).or_insert(0) += 1;
        }
        token = out
            .get("nextToken")
            .and_then(Value::as_str)
            .map(str::to_string);
        if token.is_none() {
            return Ok(counts);
        }
    }
}

fn show(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "none yet".to_string();
    }
    let mut out = String::new();
    for (state, n) in counts {
        let _ = write!(out, "{}{state} {n}", if out.is_empty() { "" } else { ", " });
    }
    out
}

/// `detectors Normal 45, Overheating 5 | alarms ACTIVE 5, NORMAL 45 | violations 0`, with
/// `?` for a part the server did not answer.
pub async fn line(api: &Api, watched: &Watched) -> String {
    let detectors = states(
        api,
        "ListDetectors",
        &format!("/detectors/{}", label(&watched.detector_model)),
        "detectorSummaries",
        "/state/stateName",
    )
    .await
    .map(|c| show(&c))
    .unwrap_or_else(|_| "?".to_string());
    let alarms = states(
        api,
        "ListAlarms",
        &format!("/alarms/{}", label(&watched.alarm_model)),
        "alarmSummaries",
        "/stateName",
    )
    .await
    .map(|c| show(&c))
    .unwrap_or_else(|_| "?".to_string());
    let violations = api
        .rest(
            "iot",
            "ListActiveViolations",
            Method::GET,
            &format!(
                "/active-violations?securityProfileName={}&maxResults=250",
                label(&watched.security_profile)
            ),
            None,
        )
        .await
        .ok()
        .and_then(|out| out.get("activeViolations")?.as_array().map(Vec::len))
        .map_or_else(|| "?".to_string(), |n| n.to_string());
    format!("detectors {detectors} | alarms {alarms} | defender violations {violations}")
}

/// The alerts SNS delivered (every protocol), from `/metrics` text.
pub fn alerts_delivered(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("fleetcore_sns_deliveries_total") && l.contains("outcome=\"delivered\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Sets `thing`'s desired `report_interval_s` (UpdateThingShadow), as an operator would; the
/// device sees the delta and reports the value back.
pub async fn set_desired(api: &Api, thing: &str, interval: u64) -> anyhow::Result<()> {
    let body = serde_json::json!({"state": {"desired": {"report_interval_s": interval}}});
    api.rest(
        "iotdata",
        "UpdateThingShadow",
        Method::POST,
        &format!("/things/{}/shadow", label(thing)),
        Some(&body),
    )
    .await?;
    Ok(())
}
