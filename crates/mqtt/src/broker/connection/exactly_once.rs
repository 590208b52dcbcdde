//! Inbound QoS 2: the packet ids received and not yet released, so a resent PUBLISH is
//! acknowledged again without being routed twice.

use std::collections::HashSet;

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

/// Records the receipt of QoS 2 packet `packet_id`; more than `receive_maximum` unreleased
/// receipts break the server's Receive Maximum.
pub(super) fn receive(
    awaiting_release: &mut HashSet<u16>,
    packet_id: u16,
    receive_maximum: u16,
) -> Result<Receipt, Exit> {
    if awaiting_release.contains(&packet_id) {
        return Ok(Receipt::Duplicate);
    }
    if awaiting_release.len() >= usize::from(receive_maximum) {
        return Err(violation(
            reason::RECEIVE_MAXIMUM_EXCEEDED,
            "more QoS 2 messages in flight than Receive Maximum",
        ));
    }
    awaiting_release.insert(packet_id);
    Ok(Receipt::New)
}

/// Releases packet `packet_id` on PUBREL and returns the PUBCOMP to send.
pub(super) fn release(awaiting_release: &mut HashSet<u16>, packet_id: u16) -> PubAck {
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
        let mut awaiting = HashSet::new();
        assert_eq!(receive(&mut awaiting, 7, 10).ok(), Some(Receipt::New));
        assert_eq!(receive(&mut awaiting, 7, 10).ok(), Some(Receipt::Duplicate));
        assert_eq!(release(&mut awaiting, 7).reason, reason::SUCCESS);
        assert_eq!(receive(&mut awaiting, 7, 10).ok(), Some(Receipt::New));
    }

    #[test]
    fn releasing_an_unknown_id_says_so() {
        let mut awaiting = HashSet::new();
        let comp = release(&mut awaiting, 3);
        assert_eq!(
            (comp.packet_id, comp.reason),
            (3, reason::PACKET_IDENTIFIER_NOT_FOUND)
        );
    }

    #[test]
    fn more_unreleased_receipts_than_receive_maximum_is_a_violation() {
        let mut awaiting = HashSet::new();
        assert!(receive(&mut awaiting, 1, 2).is_ok());
        assert!(receive(&mut awaiting, 2, 2).is_ok());
        // A resend is not a new receipt, even at the limit.
        assert_eq!(receive(&mut awaiting, 2, 2).ok(), Some(Receipt::Duplicate));
        match receive(&mut awaiting, 3, 2) {
            Err(Exit::Violation { code, .. }) => assert_eq!(code, reason::RECEIVE_MAXIMUM_EXCEEDED),
            other => panic!("expected a violation, got {other:?}"),
        }
        assert!(!awaiting.contains(&3));
    }
}
