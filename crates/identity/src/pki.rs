//! The data dir's PKI: a root CA and a server certificate created on first start, client
//! certificates issued by the CA, and the rustls server configuration for the TLS listeners.
//!
//! Layout under the data dir (directories 0700, keys 0600):
//! `ca/ca.pem`, `ca/ca.key`, `tls/server.pem`, `tls/server.key`.
//!
//! The CA is never replaced automatically: replacing it would invalidate every device
//! certificate. The server certificate is derived state and is re-issued whenever it no longer
//! fits (names changed, close to expiry, unreadable, or not from this CA).

pub(crate) mod files;
mod peer;

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::IdentityError;
use files::{CERT_MODE, KEY_MODE};
pub use peer::{PeerIdentity, certificate_id, peer_identity};

/// Subject common name of the root CA.
const CA_COMMON_NAME: &str = "fleetcore root CA";
/// Subject common name of the server certificate (clients check its SANs, not this).
const SERVER_COMMON_NAME: &str = "fleetcore server";
/// Ten years, counting the leap days such a span usually holds.
const CA_VALIDITY: Duration = Duration::days(3652);
/// The server certificate is re-issued on start when less than `RENEW_BEFORE` is left, so a
/// year keeps restarts from re-issuing it often while limiting the life of a leaked key.
const SERVER_VALIDITY: Duration = Duration::days(365);
/// Re-issue the server certificate on start when it expires within this.
const RENEW_BEFORE: Duration = Duration::days(30);
/// Start validity a little in the past so peers whose clocks lag slightly accept new certificates.
const BACKDATE: Duration = Duration::minutes(5);
/// X.520 upper bound for a common name.
const MAX_COMMON_NAME_LEN: usize = 64;

/// How the TLS server treats client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client certificate chaining to the data dir's CA is mandatory (mutual TLS).
    Required,
    /// No client certificate is requested: server authentication only.
    None,
}

/// A certificate and its freshly generated private key, both PEM, as handed to a device.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The PKCS#8 private key, PEM. Shown once: fleetcore keeps no copy.
    pub private_key_pem: String,
    /// The public key, PEM (SubjectPublicKeyInfo).
    pub public_key_pem: String,
    /// The certificate id: lowercase hex SHA-256 of the certificate's DER.
    pub certificate_id: String,
}

impl fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("certificate_id", &self.certificate_id)
            .field("private_key_pem", &"[elided]")
            .finish_non_exhaustive()
    }
}

/// Where `Pki::load_or_create` got a certificate from, so the caller can log what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Loaded from the data dir unchanged.
    Loaded,
    /// Created because neither the certificate nor its key existed.
    Created,
    /// Replaced the certificate on disk, for the given reason.
    Reissued(ReissueReason),
}

/// Why a certificate on disk was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReissueReason {
    /// Only one of the certificate and its key existed. The CA certificate is re-made from its
    /// surviving key (same key and subject), so certificates it issued stay valid.
    Incomplete,
    /// The certificate or key file could not be parsed.
    Unreadable,
    /// The key file does not belong to the certificate.
    KeyMismatch,
    /// The certificate was not signed by the current CA.
    NotIssuedByCa,
    /// The certificate's names differ from the configured server names.
    NamesChanged,
    /// The certificate expires within 30 days (or already has).
    ExpiresSoon,
}

/// The data dir's certificate authority and server certificate, created on first start.
pub struct Pki {
    data_dir: PathBuf,
    server_names: Vec<String>,
    ca: CertificateAuthority,
    server: ServerCertificate,
    ca_provenance: Provenance,
    server_provenance: Provenance,
}

struct CertificateAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    not_after: OffsetDateTime,
    issuer: Issuer<'static, KeyPair>,
}

