//! The results of a run, printed as a table for people or as one JSON object for scripts
//! (`--json`), plus the broker memory probe they may include.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Latency {
    pub samples: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// Summarises a histogram whose values are `unit_ns` nanoseconds each; `None` if empty.
    pub(crate) fn from_histogram(h: &Histogram<u64>, unit_ns: f64) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let us = |v: u64| round1(v as f64 * unit_ns / 1000.0);
        Some(Latency {
            samples: h.len(),
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: round1(h.mean() * unit_ns / 1000.0),
        })
    }
}

/// Resident memory of the broker process, from `/proc/PID/status`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BrokerMemory {
    pub pid: u32,
    /// Before the first connection.
    pub before_kib: u64,
    /// Once every connection was up.
    pub connected_kib: u64,
    /// At the end of the run, before disconnecting.
    pub end_kib: u64,
    /// `(connected - before) / connections`.
    pub per_connection_kib: f64,
}

impl BrokerMemory {
    pub(crate) fn new(
        pid: u32,
        before_kib: u64,
        connected_kib: u64,
        end_kib: u64,
        connections: u64,
    ) -> Self {
        let growth = connected_kib as f64 - before_kib as f64;
        BrokerMemory {
            pid,
            before_kib,
            connected_kib,
            end_kib,
            per_connection_kib: round2(growth / connections.max(1) as f64),
        }
    }
}

/// VmRSS of `pid`, in KiB.
pub(crate) fn read_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| {
        format!("cannot read {path} (is --broker-pid {pid} a running process?)")
    })?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS line in {path}"))
}

/// Extracts the `VmRSS:   1234 kB` figure.
pub(crate) fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let value = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

/// Results of a publish/subscribe run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PubSubReport {
    pub mode: &'static str,
    /// `device` (one packet per write call) or `batch`.
    pub writes: &'static str,
    pub broker: String,
    pub protocol: &'static str,
    pub tls: bool,
    pub qos: u8,
    pub publishers: u32,
    pub subscribers: u32,
    pub size: usize,
    pub topic: String,
    pub filter: String,
    /// Target total rate, messages/s; 0 = unlimited.
    pub rate_target: u64,
    /// Publishing time, seconds.
    pub duration_s: f64,
    pub sent: u64,
    pub sent_per_s: f64,
    pub sent_mb_per_s: f64,
    /// QoS 1/2: messages acknowledged with success.
    pub acked: u64,
    /// QoS 1/2: messages the broker refused in its ack.
    pub rejected: u64,
    /// The first failure reason code in an ack, e.g. `0x87 (not authorized)`.
    pub reject_reason: Option<String>,
    /// QoS 1/2: messages still unacknowledged at the end of the drain.
    pub unacked: u64,
    /// Deliveries owed to subscribers: sent on a matching topic x matching subscriptions.
    pub expected: u64,
    /// Distinct messages delivered, over all subscribers.
    pub received: u64,
    pub received_per_s: f64,
    pub received_mb_per_s: f64,
    pub loss_pct: f64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Deliveries that were not this run's bench messages.
    pub foreign: u64,
    /// Seconds spent after publishing waiting for acks and deliveries.
    pub drain_s: f64,
    /// Publish-to-delivery latency, microseconds.
    pub latency_us: Option<Latency>,
    pub broker_memory: Option<BrokerMemory>,
    /// Connections that failed during the run; the command exits non-zero if any did.
    pub errors: Vec<String>,
}

/// Results of an idle-connections run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IdleReport {
    pub mode: &'static str,
    pub broker: String,
    pub protocol: &'static str,
    pub tls: bool,
    pub connections: u64,
    pub connected: u64,
    pub failed: u64,
    /// Failures by kind (`refused`, `timeout`, `connack_refused`, ...).
    pub failures: BTreeMap<&'static str, u64>,
    pub first_error: Option<String>,
    /// Seconds from the first connect to the last CONNACK.
    pub ramp_s: f64,
    pub connects_per_s: f64,
    /// Connect + handshake + CONNACK time per connection, microseconds.
    pub connect_latency_us: Option<Latency>,
    /// Seconds the connections were held.
    pub hold_s: f64,
    /// Connections the broker closed while held.
    pub dropped: u64,
    pub broker_memory: Option<BrokerMemory>,
}

/// Either kind of result.
pub(crate) enum Report {
    PubSub(PubSubReport),
    Idle(IdleReport),
}

impl Report {
    /// Prints the result to stdout as a table or as one JSON line.
    pub(crate) fn print(&self, json: bool) -> anyhow::Result<()> {
        let text = if json {
            match self {
                Report::PubSub(r) => serde_json::to_string(r)?,
                Report::Idle(r) => serde_json::to_string(r)?,
            }
        } else {
            match self {
                Report::PubSub(r) => r.table(),
                Report::Idle(r) => r.table(),
            }
        };
        println!("{text}");
        Ok(())
    }
}

/// Builds an aligned two-column table.
struct Table(String);

