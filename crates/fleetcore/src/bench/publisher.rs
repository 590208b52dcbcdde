//! One publisher: paces PUBLISHes to its share of `--rate` (or as fast as the socket takes them),
//! keeps at most `--inflight` unacknowledged for QoS 1/2, and encodes many messages per write.
//!
//! The loop owns both halves of the connection and `select!`s between reading acks and writing
//! the batch buffer, so acks are consumed while a large write is pending and a QoS 2 PUBREL
//! joins the same buffer as the next publishes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fleetcore_mqtt::protocol::{self, Packet, PubAck, Publish, PublishProperties, QoS, Utf8};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::conn::{Link, reason_name, writable, write_or_flush, wrote};
use super::payload::{self, Stamp};

/// Stop adding messages once this many bytes wait to be written...
const HIGH_WATER: usize = 64 * 1024;
/// ...and start again below this.
const LOW_WATER: usize = 16 * 1024;
/// Read size for acks.
const READ_CHUNK: usize = 64 * 1024;

/// What one publisher does.
pub(crate) struct PublisherPlan {
    /// Index, `0..publishers`, carried in every payload.
    pub index: u32,
    /// Topic this publisher sends to.
    pub topic: String,
    /// QoS of every PUBLISH.
    pub qos: QoS,
    /// Payload size in bytes (>= the stamp header).
    pub size: usize,
    /// Messages per second for this publisher; 0 = as fast as possible.
    pub rate: f64,
    /// Offset in `[0, 1)` of this publisher's pacing schedule, so publishers do not burst together.
    pub phase: f64,
    /// Unacknowledged QoS 1/2 messages allowed at once (before the broker's Receive Maximum).
    pub inflight: u16,
    /// When to start publishing.
    pub start: Instant,
    /// When to stop publishing.
    pub stop: Instant,
    /// Give up waiting for acks at this point.
    pub drain_deadline: Instant,
    /// Run-wide count of messages sent, for progress display.
    pub sent_counter: Arc<AtomicU64>,
    /// Device mode: one packet per write call (a message is encoded only once the previous
    /// one is written).
    pub one_per_write: bool,
}

/// What one publisher did.
#[derive(Debug, Default, Clone)]
pub(crate) struct PublisherStats {
    /// Messages handed to the socket.
    pub sent: u64,
    /// QoS 1/2 messages the broker completed (PUBACK, or PUBCOMP for QoS 2) with success.
    pub acked: u64,
    /// QoS 1/2 messages the broker answered with a failure reason code.
    pub rejected: u64,
    /// QoS 1/2 messages still unacknowledged when the publisher gave up.
    pub unacked: u64,
    /// First failure reason code seen in an ack, if any.
    pub reject_reason: Option<u8>,
    /// Why the publisher stopped early, if it did.
    pub error: Option<String>,
}

/// Packet identifiers in use, with a cursor that hands out the next free one.
struct Window {
    in_use: Vec<bool>,
    next: u16,
    outstanding: usize,
    limit: usize,
}

impl Window {
    fn new(limit: usize) -> Window {
        Window {
            in_use: vec![false; 65536],
            next: 1,
            outstanding: 0,
            limit: limit.clamp(1, 65535),
        }
    }

    fn free_slots(&self) -> usize {
        self.limit - self.outstanding
    }

    /// Takes a free packet identifier; the caller checked `free_slots() > 0`, and since the
    /// limit is below 65,535 one always exists.
    fn take(&mut self) -> u16 {
        loop {
            let id = self.next;
            self.next = if id == u16::MAX { 1 } else { id + 1 };
            if !self.in_use[usize::from(id)] {
                self.in_use[usize::from(id)] = true;
                self.outstanding += 1;
                return id;
            }
        }
    }

    /// Frees `id`; false if it was not in use (a stray or repeated ack).
    fn release(&mut self, id: u16) -> bool {
        let slot = &mut self.in_use[usize::from(id)];
        if !*slot {
            return false;
        }
        *slot = false;
        self.outstanding -= 1;
        true
    }
}

