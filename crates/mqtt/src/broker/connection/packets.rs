//! One handler per packet the client sends.

use super::exit::{Exit, violation};
use super::outbound::StoredChange;
use super::{Connection, exactly_once, outbound};
use crate::protocol::{self, Disconnect, Packet, ProtocolVersion, reason};

impl Connection {
    /// Applies one packet from the client.
    pub(super) fn handle(&mut self, packet: Packet) -> Result<(), Exit> {
        match packet {
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(ack) => {
                let change = outbound::on_puback(&mut self.state, ack.packet_id);
                self.store(change);
                Ok(())
            }
            Packet::PubRec(rec) => {
                let (rel, change) = outbound::on_pubrec(&mut self.state, &rec);
                self.store(change);
                if let Some(rel) = rel {
                    self.send(&Packet::PubRel(rel));
                }
                Ok(())
            }
            Packet::PubComp(comp) => {
                let change = outbound::on_pubcomp(&mut self.state, comp.packet_id);
                self.store(change);
                Ok(())
            }
            Packet::PubRel(rel) => {
                let comp = exactly_once::release(&mut self.state.awaiting_release, rel.packet_id);
                self.send(&Packet::PubComp(comp));
                Ok(())
            }
            Packet::Subscribe(s) => self.on_subscribe(s),
            Packet::Unsubscribe(u) => {
                self.on_unsubscribe(u);
                Ok(())
            }
            Packet::PingReq => {
                self.send(&Packet::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => self.on_disconnect(d),
            Packet::Auth(_) => Err(violation(
                reason::PROTOCOL_ERROR,
                "AUTH without an authentication method in CONNECT",
            )),
            Packet::Connect(_) => Err(violation(reason::PROTOCOL_ERROR, "second CONNECT")),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(violation(
                    reason::PROTOCOL_ERROR,
                    "server-to-client packet sent by the client",
                ))
            }
        }
    }

    /// Applies what an acknowledgement changed to the session's durable queue.
    fn store(&self, change: StoredChange) {
        match change {
            StoredChange::None => {}
            StoredChange::Settled(seq) => self.session.settle(seq),
            StoredChange::Released(seq, packet_id) => self.session.released(seq, packet_id),
        }
    }

    /// Encodes `packet` into the write buffer.
    pub(super) fn send(&mut self, packet: &Packet) {
        protocol::encode(packet, self.version, &mut self.wbuf);
    }

    fn on_disconnect(&mut self, d: Disconnect) -> Result<(), Exit> {
        if self.version == ProtocolVersion::V5 {
            if let Some(expiry) = d.properties.session_expiry_interval {
                if self.state.expiry_interval == 0 && expiry != 0 {
                    return Err(violation(
                        reason::PROTOCOL_ERROR,
                        "session expiry set at DISCONNECT after CONNECT set 0",
                    ));
                }
                self.state.expiry_interval = expiry;
            }
            return Err(Exit::Disconnected {
                keep_will: d.reason == reason::DISCONNECT_WITH_WILL,
            });
        }
        Err(Exit::Disconnected { keep_will: false })
    }
}
