//! How the broker asks who a connecting client is, without knowing how identities are kept.
//! The identity capability implements [`Authenticator`]; the binary wires it into the broker.

use std::sync::Arc;

use crate::access::ConnectionGrant;

/// The network path a client came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Plain TCP.
    Tcp,
    /// TLS with a verified client certificate.
    Tls,
    /// WebSocket over plain HTTP.
    WebSocket,
    /// WebSocket over TLS.
    WebSocketTls,
}

impl TransportKind {
    /// Short name used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::WebSocket => "ws",
            TransportKind::WebSocketTls => "wss",
        }
    }
}

/// What a client presented when it connected.
#[derive(Debug, Clone, Copy)]
pub struct ClientCredentials<'a> {
    /// The MQTT client identifier (after any server assignment).
    pub client_id: &'a str,
    /// The MQTT user name, if sent.
    pub username: Option<&'a str>,
    /// The DER of the client's leaf certificate, already verified against the trusted CAs by TLS.
    pub peer_certificate: Option<&'a [u8]>,
    /// The transport the client used.
    pub transport: TransportKind,
}

/// Why a connection was refused; the broker maps each to an MQTT reason code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The client may not connect (MQTT 5 0x87, 3.1.1 return code 5).
    NotAuthorized(String),
    /// The credentials are wrong (MQTT 5 0x86, 3.1.1 return code 4).
    BadCredentials(String),
}

/// The outcome of authenticating a connection.
pub enum AuthOutcome {
    /// The client is who `principal` names, and may do what `grant` allows.
    Allowed {
        principal: String,
        grant: Arc<dyn ConnectionGrant>,
    },
    /// The connection is refused.
    Refused(Refusal),
}

/// Decides who a connecting client is.
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates one CONNECT.
    fn authenticate(&self, credentials: &ClientCredentials<'_>) -> AuthOutcome;
}
