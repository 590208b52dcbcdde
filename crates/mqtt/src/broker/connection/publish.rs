//! An inbound PUBLISH: topic alias, topic check, authorization, QoS 2 receipt, then the
//! accepted message goes to the taps, the ingest log, the retained store and the receivers.

use std::sync::Arc;
use std::time::Instant;

use fleetcore_core::access::MqttAction;

use super::Connection;
use super::exactly_once::{self, Receipt};
use super::exit::{Exit, violation};
use super::held_acks::Tickets;
use crate::broker::ingest::{Ingested, Publisher};
use crate::broker::message::Message;
use crate::protocol::{Packet, ProtocolVersion, PubAck, Publish, QoS, reason};
use crate::topic;

impl Connection {
    /// Handles a PUBLISH from the client.
    pub(super) fn on_publish(&mut self, mut p: Publish) -> Result<(), Exit> {
        let config = self.router.config();
        self.router.metrics().messages_received.increment(1);
        self.inbound_aliases
            .resolve(&mut p, config.topic_alias_maximum)?;
        if p.topic.is_empty() {
            return Err(violation(reason::PROTOCOL_ERROR, "empty topic name"));
        }
        if !topic::valid_topic_name(&p.topic, config.max_topic_length) {
            return Err(violation(reason::TOPIC_NAME_INVALID, "invalid topic name"));
        }
        let action = publish_action(p.retain);
        if !self.grant.allows(action, &p.topic) {
            self.router
                .metrics()
                .denied(action, &self.client_id, &p.topic);
            if let Some(m) = &self.meter {
                m.denied();
            }
            if let Some(refusal) = refusal(self.version, p.qos, p.packet_id)? {
                self.send(&refusal);
            }
            return Ok(());
        }
        if let Some(m) = &self.meter {
            m.published(p.payload.len());
        }
        // A sampled share of the messages is traced from here through routing and fan-out.
        let trace = fleetcore_core::trace::sample_message().then(|| {
            tracing::trace_span!(
                target: fleetcore_core::trace::TARGET,
                "mqtt.publish",
                otel.kind = "server",
                messaging.system = "mqtt",
                messaging.destination.name = %p.topic,
                messaging.mqtt.qos = p.qos as u8,
                messaging.client_id = %self.client_id,
                messaging.message.body.size = p.payload.len(),
                fleetcore.rules_ingested = tracing::field::Empty,
            )
            .entered()
        });
        let held_pubacks = self.held_acks.as_ref().map_or(0, |h| h.pubacks());
        let ack = match p.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => {
                exactly_once::within_receive_maximum(
                    self.state.awaiting_release.len() + held_pubacks,
                    config.max_inflight,
                )?;
                Some(Packet::PubAck(PubAck {
                    packet_id: p.packet_id,
                    ..PubAck::default()
                }))
            }
            QoS::ExactlyOnce => {
                let rec = Packet::PubRec(PubAck {
                    packet_id: p.packet_id,
                    ..PubAck::default()
                });
                match exactly_once::receive(
                    &mut self.state.awaiting_release,
                    p.packet_id,
                    held_pubacks,
                    config.max_inflight,
                )? {
                    Receipt::New => Some(rec),
                    Receipt::Duplicate => {
                        // Acknowledge (behind any held acknowledgement, to keep their order),
                        // do not route again.
                        self.acknowledge(rec, Tickets::default());
                        return Ok(());
                    }
                }
            }
        };
        p.properties.subscription_identifiers.clear();
        // The clock is read only for a message that expires.
        let expires_at = p
            .properties
            .message_expiry_interval
            .and_then(|interval| Message::expiry_from_interval(Some(interval), Instant::now()));
        let message = Arc::new(Message {
            expires_at,
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: p.properties,
            origin: Some(Arc::clone(&self.client_id)),
        });
        self.router.tap_from_client(&message, &self.principal);
        let publisher = Publisher {
            client_id: Some(&self.client_id),
            principal: Some(&self.principal),
        };
        let ticket = |ingested| match ingested {
            Ingested::Accepted(ticket) => ticket,
            Ingested::NotWanted | Ingested::Shed => 0,
        };
        let tickets = Tickets {
            ingest: ticket(self.router.ingest(&message, publisher)),
            forward: ticket(self.router.forward(&message, publisher)),
            ..Tickets::default()
        };
        if let Some(span) = &trace {
            span.record("fleetcore.rules_ingested", tickets.ingest != 0);
        }
        if message.retain {
            self.router.retain(&message);
        }
        self.fan_out(&message, ack, tickets);
        Ok(())
    }
}

/// The permission a PUBLISH needs.
fn publish_action(retain: bool) -> MqttAction {
    if retain {
        MqttAction::RetainPublish
    } else {
        MqttAction::Publish
    }
}

/// How to say no to an unauthorized PUBLISH: MQTT 5 answers with reason 0x87 (nothing for
/// QoS 0) and keeps the connection; 3.1.1 has no way to say no to a PUBLISH, so the connection
/// ends, as AWS IoT does.
fn refusal(version: ProtocolVersion, qos: QoS, packet_id: u16) -> Result<Option<Packet>, Exit> {
    let ack = PubAck {
        packet_id,
        reason: reason::NOT_AUTHORIZED,
        ..PubAck::default()
    };
    match (version, qos) {
        (ProtocolVersion::V311, _) => {
            Err(violation(reason::NOT_AUTHORIZED, "publish not authorized"))
        }
        (ProtocolVersion::V5, QoS::AtMostOnce) => Ok(None),
        (ProtocolVersion::V5, QoS::AtLeastOnce) => Ok(Some(Packet::PubAck(ack))),
        (ProtocolVersion::V5, QoS::ExactlyOnce) => Ok(Some(Packet::PubRec(ack))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt5_refuses_with_the_acknowledgement_of_the_qos() {
        match refusal(ProtocolVersion::V5, QoS::AtLeastOnce, 4) {
            Ok(Some(Packet::PubAck(a))) => {
                assert_eq!((a.packet_id, a.reason), (4, reason::NOT_AUTHORIZED))
            }
            other => panic!("expected PUBACK 0x87, got {other:?}"),
        }
        match refusal(ProtocolVersion::V5, QoS::ExactlyOnce, 5) {
            Ok(Some(Packet::PubRec(a))) => {
                assert_eq!((a.packet_id, a.reason), (5, reason::NOT_AUTHORIZED))
            }
            other => panic!("expected PUBREC 0x87, got {other:?}"),
        }
        assert!(matches!(
            refusal(ProtocolVersion::V5, QoS::AtMostOnce, 0),
            Ok(None)
        ));
    }

    #[test]
    fn mqtt311_refusal_ends_the_connection() {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            match refusal(ProtocolVersion::V311, qos, 1) {
                Err(Exit::Violation { code, .. }) => assert_eq!(code, reason::NOT_AUTHORIZED),
                other => panic!("expected a violation, got {other:?}"),
            }
        }
    }

    #[test]
    fn retaining_needs_its_own_permission() {
        assert_eq!(publish_action(true), MqttAction::RetainPublish);
        assert_eq!(publish_action(false), MqttAction::Publish);
    }
}
