//! Deliveries to the client: the mailbox drained into the write buffer within the inflight
//! window, each delivery checked (expiry, permission, the client's packet size) and encoded,
//! and the client's PUBACK/PUBREC/PUBCOMP that free the window again.

use std::time::Instant;

use fleetcore_core::access::MqttAction;

use super::Connection;
use crate::broker::message::Delivery;
use crate::broker::metrics::DropReason;
use crate::broker::session::{Inflight, InflightStage, SessionState};
use crate::protocol::{self, Packet, ProtocolVersion, PubAck, Publish, QoS, reason};

/// Deliveries taken from the mailbox per lock.
const POP_BATCH: usize = 64;

impl Connection {
    /// Sends again, with DUP, every message in flight when the session was last connected.
    pub(super) fn resend_inflight(&mut self) {
        let inflight: Vec<Inflight> = self.state.inflight.iter().cloned().collect();
        let now = Instant::now();
        for i in inflight {
            match i.stage {
                InflightStage::AwaitingAck(d) => {
                    let publish = build_publish(self.version, &d, i.packet_id, true, now);
                    publish.encode(self.version, &mut self.wbuf);
                }
                InflightStage::AwaitingComp(_) => {
                    let rel = Packet::PubRel(PubAck {
                        packet_id: i.packet_id,
                        ..PubAck::default()
                    });
                    protocol::encode(&rel, self.version, &mut self.wbuf);
                }
            }
        }
    }

    /// Moves queued deliveries into the write buffer, as far as the inflight window and the
    /// write batch size allow: the mailbox hands over only what the window has room for, so
    /// nothing is taken and put back. Returns true when it stopped only because the batch is
    /// full, so the caller must come back without waiting for a wake-up (the mailbox signals
    /// only its empty-to-non-empty transition).
    pub(super) fn drain_mailbox(&mut self) -> bool {
        let now = Instant::now();
        let batch_bytes = self.router.config().write_buffer_bytes;
        let mut popped = std::mem::take(&mut self.popped);
        let more = loop {
            if self.wbuf.len() >= batch_bytes {
                break self.session.queued() > 0;
            }
            let room = self.window.saturating_sub(self.state.inflight.len());
            self.session.pop_into(&mut popped, POP_BATCH, room);
            if popped.is_empty() {
                // Empty, or a QoS 1/2 delivery waits for the window: acknowledgements will
                // free it, and reading them drives the next drain.
                break false;
            }
            for d in popped.drain(..) {
                self.deliver(d, now);
            }
        };
        self.popped = popped;
        more
    }

    fn deliver(&mut self, mut d: Delivery, now: Instant) {
        let metrics = self.router.metrics();
        if d.message.is_expired(now) {
            metrics.dropped(DropReason::Expired, &self.client_id);
            self.session.settle(d.stored);
            return;
        }
        if !self.grant.allows(MqttAction::Receive, &d.message.topic) {
            metrics.denied(MqttAction::Receive, &self.client_id, &d.message.topic);
            if let Some(m) = &self.meter {
                m.denied();
            }
            self.session.settle(d.stored);
            return;
        }
        let packet_id = match d.qos {
            QoS::AtMostOnce => 0,
            _ => match self.state.allocate_packet_id() {
                Some(id) => id,
                None => {
                    metrics.dropped(DropReason::QueueFull, &self.client_id);
                    self.session.settle(d.stored);
                    return;
                }
            },
        };
        let mut publish = build_publish(self.version, &d, packet_id, false, now);
        if self.version == ProtocolVersion::V5 {
            // The full topic is the larger form, so a packet that fits now fits with an alias.
            if publish.encoded_len(self.version) > self.client_max_packet {
                metrics.dropped(DropReason::TooLarge, &self.client_id);
                self.session.settle(d.stored);
                return;
            }
            self.outbound_aliases.apply(&mut publish);
        }
        publish.encode(self.version, &mut self.wbuf);
        metrics.messages_sent.increment(1);
        if let Some(m) = &self.meter {
            m.delivered();
        }
        if d.qos != QoS::AtMostOnce {
            self.session.sent(&mut d, packet_id);
            self.state.inflight.push_back(Inflight {
                packet_id,
                stage: InflightStage::AwaitingAck(d),
            });
        }
    }
}

