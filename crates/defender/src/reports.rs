//! Device-side metrics reports: devices publish AWS's report format on
//! `$aws/things/{thing}/defender/metrics/json` (or `/cbor`) and are answered on `.../accepted`
//! or `.../rejected` in the same format. A report is checked (header, the metrics sections'
//! shapes, custom metrics that exist with values of their type) and answered; behaviours on
//! device-side metrics are refused at create for now, so accepted reports are not evaluated.
//! Long field names only (`header.report_id`, `metrics.listening_tcp_ports`, ...).

use std::sync::Arc;

use bytes::Bytes;
use fleetcore_mqtt::broker::{Message, ServiceTap};
use serde_json::{Map, Value, json};

use crate::alerts::MqttPublisher;
use crate::metric::CustomMetricType;
use crate::service::Defender;
use crate::store::now;

/// The topics the reports tap claims.
pub const FILTERS: [&str; 2] = [
    "$aws/things/+/defender/metrics/json",
    "$aws/things/+/defender/metrics/cbor",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Cbor,
}

/// The broker tap that answers device metrics reports.
pub struct DeviceReports {
    defender: Arc<Defender>,
    replies: Arc<dyn MqttPublisher>,
}

impl DeviceReports {
    /// Answers reports through `replies`, checking custom metrics against `defender`.
    pub fn new(defender: Arc<Defender>, replies: Arc<dyn MqttPublisher>) -> DeviceReports {
        DeviceReports { defender, replies }
    }

    fn check(&self, report: &Value) -> Result<(), String> {
        let header = report.get("header").ok_or("header is required")?;
        header
            .get("report_id")
            .and_then(Value::as_u64)
            .ok_or("header.report_id must be a non-negative integer")?;
        if header.get("version").and_then(Value::as_str) != Some("1.0") {
            return Err("header.version must be \"1.0\"".into());
        }
        let metrics = report
            .get("metrics")
            .and_then(Value::as_object)
            .ok_or("metrics must be an object")?;
        for (name, section) in metrics {
            check_section(name, section)?;
        }
        if let Some(custom) = report.get("custom_metrics") {
            let custom = custom
                .as_object()
                .ok_or("custom_metrics must be an object")?;
            for (name, values) in custom {
                let record = self
                    .defender
                    .store()
                    .custom_metric(name)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("custom metric {name} does not exist"))?;
                let kind = CustomMetricType::parse(&record.metric_type)
                    .ok_or_else(|| format!("custom metric {name} has an unknown type"))?;
                check_custom(name, kind, values)?;
            }
        }
        Ok(())
    }
}

fn numbers(v: &Value, what: &str) -> Result<(), String> {
    match v {
        Value::Number(n) if n.as_u64().is_some() => Ok(()),
        _ => Err(format!("{what} must be a non-negative integer")),
    }
}

fn check_section(name: &str, section: &Value) -> Result<(), String> {
    let at = |field: &str| format!("metrics.{name}.{field}");
    match name {
        "listening_tcp_ports" | "listening_udp_ports" => {
            if let Some(ports) = section.get("ports") {
                for p in ports
                    .as_array()
                    .ok_or_else(|| format!("{} must be a list", at("ports")))?
                {
                    numbers(p.get("port").unwrap_or(&Value::Null), &at("ports[].port"))?;
                }
            }
            section
                .get("total")
                .map_or(Ok(()), |t| numbers(t, &at("total")))
        }
        "network_stats" => {
            for field in ["bytes_in", "bytes_out", "packets_in", "packets_out"] {
                if let Some(v) = section.get(field) {
                    numbers(v, &at(field))?;
                }
            }
            Ok(())
        }
        "tcp_connections" => {
            let established = section
                .get("established_connections")
                .ok_or_else(|| at("established_connections is required"))?;
            if let Some(list) = established.get("connections") {
                let list = list
                    .as_array()
                    .ok_or_else(|| at("established_connections.connections must be a list"))?;
                for c in list {
                    let remote = c.get("remote_addr").and_then(Value::as_str).unwrap_or("");
                    if remote.parse::<std::net::SocketAddr>().is_err() {
                        return Err(format!(
                            "{} {remote:?} is not an address:port",
                            at("established_connections.connections[].remote_addr")
                        ));
                    }
                }
            }
            established
                .get("total")
                .map_or(Ok(()), |t| numbers(t, &at("established_connections.total")))
        }
        other => Err(format!("metrics.{other} is not a device-side metric")),
    }
}

