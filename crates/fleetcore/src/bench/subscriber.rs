//! One subscriber: reads with a large buffer, acknowledges QoS 1/2 deliveries in batches and
//! checks every bench message against what its publisher sent: latency from the embedded send
//! time, duplicates and reordering from the embedded sequence.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use fleetcore_mqtt::protocol::{self, Packet, PubAck, QoS};
use hdrhistogram::Histogram;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::conn::{Link, reason_name, writable, write_or_flush, wrote};
use super::payload::{self, Stamp};
use super::publisher::keep_alive_interval;

/// Bytes reserved before each read: a few hundred deliveries per syscall under load, without
/// making a thousand-subscriber fan-out cost gigabytes here.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// A sequence further than this past what a stream has seen is not trusted (it would make the
/// seen-set allocate); such a message is counted as foreign. 2^26 messages is 8 MiB of bits.
const MAX_SEQ_JUMP: u64 = 1 << 26;

/// What one subscriber does.
pub(crate) struct SubscriberPlan {
    /// Number of publishers, to tell bench messages from foreign ones.
    pub publishers: u32,
    /// Becomes `true` when the run is over.
    pub stop: watch::Receiver<bool>,
    /// Run-wide count of first deliveries, to end the drain early and show progress.
    pub received_counter: Arc<AtomicU64>,
    /// Device mode: one packet (an acknowledgement) per write call.
    pub one_per_write: bool,
}

/// What one subscriber saw.
#[derive(Debug, Clone)]
pub(crate) struct SubscriberStats {
    /// Bench messages delivered, duplicates included.
    pub received: u64,
    /// Distinct bench messages delivered.
    pub unique: u64,
    /// Deliveries of a (publisher, sequence) already seen.
    pub duplicates: u64,
    /// First deliveries that arrived after a later message of the same publisher.
    pub out_of_order: u64,
    /// Deliveries that are not bench messages of this run.
    pub foreign: u64,
    /// Payload bytes of bench messages delivered.
    pub bytes: u64,
    /// Publish-to-delivery latency of first deliveries, in nanoseconds.
    pub latency_ns: Histogram<u64>,
    /// When the last bench message arrived.
    pub last_delivery: Option<Instant>,
    /// Why the subscriber stopped early, if it did.
    pub error: Option<String>,
}

impl Default for SubscriberStats {
    fn default() -> Self {
        SubscriberStats {
            received: 0,
            unique: 0,
            duplicates: 0,
            out_of_order: 0,
            foreign: 0,
            bytes: 0,
            latency_ns: new_latency_histogram(),
            last_delivery: None,
            error: None,
        }
    }
}

/// An auto-resizing histogram with 3 significant digits: memory grows with the largest value
/// seen, not with a guessed bound.
pub(crate) fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures is within hdrhistogram's 0..=5")
}

/// How a delivery relates to what its stream delivered before.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// First delivery, no later message seen yet.
    InOrder,
    /// First delivery, but a later message of the stream came before it.
    OutOfOrder,
    /// Seen before.
    Duplicate,
    /// Sequence implausibly far ahead: not trusted.
    Implausible,
}

/// Which sequences of one publisher's stream were delivered.
#[derive(Debug, Default)]
pub(crate) struct StreamTrack {
    seen: Vec<u64>,
    next: u64,
}

impl StreamTrack {
    /// Records a delivery of `seq`.
    pub(crate) fn observe(&mut self, seq: u64) -> Arrival {
        if seq >= self.next.saturating_add(MAX_SEQ_JUMP) {
            return Arrival::Implausible;
        }
        let word = usize::try_from(seq / 64).unwrap_or(usize::MAX);
        if word >= self.seen.len() {
            let want = (word + 1).max(self.seen.len() * 2);
            self.seen.resize(want, 0);
        }
        let bit = 1u64 << (seq % 64);
        if self.seen[word] & bit != 0 {
            return Arrival::Duplicate;
        }
        self.seen[word] |= bit;
        if seq < self.next {
            Arrival::OutOfOrder
        } else {
            self.next = seq + 1;
            Arrival::InOrder
        }
    }
}

/// Runs one subscriber until told to stop.
pub(crate) async fn run(mut link: Link, mut plan: SubscriberPlan) -> SubscriberStats {
    let mut stats = SubscriberStats::default();
    let mut streams: Vec<StreamTrack> = (0..plan.publishers)
        .map(|_| StreamTrack::default())
        .collect();
    if let Err(e) = receive_loop(&mut link, &mut plan, &mut streams, &mut stats).await {
        stats.error = Some(e.to_string());
        return stats;
    }
    link.close().await;
    stats
}

