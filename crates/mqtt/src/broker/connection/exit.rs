//! Why a connection ends, and what each ending means for the goodbye packet, the will and the
//! session.

use crate::protocol::{Utf8, reason};

/// Why a connection ends.
#[derive(Debug)]
pub(super) enum Exit {
    /// The client sent DISCONNECT; `keep_will` for MQTT 5 reason 0x04.
    Disconnected { keep_will: bool },
    /// The client broke the protocol or a limit: the reason code goes in our DISCONNECT.
    Violation { code: u8, why: &'static str },
    /// The socket closed or failed.
    Closed,
    /// Another connection took the session.
    TakenOver,
    /// The server is shutting down.
    Shutdown,
    /// The node drains: the client is sent to another node, named by the Server Reference.
    Moved(Utf8),
}

/// The connection ends because the client broke the protocol or a limit.
pub(super) fn violation(code: u8, why: &'static str) -> Exit {
    Exit::Violation { code, why }
}

/// What an ending entails.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Farewell {
    /// The will is published (now or after its delay).
    pub keep_will: bool,
    /// The session went to another connection (the router must not end it).
    pub taken_over: bool,
    /// Reason code of the DISCONNECT the server sends (MQTT 5 only).
    pub goodbye: Option<u8>,
}

impl Exit {
    /// What this ending entails.
    pub(super) fn farewell(&self) -> Farewell {
        let (keep_will, taken_over, goodbye) = match self {
            Exit::Disconnected { keep_will } => (*keep_will, false, None),
            Exit::Violation { code, .. } => (true, false, Some(*code)),
            Exit::Closed => (true, false, None),
            Exit::TakenOver => (true, true, Some(reason::SESSION_TAKEN_OVER)),
            Exit::Shutdown => (false, false, Some(reason::SERVER_SHUTTING_DOWN)),
            Exit::Moved(_) => (false, false, Some(reason::USE_ANOTHER_SERVER)),
        };
        Farewell {
            keep_will,
            taken_over,
            goodbye,
        }
    }

    /// The reason string for the server's DISCONNECT.
    pub(super) fn reason_string(&self) -> Option<&'static str> {
        match self {
            Exit::Violation { why, .. } => Some(why),
            _ => None,
        }
    }

    /// The Server Reference for the server's DISCONNECT.
    pub(super) fn server_reference(&self) -> Option<Utf8> {
        match self {
            Exit::Moved(to) => Some(to.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn farewell(keep_will: bool, taken_over: bool, goodbye: Option<u8>) -> Farewell {
        Farewell {
            keep_will,
            taken_over,
            goodbye,
        }
    }

    #[test]
    fn a_client_disconnect_keeps_the_will_only_when_asked() {
        let asked = Exit::Disconnected { keep_will: true };
        assert_eq!(asked.farewell(), farewell(true, false, None));
        let normal = Exit::Disconnected { keep_will: false };
        assert_eq!(normal.farewell(), farewell(false, false, None));
    }

    #[test]
    fn a_violation_publishes_the_will_and_says_why() {
        let exit = violation(reason::KEEP_ALIVE_TIMEOUT, "keep alive timeout");
        assert_eq!(
            exit.farewell(),
            farewell(true, false, Some(reason::KEEP_ALIVE_TIMEOUT))
        );
        assert_eq!(exit.reason_string(), Some("keep alive timeout"));
    }

    #[test]
    fn a_lost_socket_publishes_the_will_silently() {
        assert_eq!(Exit::Closed.farewell(), farewell(true, false, None));
        assert_eq!(Exit::Closed.reason_string(), None);
    }

    #[test]
    fn a_takeover_hands_the_session_on() {
        assert_eq!(
            Exit::TakenOver.farewell(),
            farewell(true, true, Some(reason::SESSION_TAKEN_OVER))
        );
    }

    #[test]
    fn a_shutdown_does_not_publish_the_will() {
        assert_eq!(
            Exit::Shutdown.farewell(),
            farewell(false, false, Some(reason::SERVER_SHUTTING_DOWN))
        );
    }

    #[test]
    fn a_drain_names_the_other_server_and_does_not_publish_the_will() {
        let exit = Exit::Moved(Utf8::new("b:1883").expect("utf8"));
        assert_eq!(
            exit.farewell(),
            farewell(false, false, Some(reason::USE_ANOTHER_SERVER))
        );
        assert_eq!(
            exit.server_reference().map(|r| r.as_str().to_owned()),
            Some("b:1883".into())
        );
        assert_eq!(Exit::Shutdown.server_reference(), None);
    }
}