fn check_custom(name: &str, kind: CustomMetricType, values: &Value) -> Result<(), String> {
    let [value] = values.as_array().map(Vec::as_slice).unwrap_or_default() else {
        return Err(format!("custom_metrics.{name} must be a list of one value"));
    };
    let ok = match kind {
        CustomMetricType::Number => value.get("number").is_some_and(Value::is_number),
        CustomMetricType::NumberList => value
            .get("number_list")
            .and_then(Value::as_array)
            .is_some_and(|l| l.iter().all(Value::is_number)),
        CustomMetricType::StringList => value
            .get("string_list")
            .and_then(Value::as_array)
            .is_some_and(|l| l.iter().all(Value::is_string)),
        CustomMetricType::IpAddressList => value
            .get("ip_list")
            .and_then(Value::as_array)
            .is_some_and(|l| {
                l.iter().all(|ip| {
                    ip.as_str()
                        .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok())
                })
            }),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "custom_metrics.{name} is not a value of type {}",
            kind.as_str()
        ))
    }
}

fn decode(format: Format, payload: &[u8]) -> Result<Value, String> {
    match format {
        Format::Json => serde_json::from_slice(payload).map_err(|e| e.to_string()),
        Format::Cbor => ciborium::from_reader(payload).map_err(|e| e.to_string()),
    }
}

fn encode(format: Format, value: &Value) -> Bytes {
    match format {
        Format::Json => Bytes::from(value.to_string()),
        Format::Cbor => {
            let mut out = Vec::new();
            if let Err(e) = ciborium::into_writer(value, &mut out) {
                tracing::error!(error = %e, "encoding a CBOR report answer failed");
            }
            Bytes::from(out)
        }
    }
}

impl ServiceTap for DeviceReports {
    fn on_message(&self, message: &Arc<Message>) {
        let topic: &str = &message.topic;
        let Some(rest) = topic.strip_prefix("$aws/things/") else {
            return;
        };
        let Some((thing, format)) = rest.split_once("/defender/metrics/") else {
            return;
        };
        let format = match format {
            "json" => Format::Json,
            "cbor" => Format::Cbor,
            _ => return,
        };
        let (report_id, outcome) = match decode(format, &message.payload) {
            Ok(report) => (
                report
                    .get("header")
                    .and_then(|h| h.get("report_id"))
                    .cloned(),
                self.check(&report),
            ),
            Err(e) => (None, Err(format!("the report does not parse: {e}"))),
        };
        let mut answer = Map::new();
        answer.insert("thingName".into(), json!(thing));
        answer.insert("timestamp".into(), json!((now() * 1000.0) as u64));
        if let Some(id) = report_id {
            answer.insert("reportId".into(), id);
        }
        let suffix = match outcome {
            Ok(_) => {
                answer.insert("status".into(), json!("ACCEPTED"));
                "accepted"
            }
            Err(e) => {
                answer.insert("status".into(), json!("REJECTED"));
                answer.insert(
                    "statusDetails".into(),
                    json!({"ErrorCode": "Malformed.Report", "ErrorMessage": e}),
                );
                "rejected"
            }
        };
        let reply = format!("{topic}/{suffix}");
        if let Err(e) = self
            .replies
            .publish(&reply, encode(format, &Value::Object(answer)), 1)
        {
            tracing::warn!(topic = reply, error = %e, "could not answer a device metrics report");
        }
    }
}