struct ServerCertificate {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: PrivateKeyDer<'static>,
    not_after: OffsetDateTime,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("data_dir", &self.data_dir)
            .field("server_names", &self.server_names)
            .field("ca_not_after", &self.ca.not_after)
            .field("server_not_after", &self.server.not_after)
            .field("ca_provenance", &self.ca_provenance)
            .field("server_provenance", &self.server_provenance)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Loads `<data_dir>/ca/ca.pem`, `ca/ca.key`, `tls/server.pem` and `tls/server.key`, creating
    /// whatever is missing: a root CA (10 years) and a server certificate signed by it whose
    /// SANs are `server_names` (IP addresses where they parse as one, DNS names otherwise).
    /// The server certificate is re-issued, keeping the CA, when its SANs differ from
    /// `server_names`, it expires within 30 days, or it does not fit the CA or its key.
    pub fn load_or_create(data_dir: &Path, server_names: &[String]) -> Result<Pki, IdentityError> {
        let wanted_names = parse_server_names(server_names)?;
        files::create_private_dir(&data_dir.join("ca"))?;
        files::create_private_dir(&data_dir.join("tls"))?;
        let now = OffsetDateTime::now_utc();

        let ca_cert_path = ca_cert_path(data_dir);
        let ca_key_path = ca_key_path(data_dir);
        let (ca, ca_provenance) = load_or_create_ca(&ca_cert_path, &ca_key_path, now)?;

        let server_cert_path = server_cert_path(data_dir);
        let server_key_path = server_key_path(data_dir);
        let (server, server_provenance) =
            match load_server(&server_cert_path, &server_key_path, &ca, &wanted_names, now)? {
                Ok(server) => (server, Provenance::Loaded),
                Err(missing_or_reason) => {
                    let (server, key_pem) = issue_server(&ca, server_names, now)?;
                    // Key first: a crash between the two renames leaves a key that does not
                    // match the certificate, which the next start detects and repairs.
                    files::write_atomically(&server_key_path, key_pem.as_bytes(), KEY_MODE)?;
                    files::write_atomically(
                        &server_cert_path,
                        server.cert_pem.as_bytes(),
                        CERT_MODE,
                    )?;
                    let provenance = match missing_or_reason {
                        None => Provenance::Created,
                        Some(reason) => Provenance::Reissued(reason),
                    };
                    (server, provenance)
                }
            };

        Ok(Pki {
            data_dir: data_dir.to_path_buf(),
            server_names: server_names.to_vec(),
            ca,
            server,
            ca_provenance,
            server_provenance,
        })
    }

