//! Device-side metrics reports: devices publish AWS's report format on
//! `$aws/things/{thing}/defender/metrics/json` (or `/cbor`) and are answered on `.../accepted`
//! or `.../rejected` in the same format. A report is checked (header, the metrics sections'
//! shapes, custom metrics that exist with values of their type) and answered; an accepted
//! report's measurements go to the detector's inbox and are evaluated at the end of the period.
//! Long field names only (`header.report_id`, `metrics.listening_tcp_ports`, ...).

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use fleetcore_mqtt::broker::{Message, ServiceTap};
use serde_json::{Map, Value, json};

use crate::alerts::MqttPublisher;
use crate::device_metrics::{CustomValue, DeviceSample};
use crate::metric::{CustomMetricType, DeviceMetric};
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

    /// Checks `report` and reads what it measures, or says what is wrong with it.
    fn read(&self, report: &Value) -> Result<DeviceSample, String> {
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
        let mut sample = DeviceSample::default();
        for (name, section) in metrics {
            read_section(name, section, &mut sample)?;
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
                sample
                    .custom
                    .insert(name.clone(), read_custom(name, kind, values)?);
            }
        }
        Ok(sample)
    }
}

fn count(v: &Value, what: &str) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| format!("{what} must be a non-negative integer"))
}

fn read_ports(name: &str, section: &Value) -> Result<(Vec<u16>, u64), String> {
    let at = |field: &str| format!("metrics.{name}.{field}");
    let mut ports = Vec::new();
    if let Some(list) = section.get("ports") {
        for p in list
            .as_array()
            .ok_or_else(|| format!("{} must be a list", at("ports")))?
        {
            let port = p.get("port").and_then(Value::as_u64);
            match port.and_then(|p| u16::try_from(p).ok()) {
                Some(port) => ports.push(port),
                None => return Err(format!("{} must be a port number", at("ports[].port"))),
            }
        }
    }
    let total = match section.get("total") {
        Some(t) => count(t, &at("total"))?,
        None => ports.len() as u64,
    };
    Ok((ports, total))
}

fn read_section(name: &str, section: &Value, sample: &mut DeviceSample) -> Result<(), String> {
    let at = |field: &str| format!("metrics.{name}.{field}");
    match name {
        "listening_tcp_ports" => {
            let (ports, total) = read_ports(name, section)?;
            sample.counts[DeviceMetric::NumListeningTcpPorts.index()] = Some(total);
            sample.tcp_ports = Some(ports);
            Ok(())
        }
        "listening_udp_ports" => {
            let (ports, total) = read_ports(name, section)?;
            sample.counts[DeviceMetric::NumListeningUdpPorts.index()] = Some(total);
            sample.udp_ports = Some(ports);
            Ok(())
        }
        "network_stats" => {
            for (field, metric) in [
                ("bytes_in", DeviceMetric::BytesIn),
                ("bytes_out", DeviceMetric::BytesOut),
                ("packets_in", DeviceMetric::PacketsIn),
                ("packets_out", DeviceMetric::PacketsOut),
            ] {
                if let Some(v) = section.get(field) {
                    sample.counts[metric.index()] = Some(count(v, &at(field))?);
                }
            }
            Ok(())
        }
        "tcp_connections" => {
            let established = section
                .get("established_connections")
                .ok_or_else(|| at("established_connections is required"))?;
            let mut destinations = Vec::new();
            if let Some(list) = established.get("connections") {
                let list = list
                    .as_array()
                    .ok_or_else(|| at("established_connections.connections must be a list"))?;
                for c in list {
                    let remote = c.get("remote_addr").and_then(Value::as_str).unwrap_or("");
                    let Ok(address) = remote.parse::<std::net::SocketAddr>() else {
                        return Err(format!(
                            "{} {remote:?} is not an address:port",
                            at("established_connections.connections[].remote_addr")
                        ));
                    };
                    if !destinations.contains(&address.ip()) {
                        destinations.push(address.ip());
                    }
                }
            }
            let total = match established.get("total") {
                Some(t) => count(t, &at("established_connections.total"))?,
                None => destinations.len() as u64,
            };
            sample.counts[DeviceMetric::NumEstablishedTcpConnections.index()] = Some(total);
            sample.destinations = Some(destinations);
            Ok(())
        }
        other => Err(format!("metrics.{other} is not a device-side metric")),
    }
}

fn read_custom(name: &str, kind: CustomMetricType, values: &Value) -> Result<CustomValue, String> {
    let [value] = values.as_array().map(Vec::as_slice).unwrap_or_default() else {
        return Err(format!("custom_metrics.{name} must be a list of one value"));
    };
    let list = |field: &str| value.get(field).and_then(Value::as_array);
    let read = match kind {
        CustomMetricType::Number => value
            .get("number")
            .and_then(Value::as_f64)
            .map(CustomValue::Number),
        CustomMetricType::NumberList => list("number_list")
            .and_then(|l| l.iter().map(Value::as_f64).collect::<Option<Vec<_>>>())
            .map(CustomValue::Numbers),
        CustomMetricType::StringList => list("string_list")
            .and_then(|l| {
                l.iter()
                    .map(|s| s.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            })
            .map(CustomValue::Strings),
        CustomMetricType::IpAddressList => list("ip_list")
            .and_then(|l| {
                l.iter()
                    .map(|ip| ip.as_str().and_then(|s| s.parse::<IpAddr>().ok()))
                    .collect::<Option<Vec<_>>>()
            })
            .map(CustomValue::Addresses),
    };
    read.ok_or_else(|| {
        format!(
            "custom_metrics.{name} is not a value of type {}",
            kind.as_str()
        )
    })
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
                self.read(&report),
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
            Ok(sample) => {
                self.defender.reports().add(thing, sample);
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
