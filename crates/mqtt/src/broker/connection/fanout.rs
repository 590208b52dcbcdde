//! Fan-out of an accepted message to its receivers, and the wait for receivers whose queues
//! are full.
//!
//! A delivery that finds its receiver full waits, with the publisher's acknowledgement, in the
//! connection's [`Waiting`] queue; the publisher's other receivers get the message at once, and
//! its next messages are read and delivered meanwhile. Per receiver the publisher's order is
//! kept: a delivery to a receiver that an earlier message still waits for queues behind it.
//! Acknowledgements leave in the order of the packets they answer, so every acknowledgement
//! (PUBACK, PUBREC, SUBACK, ...) made while messages wait queues behind them too.
//!
//! Reading the publisher's socket stops at once while a receiver that holds a waiting message
//! is still reading (it made progress within [`STALLED_AFTER`]): a subscriber that is merely
//! saturated pushes back on its publishers at its first full queue, so the backlog in front of
//! it stays short. Only for receivers that stopped reading does the publisher read on, until
//! [`MAX_WAITING`] messages wait.
//!
//! The waiting deliveries are offered again whenever a receiver makes room, and every
//! stuck-subscriber timeout: a receiver that made no progress for that long is not waited for
//! any more (`SessionHandle::push`), so a reader that never reads holds only its own
//! deliveries, and the publisher's acknowledgements for about that timeout. A delivery still
//! waiting at the slow-subscriber deadline is dropped and counted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Connection;
use super::held_acks::Tickets;
use crate::broker::message::{Delivery, Message};
use crate::broker::metrics::DropReason;
use crate::broker::router::{Blocked, Offered};
use crate::broker::session::SessionHandle;
use crate::protocol::Packet;

/// Messages of one publisher that may wait for full receivers before its socket is no longer
/// read (as many bytes as a receiver's queue holds, `max_queued_bytes`, bound them too). Above a device's rate times the stuck-subscriber timeout (100 msg/s x 200 ms), so a
/// reader that never reads does not stall a device; far below what would let a saturated
/// subscriber's backlog grow (each waiting message holds one delivery per full receiver).
pub(super) const MAX_WAITING: usize = 32;

/// A full receiver that made no progress for this long has stopped reading, for now: its
/// publishers read on past it. One that made progress more recently is saturated, and its
/// publishers pause. Above the gaps between a busy subscriber's writes, below a device's
/// tolerance for an extra delay.
pub(super) const STALLED_AFTER: Duration = Duration::from_millis(2);

/// An accepted message (or an acknowledgement) waiting, in the publisher's order, for full
/// receivers before its acknowledgement is sent.
struct Waiting {
    blocked: Vec<Blocked>,
    ack: Option<Packet>,
    /// What a SUBACK's retained messages are, sent behind it.
    retained: Vec<Delivery>,
    /// What the acknowledgement also waits for; the queue ticket grows as receivers take the
    /// message.
    tickets: Tickets,
    /// When the receivers still full are given up on.
    deadline: Instant,
    /// Bytes of the message (topic and payload; 0 for an acknowledgement).
    size: usize,
}

/// The messages of a connection waiting for full receivers, oldest first.
pub(super) struct PendingFanouts {
    waiting: VecDeque<Waiting>,
    /// Bytes of the waiting messages.
    bytes: usize,
    /// When the blocked deliveries are offered again even if no receiver made room.
    recheck: Instant,
    /// Until when a blocked receiver counts as still reading (it made progress within
    /// [`STALLED_AFTER`] before): reading pauses until then. `None` when every blocked
    /// receiver has stopped reading.
    reading_until: Option<Instant>,
}

impl PendingFanouts {
    /// When the connection must look at the waiting messages again without a wake-up.
    pub(super) fn next_look(&self) -> Instant {
        let look = self
            .waiting
            .front()
            .map_or(self.recheck, |w| w.deadline.min(self.recheck));
        self.reading_until.map_or(look, |until| until.min(look))
    }

    /// True when the publisher's socket must not be read: a blocked receiver is still reading,
    /// or [`MAX_WAITING`] messages (and acknowledgements behind them) wait, or `max_bytes` of
    /// messages.
    pub(super) fn full(&self, max_bytes: usize) -> bool {
        self.reading_until.is_some() || self.waiting.len() >= MAX_WAITING || self.bytes >= max_bytes
    }

