//! Acknowledgements held back until their messages are durable — in the ingest log (a rule
//! wants the message), in the durable queues (a persistent session will receive it) and in the
//! forward log (the other nodes of a cluster will receive it) — sent in the order of their
//! PUBLISH packets.

use std::collections::VecDeque;

use tokio::sync::watch;

use super::Connection;
use crate::broker::Publisher;
use crate::protocol::Packet;

/// What an acknowledgement waits for: a ticket of the ingest log, one of the persistent
/// sessions' durable queues and one of the forward log (0: nothing to wait for there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Tickets {
    /// The ingest log's ticket.
    pub(super) ingest: u64,
    /// The durable queues' ticket.
    pub(super) queue: u64,
    /// The forward log's ticket.
    pub(super) forward: u64,
}

impl Tickets {
    fn is_empty(&self) -> bool {
        self.ingest == 0 && self.queue == 0 && self.forward == 0
    }
}

/// Acknowledgements waiting for the disk (empty tickets: nothing to wait for, only order to
/// keep).
pub(super) struct HeldAcks {
    queue: VecDeque<(Tickets, Packet)>,
    /// PUBACKs among them: QoS 1 messages that count against the server's Receive Maximum.
    pubacks: usize,
    /// The ingest log's durable ticket, if a log is installed.
    ingest: Option<watch::Receiver<u64>>,
    /// The durable queues' durable ticket.
    queues: watch::Receiver<u64>,
    /// The forward log's durable ticket, if a forward log is installed.
    forward: Option<watch::Receiver<u64>>,
}

impl HeldAcks {
    /// Nothing held yet; the receivers give the durable tickets of the ingest log, of the
    /// durable queues and of the forward log.
    pub(super) fn new(
        ingest: Option<watch::Receiver<u64>>,
        queues: watch::Receiver<u64>,
        forward: Option<watch::Receiver<u64>>,
    ) -> HeldAcks {
        HeldAcks {
            queue: VecDeque::with_capacity(4),
            pubacks: 0,
            ingest,
            queues,
            forward,
        }
    }

    /// Holds `ack` behind every acknowledgement held before it.
    pub(super) fn push(&mut self, tickets: Tickets, ack: Packet) {
        self.pubacks += usize::from(matches!(ack, Packet::PubAck(_)));
        self.queue.push_back((tickets, ack));
    }

    /// PUBACKs held.
    pub(super) fn pubacks(&self) -> usize {
        self.pubacks
    }

    /// Acknowledgements held.
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Moves the acknowledgements whose messages are durable now into `ready`, in order.
    /// True when none is left held.
    pub(super) fn take_durable(&mut self, ready: &mut Vec<Packet>) -> bool {
        // Without a log no ingest ticket is ever handed out.
        let ingest = self
            .ingest
            .as_mut()
            .map_or(u64::MAX, |w| *w.borrow_and_update());
        let queue = *self.queues.borrow_and_update();
        let forward = self
            .forward
            .as_mut()
            .map_or(u64::MAX, |w| *w.borrow_and_update());
        while self
            .queue
            .front()
            .is_some_and(|(t, _)| t.ingest <= ingest && t.queue <= queue && t.forward <= forward)
        {
            if let Some((_, ack)) = self.queue.pop_front() {
                self.pubacks -= usize::from(matches!(ack, Packet::PubAck(_)));
                ready.push(ack);
            }
        }
        self.queue.is_empty()
    }
}

/// Resolves when a durable watermark moves; never, when nothing is held or the writers are
/// gone (held acknowledgements then stay unsent: they were never made durable).
pub(super) async fn watermark_moved(held: &mut Option<Box<HeldAcks>>) {
    let Some(h) = held else {
        return std::future::pending().await;
    };
    let HeldAcks {
        ingest,
        queues,
        forward,
        ..
    } = &mut **h;
    let ingest_moved = optional_moved(ingest);
    let forward_moved = optional_moved(forward);
    let queues_moved = async {
        if queues.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = ingest_moved => {}
        _ = queues_moved => {}
        _ = forward_moved => {}
    }
}

/// Resolves when the watermark moves; never without one or once its writer is gone.
async fn optional_moved(watermark: &mut Option<watch::Receiver<u64>>) {
    let moved = match watermark {
        Some(w) => w.changed().await.is_ok(),
        None => false,
    };
    if !moved {
        std::future::pending::<()>().await;
    }
}

