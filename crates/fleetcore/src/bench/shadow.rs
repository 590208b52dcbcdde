//! `fleetcore bench --shadow`: device-shadow load. Each publisher is a device with a thing of
//! its own (`<prefix>-t<i>`); it subscribes to its classic shadow's
//! `$aws/things/<thing>/shadow/update/{accepted,rejected,delta}` and sends
//! updates that change `desired` and `reported` (`{"desired":{"seq":n},"reported":{"seq":n-1}}`),
//! so every accepted update also produces a delta. Up to `--inflight` updates per device are
//! outstanding (sent, not yet answered on `/accepted` or `/rejected`).
//!
//! Reported: updates sent, accepted and rejected (by code) per second, end to end (publish to
//! `/accepted` received), and the latency from publish to `/update/accepted` and to
//! `/update/delta`, read from the `clientToken` (the send time) the service echoes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::{Buf, BytesMut};
use fleetcore_mqtt::protocol::{self, Packet, PubAck, Publish, PublishProperties, QoS, Utf8};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::conn::{Link, Target, write_or_flush};
use super::report::{Latency, round1};
use super::{BenchArgs, Plan, connect_all};

/// What the run measured.
#[derive(Debug, Serialize)]
pub(crate) struct ShadowReport {
    pub mode: &'static str,
    pub broker: String,
    pub devices: u32,
    pub inflight: u32,
    pub rate_target: u64,
    pub duration_s: f64,
    pub sent: u64,
    pub accepted: u64,
    pub accepted_per_s: f64,
    pub rejected: u64,
    pub rejected_by_code: BTreeMap<u16, u64>,
    pub unanswered: u64,
    pub deltas: u64,
    pub update_to_accepted_us: Option<Latency>,
    pub update_to_delta_us: Option<Latency>,
    pub errors: Vec<String>,
}

impl ShadowReport {
    fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
            return Ok(());
        }
        println!(
            "shadow updates against {} ({} devices, {} in flight each)",
            self.broker, self.devices, self.inflight
        );
        println!(
            "  sent            {:>12} over {:.1} s",
            self.sent, self.duration_s
        );
        println!(
            "  accepted        {:>12} ({:.1}/s)",
            self.accepted, self.accepted_per_s
        );
        println!(
            "  rejected        {:>12} {:?}",
            self.rejected, self.rejected_by_code
        );
        println!("  unanswered      {:>12}", self.unanswered);
        println!("  deltas          {:>12}", self.deltas);
        for (label, l) in [
            ("update->accepted", &self.update_to_accepted_us),
            ("update->delta", &self.update_to_delta_us),
        ] {
            if let Some(l) = l {
                println!(
                    "  {label:<16} p50 {} us  p90 {} us  p99 {} us  p99.9 {} us  max {} us",
                    l.p50, l.p90, l.p99, l.p999, l.max
                );
            }
        }
        for e in &self.errors {
            println!("  error: {e}");
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "clientToken")]
    client_token: Option<String>,
    code: Option<u16>,
}

#[derive(Default)]
struct DeviceStats {
    sent: u64,
    accepted: u64,
    rejected: BTreeMap<u16, u64>,
    outstanding: u64,
    deltas: u64,
    accepted_ns: Option<Histogram<u64>>,
    delta_ns: Option<Histogram<u64>>,
    error: Option<String>,
}

fn histogram() -> Histogram<u64> {
    super::subscriber::new_latency_histogram()
}

struct DevicePlan {
    thing: String,
    inflight: u64,
    /// Seconds between updates of this device; 0 = as fast as the window allows.
    interval: f64,
    base: Instant,
    start: Instant,
    stop: Instant,
    drain_deadline: Instant,
    accepted_counter: Arc<AtomicU64>,
}

