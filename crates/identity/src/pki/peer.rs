//! The identity a verified client certificate stands for.

use time::OffsetDateTime;

use crate::IdentityError;

/// The identity a verified client certificate stands for: who it names, its certificate id
/// (the key the registry binds things and policies to), and when it stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's common name, if the certificate has a non-empty one.
    pub common_name: Option<String>,
    /// Lowercase hex SHA-256 of the certificate's DER (AWS IoT's `certificateId` form).
    pub certificate_id: String,
    /// The end of the certificate's validity.
    pub not_after: OffsetDateTime,
}

impl PeerIdentity {
    /// The name to authenticate the peer as: its common name, or its certificate id without one.
    pub fn principal(&self) -> &str {
        self.common_name.as_deref().unwrap_or(&self.certificate_id)
    }
}

/// Reads the identity out of a DER certificate, such as `peer_certificates()[0]` of a TLS
/// connection whose client certificate rustls has verified. This does not verify anything itself.
pub fn peer_identity(cert_der: &[u8]) -> Result<PeerIdentity, IdentityError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| {
        IdentityError::InvalidCertificate {
            reason: e.to_string(),
        }
    })?;
    if !rest.is_empty() {
        return Err(IdentityError::InvalidCertificate {
            reason: format!(
                "{} bytes of trailing data after the certificate",
                rest.len()
            ),
        });
    }
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .map(str::to_owned);
    Ok(PeerIdentity {
        common_name,
        certificate_id: certificate_id(cert_der),
        not_after: cert.validity().not_after.to_datetime(),
    })
}

/// The certificate id of a DER certificate: lowercase hex SHA-256 of its bytes.
pub fn certificate_id(cert_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
    let mut hex = String::with_capacity(digest.as_ref().len() * 2);
    for byte in digest.as_ref() {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    #[test]
    fn certificate_id_is_lowercase_hex_sha256() {
        assert_eq!(
            certificate_id(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn principal_is_the_common_name() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "sensor-7");
        let cert = params.self_signed(&key).unwrap();
        let identity = peer_identity(cert.der()).unwrap();
        assert_eq!(identity.common_name.as_deref(), Some("sensor-7"));
        assert_eq!(identity.principal(), "sensor-7");
        assert_eq!(identity.certificate_id, certificate_id(cert.der()));
        assert_eq!(identity.not_after, params.not_after);
    }

    #[test]
    fn principal_falls_back_to_certificate_id_without_common_name() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "no cn here");
        let cert = params.self_signed(&key).unwrap();
        let identity = peer_identity(cert.der()).unwrap();
        assert_eq!(identity.common_name, None);
        assert_eq!(identity.principal(), certificate_id(cert.der()));
        assert_eq!(identity.principal().len(), 64);
    }

    #[test]
    fn garbage_and_trailing_bytes_are_rejected() {
        assert!(matches!(
            peer_identity(b"not a certificate"),
            Err(IdentityError::InvalidCertificate { .. })
        ));
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::default().self_signed(&key).unwrap();
        let mut der = cert.der().to_vec();
        der.push(0);
        assert!(matches!(
            peer_identity(&der),
            Err(IdentityError::InvalidCertificate { .. })
        ));
    }
}
