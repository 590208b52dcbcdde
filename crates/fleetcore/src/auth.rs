//! Who a connecting MQTT client is: the subject of its verified client certificate, or, on
//! listeners without TLS and only when the operator allowed it, an anonymous client.

use std::sync::Arc;

use fleetcore_core::access::AllowAll;
use fleetcore_core::auth::{AuthOutcome, Authenticator, ClientCredentials, Refusal};
use fleetcore_identity::peer_identity;

/// The principal given to clients without a certificate when anonymous access is allowed.
pub const ANONYMOUS: &str = "anonymous";

/// Authenticates by client certificate (already verified against the CA by TLS).
pub struct CertificateAuthenticator {
    /// Accept clients without a certificate (plain TCP and WebSocket listeners).
    pub allow_anonymous: bool,
}

impl Authenticator for CertificateAuthenticator {
    fn authenticate(&self, credentials: &ClientCredentials<'_>) -> AuthOutcome {
        match credentials.peer_certificate {
            Some(der) => match peer_identity(der) {
                Ok(identity) => AuthOutcome::Allowed {
                    principal: identity.principal().to_string(),
                    grant: Arc::new(AllowAll),
                },
                Err(e) => AuthOutcome::Refused(Refusal::NotAuthorized(format!(
                    "unreadable client certificate: {e}"
                ))),
            },
            None if self.allow_anonymous => AuthOutcome::Allowed {
                principal: ANONYMOUS.to_string(),
                grant: Arc::new(AllowAll),
            },
            None => AuthOutcome::Refused(Refusal::NotAuthorized(
                "a client certificate is required (start with --allow-anonymous to accept clients without one)".into(),
            )),
        }
    }
}
