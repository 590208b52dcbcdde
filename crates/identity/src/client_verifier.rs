//! The client-certificate verifier of the TLS listeners, whose trusted CAs change at run time:
//! the built-in CA plus every CA certificate registered (RegisterCACertificate) and ACTIVE.
//! Listeners keep one `Arc<ServerConfig>`; the verifier inside it swaps its trust store.

use std::sync::Arc;

use parking_lot::RwLock;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::IdentityError;

/// A client-certificate verifier over a replaceable set of trusted CAs.
pub struct ClientVerifier {
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<dyn ClientCertVerifier>>,
}

impl std::fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientVerifier").finish_non_exhaustive()
    }
}

fn build(
    roots: &[CertificateDer<'static>],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, IdentityError> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone())?;
    }
    Ok(
        WebPkiClientVerifier::builder_with_provider(Arc::new(store), Arc::clone(provider))
            .build()?,
    )
}

impl ClientVerifier {
    /// A verifier trusting `roots` (at least one).
    pub fn new(roots: &[CertificateDer<'static>]) -> Result<Arc<ClientVerifier>, IdentityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = RwLock::new(build(roots, &provider)?);
        Ok(Arc::new(ClientVerifier { provider, current }))
    }

    /// Replaces the trusted CAs; handshakes already under way finish with the old set.
    pub fn set_roots(&self, roots: &[CertificateDer<'static>]) -> Result<(), IdentityError> {
        let next = build(roots, &self.provider)?;
        *self.current.write() = next;
        Ok(())
    }

    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(&self.current.read())
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional (RFC 8446 §4.2.4); devices carry one certificate and send it.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}
