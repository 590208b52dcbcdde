//! Real TLS handshakes between a tokio-rustls client and the server configuration `Pki` builds,
//! over an in-memory duplex stream.

use std::sync::Arc;
use std::time::Duration;

use fleetcore_identity::{ClientAuth, IssuedCertificate, Pki, peer_identity};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ProtocolVersion, RootCertStore, ServerConfig, SupportedProtocolVersion,
};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Bounds every handshake so a regression fails the test instead of hanging it.
const DEADLINE: Duration = Duration::from_secs(10);

fn default_names() -> Vec<String> {
    vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
}

fn new_pki() -> (tempfile::TempDir, Pki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &default_names()).unwrap();
    (dir, pki)
}

/// A client identity: certificate chain and key.
struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl From<&IssuedCertificate> for ClientIdentity {
    fn from(issued: &IssuedCertificate) -> Self {
        ClientIdentity {
            chain: vec![CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap()],
            key: PrivateKeyDer::from_pem_slice(issued.private_key_pem.as_bytes()).unwrap(),
        }
    }
}

/// A client trusting `ca_pem` only, speaking only `version`.
fn client_config(
    ca_pem: &str,
    identity: Option<ClientIdentity>,
    version: &'static SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots);
    let config = match identity {
        Some(identity) => builder
            .with_client_auth_cert(identity.chain, identity.key)
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// What each side saw.
struct Outcome {
    /// The server side: the verified client's identity principal (if it sent a certificate)
    /// and the negotiated version, or the handshake error.
    server: Result<(Option<String>, ProtocolVersion), String>,
    /// The client side: whether the handshake and one round trip of application data worked.
    client: Result<(), String>,
}

/// Runs a handshake, then a ping/pong exchange, between `server` and `client` for `name`.
async fn connect(server: Arc<ServerConfig>, client: Arc<ClientConfig>, name: &str) -> Outcome {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(name.to_owned()).unwrap();

    let server_side = async move {
        let mut tls = TlsAcceptor::from(server)
            .accept(server_io)
            .await
            .map_err(|e| e.to_string())?;
        let (_, connection) = tls.get_ref();
        let principal = connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| peer_identity(leaf).unwrap().principal().to_owned());
        let version = connection.protocol_version().unwrap();
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok((principal, version))
    };
    let client_side = async move {
        let mut tls = TlsConnector::from(client)
            .connect(name, client_io)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let mut pong = [0u8; 4];
        tls.read_exact(&mut pong).await.map_err(|e| e.to_string())?;
        assert_eq!(&pong, b"pong");
        Ok(())
    };
    let (server, client) =
        tokio::time::timeout(DEADLINE, async { tokio::join!(server_side, client_side) })
            .await
            .expect("handshake did not finish in time");
    Outcome { server, client }
}

#[tokio::test]
async fn issued_client_certificate_authenticates_over_tls13_and_tls12() {
    let (_dir, pki) = new_pki();
    let issued = pki.issue_client_certificate("device-1", 30).unwrap();
    let server = pki.server_config(ClientAuth::Required).unwrap();
    for (version, expected) in [
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
    ] {
        let client = client_config(pki.ca_pem(), Some((&issued).into()), version);
        let outcome = connect(server.clone(), client, "localhost").await;
        assert_eq!(outcome.client, Ok(()), "{expected:?}");
        assert_eq!(
            outcome.server,
            Ok((Some("device-1".to_owned()), expected)),
            "{expected:?}"
        );
    }
}

#[tokio::test]
async fn peer_identity_of_the_presented_certificate_matches_the_issued_one() {
    let (_dir, pki) = new_pki();
    let issued = pki.issue_client_certificate("device-2", 30).unwrap();
    let identity = ClientIdentity::from(&issued);
    let peer = peer_identity(&identity.chain[0]).unwrap();
    assert_eq!(peer.common_name.as_deref(), Some("device-2"));
    assert_eq!(peer.certificate_id, issued.certificate_id);
    let outcome = connect(
        pki.server_config(ClientAuth::Required).unwrap(),
        client_config(pki.ca_pem(), Some(identity), &rustls::version::TLS13),
        "localhost",
    )
    .await;
    assert_eq!(
        outcome.server.map(|(p, _)| p),
        Ok(Some("device-2".to_owned()))
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_when_one_is_required() {
    let (_dir, pki) = new_pki();
    let server = pki.server_config(ClientAuth::Required).unwrap();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let outcome = connect(
            server.clone(),
            client_config(pki.ca_pem(), None, version),
            "localhost",
        )
        .await;
        let err = outcome.server.unwrap_err();
        assert!(err.contains("no certificates"), "{err}");
        assert!(outcome.client.is_err());
    }
}

#[tokio::test]
async fn a_client_without_a_certificate_is_accepted_when_none_is_asked_for() {
    let (_dir, pki) = new_pki();
    let outcome = connect(
        pki.server_config(ClientAuth::None).unwrap(),
        client_config(pki.ca_pem(), None, &rustls::version::TLS13),
        "localhost",
    )
    .await;
    assert_eq!(outcome.client, Ok(()));
    assert_eq!(outcome.server, Ok((None, ProtocolVersion::TLSv1_3)));
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let (_dir, pki) = new_pki();
    // Another CA with the very same subject name, so only the signature tells them apart.
    let other_ca_key = KeyPair::generate().unwrap();
    let mut other_ca = CertificateParams::default();
    other_ca
        .distinguished_name
        .push(DnType::CommonName, "fleetcore root CA");
    other_ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    other_ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let other_issuer = Issuer::new(other_ca, other_ca_key);

    let device_key = KeyPair::generate().unwrap();
    let mut device = CertificateParams::default();
    device.distinguished_name = rcgen::DistinguishedName::new();
    device
        .distinguished_name
        .push(DnType::CommonName, "impostor");
    device.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = device.signed_by(&device_key, &other_issuer).unwrap();
    let identity = ClientIdentity {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::from_pem_slice(device_key.serialize_pem().as_bytes()).unwrap(),
    };

    let outcome = connect(
        pki.server_config(ClientAuth::Required).unwrap(),
        client_config(pki.ca_pem(), Some(identity), &rustls::version::TLS13),
        "localhost",
    )
    .await;
    let err = outcome.server.unwrap_err();
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(outcome.client.is_err());
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let (_dir, pki) = new_pki();
    // Signed by the real CA, read back from the data dir like an operator's tool would.
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(pki.ca_key_path()).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(pki.ca_pem(), ca_key).unwrap();
    let now = OffsetDateTime::now_utc();
    let device_key = KeyPair::generate().unwrap();
    let mut device = CertificateParams::default();
    device.distinguished_name = rcgen::DistinguishedName::new();
    device
        .distinguished_name
        .push(DnType::CommonName, "device-expired");
    device.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    device.not_before = now - time::Duration::days(30);
    device.not_after = now - time::Duration::days(1);
    let cert = device.signed_by(&device_key, &issuer).unwrap();
    let identity = ClientIdentity {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::from_pem_slice(device_key.serialize_pem().as_bytes()).unwrap(),
    };

    let outcome = connect(
        pki.server_config(ClientAuth::Required).unwrap(),
        client_config(pki.ca_pem(), Some(identity), &rustls::version::TLS12),
        "localhost",
    )
    .await;
    let err = outcome.server.unwrap_err();
    assert!(err.contains("expired"), "{err}");
    assert!(outcome.client.is_err());
}

#[tokio::test]
async fn the_server_certificate_verifies_for_each_configured_name_against_ca_pem() {
    let (_dir, pki) = new_pki();
    // The CA as a client would get it: the file in the data dir.
    let ca_pem = std::fs::read_to_string(pki.ca_cert_path()).unwrap();
    let issued = pki.issue_client_certificate("device-3", 1).unwrap();
    let server = pki.server_config(ClientAuth::Required).unwrap();
    for name in ["localhost", "127.0.0.1"] {
        let client = client_config(&ca_pem, Some((&issued).into()), &rustls::version::TLS13);
        let outcome = connect(server.clone(), client, name).await;
        assert_eq!(outcome.client, Ok(()), "{name}");
        assert!(outcome.server.is_ok(), "{name}");
    }

    let client = client_config(&ca_pem, Some((&issued).into()), &rustls::version::TLS13);
    let outcome = connect(server.clone(), client, "broker.example.com").await;
    let err = outcome.client.unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn a_client_trusting_another_ca_rejects_the_server() {
    let (_dir, pki) = new_pki();
    let (_other_dir, other) = new_pki();
    let outcome = connect(
        pki.server_config(ClientAuth::None).unwrap(),
        client_config(other.ca_pem(), None, &rustls::version::TLS13),
        "localhost",
    )
    .await;
    let err = outcome.client.unwrap_err();
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(outcome.server.is_err());
}

#[tokio::test]
async fn a_reloaded_pki_keeps_accepting_certificates_issued_before() {
    let dir = tempfile::tempdir().unwrap();
    let first = Pki::load_or_create(dir.path(), &default_names()).unwrap();
    let issued = first.issue_client_certificate("device-4", 30).unwrap();
    drop(first);
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let reloaded = Pki::load_or_create(dir.path(), &names).unwrap();
    let outcome = connect(
        reloaded.server_config(ClientAuth::Required).unwrap(),
        client_config(
            reloaded.ca_pem(),
            Some((&issued).into()),
            &rustls::version::TLS12,
        ),
        "::1",
    )
    .await;
    assert_eq!(outcome.client, Ok(()));
    assert_eq!(
        outcome.server,
        Ok((Some("device-4".to_owned()), ProtocolVersion::TLSv1_2))
    );
}