    /// The rustls server configuration for the MQTT/WSS listeners: TLS 1.2 and 1.3 with the
    /// `ring` provider, presenting the server certificate. With [`ClientAuth::Required`] a client
    /// certificate chaining to the CA is mandatory.
    pub fn server_config(
        &self,
        client_auth: ClientAuth,
    ) -> Result<Arc<ServerConfig>, IdentityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ClientCertVerifier> = match client_auth {
            ClientAuth::Required => {
                let mut roots = RootCertStore::empty();
                roots.add(self.ca.cert_der.clone())?;
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()?
            }
            ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
        };
        self.server_config_with_verifier(verifier)
    }

    /// rustls server config whose client certificates are checked by `verifier` (e.g. a
    /// [`crate::ClientVerifier`] that also trusts registered CAs). TLS 1.2 and 1.3.
    pub fn server_config_with_verifier(
        &self,
        verifier: Arc<dyn ClientCertVerifier>,
    ) -> Result<Arc<ServerConfig>, IdentityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![self.server.cert_der.clone()],
                self.server.key_der.clone_key(),
            )?;
        Ok(Arc::new(config))
    }

    /// Signs a certificate request with the CA (CreateCertificateFromCsr): the caller decides
    /// the request's final parameters; the CA's key never leaves this struct.
    pub fn sign_request(
        &self,
        request: rcgen::CertificateSigningRequestParams,
    ) -> Result<rcgen::Certificate, IdentityError> {
        Ok(request.signed_by(&self.ca.issuer)?)
    }

    /// Issues a client certificate for `common_name`, signed by the CA and valid for `days`
    /// days from now, with a new ECDSA P-256 key.
    pub fn issue_client_certificate(
        &self,
        common_name: &str,
        days: u32,
    ) -> Result<IssuedCertificate, IdentityError> {
        validate_common_name(common_name)?;
        let now = OffsetDateTime::now_utc();
        let not_after = now
            .checked_add(Duration::days(i64::from(days)))
            .filter(|_| days > 0)
            .ok_or(IdentityError::InvalidValidity { days })?;

        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = leaf_params(common_name, now, not_after)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.ca.issuer)?;
        Ok(IssuedCertificate {
            certificate_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
            public_key_pem: key.public_key_pem(),
            certificate_id: certificate_id(cert.der()),
        })
    }

    /// The CA certificate, PEM: what devices and clients trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// The CA certificate, DER.
    pub fn ca_cert_der(&self) -> &CertificateDer<'static> {
        &self.ca.cert_der
    }

    /// The end of the CA certificate's validity.
    pub fn ca_not_after(&self) -> OffsetDateTime {
        self.ca.not_after
    }

    /// The server certificate, PEM.
    pub fn server_cert_pem(&self) -> &str {
        &self.server.cert_pem
    }

    /// The server certificate, DER.
    pub fn server_cert_der(&self) -> &CertificateDer<'static> {
        &self.server.cert_der
    }

    /// The end of the server certificate's validity.
    pub fn server_cert_not_after(&self) -> OffsetDateTime {
        self.server.not_after
    }

    /// The names the server certificate was checked against (and issued for, if it was).
    pub fn server_names(&self) -> &[String] {
        &self.server_names
    }

    /// The data dir this PKI lives in.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `<data_dir>/ca/ca.pem`.
    pub fn ca_cert_path(&self) -> PathBuf {
        ca_cert_path(&self.data_dir)
    }

    /// `<data_dir>/ca/ca.key`.
    pub fn ca_key_path(&self) -> PathBuf {
        ca_key_path(&self.data_dir)
    }

    /// `<data_dir>/tls/server.pem`.
    pub fn server_cert_path(&self) -> PathBuf {
        server_cert_path(&self.data_dir)
    }

    /// `<data_dir>/tls/server.key`.
    pub fn server_key_path(&self) -> PathBuf {
        server_key_path(&self.data_dir)
    }

    /// Whether the CA was loaded, created, or its certificate re-made from its key.
    pub fn ca_provenance(&self) -> Provenance {
        self.ca_provenance
    }

    /// Whether the server certificate was loaded, created or re-issued, and why.
    pub fn server_cert_provenance(&self) -> Provenance {
        self.server_provenance
    }
}

fn ca_cert_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ca").join("ca.pem")
}

fn ca_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ca").join("ca.key")
}

fn server_cert_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("server.pem")
}

fn server_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("server.key")
}

/// A subject alternative name, normalised for comparing a certificate with the configuration.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SubjectAltName {
    Dns(String),
    Ip(IpAddr),
    /// A kind of name fleetcore never issues; its presence means the certificate differs.
    Other,
}

fn parse_server_names(names: &[String]) -> Result<BTreeSet<SubjectAltName>, IdentityError> {
    if names.is_empty() {
        return Err(IdentityError::NoServerNames);
    }
    names
        .iter()
        .map(|name| match ServerName::try_from(name.as_str()) {
            Ok(ServerName::IpAddress(ip)) => Ok(SubjectAltName::Ip(IpAddr::from(ip))),
            Ok(ServerName::DnsName(dns)) => {
                Ok(SubjectAltName::Dns(dns.as_ref().to_ascii_lowercase()))
            }
            _ => Err(IdentityError::InvalidServerName { name: name.clone() }),
        })
        .collect()
}

fn certificate_names(cert: &X509Certificate<'_>) -> BTreeSet<SubjectAltName> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return BTreeSet::new();
    };
    san.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(dns) => SubjectAltName::Dns(dns.to_ascii_lowercase()),
            GeneralName::IPAddress(bytes) => {
                if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                    SubjectAltName::Ip(IpAddr::from(v4))
                } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                    SubjectAltName::Ip(IpAddr::from(v6))
                } else {
                    SubjectAltName::Other
                }
            }
            _ => SubjectAltName::Other,
        })
        .collect()
}