/// The PUBLISH that carries delivery `d` to a client speaking `version`: MQTT 5 forwards the
/// message's properties with the expiry left and the matching subscription identifiers.
fn build_publish(
    version: ProtocolVersion,
    d: &Delivery,
    packet_id: u16,
    dup: bool,
    now: Instant,
) -> Publish {
    let mut properties = protocol::PublishProperties::default();
    if version == ProtocolVersion::V5 {
        properties = d.message.properties.clone();
        properties.message_expiry_interval = d.message.remaining_expiry(now);
        properties.subscription_identifiers = d.subscription_ids.clone();
    }
    Publish {
        dup,
        qos: d.qos,
        retain: d.retain,
        topic: d.message.topic.clone(),
        packet_id,
        properties,
        payload: d.message.payload.clone(),
    }
}

/// What an acknowledgement from the client changes in the stored copy of a delivery (in the
/// durable queue of a persistent session; nothing when it was not stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StoredChange {
    /// Nothing.
    None,
    /// The delivery is done with: its stored copy goes.
    Settled(Option<u64>),
    /// A QoS 2 delivery was received by the client: only its PUBREL is kept.
    Released(Option<u64>, u16),
}

/// The sequence number of the stored copy of an inflight entry.
fn stored(stage: &InflightStage) -> Option<u64> {
    match stage {
        InflightStage::AwaitingAck(d) => d.stored,
        InflightStage::AwaitingComp(stored) => *stored,
    }
}

/// PUBACK from the client: a QoS 1 delivery is done.
pub(super) fn on_puback(state: &mut SessionState, packet_id: u16) -> StoredChange {
    if let Some(i) = state.inflight_position(packet_id)
        && matches!(&state.inflight[i].stage, InflightStage::AwaitingAck(d) if d.qos == QoS::AtLeastOnce)
        && let Some(done) = state.inflight.remove(i)
    {
        return StoredChange::Settled(stored(&done.stage));
    }
    StoredChange::None
}

/// PUBREC from the client: a QoS 2 delivery moves on to PUBREL (returned to be sent), or is
/// done when the client refused it.
pub(super) fn on_pubrec(state: &mut SessionState, rec: &PubAck) -> (Option<PubAck>, StoredChange) {
    let mut reply = PubAck {
        packet_id: rec.packet_id,
        ..PubAck::default()
    };
    match state.inflight_position(rec.packet_id) {
        Some(i) if rec.reason >= 0x80 => {
            // The receiver refused the message: it is done with.
            let seq = state
                .inflight
                .remove(i)
                .and_then(|done| stored(&done.stage));
            return (None, StoredChange::Settled(seq));
        }
        Some(i) => {
            let seq = stored(&state.inflight[i].stage);
            state.inflight[i].stage = InflightStage::AwaitingComp(seq);
            return (Some(reply), StoredChange::Released(seq, rec.packet_id));
        }
        None => reply.reason = reason::PACKET_IDENTIFIER_NOT_FOUND,
    }
    (Some(reply), StoredChange::None)
}

