//! Inbound QoS 2: the packet ids received and not yet released, so a resent PUBLISH is
//! acknowledged again without being routed twice; and the server's Receive Maximum, which
//! bounds those together with the QoS 1 messages not yet acknowledged.

use std::collections::BTreeSet;

use super::exit::{Exit, violation};
use crate::protocol::{PubAck, reason};

/// What to do with an inbound QoS 2 PUBLISH.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Receipt {
    /// First time this packet id is seen: route the message, answer PUBREC.
    New,
    /// A resend of a message already routed: answer PUBREC again, do not route.
    Duplicate,
}

/// Records the receipt of QoS 2 packet `packet_id`. A new one must fit in the server's
/// Receive Maximum beside the unreleased receipts and `unacknowledged_qos1` QoS 1 messages.
pub(super) fn receive(
    awaiting_release: &mut BTreeSet<u16>,
    packet_id: u16,
    unacknowledged_qos1: usize,
    receive_maximum: u16,
) -> Result<Receipt, Exit> {
    if awaiting_release.contains(&packet_id) {
        return Ok(Receipt::Duplicate);
    }
    within_receive_maximum(
        awaiting_release.len() + unacknowledged_qos1,
        receive_maximum,
    )?;
    awaiting_release.insert(packet_id);
    Ok(Receipt::New)
}

/// A new QoS 1 or 2 PUBLISH arrives while `unacknowledged` others wait for their PUBACK or
/// PUBCOMP: at the server's Receive Maximum already, the client broke it (MQTT 5 §4.9).
pub(super) fn within_receive_maximum(
    unacknowledged: usize,
    receive_maximum: u16,
) -> Result<(), Exit> {
    if unacknowledged >= usize::from(receive_maximum) {
        return Err(violation(
            reason::RECEIVE_MAXIMUM_EXCEEDED,
            "more QoS 1 and 2 messages unacknowledged than Receive Maximum",
        ));
    }
    Ok(())
}

/// Releases packet `packet_id` on PUBREL and returns the PUBCOMP to send.
pub(super) fn release(awaiting_release: &mut BTreeSet<u16>, packet_id: u16) -> PubAck {
    let known = awaiting_release.remove(&packet_id);
    PubAck {
        packet_id,
        reason: if known {
            reason::SUCCESS
        } else {
            reason::PACKET_IDENTIFIER_NOT_FOUND
        },
        ..PubAck::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resent_publish_is_a_duplicate_until_released() {
        let mut awaiting = BTreeSet::new();
        assert_eq!(receive(&mut awaiting, 7, 0, 10).ok(), Some(Receipt::New));
        assert_eq!(
            receive(&mut awaiting, 7, 0, 10).ok(),
            Some(Receipt::Duplicate)
        );
        assert_eq!(release(&mut awaiting, 7).reason, reason::SUCCESS);
        assert_eq!(receive(&mut awaiting, 7, 0, 10).ok(), Some(Receipt::New));
    }

    #[test]
    fn releasing_an_unknown_id_says_so() {
        let mut awaiting = BTreeSet::new();
        let comp = release(&mut awaiting, 3);
        assert_eq!(
            (comp.packet_id, comp.reason),
            (3, reason::PACKET_IDENTIFIER_NOT_FOUND)
        );
    }

    #[test]
    fn more_unreleased_receipts_than_receive_maximum_is_a_violation() {
        let mut awaiting = BTreeSet::new();
        assert!(receive(&mut awaiting, 1, 0, 2).is_ok());
        assert!(receive(&mut awaiting, 2, 0, 2).is_ok());
        // A resend is not a new receipt, even at the limit.
        assert_eq!(
            receive(&mut awaiting, 2, 0, 2).ok(),
            Some(Receipt::Duplicate)
        );
        assert_eq!(
            exceeded(receive(&mut awaiting, 3, 0, 2).map(|_| ())),
            Some(true)
        );
        assert!(!awaiting.contains(&3));
    }

    #[test]
    fn unacknowledged_qos1_messages_count_against_receive_maximum() {
        let mut awaiting = BTreeSet::new();
        assert!(receive(&mut awaiting, 1, 1, 3).is_ok());
        assert_eq!(
            exceeded(receive(&mut awaiting, 2, 2, 3).map(|_| ())),
            Some(true)
        );
        assert_eq!(exceeded(within_receive_maximum(2, 3)), None);
        assert_eq!(exceeded(within_receive_maximum(3, 3)), Some(true));
    }

    /// `Some(true)` for a Receive Maximum violation, `None` when allowed.
    fn exceeded(result: Result<(), Exit>) -> Option<bool> {
        match result {
            Ok(()) => None,
            Err(Exit::Violation { code, .. }) => Some(code == reason::RECEIVE_MAXIMUM_EXCEEDED),
            Err(other) => panic!("unexpected exit {other:?}"),
        }
    }
}