fn validate_common_name(name: &str) -> Result<(), IdentityError> {
    let reason = if name.is_empty() {
        "must not be empty"
    } else if name.chars().count() > MAX_COMMON_NAME_LEN {
        "longer than 64 characters"
    } else if name.chars().any(char::is_control) {
        "contains control characters"
    } else {
        return Ok(());
    };
    Err(IdentityError::InvalidCommonName {
        name: name.to_owned(),
        reason,
    })
}

/// A random positive serial number of 16 bytes (RFC 5280 allows up to 20).
fn random_serial() -> Result<SerialNumber, IdentityError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| IdentityError::Random)?;
    // Positive, and with a non-zero leading byte so the encoding keeps all 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn subject(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn ca_params(now: OffsetDateTime) -> Result<CertificateParams, IdentityError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// Parameters shared by server and client certificates.
fn leaf_params(
    common_name: &str,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, IdentityError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = now - BACKDATE;
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// The text of a CA file; unlike the server files, an unreadable CA file is an error, never replaced.
fn ca_file_text<'a>(
    path: &Path,
    bytes: &'a [u8],
    expected: &'static str,
) -> Result<&'a str, IdentityError> {
    std::str::from_utf8(bytes).map_err(|_| IdentityError::InvalidCaFile {
        path: path.to_path_buf(),
        expected,
    })
}

fn load_or_create_ca(
    cert_path: &Path,
    key_path: &Path,
    now: OffsetDateTime,
) -> Result<(CertificateAuthority, Provenance), IdentityError> {
    let cert_bytes = files::read_if_exists(cert_path)?;
    let key_bytes = files::read_if_exists(key_path)?;
    match (cert_bytes, key_bytes) {
        (Some(cert_bytes), Some(key_bytes)) => {
            let key = parse_ca_key(key_path, &key_bytes)?;
            let invalid_cert = || IdentityError::InvalidCaFile {
                path: cert_path.to_path_buf(),
                expected: "PEM CA certificate",
            };
            let cert_der =
                CertificateDer::from_pem_slice(&cert_bytes).map_err(|_| invalid_cert())?;
            let (_, cert) =
                x509_parser::parse_x509_certificate(&cert_der).map_err(|_| invalid_cert())?;
            if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
                return Err(IdentityError::CaKeyMismatch {
                    certificate: cert_path.to_path_buf(),
                    key: key_path.to_path_buf(),
                });
            }
            let not_after = cert.validity().not_after.to_datetime();
            let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|_| invalid_cert())?;
            let cert_pem = ca_file_text(cert_path, &cert_bytes, "PEM CA certificate")?.to_owned();
            Ok((
                CertificateAuthority {
                    cert_pem,
                    cert_der,
                    not_after,
                    issuer,
                },
                Provenance::Loaded,
            ))
        }
        (Some(_), None) => Err(IdentityError::CaKeyMissing {
            certificate: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        }),
        (None, Some(key_bytes)) => {
            // A crash between writing the key and the certificate, or a deleted certificate:
            // the same key and subject make a certificate that still verifies everything
            // issued under the old one.
            let key = parse_ca_key(key_path, &key_bytes)?;
            let ca = self_sign_ca(key, now)?;
            files::write_atomically(cert_path, ca.cert_pem.as_bytes(), CERT_MODE)?;
            Ok((ca, Provenance::Reissued(ReissueReason::Incomplete)))
        }
        (None, None) => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let ca = self_sign_ca(key, now)?;
            // Key first, so a crash in between leaves the recoverable (key, no certificate) state.
            files::write_atomically(
                key_path,
                ca.issuer.key().serialize_pem().as_bytes(),
                KEY_MODE,
            )?;
            files::write_atomically(cert_path, ca.cert_pem.as_bytes(), CERT_MODE)?;
            Ok((ca, Provenance::Created))
        }
    }
}

fn parse_ca_key(path: &Path, bytes: &[u8]) -> Result<KeyPair, IdentityError> {
    let text = ca_file_text(path, bytes, "PEM private key")?;
    KeyPair::from_pem(text).map_err(|_| IdentityError::InvalidCaFile {
        path: path.to_path_buf(),
        expected: "PEM private key",
    })
}

