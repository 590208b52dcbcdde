//! Fan-out of an accepted message to its receivers, and the wait for receivers whose queues
//! are full: the publisher's acknowledgement (and the reading of its socket) waits until every
//! receiver took the message or the slow-subscriber deadline passed. The blocked deliveries are
//! offered again whenever a receiver makes room, and every stuck-subscriber timeout: a receiver
//! that made no progress for that long is not waited for any more (`SessionHandle::push`), so a
//! reader that never reads stalls its publishers once, briefly, not for the whole deadline.

use std::sync::Arc;
use std::time::Instant;

use super::Connection;
use super::held_acks::Tickets;
use crate::broker::message::{Delivery, Message};
use crate::broker::metrics::DropReason;
use crate::broker::router::{Blocked, Offered};
use crate::broker::session::SessionHandle;
use crate::protocol::Packet;

/// A publish waiting for room in full receivers before it is acknowledged.
pub(super) struct PendingFanout {
    blocked: Vec<Blocked>,
    ack: Option<Packet>,
    /// What the acknowledgement also waits for; the queue ticket grows as receivers take the
    /// message.
    tickets: Tickets,
    /// When the receivers still full are given up on.
    deadline: Instant,
    /// When the blocked deliveries are offered again even if no receiver made room.
    recheck: Instant,
}

impl PendingFanout {
    /// Offers every blocked delivery again through `offer` (which hands back what still does
    /// not fit). True when none is left blocked.
    fn offer_again(
        &mut self,
        mut offer: impl FnMut(&Arc<SessionHandle>, Delivery) -> Offered,
    ) -> bool {
        let mut still = Vec::new();
        for (session, delivery) in self.blocked.drain(..) {
            match offer(&session, delivery) {
                Offered::Taken { ticket } => self.tickets.queue = self.tickets.queue.max(ticket),
                Offered::Full(d) => still.push((session, d)),
            }
        }
        self.blocked = still;
        self.blocked.is_empty()
    }

    /// When the connection must look at this fan-out again without a wake-up.
    pub(super) fn next_look(&self) -> Instant {
        self.deadline.min(self.recheck)
    }

    /// Gives up on the receivers still full, handing back their sessions.
    fn give_up(&mut self) -> impl Iterator<Item = Arc<SessionHandle>> + '_ {
        self.blocked.drain(..).map(|(session, _)| session)
    }
}

impl Connection {
    /// Offers `message` to every matching receiver; sends `ack` once all took it and it is
    /// durable where it must be (the ingest log's `tickets.ingest`, the durable queues of the
    /// persistent sessions that took it, the forward log's `tickets.forward`), or pauses reading
    /// until receivers have room.
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
            let space = &*self.space.get_or_insert_with(Default::default);
            match self.router.offer(&session, delivery, Some(space)) {
                Offered::Taken { ticket } => tickets.queue = tickets.queue.max(ticket),
                Offered::Full(d) => blocked.push((session, d)),
            }
        }
        self.targets = targets;
        if blocked.is_empty() {
            if let Some(ack) = ack {
                self.acknowledge(ack, tickets);
            }
        } else {
            let now = Instant::now();
            let config = self.router.config();
            self.pending = Some(Box::new(PendingFanout {
                blocked,
                ack,
                tickets,
                deadline: now + config.slow_subscriber_timeout,
                recheck: now + config.stuck_subscriber_timeout,
            }));
        }
    }

    /// Offers the blocked deliveries again; at the deadline, drops what still does not fit.
    pub(super) fn retry_pending(&mut self) {
        let Some(mut pending) = self.pending.take() else {
            return;
        };
        let now = Instant::now();
        let done = if now >= pending.deadline {
            for session in pending.give_up() {
                self.router
                    .metrics()
                    .dropped(DropReason::QueueFull, session.client_id());
            }
            true
        } else {
            let router = &self.router;
            let space = &*self.space.get_or_insert_with(Default::default);
            pending.offer_again(|session, delivery| router.offer(session, delivery, Some(space)))
        };
        if done {
            if let Some(ack) = pending.ack.take() {
                self.acknowledge(ack, pending.tickets);
            }
        } else {
            pending.recheck = now + self.router.config().stuck_subscriber_timeout;
            self.pending = Some(pending);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::broker::session::PushOutcome;
    use crate::protocol::{PublishProperties, QoS, Utf8};

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

    #[test]
    fn a_blocked_delivery_waits_until_the_receiver_takes_one() {
        let receiver = full_receiver();
        let mut pending = PendingFanout {
            blocked: vec![(Arc::clone(&receiver), delivery(b"second"))],
            ack: None,
            tickets: Tickets::default(),
            deadline: Instant::now(),
            recheck: Instant::now(),
        };
        assert!(!pending.offer_again(offer), "still full");
        assert_eq!(receiver.queued(), 1);
        let mut taken = Vec::new();
        receiver.pop_into(&mut taken, 1, usize::MAX);
        assert!(pending.offer_again(offer));
        let mut rest = Vec::new();
        receiver.pop_into(&mut rest, 8, usize::MAX);
        assert_eq!(rest.len(), 1);
        assert_eq!(&rest[0].message.payload[..], b"second");
    }

    #[test]
    fn giving_up_names_every_receiver_still_full() {
        let a = full_receiver();
        let b = full_receiver();
        let mut pending = PendingFanout {
            blocked: vec![(a, delivery(b"x")), (b, delivery(b"y"))],
            ack: None,
            tickets: Tickets::default(),
            deadline: Instant::now(),
            recheck: Instant::now(),
        };
        assert_eq!(pending.give_up().count(), 2);
        assert!(pending.offer_again(offer), "nothing left blocked");
    }
}