    /// Looks at the receivers still blocked: until when does the last of them that is still
    /// reading count as such ([`PendingFanouts::reading_until`])?
    fn look_at_receivers(&mut self, now: Instant) {
        self.reading_until = still_reading_until(self.waiting.iter().flat_map(|w| &w.blocked), now);
    }

    /// True when a waiting message still has a delivery for `session`: a later one must queue
    /// behind it.
    fn holds(&self, session: &Arc<SessionHandle>) -> bool {
        self.waiting
            .iter()
            .any(|w| w.blocked.iter().any(|(s, _)| Arc::ptr_eq(s, session)))
    }

    /// Offers every blocked delivery again, oldest first, through `offer` (which hands back
    /// what still does not fit); a receiver still full is not offered the later ones. At a
    /// message's deadline its deliveries still blocked are handed to `give_up` instead.
    fn offer_again(
        &mut self,
        now: Instant,
        mut offer: impl FnMut(&Arc<SessionHandle>, Delivery) -> Offered,
        mut give_up: impl FnMut(&Arc<SessionHandle>),
    ) {
        let mut full: Vec<Arc<SessionHandle>> = Vec::new();
        for waiting in &mut self.waiting {
            if waiting.blocked.is_empty() {
                continue;
            }
            if now >= waiting.deadline {
                for (session, _) in waiting.blocked.drain(..) {
                    give_up(&session);
                }
                continue;
            }
            let mut still = Vec::new();
            for (session, delivery) in waiting.blocked.drain(..) {
                if full.iter().any(|f| Arc::ptr_eq(f, &session)) {
                    still.push((session, delivery));
                    continue;
                }
                match offer(&session, delivery) {
                    Offered::Taken { ticket } => {
                        waiting.tickets.queue = waiting.tickets.queue.max(ticket);
                    }
                    Offered::Full(d) => {
                        full.push(Arc::clone(&session));
                        still.push((session, d));
                    }
                }
            }
            waiting.blocked = still;
        }
    }

    /// Takes the oldest messages no receiver holds up any more, in order.
    fn take_done(&mut self) -> impl Iterator<Item = Waiting> + '_ {
        std::iter::from_fn(|| {
            if !self.waiting.front()?.blocked.is_empty() {
                return None;
            }
            let done = self.waiting.pop_front()?;
            self.bytes -= done.size;
            Some(done)
        })
    }
}

/// Until when the last of `blocked`'s receivers that made progress within [`STALLED_AFTER`]
/// counts as still reading; `None` when every one of them has stopped.
fn still_reading_until<'a>(
    blocked: impl IntoIterator<Item = &'a Blocked>,
    now: Instant,
) -> Option<Instant> {
    blocked
        .into_iter()
        .filter_map(|(session, _)| {
            let idle = session.idle();
            (idle < STALLED_AFTER).then(|| now + (STALLED_AFTER - idle))
        })
        .max()
}

impl Connection {
    /// Offers `message` to every matching receiver; sends `ack` once all took it and it is
    /// durable where it must be (the ingest log's `tickets.ingest`, the durable queues of the
    /// persistent sessions that took it, the forward log's `tickets.forward`). Deliveries to
    /// full receivers wait, with `ack`, behind the messages already waiting.
    pub(super) fn fan_out(
        &mut self,
        message: &Arc<Message>,
        ack: Option<Packet>,
        tickets: Tickets,
    ) {
        let mut tickets = tickets;
        let mut targets = std::mem::take(&mut self.targets);
        self.router.targets(message, &mut targets);
        let mut blocked = Vec::new();
        for (session, delivery) in targets.drain(..) {
            if self.pending.as_ref().is_some_and(|p| p.holds(&session)) {
                blocked.push((session, delivery));
                continue;
            }
            let space = &*self.space.get_or_insert_with(Default::default);
            match self.router.offer(&session, delivery, Some(space)) {
                Offered::Taken { ticket } => tickets.queue = tickets.queue.max(ticket),
                Offered::Full(d) => blocked.push((session, d)),
            }
        }
        self.targets = targets;
        if blocked.is_empty() && self.pending.is_none() {
            if let Some(ack) = ack {
                self.acknowledge_now(ack, tickets, Vec::new());
            }
            return;
        }
        self.wait(Waiting {
            blocked,
            ack,
            retained: Vec::new(),
            tickets,
            deadline: Instant::now() + self.router.config().slow_subscriber_timeout,
            size: message.topic.len() + message.payload.len(),
        });
    }