fn self_sign_ca(key: KeyPair, now: OffsetDateTime) -> Result<CertificateAuthority, IdentityError> {
    let params = ca_params(now)?;
    let cert = params.self_signed(&key)?;
    Ok(CertificateAuthority {
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        not_after: params.not_after,
        issuer: Issuer::new(params, key),
    })
}

/// The server certificate on disk if it is still fit for use. Otherwise `Err(None)` when neither
/// file exists, or `Err(Some(reason))` saying why it must be replaced.
fn load_server(
    cert_path: &Path,
    key_path: &Path,
    ca: &CertificateAuthority,
    wanted_names: &BTreeSet<SubjectAltName>,
    now: OffsetDateTime,
) -> Result<Result<ServerCertificate, Option<ReissueReason>>, IdentityError> {
    let (cert_bytes, key_bytes) = match (
        files::read_if_exists(cert_path)?,
        files::read_if_exists(key_path)?,
    ) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => return Ok(Err(None)),
        _ => return Ok(Err(Some(ReissueReason::Incomplete))),
    };
    Ok(check_server(&cert_bytes, &key_bytes, ca, wanted_names, now).map_err(Some))
}

fn check_server(
    cert_bytes: &[u8],
    key_bytes: &[u8],
    ca: &CertificateAuthority,
    wanted_names: &BTreeSet<SubjectAltName>,
    now: OffsetDateTime,
) -> Result<ServerCertificate, ReissueReason> {
    let cert_pem = std::str::from_utf8(cert_bytes).map_err(|_| ReissueReason::Unreadable)?;
    let key_pem = std::str::from_utf8(key_bytes).map_err(|_| ReissueReason::Unreadable)?;
    let cert_der =
        CertificateDer::from_pem_slice(cert_bytes).map_err(|_| ReissueReason::Unreadable)?;
    let key_der =
        PrivateKeyDer::from_pem_slice(key_bytes).map_err(|_| ReissueReason::Unreadable)?;
    let key = KeyPair::from_pem(key_pem).map_err(|_| ReissueReason::Unreadable)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&cert_der).map_err(|_| ReissueReason::Unreadable)?;
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca.cert_der)
        .map_err(|_| ReissueReason::NotIssuedByCa)?;

    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(ReissueReason::KeyMismatch);
    }
    if cert.issuer() != ca_cert.subject()
        || cert.verify_signature(Some(ca_cert.public_key())).is_err()
    {
        return Err(ReissueReason::NotIssuedByCa);
    }
    if certificate_names(&cert) != *wanted_names {
        return Err(ReissueReason::NamesChanged);
    }
    let not_after = cert.validity().not_after.to_datetime();
    if not_after - now < RENEW_BEFORE {
        return Err(ReissueReason::ExpiresSoon);
    }
    Ok(ServerCertificate {
        cert_pem: cert_pem.to_owned(),
        cert_der: cert_der.clone(),
        key_der,
        not_after,
    })
}