/// Runs one publisher to completion on an established link.
pub(crate) async fn run(mut link: Link, plan: PublisherPlan) -> PublisherStats {
    let mut stats = PublisherStats::default();
    let broker_max = usize::from(link.connack.properties.receive_maximum.unwrap_or(u16::MAX));
    let mut window = Window::new(usize::from(plan.inflight).min(broker_max));
    let result = publish_loop(&mut link, &plan, &mut window, &mut stats).await;
    if plan.qos != QoS::AtMostOnce {
        stats.unacked = window.outstanding as u64;
    }
    match result {
        Ok(()) => link.close().await,
        Err(e) => stats.error = Some(format!("publisher {}: {e}", plan.index)),
    }
    stats
}

async fn publish_loop(
    link: &mut Link,
    plan: &PublisherPlan,
    window: &mut Window,
    stats: &mut PublisherStats,
) -> anyhow::Result<()> {
    let version = link.version;
    let acked_qos = plan.qos != QoS::AtMostOnce;
    let mut publish = Publish {
        dup: false,
        qos: plan.qos,
        retain: false,
        topic: Utf8::new(plan.topic.as_str()).unwrap_or_default(),
        packet_id: 0,
        properties: PublishProperties::default(),
        // One shared payload template: encoding copies it, and the stamp is patched in place.
        payload: Bytes::from(vec![0u8; plan.size]),
    };
    let keep_alive = keep_alive_interval(link.keep_alive);
    let mut wbuf = BytesMut::with_capacity(HIGH_WATER * 2);
    let mut needs_flush = false;
    let mut producing = true;
    let mut last_write = Instant::now();
    let timer = tokio::time::sleep_until(plan.start);
    tokio::pin!(timer);
    tokio::time::sleep_until(plan.start).await;

    loop {
        let now = Instant::now();
        // A paced publisher whose timer fired late still owes what fell due before the stop.
        let last_call = producing && now >= plan.stop;
        if last_call && plan.rate == 0.0 {
            producing = false;
        }
        if !producing && now >= plan.drain_deadline {
            if !wbuf.is_empty() {
                // The broker stopped reading: what is still buffered was never sent.
                let unsent = (wbuf.len() / publish.encoded_len(version).max(1)) as u64;
                stats.sent = stats.sent.saturating_sub(unsent);
                anyhow::bail!(
                    "{} bytes ({unsent} messages) still unwritten at the drain deadline: the broker stopped reading",
                    wbuf.len()
                );
            }
            break;
        }
        let room = if plan.one_per_write {
            wbuf.is_empty()
        } else {
            wbuf.len() < LOW_WATER
        };
        if producing && (room || last_call) {
            let mut allowed = if plan.rate > 0.0 {
                let elapsed = now.min(plan.stop) - plan.start;
                let due = elapsed.as_secs_f64() * plan.rate + plan.phase;
                (due as u64).saturating_sub(stats.sent)
            } else {
                u64::MAX
            };
            if acked_qos {
                allowed = allowed.min(window.free_slots() as u64);
            }
            allowed = allowed.min(payload::MAX_SEQ.saturating_sub(stats.sent));
            if allowed > 0 {
                let stamp_ns = payload::now_ns();
                let mut batch = 0u64;
                let most = if plan.one_per_write { 1 } else { allowed };
                while batch < allowed.min(most) && wbuf.len() < HIGH_WATER {
                    publish.packet_id = if acked_qos { window.take() } else { 0 };
                    publish.encode(version, &mut wbuf);
                    // The payload is the last thing in a PUBLISH.
                    let at = wbuf.len() - plan.size;
                    Stamp {
                        sent_ns: stamp_ns,
                        publisher: plan.index,
                        seq: stats.sent,
                    }
                    .write(&mut wbuf[at..]);
                    stats.sent += 1;
                    batch += 1;
                }
                plan.sent_counter.fetch_add(batch, Ordering::Relaxed);
            }
        }
        if last_call {
            producing = false;
        }
        if keep_alive.is_some_and(|ka| wbuf.is_empty() && now >= last_write + ka) {
            protocol::encode(&Packet::PingReq, version, &mut wbuf);
        }
        if !producing && wbuf.is_empty() && !needs_flush && window.outstanding == 0 {
            break;
        }

        // The timer is always armed: a broker that stops reading must not keep us past the end
        // of the run or the drain. The paced and keep-alive wake-ups only count while nothing
        // waits to be written (a pending write wakes us itself; a past deadline would spin).
        let mut wake = if producing {
            plan.stop
        } else {
            plan.drain_deadline
        };
        if wbuf.is_empty() {
            if producing && plan.rate > 0.0 && (!acked_qos || window.free_slots() > 0) {
                let next = (stats.sent + 1) as f64 - plan.phase;
                let due = plan.start + Duration::from_secs_f64((next / plan.rate).max(0.0));
                wake = wake.min(due);
            }
            if let Some(ka) = keep_alive {
                wake = wake.min(last_write + ka);
            }
        }
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }

        // Acks first: each one frees window for the next write.
        tokio::select! {
            biased;
            read = link.rd.read_buf(&mut link.rbuf) => {
                if read? == 0 {
                    anyhow::bail!("the broker closed the connection");
                }
                handle_acks(link, window, &mut wbuf, stats)?;
                link.rbuf.reserve(READ_CHUNK);
            }
            io = write_or_flush(&mut link.wr, writable(&wbuf, plan.one_per_write)), if !wbuf.is_empty() || needs_flush => {
                wrote(io?, &mut wbuf, &mut needs_flush, &mut last_write)?;
            }
            () = &mut timer => {}
        }
    }
    Ok(())
}