async fn receive_loop(
    link: &mut Link,
    plan: &mut SubscriberPlan,
    streams: &mut [StreamTrack],
    stats: &mut SubscriberStats,
) -> anyhow::Result<()> {
    let keep_alive = keep_alive_interval(link.keep_alive);
    let mut wbuf = BytesMut::with_capacity(16 * 1024);
    let mut needs_flush = false;
    let mut last_write = Instant::now();
    let far = Instant::now() + std::time::Duration::from_secs(86_400 * 365);
    let timer = tokio::time::sleep_until(far);
    tokio::pin!(timer);
    if *plan.stop.borrow() {
        return Ok(());
    }
    loop {
        if let Some(ka) = keep_alive.filter(|_| wbuf.is_empty()) {
            let ping_at = last_write + ka;
            if Instant::now() >= ping_at {
                protocol::encode(&Packet::PingReq, link.version, &mut wbuf);
            } else if timer.deadline() != ping_at {
                timer.as_mut().reset(ping_at);
            }
        }
        // Armed only while nothing waits to be written, so a blocked write cannot spin on it.
        let timer_armed = keep_alive.is_some() && wbuf.is_empty();
        link.rbuf.reserve(READ_CHUNK);
        // The stop first, so a flood cannot hold it off; then acks before more reading, so the
        // broker's in-flight window keeps moving.
        tokio::select! {
            biased;
            changed = plan.stop.changed() => {
                if changed.is_err() || *plan.stop.borrow() {
                    return Ok(());
                }
            }
            io = write_or_flush(&mut link.wr, writable(&wbuf, plan.one_per_write)), if !wbuf.is_empty() || needs_flush => {
                wrote(io?, &mut wbuf, &mut needs_flush, &mut last_write)?;
            }
            read = link.rd.read_buf(&mut link.rbuf) => {
                if read? == 0 {
                    anyhow::bail!("the broker closed the connection");
                }
                let fresh = deliver(link, &mut wbuf, streams, stats)?;
                if fresh > 0 {
                    plan.received_counter.fetch_add(fresh, Ordering::Relaxed);
                }
            }
            () = &mut timer, if timer_armed => {}
        }
    }
}

/// Handles every complete packet in the read buffer; returns the number of first deliveries.
fn deliver(
    link: &mut Link,
    wbuf: &mut BytesMut,
    streams: &mut [StreamTrack],
    stats: &mut SubscriberStats,
) -> anyhow::Result<u64> {
    // One clock read per socket read: everything in it arrived together.
    let now_ns = payload::now_ns();
    let mut fresh = 0;
    let mut delivered = false;
    while let Some(packet) = link.decode()? {
        match packet {
            Packet::Publish(publish) => {
                match publish.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => {
                        let ack = PubAck {
                            packet_id: publish.packet_id,
                            ..PubAck::default()
                        };
                        protocol::encode(&Packet::PubAck(ack), link.version, wbuf);
                    }
                    QoS::ExactlyOnce => {
                        let ack = PubAck {
                            packet_id: publish.packet_id,
                            ..PubAck::default()
                        };
                        protocol::encode(&Packet::PubRec(ack), link.version, wbuf);
                    }
                }
                let stamp =
                    Stamp::read(&publish.payload).filter(|s| s.publisher < streams.len() as u32);
                let Some(stamp) = stamp else {
                    stats.foreign += 1;
                    continue;
                };
                let arrival = streams[stamp.publisher as usize].observe(stamp.seq);
                if arrival == Arrival::Implausible {
                    stats.foreign += 1;
                    continue;
                }
                stats.received += 1;
                stats.bytes += publish.payload.len() as u64;
                delivered = true;
                match arrival {
                    Arrival::Duplicate => stats.duplicates += 1,
                    Arrival::InOrder | Arrival::OutOfOrder => {
                        if arrival == Arrival::OutOfOrder {
                            stats.out_of_order += 1;
                        }
                        stats.unique += 1;
                        fresh += 1;
                        let _ = stats
                            .latency_ns
                            .record(now_ns.saturating_sub(stamp.sent_ns));
                    }
                    Arrival::Implausible => {}
                }
            }
            Packet::PubRel(rel) => {
                let comp = PubAck {
                    packet_id: rel.packet_id,
                    ..PubAck::default()
                };
                protocol::encode(&Packet::PubComp(comp), link.version, wbuf);
            }
            Packet::Disconnect(d) => anyhow::bail!(
                "the broker disconnected with reason {:#04x} ({})",
                d.reason,
                reason_name(d.reason)
            ),
            _ => {}
        }
    }
    if delivered {
        stats.last_delivery = Some(Instant::now());
    }
    Ok(fresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream() {
        let mut t = StreamTrack::default();
        for seq in 0..200 {
            assert_eq!(t.observe(seq), Arrival::InOrder);
        }
    }

    #[test]
    fn gaps_reordering_and_duplicates() {
        let mut t = StreamTrack::default();
        assert_eq!(t.observe(0), Arrival::InOrder);
        assert_eq!(
            t.observe(2),
            Arrival::InOrder,
            "a gap is loss so far, not reordering"
        );
        assert_eq!(t.observe(1), Arrival::OutOfOrder);
        assert_eq!(t.observe(1), Arrival::Duplicate);
        assert_eq!(t.observe(2), Arrival::Duplicate);
        assert_eq!(t.observe(130), Arrival::InOrder);
        assert_eq!(t.observe(64), Arrival::OutOfOrder);
        assert_eq!(t.observe(130), Arrival::Duplicate);
    }

    #[test]
    fn implausible_jump_allocates_nothing() {
        let mut t = StreamTrack::default();
        assert_eq!(t.observe(payload::MAX_SEQ), Arrival::Implausible);
        assert!(t.seen.is_empty());
        assert_eq!(t.observe(MAX_SEQ_JUMP - 1), Arrival::InOrder);
    }

    #[test]
    fn latency_histogram_grows_on_demand() {
        let mut h = new_latency_histogram();
        h.record(25_000).unwrap();
        h.record(3_000_000_000).unwrap();
        assert_eq!(h.len(), 2);
        assert!(h.max() >= 3_000_000_000);
    }
}
