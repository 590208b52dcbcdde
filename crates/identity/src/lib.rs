//! Identity for fleetcore: the data dir's certificate authority and server certificate, client
//! certificates issued by that CA, the rustls configuration for the TLS listeners, and the
//! identity a verified client certificate stands for.
//!
//! Every cryptographic operation uses the `ring` provider passed explicitly, so nothing here
//! depends on a process-level rustls `CryptoProvider` being installed.

#![warn(missing_docs)]

pub mod certificates;
mod client_verifier;
pub mod credentials;
mod error;
pub mod pki;
pub mod policy;
pub mod registry;
pub mod service;

pub use client_verifier::ClientVerifier;
pub use credentials::{AdminCredentials, CredentialsSource};
pub use error::IdentityError;
pub use pki::{
    ClientAuth, IssuedCertificate, PeerIdentity, Pki, Provenance, ReissueReason, certificate_id,
    peer_identity,
};
pub use service::{AttachmentCheck, ConnectRefusal, IdentityService};
