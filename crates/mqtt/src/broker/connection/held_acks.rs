//! Acknowledgements held back until the ingest log made their messages durable, sent in the
//! order of their PUBLISH packets.

use std::collections::VecDeque;

use tokio::sync::watch;

use super::Connection;
use crate::protocol::Packet;

/// Acknowledgements waiting for the ingest log (ticket 0: nothing to wait for, only order to
/// keep).
pub(super) struct HeldAcks {
    queue: VecDeque<(u64, Packet)>,
    watermark: watch::Receiver<u64>,
}

impl HeldAcks {
    /// Nothing held yet; `watermark` is the ingest log's durable ticket.
    pub(super) fn new(watermark: watch::Receiver<u64>) -> HeldAcks {
        HeldAcks {
            queue: VecDeque::with_capacity(4),
            watermark,
        }
    }

    /// Holds `ack` behind every acknowledgement held before it.
    pub(super) fn push(&mut self, ticket: u64, ack: Packet) {
        self.queue.push_back((ticket, ack));
    }

    /// Acknowledgements held.
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Moves the acknowledgements whose messages are durable now into `ready`, in order.
    /// True when none is left held.
    pub(super) fn take_durable(&mut self, ready: &mut Vec<Packet>) -> bool {
        let durable = *self.watermark.borrow_and_update();
        while self
            .queue
            .front()
            .is_some_and(|(ticket, _)| *ticket <= durable)
        {
            if let Some((_, ack)) = self.queue.pop_front() {
                ready.push(ack);
            }
        }
        self.queue.is_empty()
    }
}

/// Resolves when the ingest watermark moves; never, when nothing is held or the log is gone
/// (held acknowledgements then stay unsent: they were never made durable).
pub(super) async fn watermark_moved(held: &mut Option<Box<HeldAcks>>) {
    match held {
        Some(h) => {
            if h.watermark.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

impl Connection {
    /// Sends `ack` now, or holds it until the ingest log made ticket `ticket` durable; an
    /// acknowledgement never overtakes one held before it.
    pub(super) fn acknowledge(&mut self, ack: Packet, ticket: Option<u64>) {
        match self.held_acks.as_mut() {
            Some(held) => held.push(ticket.unwrap_or(0), ack),
            None => {
                let (Some(ticket), Some(watermark)) = (ticket, self.router.ingest_watermark())
                else {
                    self.send(&ack);
                    return;
                };
                let mut held = Box::new(HeldAcks::new(watermark));
                held.push(ticket, ack);
                self.held_acks = Some(held);
            }
        }
        self.release_acks();
    }

    /// Sends the held acknowledgements whose messages are durable now, in order.
    pub(super) fn release_acks(&mut self) {
        let Some(held) = self.held_acks.as_mut() else {
            return;
        };
        let mut ready = Vec::new();
        if held.take_durable(&mut ready) {
            self.held_acks = None;
        }
        for ack in &ready {
            self.send(ack);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PubAck;

    fn puback(packet_id: u16) -> Packet {
        Packet::PubAck(PubAck {
            packet_id,
            ..PubAck::default()
        })
    }

    fn ids(acks: &[Packet]) -> Vec<u16> {
        acks.iter()
            .map(|p| match p {
                Packet::PubAck(a) => a.packet_id,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn acknowledgements_leave_in_order_as_the_log_makes_them_durable() {
        let (log, watermark) = watch::channel(0u64);
        let mut held = HeldAcks::new(watermark);
        held.push(5, puback(1));
        held.push(0, puback(2)); // nothing to wait for, but must not overtake 1
        held.push(6, puback(3));
        let mut ready = Vec::new();
        assert!(!held.take_durable(&mut ready));
        assert!(ready.is_empty());
        let _ = log.send(5);
        assert!(!held.take_durable(&mut ready));
        assert_eq!(ids(&ready), [1, 2]);
        assert_eq!(held.len(), 1);
        let _ = log.send(9);
        assert!(held.take_durable(&mut ready));
        assert_eq!(ids(&ready), [1, 2, 3]);
    }

    #[tokio::test]
    async fn the_watermark_wakes_a_holder() {
        let (log, watermark) = watch::channel(0u64);
        let mut held = Some(Box::new(HeldAcks::new(watermark)));
        let _ = log.send(1);
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            watermark_moved(&mut held),
        )
        .await
        .expect("the watermark moved");
    }
}