impl Table {
    fn row(&mut self, label: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "  {label:<22} {value}");
    }

    fn latency(&mut self, label: &str, l: &Option<Latency>) {
        match l {
            None => self.row(label, "no samples"),
            Some(l) => self.row(
                label,
                format_args!(
                    "p50 {} | p90 {} | p99 {} | p99.9 {} | max {} | mean {} µs",
                    l.p50, l.p90, l.p99, l.p999, l.max, l.mean
                ),
            ),
        }
    }

    fn memory(&mut self, m: &Option<BrokerMemory>) {
        if let Some(m) = m {
            self.row(
                "broker RSS",
                format_args!(
                    "pid {}: {} KiB before, {} KiB connected, {} KiB at end",
                    m.pid, m.before_kib, m.connected_kib, m.end_kib
                ),
            );
            self.row(
                "RSS per connection",
                format_args!("{} KiB", m.per_connection_kib),
            );
        }
    }
}

impl PubSubReport {
    fn table(&self) -> String {
        let mut t = Table(format!(
            "fleetcore bench: {} -> {} (MQTT {}{}, QoS {}, {} B payload)\n",
            self.publishers,
            self.subscribers,
            self.protocol,
            if self.tls { " over TLS" } else { "" },
            self.qos,
            self.size
        ));
        t.row("broker", &self.broker);
        t.row(
            "writes",
            if self.writes == "batch" {
                "batched (many packets per write)"
            } else {
                "device (one packet per write, TCP_NODELAY)"
            },
        );
        t.row(
            "topic / filter",
            format_args!("{} / {}", self.topic, self.filter),
        );
        let rate = if self.rate_target == 0 {
            "unlimited".to_owned()
        } else {
            format!("{} msg/s", self.rate_target)
        };
        t.row("target rate", rate);
        t.row(
            "duration",
            format_args!("{:.2} s (+ {:.2} s drain)", self.duration_s, self.drain_s),
        );
        t.row(
            "sent",
            format_args!(
                "{} msgs, {:.0} msg/s, {:.2} MB/s",
                self.sent, self.sent_per_s, self.sent_mb_per_s
            ),
        );
        if self.qos > 0 {
            t.row(
                "acked",
                format_args!(
                    "{} ({} rejected, {} unacked)",
                    self.acked, self.rejected, self.unacked
                ),
            );
        }
        if let Some(reason) = &self.reject_reason {
            t.row("first refusal", format_args!("reason {reason}"));
        }
        t.row(
            "received",
            format_args!(
                "{} msgs, {:.0} msg/s, {:.2} MB/s",
                self.received, self.received_per_s, self.received_mb_per_s
            ),
        );
        t.row("expected", self.expected);
        t.row("loss", format_args!("{:.3} %", self.loss_pct));
        t.row("duplicates", self.duplicates);
        t.row("out of order", self.out_of_order);
        if self.foreign > 0 {
            t.row("foreign deliveries", self.foreign);
        }
        t.latency("latency", &self.latency_us);
        t.memory(&self.broker_memory);
        for e in &self.errors {
            t.row("error", e);
        }
        t.0.trim_end().to_owned()
    }
}

impl IdleReport {
    fn table(&self) -> String {
        let mut t = Table(format!(
            "fleetcore bench: {} idle connections (MQTT {}{})\n",
            self.connections,
            self.protocol,
            if self.tls { " over TLS" } else { "" }
        ));
        t.row("broker", &self.broker);
        t.row(
            "connected",
            format_args!("{} of {}", self.connected, self.connections),
        );
        if self.failed > 0 {
            let kinds: Vec<String> = self
                .failures
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            t.row(
                "failed",
                format_args!("{} ({})", self.failed, kinds.join(", ")),
            );
            if let Some(e) = &self.first_error {
                t.row("first error", e);
            }
        }
        t.row(
            "ramp",
            format_args!(
                "{:.2} s, {:.0} connections/s",
                self.ramp_s, self.connects_per_s
            ),
        );
        t.latency("connect latency", &self.connect_latency_us);
        t.row(
            "held",
            format_args!(
                "{:.2} s, {} dropped by the broker",
                self.hold_s, self.dropped
            ),
        );
        t.memory(&self.broker_memory);
        t.0.trim_end().to_owned()
    }
}

/// Rounds to one decimal, for readable JSON.
pub(crate) fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Rounds to two decimals.
pub(crate) fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_parsing() {
        let status = "Name:\tmosquitto\nVmPeak:\t   20000 kB\nVmRSS:\t    6144 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss(status), Some(6144));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
        assert!(read_rss_kib(std::process::id()).is_ok_and(|kib| kib > 0));
    }

    #[test]
    fn memory_per_connection() {
        let m = BrokerMemory::new(1, 1000, 3000, 3100, 1000);
        assert_eq!(m.per_connection_kib, 2.0);
        // Memory may shrink (the allocator returned pages): negative growth is reported as is.
        assert_eq!(
            BrokerMemory::new(1, 1000, 900, 900, 0).per_connection_kib,
            -100.0
        );
    }

    #[test]
    fn latency_in_microseconds() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in [10_000u64, 20_000, 30_000] {
            h.record(v).unwrap();
        }
        let l = Latency::from_histogram(&h, 1.0).unwrap();
        assert_eq!(l.samples, 3);
        assert_eq!(l.p50, 20.0);
        assert_eq!(l.max, 30.0);
        assert!(Latency::from_histogram(&Histogram::<u64>::new(3).unwrap(), 1.0).is_none());
    }
}