/// PUBCOMP from the client: a QoS 2 delivery is done.
pub(super) fn on_pubcomp(state: &mut SessionState, packet_id: u16) -> StoredChange {
    match state.inflight_position(packet_id) {
        Some(i) => StoredChange::Settled(state.inflight.remove(i).and_then(|d| stored(&d.stage))),
        None => StoredChange::None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::broker::message::Message;
    use crate::protocol::{PublishProperties, Utf8};

    fn delivery(qos: QoS, expiry: Option<Duration>, now: Instant) -> Delivery {
        Delivery {
            message: Arc::new(Message {
                topic: Utf8::new("s/1").unwrap_or_default(),
                payload: Bytes::from_static(b"21.5"),
                qos,
                retain: false,
                properties: PublishProperties {
                    content_type: Utf8::new("text/plain"),
                    ..PublishProperties::default()
                },
                expires_at: expiry.map(|e| now + e),
                origin: None,
            }),
            qos,
            retain: true,
            subscription_ids: vec![4],
            stored: Some(11),
        }
    }

    fn state_with(packet_id: u16, stage: InflightStage) -> SessionState {
        let mut state = SessionState::new(0, ProtocolVersion::V5);
        state.inflight.push_back(Inflight { packet_id, stage });
        state
    }

    #[test]
    fn mqtt5_deliveries_carry_properties_expiry_left_and_subscription_ids() {
        let now = Instant::now();
        let d = delivery(QoS::AtLeastOnce, Some(Duration::from_millis(2500)), now);
        let p = build_publish(ProtocolVersion::V5, &d, 9, true, now);
        assert_eq!(
            (p.packet_id, p.dup, p.retain, p.qos),
            (9, true, true, QoS::AtLeastOnce)
        );
        assert_eq!((p.topic.as_str(), &p.payload[..]), ("s/1", &b"21.5"[..]));
        assert_eq!(p.properties.message_expiry_interval, Some(3));
        assert_eq!(p.properties.subscription_identifiers, [4]);
        assert_eq!(p.properties.content_type, Utf8::new("text/plain"));
    }

    #[test]
    fn mqtt311_deliveries_carry_no_properties() {
        let now = Instant::now();
        let d = delivery(QoS::AtMostOnce, Some(Duration::from_secs(5)), now);
        let p = build_publish(ProtocolVersion::V311, &d, 0, false, now);
        assert_eq!(p.properties, PublishProperties::default());
    }

    #[test]
    fn puback_ends_only_a_qos1_delivery() {
        let now = Instant::now();
        let mut qos1 = state_with(
            1,
            InflightStage::AwaitingAck(delivery(QoS::AtLeastOnce, None, now)),
        );
        assert_eq!(on_puback(&mut qos1, 1), StoredChange::Settled(Some(11)));
        assert!(qos1.inflight.is_empty());
        let mut qos2 = state_with(
            1,
            InflightStage::AwaitingAck(delivery(QoS::ExactlyOnce, None, now)),
        );
        assert_eq!(on_puback(&mut qos2, 1), StoredChange::None);
        assert_eq!(
            qos2.inflight.len(),
            1,
            "a PUBACK does not end a QoS 2 delivery"
        );
    }

    #[test]
    fn pubrec_then_pubcomp_ends_a_qos2_delivery() {
        let now = Instant::now();
        let mut state = state_with(
            2,
            InflightStage::AwaitingAck(delivery(QoS::ExactlyOnce, None, now)),
        );
        let rec = PubAck {
            packet_id: 2,
            ..PubAck::default()
        };
        let (rel, change) = on_pubrec(&mut state, &rec);
        assert_eq!(
            rel.map(|r| (r.packet_id, r.reason)),
            Some((2, reason::SUCCESS))
        );
        assert_eq!(change, StoredChange::Released(Some(11), 2));
        assert!(matches!(
            state.inflight[0].stage,
            InflightStage::AwaitingComp(Some(11))
        ));
        assert_eq!(on_pubcomp(&mut state, 2), StoredChange::Settled(Some(11)));
        assert!(state.inflight.is_empty());
    }

    #[test]
    fn a_refusing_pubrec_ends_the_delivery_without_pubrel() {
        let now = Instant::now();
        let mut state = state_with(
            3,
            InflightStage::AwaitingAck(delivery(QoS::ExactlyOnce, None, now)),
        );
        let refusal = PubAck {
            packet_id: 3,
            reason: reason::NOT_AUTHORIZED,
            ..PubAck::default()
        };
        assert_eq!(
            on_pubrec(&mut state, &refusal),
            (None, StoredChange::Settled(Some(11)))
        );
        assert!(state.inflight.is_empty());
    }

    #[test]
    fn pubrec_for_an_unknown_id_answers_not_found() {
        let mut state = SessionState::new(0, ProtocolVersion::V5);
        let rec = PubAck {
            packet_id: 8,
            ..PubAck::default()
        };
        let (rel, change) = on_pubrec(&mut state, &rec);
        assert_eq!(
            rel.map(|r| r.reason),
            Some(reason::PACKET_IDENTIFIER_NOT_FOUND)
        );
        assert_eq!(change, StoredChange::None);
    }
}
