//! SUBSCRIBE and UNSUBSCRIBE: each filter checked and authorized, applied through the router,
//! answered in order once a persistent session's record holding the change is on disk,
//! retained messages queued behind the SUBACK.

use std::sync::Arc;

use fleetcore_core::access::MqttAction;

use super::Connection;
use super::exit::{Exit, violation};
use super::held_acks::Tickets;
use crate::protocol::{
    AckProperties, Packet, SubAck, Subscribe, SubscribeFilter, UnsubAck, Unsubscribe, reason,
};

impl Connection {
    /// Handles a SUBSCRIBE from the client.
    pub(super) fn on_subscribe(&mut self, s: Subscribe) -> Result<(), Exit> {
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        let mut tickets = Tickets::default();
        for f in &s.filters {
            check_filter(f)?;
            if !self.grant.allows(MqttAction::Subscribe, &f.filter) {
                self.router
                    .metrics()
                    .denied(MqttAction::Subscribe, &self.client_id, &f.filter);
                if let Some(m) = &self.meter {
                    m.denied();
                }
                // The 3.1.1 encoder writes 0x80 (failure) for any code from 0x80 up.
                reasons.push(reason::NOT_AUTHORIZED);
                continue;
            }
            let router = Arc::clone(&self.router);
            match router.subscribe(
                &self.session,
                &mut self.state,
                &f.filter,
                f.options,
                s.properties.subscription_identifier,
            ) {
                Ok(subscribed) => {
                    reasons.push(f.options.qos as u8);
                    retained.extend(subscribed.retained);
                    tickets.session = tickets.session.max(subscribed.record_ticket);
                }
                Err(code) => reasons.push(code),
            }
        }
        // Retained messages follow the SUBACK, behind what is already queued.
        self.acknowledge_then(
            Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                reasons,
                properties: AckProperties::default(),
            }),
            tickets,
            retained,
        );
        Ok(())
    }

    /// Handles an UNSUBSCRIBE from the client.
    pub(super) fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let mut reasons = Vec::with_capacity(u.filters.len());
        let mut tickets = Tickets::default();
        for f in &u.filters {
            let router = Arc::clone(&self.router);
            match router.unsubscribe(&self.session, &mut self.state, f) {
                Some(ticket) => {
                    tickets.session = tickets.session.max(ticket);
                    reasons.push(reason::SUCCESS);
                }
                None => reasons.push(reason::NO_SUBSCRIPTION_EXISTED),
            }
        }
        self.acknowledge(
            Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                reasons,
                properties: AckProperties::default(),
            }),
            tickets,
        );
    }
}

/// Breaks of the protocol in a subscription that end the connection (MQTT 5 §3.8.3.1: No
/// Local on a shared subscription).
fn check_filter(f: &SubscribeFilter) -> Result<(), Exit> {
    if f.options.no_local && f.filter.starts_with("$share/") {
        return Err(violation(
            reason::PROTOCOL_ERROR,
            "No Local on a shared subscription",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{SubscriptionOptions, Utf8};

    fn filter(filter: &str, no_local: bool) -> SubscribeFilter {
        SubscribeFilter {
            filter: Utf8::new(filter).unwrap_or_default(),
            options: SubscriptionOptions {
                no_local,
                ..SubscriptionOptions::default()
            },
        }
    }

    #[test]
    fn no_local_is_refused_on_shared_subscriptions_only() {
        assert!(check_filter(&filter("a/+", true)).is_ok());
        assert!(check_filter(&filter("$share/g/a/+", false)).is_ok());
        match check_filter(&filter("$share/g/a/+", true)) {
            Err(Exit::Violation { code, .. }) => assert_eq!(code, reason::PROTOCOL_ERROR),
            other => panic!("expected a violation, got {other:?}"),
        }
    }
}