/// Decodes every complete packet in the read buffer and settles the window; QoS 2 PUBRELs are
/// queued behind the pending publishes.
fn handle_acks(
    link: &mut Link,
    window: &mut Window,
    wbuf: &mut BytesMut,
    stats: &mut PublisherStats,
) -> anyhow::Result<()> {
    while let Some(packet) = link.decode()? {
        match packet {
            Packet::PubAck(ack) | Packet::PubComp(ack) if window.release(ack.packet_id) => {
                settle(stats, ack.reason);
            }
            Packet::PubRec(ack) => {
                if ack.reason < 0x80 {
                    let rel = PubAck {
                        packet_id: ack.packet_id,
                        ..PubAck::default()
                    };
                    protocol::encode(&Packet::PubRel(rel), link.version, wbuf);
                } else if window.release(ack.packet_id) {
                    // A failed PUBREC ends the QoS 2 exchange (MQTT 5 §4.3.3).
                    settle(stats, ack.reason);
                }
            }
            Packet::Disconnect(d) => anyhow::bail!(
                "the broker disconnected with reason {:#04x} ({})",
                d.reason,
                reason_name(d.reason)
            ),
            _ => {}
        }
    }
    Ok(())
}

fn settle(stats: &mut PublisherStats, reason: u8) {
    if reason >= 0x80 {
        stats.rejected += 1;
        stats.reject_reason.get_or_insert(reason);
    } else {
        stats.acked += 1;
    }
}

/// How long the connection may stay silent before we ping: three quarters of the keep-alive.
pub(crate) fn keep_alive_interval(keep_alive: u16) -> Option<Duration> {
    (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 750))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_hands_out_distinct_ids_and_wraps() {
        let mut w = Window::new(3);
        assert_eq!((w.take(), w.take(), w.take()), (1, 2, 3));
        assert_eq!(w.free_slots(), 0);
        assert!(w.release(2));
        assert!(!w.release(2), "a repeated ack frees nothing");
        assert_eq!(w.take(), 4);
        assert!(w.release(4));
        assert!(w.release(3));
        w.next = u16::MAX;
        assert_eq!(w.take(), u16::MAX);
        assert!(w.release(u16::MAX));
        // Wraps past 0 (not a packet id) and skips 1, still in use.
        assert_eq!(w.take(), 2);
        assert_eq!(w.outstanding, 2);
    }

    #[test]
    fn keep_alive_pings_early() {
        assert_eq!(keep_alive_interval(0), None);
        assert_eq!(keep_alive_interval(60), Some(Duration::from_secs(45)));
    }
}
