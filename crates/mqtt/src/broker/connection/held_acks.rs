//! Acknowledgements held back until what they promise is durable — a message in the ingest log
//! (a rule wants it), in the durable queues (a persistent session will receive it) or in the
//! forward log (the other nodes of a cluster will receive it); a persistent session's
//! subscriptions in the session store (SUBACK, UNSUBACK) — sent in the order of the packets
//! they answer.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::watch;

use super::Connection;
use crate::broker::Publisher;
use crate::broker::message::Delivery;
use crate::protocol::Packet;

/// How long a connection sent to another node waits for its held acknowledgements.
const SETTLE_GRACE: Duration = Duration::from_secs(5);

/// What an acknowledgement waits for: a ticket of the ingest log, one of the persistent
/// sessions' durable queues, one of the forward log and one of the session store (0: nothing
/// to wait for there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Tickets {
    /// The ingest log's ticket.
    pub(super) ingest: u64,
    /// The durable queues' ticket.
    pub(super) queue: u64,
    /// The forward log's ticket.
    pub(super) forward: u64,
    /// The session store's ticket.
    pub(super) session: u64,
}

impl Tickets {
    fn is_empty(&self) -> bool {
        self.ingest == 0 && self.queue == 0 && self.forward == 0 && self.session == 0
    }
}

/// An acknowledgement held, and the retained messages that follow it (a SUBACK's).
type Held = (Tickets, Packet, Vec<Delivery>);

/// Acknowledgements waiting for the disk (empty tickets: nothing to wait for, only order to
/// keep).
pub(super) struct HeldAcks {
    queue: VecDeque<Held>,
    /// PUBACKs among them: QoS 1 messages that count against the server's Receive Maximum.
    pubacks: usize,
    /// The ingest log's durable ticket, if a log is installed.
    ingest: Option<watch::Receiver<u64>>,
    /// The durable queues' durable ticket.
    queues: watch::Receiver<u64>,
    /// The forward log's durable ticket, if a forward log is installed.
    forward: Option<watch::Receiver<u64>>,
    /// The session store's durable ticket.
    sessions: watch::Receiver<u64>,
}

impl HeldAcks {
    /// Nothing held yet; the receivers give the durable tickets of the ingest log, of the
    /// durable queues, of the forward log and of the session store.
    pub(super) fn new(
        ingest: Option<watch::Receiver<u64>>,
        queues: watch::Receiver<u64>,
        forward: Option<watch::Receiver<u64>>,
        sessions: watch::Receiver<u64>,
    ) -> HeldAcks {
        HeldAcks {
            queue: VecDeque::with_capacity(4),
            pubacks: 0,
            ingest,
            queues,
            forward,
            sessions,
        }
    }

    /// Holds `ack` (and the retained messages that follow it) behind every acknowledgement
    /// held before it.
    pub(super) fn push(&mut self, tickets: Tickets, ack: Packet, retained: Vec<Delivery>) {
        self.pubacks += usize::from(matches!(ack, Packet::PubAck(_)));
        self.queue.push_back((tickets, ack, retained));
    }

    /// PUBACKs held.
    pub(super) fn pubacks(&self) -> usize {
        self.pubacks
    }