/// Runs the shadow scenario and prints its report.
pub(crate) async fn run(
    args: &BenchArgs,
    plan: &Plan,
    target: Arc<Target>,
    broker: String,
) -> anyhow::Result<()> {
    let prefix = plan.client_prefix.clone();
    let timeout = target.connect_timeout;
    let thing = move |i: u32| format!("{prefix}-t{i}");
    let thing_of = thing.clone();
    let devices = connect_all(
        &target,
        args.publishers,
        args.connect_concurrency,
        thing,
        Some(u16::MAX),
        64 * 1024,
        |link: Link| async move { Ok(link) },
    )
    .await
    .context("a device could not connect")?;
    let mut subscribed = Vec::with_capacity(devices.len());
    for (i, mut link) in (0u32..).zip(devices) {
        // What a device listens to: its answers and its delta (not `/documents`, which is for
        // applications).
        for answer in ["accepted", "rejected", "delta"] {
            let filter = format!("$aws/things/{}/shadow/update/{answer}", thing_of(i));
            link.subscribe(&filter, QoS::AtLeastOnce, timeout)
                .await
                .with_context(|| format!("subscribing to {filter}"))?;
        }
        subscribed.push(link);
    }

    let base = Instant::now();
    let start = base + Duration::from_millis(20);
    let stop = start + plan.duration;
    let drain_deadline = stop + plan.drain;
    let interval = if args.rate == 0 {
        0.0
    } else {
        f64::from(args.publishers) / args.rate as f64
    };
    let accepted_counter = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for (i, link) in (0u32..).zip(subscribed) {
        let device = DevicePlan {
            thing: thing_of(i),
            inflight: u64::from(args.inflight.max(1)),
            interval,
            base,
            start: start
                + Duration::from_secs_f64(
                    interval * f64::from(i) / f64::from(args.publishers).max(1.0),
                ),
            stop,
            drain_deadline,
            accepted_counter: Arc::clone(&accepted_counter),
        };
        tasks.spawn(device_loop(link, device));
    }
    let mut accepted_ns = histogram();
    let mut delta_ns = histogram();
    let mut report = ShadowReport {
        mode: "shadow",
        broker,
        devices: args.publishers,
        inflight: args.inflight,
        rate_target: args.rate,
        duration_s: plan.duration.as_secs_f64(),
        sent: 0,
        accepted: 0,
        accepted_per_s: 0.0,
        rejected: 0,
        rejected_by_code: BTreeMap::new(),
        unanswered: 0,
        deltas: 0,
        update_to_accepted_us: None,
        update_to_delta_us: None,
        errors: Vec::new(),
    };
    while let Some(joined) = tasks.join_next().await {
        let s = joined.context("device task failed")?;
        report.sent += s.sent;
        report.accepted += s.accepted;
        for (code, n) in s.rejected {
            report.rejected += n;
            *report.rejected_by_code.entry(code).or_default() += n;
        }
        report.unanswered += s.outstanding;
        report.deltas += s.deltas;
        if let Some(h) = &s.accepted_ns {
            accepted_ns.add(h).context("merging histograms")?;
        }
        if let Some(h) = &s.delta_ns {
            delta_ns.add(h).context("merging histograms")?;
        }
        if let Some(e) = s.error {
            report.errors.push(e);
        }
    }
    report.accepted_per_s = round1(report.accepted as f64 / report.duration_s);
    report.update_to_accepted_us = Latency::from_histogram(&accepted_ns, 1.0);
    report.update_to_delta_us = Latency::from_histogram(&delta_ns, 1.0);
    report.print(args.json)?;
    anyhow::ensure!(
        report.errors.is_empty(),
        "{} device(s) failed during the run",
        report.errors.len()
    );
    Ok(())
}