impl Connection {
    /// Sends `ack` now, or holds it until its messages are durable; an acknowledgement never
    /// overtakes one held before it.
    pub(super) fn acknowledge(&mut self, ack: Packet, tickets: Tickets) {
        match self.held_acks.as_mut() {
            Some(held) => held.push(tickets, ack),
            None => {
                if tickets.is_empty() {
                    self.send(&ack);
                    return;
                }
                let publisher = Publisher {
                    client_id: Some(&self.client_id),
                    principal: Some(&self.principal),
                };
                let mut held = Box::new(HeldAcks::new(
                    self.router.ingest_watermark(publisher),
                    self.router.queue_watermark(),
                    self.router.forward_watermark(publisher),
                ));
                held.push(tickets, ack);
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
                Packet::PubAck(a) | Packet::PubRec(a) => a.packet_id,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    fn ingest(ticket: u64) -> Tickets {
        Tickets {
            ingest: ticket,
            ..Tickets::default()
        }
    }

    #[test]
    fn acknowledgements_leave_in_order_as_the_log_makes_them_durable() {
        let (log, watermark) = watch::channel(0u64);
        let (_queues, queue_watermark) = watch::channel(0u64);
        let mut held = HeldAcks::new(Some(watermark), queue_watermark, None);
        held.push(ingest(5), puback(1));
        held.push(Tickets::default(), puback(2)); // nothing to wait for, but must not overtake 1
        held.push(ingest(6), puback(3));
        held.push(
            ingest(7),
            Packet::PubRec(PubAck {
                packet_id: 4,
                ..PubAck::default()
            }),
        );
        assert_eq!((held.len(), held.pubacks()), (4, 3));
        let mut ready = Vec::new();
        assert!(!held.take_durable(&mut ready));
        assert!(ready.is_empty());
        let _ = log.send(5);
        assert!(!held.take_durable(&mut ready));
        assert_eq!(ids(&ready), [1, 2]);
        assert_eq!((held.len(), held.pubacks()), (2, 1));
        let _ = log.send(6);
        assert!(!held.take_durable(&mut ready));
        assert_eq!(ids(&ready), [1, 2, 3]);
        assert_eq!((held.len(), held.pubacks()), (1, 0));
        let _ = log.send(9);
        assert!(held.take_durable(&mut ready));
    }

    #[test]
    fn an_acknowledgement_waits_for_both_the_log_and_the_durable_queues() {
        let (log, watermark) = watch::channel(0u64);
        let (queues, queue_watermark) = watch::channel(0u64);
        let mut held = HeldAcks::new(Some(watermark), queue_watermark, None);
        held.push(
            Tickets {
                ingest: 1,
                queue: 4,
                forward: 0,
            },
            puback(1),
        );
        let mut ready = Vec::new();
        let _ = log.send(1);
        assert!(
            !held.take_durable(&mut ready),
            "the queue is not durable yet"
        );
        let _ = queues.send(4);
        assert!(held.take_durable(&mut ready));
        assert_eq!(ids(&ready), [1]);
    }

    #[test]
    fn without_an_ingest_log_only_the_queue_ticket_counts() {
        let (queues, queue_watermark) = watch::channel(0u64);
        let mut held = HeldAcks::new(None, queue_watermark, None);
        held.push(
            Tickets {
                ingest: 0,
                queue: 2,
                forward: 0,
            },
            puback(7),
        );
        let mut ready = Vec::new();
        assert!(!held.take_durable(&mut ready));
        let _ = queues.send(2);
        assert!(held.take_durable(&mut ready));
        assert_eq!(ids(&ready), [7]);
    }

    #[test]
    fn an_acknowledgement_waits_for_the_forward_log() {
        let (_queues, queue_watermark) = watch::channel(0u64);
        let (forward, forward_watermark) = watch::channel(0u64);
        let mut held = HeldAcks::new(None, queue_watermark, Some(forward_watermark));
        held.push(
            Tickets {
                forward: 3,
                ..Tickets::default()
            },
            puback(9),
        );
        let mut ready = Vec::new();
        let _ = forward.send(2);
        assert!(
            !held.take_durable(&mut ready),
            "the other nodes do not have it yet"
        );
        let _ = forward.send(3);
        assert!(held.take_durable(&mut ready));
        assert_eq!(ids(&ready), [9]);
    }

    #[tokio::test]
    async fn either_watermark_wakes_a_holder() {
        let (log, watermark) = watch::channel(0u64);
        let (queues, queue_watermark) = watch::channel(0u64);
        let mut held = Some(Box::new(HeldAcks::new(
            Some(watermark),
            queue_watermark,
            None,
        )));
        let _ = log.send(1);
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            watermark_moved(&mut held),
        )
        .await
        .expect("the log's watermark moved");
        if let Some(h) = held.as_mut() {
            let mut ready = Vec::new();
            h.take_durable(&mut ready);
        }
        let _ = queues.send(1);
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            watermark_moved(&mut held),
        )
        .await
        .expect("the queues' watermark moved");
    }
}