    /// True while messages wait for full receivers: an acknowledgement made now must queue
    /// behind them ([`Connection::ack_behind_waiting`]).
    pub(super) fn acks_wait(&self) -> bool {
        self.pending.is_some()
    }

    /// Queues `ack` (and the retained messages sent behind it) behind the messages waiting for
    /// full receivers.
    pub(super) fn ack_behind_waiting(
        &mut self,
        ack: Packet,
        tickets: Tickets,
        retained: Vec<Delivery>,
    ) {
        self.wait(Waiting {
            blocked: Vec::new(),
            ack: Some(ack),
            retained,
            tickets,
            deadline: Instant::now(),
            size: 0,
        });
    }

    fn wait(&mut self, waiting: Waiting) {
        let stuck = self.router.config().stuck_subscriber_timeout;
        let pending = self.pending.get_or_insert_with(|| {
            Box::new(PendingFanouts {
                waiting: VecDeque::new(),
                bytes: 0,
                recheck: Instant::now() + stuck,
                reading_until: None,
            })
        });
        // Only the new message's receivers are looked at: the others were when they blocked,
        // and are again at `reading_until` (a retry), so a mark already set stands until then.
        let newest = still_reading_until(&waiting.blocked, Instant::now());
        pending.reading_until = pending.reading_until.max(newest);
        pending.bytes += waiting.size;
        pending.waiting.push_back(waiting);
    }