    /// Acknowledgements held.
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Moves the acknowledgements whose promises are durable now into `ready`, in order.
    /// True when none is left held.
    pub(super) fn take_durable(&mut self, ready: &mut Vec<(Packet, Vec<Delivery>)>) -> bool {
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
        let session = *self.sessions.borrow_and_update();
        while self.queue.front().is_some_and(|(t, _, _)| {
            t.ingest <= ingest && t.queue <= queue && t.forward <= forward && t.session <= session
        }) {
            if let Some((_, ack, retained)) = self.queue.pop_front() {
                self.pubacks -= usize::from(matches!(ack, Packet::PubAck(_)));
                ready.push((ack, retained));
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
        sessions,
        ..
    } = &mut **h;
    tokio::select! {
        _ = optional_moved(ingest) => {}
        _ = moved(queues) => {}
        _ = optional_moved(forward) => {}
        _ = moved(sessions) => {}
    }
}

/// Resolves when the watermark moves; never once its writer is gone.
async fn moved(watermark: &mut watch::Receiver<u64>) {
    if watermark.changed().await.is_err() {
        std::future::pending::<()>().await;
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
    /// Sends `ack` now, or holds it until what it promises is durable; an acknowledgement never
    /// overtakes one held before it.
    pub(super) fn acknowledge(&mut self, ack: Packet, tickets: Tickets) {
        self.acknowledge_then(ack, tickets, Vec::new());
    }

    /// [`Connection::acknowledge`], and queues `retained` behind the acknowledgement once it
    /// is sent (a SUBACK's retained messages never precede it).
    pub(super) fn acknowledge_then(
        &mut self,
        ack: Packet,
        tickets: Tickets,
        retained: Vec<Delivery>,
    ) {
        if self.acks_wait() {
            self.ack_behind_waiting(ack, tickets, retained);
        } else {
            self.acknowledge_now(ack, tickets, retained);
        }
    }

    /// [`Connection::acknowledge_then`] for an acknowledgement no waiting message holds up.
    pub(super) fn acknowledge_now(
        &mut self,
        ack: Packet,
        tickets: Tickets,
        retained: Vec<Delivery>,
    ) {
        match self.held_acks.as_mut() {
            Some(held) => held.push(tickets, ack, retained),
            None => {
                if tickets.is_empty() {
                    self.send(&ack);
                    for d in retained {
                        self.session.restore(d);
                    }
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
                    self.router.session_watermark(),
                ));
                held.push(tickets, ack, retained);
                self.held_acks = Some(held);
            }
        }
        self.release_acks();
    }

    /// Moves every held acknowledgement into the write buffer as its message becomes durable,
    /// waiting up to [`SETTLE_GRACE`] in all (a node that drains: the acknowledgements still
    /// held then stay unsent, and the client publishes those messages again elsewhere).
    pub(super) async fn settle_held_acks(&mut self) {
        let deadline = tokio::time::Instant::now() + SETTLE_GRACE;
        loop {
            self.release_acks();
            if self.held_acks.is_none()
                || tokio::time::timeout_at(deadline, watermark_moved(&mut self.held_acks))
                    .await
                    .is_err()
            {
                return;
            }
        }
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
        for (ack, retained) in ready {
            self.send(&ack);
            for d in retained {
                self.session.restore(d);
            }
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

    fn ids(acks: &[(Packet, Vec<Delivery>)]) -> Vec<u16> {
        acks.iter()
            .map(|(p, _)| match p {
                Packet::PubAck(a) | Packet::PubRec(a) => a.packet_id,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    /// A session store's watermark that nothing waits for.
    fn sessions() -> watch::Receiver<u64> {
        watch::channel(0u64).1
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
        let mut held = HeldAcks::new(Some(watermark), queue_watermark, None, sessions());
        held.push(ingest(5), puback(1), Vec::new());
        held.push(Tickets::default(), puback(2), Vec::new()); // nothing to wait for, but must not overtake 1
        held.push(ingest(6), puback(3), Vec::new());
        held.push(
            ingest(7),
            Packet::PubRec(PubAck {
                packet_id: 4,
                ..PubAck::default()
            }),
            Vec::new(),
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
        let mut held = HeldAcks::new(Some(watermark), queue_watermark, None, sessions());
        held.push(
            Tickets {
                ingest: 1,
                queue: 4,
                ..Tickets::default()
            },
            puback(1),
            Vec::new(),
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
        let mut held = HeldAcks::new(None, queue_watermark, None, sessions());
        held.push(
            Tickets {
                ingest: 0,
                queue: 2,
                ..Tickets::default()
            },
            puback(7),
            Vec::new(),
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
        let mut held = HeldAcks::new(None, queue_watermark, Some(forward_watermark), sessions());
        held.push(
            Tickets {
                forward: 3,
                ..Tickets::default()
            },
            puback(9),
            Vec::new(),
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
            sessions(),
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

    #[test]
    fn a_suback_and_its_retained_messages_wait_for_the_session_store() {
        let (_queues, queue_watermark) = watch::channel(0u64);
        let (store, store_watermark) = watch::channel(0u64);
        let mut held = HeldAcks::new(None, queue_watermark, None, store_watermark);
        let suback = Packet::SubAck(crate::protocol::SubAck {
            packet_id: 5,
            reasons: vec![1],
            properties: Default::default(),
        });
        let retained = vec![crate::broker::message::Delivery {
            message: std::sync::Arc::new(crate::broker::message::Message {
                topic: crate::protocol::Utf8::new("r").unwrap_or_default(),
                payload: bytes::Bytes::from_static(b"kept"),
                qos: crate::protocol::QoS::AtLeastOnce,
                retain: true,
                properties: Default::default(),
                expires_at: None,
                origin: None,
            }),
            qos: crate::protocol::QoS::AtLeastOnce,
            retain: true,
            subscription_ids: Vec::new(),
            stored: None,
        }];
        held.push(
            Tickets {
                session: 3,
                ..Tickets::default()
            },
            suback,
            retained,
        );
        held.push(Tickets::default(), puback(8), Vec::new());
        let mut ready = Vec::new();
        let _ = store.send(2);
        assert!(
            !held.take_durable(&mut ready),
            "the record is not on disk yet"
        );
        assert!(ready.is_empty(), "the PUBACK behind it waits too");
        let _ = store.send(3);
        assert!(held.take_durable(&mut ready));
        assert!(matches!(&ready[0], (Packet::SubAck(s), r) if s.packet_id == 5 && r.len() == 1));
        assert!(matches!(&ready[1], (Packet::PubAck(a), _) if a.packet_id == 8));
    }
}
