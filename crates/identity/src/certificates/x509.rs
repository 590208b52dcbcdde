//! Reading PEM certificates given over the API, checking their validity and issuer, and signing
//! certificate signing requests with the data dir's CA.

use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};

use crate::Pki;
use crate::registry::RegistryError;
use crate::registry::records::{Timestamp, random_bytes};

/// Start validity a little in the past so devices whose clocks lag accept new certificates.
const BACKDATE: Duration = Duration::minutes(5);

/// A certificate given as PEM, parsed once.
#[derive(Debug, Clone)]
pub(crate) struct ParsedCertificate {
    /// The DER of the (first) certificate in the PEM.
    pub der: Vec<u8>,
    /// The certificate re-encoded as PEM: nothing else that came with it (a chain, a key
    /// pasted by mistake) is stored.
    pub pem: String,
    /// Lowercase hex SHA-256 of the DER.
    pub id: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Basic constraints say CA:TRUE.
    pub is_ca: bool,
    /// The subject common name, if any.
    pub common_name: Option<String>,
}

impl ParsedCertificate {
    /// Reads the first certificate of `pem`; `CertificateValidation` if there is none or it
    /// does not parse.
    pub(crate) fn from_pem(pem: &str, what: &str) -> Result<ParsedCertificate, RegistryError> {
        let invalid = |reason: &str| {
            RegistryError::CertificateValidation(format!(
                "{what} is not a valid PEM certificate: {reason}"
            ))
        };
        let der =
            CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| invalid(&e.to_string()))?;
        ParsedCertificate::from_der(der.as_ref()).map_err(|e| match e {
            RegistryError::CertificateValidation(reason) => invalid(&reason),
            other => other,
        })
    }

    /// Reads a DER certificate.
    pub(crate) fn from_der(der: &[u8]) -> Result<ParsedCertificate, RegistryError> {
        let (rest, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| RegistryError::CertificateValidation(e.to_string()))?;
        if !rest.is_empty() {
            return Err(RegistryError::CertificateValidation(
                "trailing data after the certificate".into(),
            ));
        }
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Ok(ParsedCertificate {
            der: der.to_vec(),
            pem: pem_encode("CERTIFICATE", der),
            id: crate::certificate_id(der),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            is_ca: cert.is_ca(),
            common_name,
        })
    }

    /// `CertificateValidation` unless the certificate is valid at `now`.
    pub(crate) fn check_valid_at(
        &self,
        now: OffsetDateTime,
        what: &str,
    ) -> Result<(), RegistryError> {
        if now > self.not_after {
            return Err(RegistryError::CertificateValidation(format!(
                "{what} expired at {}",
                self.not_after
            )));
        }
        if now < self.not_before {
            return Err(RegistryError::CertificateValidation(format!(
                "{what} is not valid before {}",
                self.not_before
            )));
        }
        Ok(())
    }

    /// Whether `issuer` signed this certificate: its subject is our issuer name and its key
    /// verifies our signature.
    pub(crate) fn is_signed_by(&self, issuer: &ParsedCertificate) -> bool {
        let (Ok((_, cert)), Ok((_, ca))) = (
            x509_parser::parse_x509_certificate(&self.der),
            x509_parser::parse_x509_certificate(&issuer.der),
        ) else {
            return false;
        };
        cert.issuer() == ca.subject() && cert.verify_signature(Some(ca.public_key())).is_ok()
    }

    pub(crate) fn not_before(&self) -> Timestamp {
        Timestamp::from_datetime(self.not_before)
    }

    pub(crate) fn not_after(&self) -> Timestamp {
        Timestamp::from_datetime(self.not_after)
    }
}

/// Signs the certificate signing request `csr_pem` with the data dir's CA: the subject and
/// subject alternative names come from the request, the rest is fleetcore's (a client
/// certificate valid until the CA expires, like AWS's CA-issued certificates, which run until
/// 2049). The request's own signature must verify. Returns the certificate's DER.
pub(crate) fn sign_csr(pki: &Pki, csr_pem: &str) -> Result<Vec<u8>, RegistryError> {
    let request = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
        RegistryError::invalid(format!("certificateSigningRequest is not a valid CSR: {e}"))
    })?;
    let now = OffsetDateTime::now_utc();
    let mut params = request.params;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = now - BACKDATE;
    params.not_after = pki.ca_not_after();
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    let signed = pki
        .sign_request(CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        })
        .map_err(|e| RegistryError::Internal(format!("signing the certificate failed: {e}")))?;
    Ok(signed.der().to_vec())
}

/// A random positive 16-byte serial number.
fn random_serial() -> Result<SerialNumber, RegistryError> {
    let mut bytes = random_bytes::<16>()?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// PEM with 64-character base64 lines.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn reencoded_pem_round_trips() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let with_key = format!("{}{}", cert.pem(), key.serialize_pem());
        let parsed = ParsedCertificate::from_pem(&with_key, "certificatePem").unwrap();
        assert_eq!(parsed.der, cert.der().to_vec());
        assert!(!parsed.pem.contains("PRIVATE KEY"));
        let again = ParsedCertificate::from_pem(&parsed.pem, "certificatePem").unwrap();
        assert_eq!(again.id, parsed.id);
        assert!(matches!(
            ParsedCertificate::from_pem("garbage", "certificatePem"),
            Err(RegistryError::CertificateValidation(_))
        ));
    }
}
