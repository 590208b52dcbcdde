//! One simulated device: its own certificate over mTLS, telemetry every second on
//! `devices/<thing>/telemetry` (now and then above the alert threshold, stamped with its send
//! time `sent_ms`), and answers to its
//! shadow's deltas on `devices/<thing>/shadow/update` (the reference stack's rule forwards them
//! into the shadow).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::{Buf, BytesMut};
use fleetcore_mqtt::protocol::{self, Packet, PubAck, Publish, PublishProperties, QoS, Utf8};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use crate::bench::conn::{Target, write_or_flush};

/// Counters the status line reads.
#[derive(Default)]
pub struct FleetCounters {
    /// Devices with an open connection.
    pub connected: AtomicU64,
    /// Telemetry messages published.
    pub telemetry: AtomicU64,
    /// Of those, readings above the threshold.
    pub breaches: AtomicU64,
    /// Shadow deltas answered.
    pub deltas: AtomicU64,
    /// Connection failures (each retried after a pause).
    pub failures: AtomicU64,
}

/// Runs one device until `stop` turns true, reconnecting after a failure.
pub async fn run(
    target: Arc<Target>,
    thing: String,
    index: u64,
    threshold: f64,
    counters: Arc<FleetCounters>,
    mut stop: watch::Receiver<bool>,
) {
    // Spread the devices over the first second, so 50 do not publish in lock step.
    let offset = Duration::from_millis((index * 37) % 1000);
    tokio::select! {
        _ = tokio::time::sleep(offset) => {}
        _ = stop.changed() => return,
    }
    while !*stop.borrow() {
        let result = tokio::select! {
            r = session(&target, &thing, index, threshold, &counters) => r,
            _ = stop.changed() => return,
        };
        if let Err(e) = result {
            counters.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(thing, error = %format!("{e:#}"), "demo device disconnected; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// A small deterministic generator (no dependency for a demo's noise).
fn next_random(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state % 10_000) as f64 / 10_000.0
}

async fn session(
    target: &Target,
    thing: &str,
    index: u64,
    threshold: f64,
    counters: &FleetCounters,
) -> anyhow::Result<()> {
    let mut link = target.connect(thing, None, 64 * 1024).await?;
    let delta_topic = format!("$aws/things/{thing}/shadow/update/delta");
    link.subscribe(&delta_topic, QoS::AtLeastOnce, Duration::from_secs(10))
        .await?;
    counters.connected.fetch_add(1, Ordering::Relaxed);
    let result = publish_loop(&mut link, thing, index, threshold, counters).await;
    counters.connected.fetch_sub(1, Ordering::Relaxed);
    result
}

async fn publish_loop(
    link: &mut crate::bench::conn::Link,
    thing: &str,
    index: u64,
    threshold: f64,
    counters: &FleetCounters,
) -> anyhow::Result<()> {
    let telemetry = Utf8::new(format!("devices/{thing}/telemetry")).context("topic")?;
    let shadow = Utf8::new(format!("devices/{thing}/shadow/update")).context("topic")?;
    let mut random = 0x9E37_79B9_7F4A_7C15_u64 ^ (index + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
    let mut packet_id: u16 = 0;
    let mut wbuf = BytesMut::with_capacity(4096);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_id = move || {
        packet_id = packet_id.checked_add(1).unwrap_or(1);
        packet_id
    };
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // About one reading in 25 is a breach.
                let breach = next_random(&mut random) < 0.04;
                let base = threshold - 10.0 + next_random(&mut random) * 6.0;
                let temperature = if breach { threshold + 5.0 + next_random(&mut random) * 5.0 } else { base };
                // `sent_ms` (Unix ms) lets a reader of the stream or the lake measure latency.
                let sent_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                let payload = format!(
                    r#"{{"temperature":{temperature:.1},"humidity":{:.1},"battery":{:.2},"sent_ms":{sent_ms}}}"#,
                    40.0 + next_random(&mut random) * 20.0,
                    0.5 + next_random(&mut random) / 2.0
                );
                let publish = Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: telemetry.clone(),
                    packet_id: next_id(),
                    properties: PublishProperties::default(),
                    payload: payload.into_bytes().into(),
                });
                protocol::encode(&publish, link.version, &mut wbuf);
                counters.telemetry.fetch_add(1, Ordering::Relaxed);
                if breach {
                    counters.breaches.fetch_add(1, Ordering::Relaxed);
                }
            }
            n = write_or_flush(&mut link.wr, &wbuf), if !wbuf.is_empty() => {
                let n = n?;
                wbuf.advance(n);
            }
            read = link.rd.read_buf(&mut link.rbuf) => {
                if read? == 0 {
                    anyhow::bail!("the server closed the connection");
                }
                while let Some(packet) = link.decode()? {
                    let Packet::Publish(p) = packet else { continue };
                    if p.qos == QoS::AtLeastOnce {
                        protocol::encode(&Packet::PubAck(PubAck { packet_id: p.packet_id, ..PubAck::default() }), link.version, &mut wbuf);
                    }
                    // A delta: report the desired state as reached.
                    let Ok(delta) = serde_json::from_slice::<serde_json::Value>(&p.payload) else { continue };
                    let Some(state) = delta.get("state") else { continue };
                    let answer = serde_json::json!({"state": {"reported": state}});
                    let publish = Packet::Publish(Publish {
                        dup: false,
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        topic: shadow.clone(),
                        packet_id: next_id(),
                        properties: PublishProperties::default(),
                        payload: answer.to_string().into_bytes().into(),
                    });
                    protocol::encode(&publish, link.version, &mut wbuf);
                    counters.deltas.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