fn elapsed_ns(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One device: keeps up to `inflight` updates outstanding (or paces them at `interval`), reads
/// the answers, acknowledges QoS 1 deliveries, and records latencies from the echoed tokens.
async fn device_loop(mut link: Link, plan: DevicePlan) -> DeviceStats {
    let mut stats = DeviceStats {
        accepted_ns: Some(histogram()),
        delta_ns: Some(histogram()),
        ..DeviceStats::default()
    };
    if let Err(e) = drive(&mut link, &plan, &mut stats).await {
        stats.error = Some(format!("{}: {e}", plan.thing));
    }
    link.close().await;
    stats
}

async fn drive(link: &mut Link, plan: &DevicePlan, stats: &mut DeviceStats) -> anyhow::Result<()> {
    let topic = Utf8::new(format!("$aws/things/{}/shadow/update", plan.thing)).context("topic")?;
    let accepted_topic = format!("$aws/things/{}/shadow/update/accepted", plan.thing);
    let rejected_topic = format!("$aws/things/{}/shadow/update/rejected", plan.thing);
    let delta_topic = format!("$aws/things/{}/shadow/update/delta", plan.thing);
    let mut wbuf = BytesMut::with_capacity(64 * 1024);
    let mut packet_id: u16 = 0;
    let mut seq: u64 = 0;
    let mut next_send = plan.start;
    tokio::time::sleep_until(plan.start).await;
    loop {
        let now = Instant::now();
        if now >= plan.drain_deadline || (now >= plan.stop && stats.outstanding == 0) {
            return Ok(());
        }
        while now < plan.stop
            && stats.outstanding < plan.inflight
            && (plan.interval == 0.0 || now >= next_send)
            && wbuf.len() < 32 * 1024
        {
            seq += 1;
            packet_id = packet_id.checked_add(1).unwrap_or(1);
            let payload = format!(
                r#"{{"state":{{"desired":{{"seq":{seq}}},"reported":{{"seq":{}}}}},"clientToken":"{}"}}"#,
                seq - 1,
                elapsed_ns(plan.base)
            );
            let publish = Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: topic.clone(),
                packet_id,
                properties: PublishProperties::default(),
                payload: payload.into_bytes().into(),
            });
            protocol::encode(&publish, link.version, &mut wbuf);
            stats.sent += 1;
            stats.outstanding += 1;
            if plan.interval > 0.0 {
                next_send += Duration::from_secs_f64(plan.interval);
            }
        }
        let wake = if now >= plan.stop {
            plan.drain_deadline
        } else if plan.interval > 0.0 && stats.outstanding < plan.inflight {
            next_send
        } else {
            plan.stop
        };
        link.rbuf.reserve(64 * 1024);
        tokio::select! {
            n = write_or_flush(&mut link.wr, &wbuf), if !wbuf.is_empty() => {
                let n = n?;
                wbuf.advance(n);
            }
            read = link.rd.read_buf(&mut link.rbuf) => {
                if read? == 0 {
                    anyhow::bail!("the broker closed the connection");
                }
                while let Some(packet) = link.decode()? {
                    let Packet::Publish(p) = packet else { continue };
                    if p.qos == QoS::AtLeastOnce {
                        protocol::encode(&Packet::PubAck(PubAck { packet_id: p.packet_id, ..PubAck::default() }), link.version, &mut wbuf);
                    }
                    let at = elapsed_ns(plan.base);
                    let Ok(answer) = serde_json::from_slice::<Answer>(&p.payload) else { continue };
                    let sent_at = answer.client_token.and_then(|t| t.parse::<u64>().ok());
                    let topic = p.topic.as_str();
                    if topic == accepted_topic {
                        stats.accepted += 1;
                        stats.outstanding = stats.outstanding.saturating_sub(1);
                        plan.accepted_counter.fetch_add(1, Ordering::Relaxed);
                        if let (Some(h), Some(t)) = (stats.accepted_ns.as_mut(), sent_at) {
                            let _ = h.record(at.saturating_sub(t).max(1_000));
                        }
                    } else if topic == rejected_topic {
                        *stats.rejected.entry(answer.code.unwrap_or(0)).or_default() += 1;
                        stats.outstanding = stats.outstanding.saturating_sub(1);
                    } else if topic == delta_topic {
                        stats.deltas += 1;
                        if let (Some(h), Some(t)) = (stats.delta_ns.as_mut(), sent_at) {
                            let _ = h.record(at.saturating_sub(t).max(1_000));
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}