/// A new server certificate and its key's PEM.
fn issue_server(
    ca: &CertificateAuthority,
    server_names: &[String],
    now: OffsetDateTime,
) -> Result<(ServerCertificate, String), IdentityError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    // Never outlive the CA: a certificate past its issuer's expiry would not verify anyway.
    let not_after = (now + SERVER_VALIDITY).min(ca.not_after);
    let mut params = leaf_params(SERVER_COMMON_NAME, now, not_after)?;
    params.subject_alt_names = CertificateParams::new(server_names.to_vec())?.subject_alt_names;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca.issuer)?;
    let server = ServerCertificate {
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        key_der: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        not_after,
    };
    Ok((server, key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use x509_parser::extensions::ParsedExtension;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    fn default_names() -> Vec<String> {
        names(&["localhost", "127.0.0.1"])
    }

    fn read(path: &Path) -> Vec<u8> {
        fs::read(path).unwrap()
    }

    fn der_of(pem: &[u8]) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem).unwrap()
    }

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Asserts `cert_der` carries the CA's name as issuer and a signature the CA's key made.
    fn assert_issued_by(cert_der: &[u8], ca_der: &[u8]) {
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(ca_der).unwrap();
        assert_eq!(cert.issuer(), ca.subject());
        cert.verify_signature(Some(ca.public_key())).unwrap();
    }

    #[test]
    fn first_start_creates_a_ca_and_a_server_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let pki = Pki::load_or_create(&data, &default_names()).unwrap();
        assert_eq!(pki.ca_provenance(), Provenance::Created);
        assert_eq!(pki.server_cert_provenance(), Provenance::Created);
        for path in [
            pki.ca_cert_path(),
            pki.ca_key_path(),
            pki.server_cert_path(),
            pki.server_key_path(),
        ] {
            assert!(path.is_file(), "{} missing", path.display());
        }
        #[cfg(unix)]
        {
            assert_eq!(mode_of(&pki.ca_key_path()), 0o600);
            assert_eq!(mode_of(&pki.server_key_path()), 0o600);
            assert_eq!(mode_of(&data.join("ca")), 0o700);
            assert_eq!(mode_of(&data.join("tls")), 0o700);
        }
        assert_eq!(read(&pki.ca_cert_path()), pki.ca_pem().as_bytes());

        let (_, ca) = x509_parser::parse_x509_certificate(pki.ca_cert_der()).unwrap();
        let cn = ca.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "fleetcore root CA");
        assert!(ca.is_ca());
        let usage = ca.key_usage().unwrap().unwrap().value;
        assert!(usage.key_cert_sign() && usage.crl_sign());
        let lifetime =
            ca.validity().not_after.to_datetime() - ca.validity().not_before.to_datetime();
        assert!(lifetime >= Duration::days(3650), "{lifetime}");
        assert_issued_by(pki.ca_cert_der(), pki.ca_cert_der());

        let (_, server) = x509_parser::parse_x509_certificate(pki.server_cert_der()).unwrap();
        assert_eq!(
            certificate_names(&server),
            BTreeSet::from([
                SubjectAltName::Dns("localhost".into()),
                SubjectAltName::Ip(IpAddr::from([127, 0, 0, 1])),
            ])
        );
        assert!(!server.is_ca());
        let eku = server.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert_issued_by(pki.server_cert_der(), pki.ca_cert_der());
        assert!(pki.server_cert_not_after() <= pki.ca_not_after());
    }

    #[test]
    fn second_start_loads_everything_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::load_or_create(dir.path(), &default_names()).unwrap();
        let files_before: Vec<_> = [
            first.ca_cert_path(),
            first.ca_key_path(),
            first.server_cert_path(),
            first.server_key_path(),
        ]
        .iter()
        .map(|p| read(p))
        .collect();

        let second = Pki::load_or_create(dir.path(), &default_names()).unwrap();
        assert_eq!(second.ca_provenance(), Provenance::Loaded);
        assert_eq!(second.server_cert_provenance(), Provenance::Loaded);
        assert_eq!(second.ca_pem(), first.ca_pem());
        assert_eq!(second.server_cert_der(), first.server_cert_der());
        let files_after: Vec<_> = [
            second.ca_cert_path(),
            second.ca_key_path(),
            second.server_cert_path(),
            second.server_key_path(),
        ]
        .iter()
        .map(|p| read(p))
        .collect();
        assert_eq!(files_before, files_after);

        // Certificates issued by the loaded CA chain to the original one.
        let issued = second.issue_client_certificate("device-1", 30).unwrap();
        assert_issued_by(
            &der_of(issued.certificate_pem.as_bytes()),
            first.ca_cert_der(),
        );
    }

    #[test]
    fn names_compare_as_sets_and_dns_names_ignore_case() {
        let dir = tempfile::tempdir().unwrap();
        Pki::load_or_create(dir.path(), &default_names()).unwrap();
        let pki = Pki::load_or_create(dir.path(), &names(&["127.0.0.1", "LocalHost", "localhost"]))
            .unwrap();
        assert_eq!(pki.server_cert_provenance(), Provenance::Loaded);
    }

    #[test]
    fn changed_server_names_reissue_the_server_certificate_and_keep_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::load_or_create(dir.path(), &default_names()).unwrap();
        let new_names = names(&["localhost", "127.0.0.1", "broker.example.com", "::1"]);
        let second = Pki::load_or_create(dir.path(), &new_names).unwrap();
        assert_eq!(second.ca_provenance(), Provenance::Loaded);
        assert_eq!(
            second.server_cert_provenance(),
            Provenance::Reissued(ReissueReason::NamesChanged)
        );
        assert_eq!(second.ca_pem(), first.ca_pem());
        assert_ne!(second.server_cert_der(), first.server_cert_der());
        assert_eq!(
            read(&second.server_cert_path()),
            second.server_cert_pem().as_bytes()
        );
        let (_, server) = x509_parser::parse_x509_certificate(second.server_cert_der()).unwrap();
        assert!(certificate_names(&server).contains(&SubjectAltName::Ip("::1".parse().unwrap())));
        assert_issued_by(second.server_cert_der(), first.ca_cert_der());

        let third = Pki::load_or_create(dir.path(), &new_names).unwrap();
        assert_eq!(third.server_cert_provenance(), Provenance::Loaded);
    }

    #[test]
    fn a_server_certificate_close_to_expiry_is_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &default_names()).unwrap();
        let now = OffsetDateTime::now_utc();
        let key = KeyPair::generate().unwrap();
        let mut params = leaf_params(SERVER_COMMON_NAME, now, now + Duration::days(10)).unwrap();
        params.subject_alt_names = CertificateParams::new(default_names())
            .unwrap()
            .subject_alt_names;
        let cert = params.signed_by(&key, &pki.ca.issuer).unwrap();
        fs::write(pki.server_cert_path(), cert.pem()).unwrap();
        fs::write(pki.server_key_path(), key.serialize_pem()).unwrap();

        let reloaded = Pki::load_or_create(dir.path(), &default_names()).unwrap();
        assert_eq!(
            reloaded.server_cert_provenance(),
            Provenance::Reissued(ReissueReason::ExpiresSoon)
        );
        assert!(reloaded.server_cert_not_after() - now > Duration::days(300));
        #[cfg(unix)]
        assert_eq!(mode_of(&reloaded.server_key_path()), 0o600);
    }

    #[test]
    fn a_broken_server_certificate_or_key_is_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &default_names()).unwrap();

        fs::write(pki.server_key_path(), "garbage").unwrap();
        let p = Pki::load_or_create(dir.path(), &default_names()).unwrap();
        assert_eq!(
            p.server_cert_provenance(),
            Provenance::Reissued(ReissueReason::Unreadable)
        );

        fs::write(
            p.server_key_path(),
            KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        let p = Pki::load_or_create(dir.path(), &default_names()).unwrap();
        assert_eq!(
            p.server_cert_provenance(),
            Provenance::Reissued(ReissueReason::KeyMismatch)
        );

        fs::remove_file(p.server_cert_path()).unwrap();
        let p = Pki::load_or_create(dir.path(), &default_names()).unwrap();
        assert_eq!(
            p.server_cert_provenance(),
            Provenance::Reissued(ReissueReason::Incomplete)
        );
        p.server_config(ClientAuth::Required).unwrap();
    }

    #[test]
    fn a_new_ca_reissues_the_server_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::load_or_create(dir.path(), &default_names()).unwrap();
        fs::remove_file(first.ca_cert_path()).unwrap();
        fs::remove_file(first.ca_key_path()).unwrap();
        let second = Pki::load_or_create(dir.path(), &default_names()).unwrap();
        assert_eq!(second.ca_provenance(), Provenance::Created);
        assert_ne!(second.ca_pem(), first.ca_pem());
        assert_eq!(
            second.server_cert_provenance(),
            Provenance::Reissued(ReissueReason::NotIssuedByCa)
        );
        assert_issued_by(second.server_cert_der(), second.ca_cert_der());
    }

    #[test]
    fn a_lost_ca_certificate_is_remade_from_its_key_and_still_verifies_old_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::load_or_create(dir.path(), &default_names()).unwrap();
        let issued = first.issue_client_certificate("device-1", 30).unwrap();
        fs::remove_file(first.ca_cert_path()).unwrap();

        let second = Pki::load_or_create(dir.path(), &default_names()).unwrap();
        assert_eq!(
            second.ca_provenance(),
            Provenance::Reissued(ReissueReason::Incomplete)
        );
        assert!(second.ca_cert_path().is_file());
        assert_eq!(second.server_cert_provenance(), Provenance::Loaded);
        assert_issued_by(
            &der_of(issued.certificate_pem.as_bytes()),
            second.ca_cert_der(),
        );
    }

    #[test]
    fn a_missing_or_foreign_ca_key_is_an_error_not_a_new_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &default_names()).unwrap();
        let ca_pem = read(&pki.ca_cert_path());

        fs::write(
            pki.ca_key_path(),
            KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        let err = Pki::load_or_create(dir.path(), &default_names()).unwrap_err();
        assert!(
            matches!(err, IdentityError::CaKeyMismatch { .. }),
            "{err:?}"
        );

        fs::write(pki.ca_key_path(), "not a key").unwrap();
        let err = Pki::load_or_create(dir.path(), &default_names()).unwrap_err();
        assert!(
            matches!(err, IdentityError::InvalidCaFile { .. }),
            "{err:?}"
        );

        fs::remove_file(pki.ca_key_path()).unwrap();
        let err = Pki::load_or_create(dir.path(), &default_names()).unwrap_err();
        assert!(matches!(err, IdentityError::CaKeyMissing { .. }), "{err:?}");
        assert_eq!(
            read(&pki.ca_cert_path()),
            ca_pem,
            "CA certificate was touched"
        );
    }

    #[test]
    fn server_names_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Pki::load_or_create(dir.path(), &[]),
            Err(IdentityError::NoServerNames)
        ));
        for bad in ["", "bad name", "-", "host:8883"] {
            let err = Pki::load_or_create(dir.path(), &names(&["localhost", bad])).unwrap_err();
            assert!(
                matches!(&err, IdentityError::InvalidServerName { name } if name == bad),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn client_certificates_are_p256_client_auth_certificates_from_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &default_names()).unwrap();
        let issued = pki.issue_client_certificate("thing-42", 90).unwrap();
        let der = der_of(issued.certificate_pem.as_bytes());
        assert_eq!(issued.certificate_id, certificate_id(&der));
        assert_issued_by(&der, pki.ca_cert_der());

        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "thing-42");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert!(!cert.is_ca());
        let days =
            (cert.validity().not_after.to_datetime() - OffsetDateTime::now_utc()).whole_days();
        assert!((89..=90).contains(&days), "{days}");
        assert!(cert.extensions().iter().any(|e| matches!(
            e.parsed_extension(),
            ParsedExtension::AuthorityKeyIdentifier(_)
        )));

        let key = KeyPair::from_pem(&issued.private_key_pem).unwrap();
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        assert_eq!(issued.public_key_pem, key.public_key_pem());
        assert!(!format!("{issued:?}").contains("PRIVATE KEY"));

        let other = pki.issue_client_certificate("thing-42", 90).unwrap();
        assert_ne!(other.certificate_id, issued.certificate_id);
    }

    #[test]
    fn client_certificate_requests_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &default_names()).unwrap();
        for days in [0, u32::MAX] {
            let err = pki.issue_client_certificate("d", days).unwrap_err();
            assert!(
                matches!(err, IdentityError::InvalidValidity { .. }),
                "{err:?}"
            );
        }
        let long = "x".repeat(65);
        for bad in ["", long.as_str(), "a\nb"] {
            let err = pki.issue_client_certificate(bad, 1).unwrap_err();
            assert!(
                matches!(err, IdentityError::InvalidCommonName { .. }),
                "{err:?}"
            );
        }
    }

    #[test]
    fn server_configs_build_for_both_client_auth_modes() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &default_names()).unwrap();
        for mode in [ClientAuth::Required, ClientAuth::None] {
            pki.server_config(mode).unwrap();
        }
        assert!(!format!("{pki:?}").contains("PRIVATE KEY"));
    }
}