    /// Offers the blocked deliveries again (at a message's deadline, drops what still does
    /// not fit) and sends the acknowledgements no longer held up, in order.
    pub(super) fn retry_pending(&mut self) {
        let Some(mut pending) = self.pending.take() else {
            return;
        };
        let now = Instant::now();
        let router = &self.router;
        let space = &*self.space.get_or_insert_with(Default::default);
        pending.offer_again(
            now,
            |session, delivery| router.offer(session, delivery, Some(space)),
            |session| {
                router
                    .metrics()
                    .dropped(DropReason::QueueFull, session.client_id())
            },
        );
        let done: Vec<Waiting> = pending.take_done().collect();
        if !pending.waiting.is_empty() {
            pending.recheck = now + self.router.config().stuck_subscriber_timeout;
            pending.look_at_receivers(now);
            self.pending = Some(pending);
        }
        for w in done {
            if let Some(ack) = w.ack {
                self.acknowledge_now(ack, w.tickets, w.retained);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::broker::session::PushOutcome;
    use crate::protocol::{PubAck, PublishProperties, QoS, Utf8};

    fn delivery(payload: &'static [u8]) -> Delivery {
        Delivery {
            message: Arc::new(Message {
                topic: Utf8::new("t").unwrap_or_default(),
                payload: Bytes::from_static(payload),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: PublishProperties::default(),
                expires_at: None,
                origin: None,
            }),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: Vec::new(),
            stored: None,
        }
    }

    /// An online receiver whose queue holds one message and takes no more.
    fn full_receiver() -> Arc<SessionHandle> {
        let session =
            crate::broker::test_support::clean_session("slow", 1, 1 << 20, Duration::from_secs(60));
        session.set_online(true);
        assert!(matches!(
            session.push(delivery(b"first"), None),
            PushOutcome::Queued { ticket: 0 }
        ));
        session
    }

    fn offer(session: &Arc<SessionHandle>, d: Delivery) -> Offered {
        match session.push(d, None) {
            PushOutcome::Full(d) => Offered::Full(d),
            PushOutcome::Queued { ticket } => Offered::Taken { ticket },
            PushOutcome::Dropped(_) => Offered::Taken { ticket: 0 },
        }
    }

    fn puback(packet_id: u16) -> Option<Packet> {
        Some(Packet::PubAck(PubAck {
            packet_id,
            ..PubAck::default()
        }))
    }

    fn waiting(blocked: Vec<Blocked>, ack: Option<Packet>, deadline: Instant) -> Waiting {
        Waiting {
            blocked,
            ack,
            retained: Vec::new(),
            tickets: Tickets::default(),
            deadline,
            size: 0,
        }
    }

    fn pending(waiting: Vec<Waiting>) -> PendingFanouts {
        PendingFanouts {
            waiting: waiting.into(),
            bytes: 0,
            recheck: Instant::now(),
            reading_until: None,
        }
    }

    fn acked(done: Vec<Waiting>) -> Vec<u16> {
        done.into_iter()
            .filter_map(|w| match w.ack {
                Some(Packet::PubAck(a)) => Some(a.packet_id),
                _ => None,
            })
            .collect()
    }

    fn payloads(receiver: &SessionHandle) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        receiver.pop_into(&mut out, 64, usize::MAX);
        out.iter().map(|d| d.message.payload.to_vec()).collect()
    }

    fn never_gives_up(_: &Arc<SessionHandle>) {
        panic!("nothing is past its deadline");
    }

    #[test]
    fn later_deliveries_to_a_full_receiver_keep_the_publishers_order() {
        let slow = full_receiver();
        let later = Instant::now() + Duration::from_secs(60);
        let mut p = pending(vec![
            waiting(
                vec![(Arc::clone(&slow), delivery(b"second"))],
                puback(1),
                later,
            ),
            waiting(
                vec![(Arc::clone(&slow), delivery(b"third"))],
                puback(2),
                later,
            ),
        ]);
        assert!(p.holds(&slow));
        // Room for one: the older message goes first, the younger one still waits.
        assert_eq!(payloads(&slow), [b"first".to_vec()]);
        p.offer_again(Instant::now(), offer, never_gives_up);
        assert_eq!(acked(p.take_done().collect()), [1]);
        assert_eq!(p.waiting.len(), 1);
        assert_eq!(payloads(&slow), [b"second".to_vec()]);
        p.offer_again(Instant::now(), offer, never_gives_up);
        assert_eq!(acked(p.take_done().collect()), [2]);
        assert_eq!(payloads(&slow), [b"third".to_vec()]);
        assert!(!p.holds(&slow));
    }

    #[test]
    fn an_acknowledgement_never_overtakes_an_older_waiting_one() {
        let slow = full_receiver();
        let later = Instant::now() + Duration::from_secs(60);
        let mut p = pending(vec![
            waiting(
                vec![(Arc::clone(&slow), delivery(b"second"))],
                puback(1),
                later,
            ),
            // a message every receiver took at once, and a SUBACK-like acknowledgement
            waiting(Vec::new(), puback(2), later),
            waiting(Vec::new(), puback(3), later),
        ]);
        p.offer_again(Instant::now(), offer, never_gives_up);
        assert_eq!(acked(p.take_done().collect()), Vec::<u16>::new());
        let _ = payloads(&slow);
        p.offer_again(Instant::now(), offer, never_gives_up);
        assert_eq!(acked(p.take_done().collect()), [1, 2, 3]);
        assert!(p.waiting.is_empty());
    }

    #[test]
    fn past_the_deadline_the_full_receivers_are_given_up_and_named() {
        let a = full_receiver();
        let b = full_receiver();
        let past = Instant::now();
        let mut p = pending(vec![waiting(
            vec![(a, delivery(b"x")), (b, delivery(b"y"))],
            puback(7),
            past,
        )]);
        let mut given_up = 0;
        p.offer_again(past, offer, |_| given_up += 1);
        assert_eq!(given_up, 2);
        assert_eq!(acked(p.take_done().collect()), [7]);
    }

    #[test]
    fn a_receiver_with_room_is_not_held_up_by_another_that_is_full() {
        let slow = full_receiver();
        let fast = full_receiver();
        let later = Instant::now() + Duration::from_secs(60);
        let mut p = pending(vec![waiting(
            vec![
                (Arc::clone(&slow), delivery(b"s")),
                (Arc::clone(&fast), delivery(b"f")),
            ],
            puback(1),
            later,
        )]);
        let _ = payloads(&fast);
        p.offer_again(Instant::now(), offer, never_gives_up);
        assert_eq!(payloads(&fast), [b"f".to_vec()]);
        assert!(p.holds(&slow) && !p.holds(&fast));
        assert_eq!(acked(p.take_done().collect()), Vec::<u16>::new());
    }

    #[test]
    fn a_receiver_still_reading_pauses_the_publisher_and_one_that_stopped_does_not() {
        let slow = full_receiver();
        let later = Instant::now() + Duration::from_secs(60);
        let mut p = pending(vec![waiting(
            vec![(Arc::clone(&slow), delivery(b"x"))],
            puback(1),
            later,
        )]);
        // It took a delivery just now: saturated, not stopped.
        p.look_at_receivers(Instant::now());
        assert!(p.full(usize::MAX));
        assert!(p.next_look() <= Instant::now() + STALLED_AFTER);
        std::thread::sleep(STALLED_AFTER * 3);
        p.look_at_receivers(Instant::now());
        assert!(!p.full(usize::MAX));
    }
}
