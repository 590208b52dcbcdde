//! The server stream against rustls's own client, driven by hand so that records can be split
//! across socket writes, keys updated and close_notify sent when the test says.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{TlsStream, accept};
use crate::broker::connection::ClientStream;

const DEADLINE: Duration = Duration::from_secs(10);

/// A CA, a server certificate for `localhost` and a client certificate it signed: the server
/// requires the client's.
/// Also a client config without a certificate.
fn configs(
    versions: &[&'static SupportedProtocolVersion],
) -> (
    Arc<rustls::ServerConfig>,
    Arc<ClientConfig>,
    Arc<ClientConfig>,
) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "test ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (
            cert.der().clone(),
            PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
    };
    let (server_cert, server_key) = leaf("localhost");
    let (client_cert, client_key) = leaf("device-1");
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert], server_key)
        .unwrap();
    let client = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(vec![client_cert], client_key)
        .unwrap();
    let no_cert = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client), Arc::new(no_cert))
}

/// rustls's client over a socket, written and read by hand.
struct Client {
    tcp: TcpStream,
    tls: ClientConnection,
}

impl Client {
    /// Writes what rustls has to send, `piece` bytes per socket write.
    async fn send(&mut self, piece: usize) {
        let mut out = Vec::new();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut out).unwrap();
        }
        for chunk in out.chunks(piece) {
            self.tcp.write_all(chunk).await.unwrap();
            tokio::task::yield_now().await;
        }
    }

    /// Reads once from the socket into rustls; false at the socket's end.
    async fn receive(&mut self) -> bool {
        let mut buf = vec![0; 16 * 1024];
        let n = self.tcp.read(&mut buf).await.unwrap();
        let mut read = &buf[..n];
        while !read.is_empty() {
            self.tls.read_tls(&mut read).unwrap();
            self.tls.process_new_packets().unwrap();
        }
        n > 0
    }

    /// Sends `data` as one record per `record` bytes, `piece` bytes per socket write.
    async fn write(&mut self, data: &[u8], record: usize, piece: usize) {
        for part in data.chunks(record) {
            self.tls.writer().write_all_plain(part);
        }
        self.send(piece).await;
    }

    /// The next `n` decrypted bytes.
    async fn read(&mut self, n: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < n {
            let mut chunk = [0u8; 1024];
            match self.tls.reader().read(&mut chunk) {
                Ok(0) => panic!("the server closed after {got:?}"),
                Ok(k) => got.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(self.receive().await, "the socket ended after {got:?}");
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }
}

/// `write_all` on rustls's writer, which never blocks.
trait WriteAllPlain {
    fn write_all_plain(&mut self, data: &[u8]);
}

impl WriteAllPlain for rustls::Writer<'_> {
    fn write_all_plain(&mut self, data: &[u8]) {
        std::io::Write::write_all(self, data).unwrap();
    }
}

/// A handshaken pair: our server stream and rustls's client.
async fn pair(versions: &[&'static SupportedProtocolVersion]) -> (TlsStream, Client) {
    let (server_config, client_config, _) = configs(versions);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        accept(server_config, tcp).await
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = Client {
        tcp,
        tls: ClientConnection::new(client_config, name).unwrap(),
    };
    while client.tls.is_handshaking() {
        client.send(usize::MAX).await;
        if client.tls.is_handshaking() {
            assert!(
                client.receive().await,
                "the server closed during the handshake"
            );
        }
    }
    client.send(usize::MAX).await;
    let server = server.await.unwrap().unwrap();
    (server, client)
}

async fn read_exact(server: &mut TlsStream, n: usize) -> Vec<u8> {
    let mut got = vec![0; n];
    server.read_exact(&mut got).await.unwrap();
    got
}

#[tokio::test]
async fn records_split_across_socket_writes_and_data_across_records_arrive_whole() {
    tokio::time::timeout(DEADLINE, async {
        let (mut server, mut client) = pair(&[&rustls::version::TLS13]).await;
        assert!(
            server.peer_certificate().is_some(),
            "the client's certificate"
        );
        // 3-byte records, written to the socket 2 bytes at a time: every record arrives split.
        let data: Vec<u8> = (0..200u8).collect();
        client.write(&data, 3, 2).await;
        assert_eq!(read_exact(&mut server, data.len()).await, data);
        // A record bigger than the socket read, and several records in one socket write.
        let big = vec![7u8; 40 * 1024];
        client.write(&big, 16 * 1024, usize::MAX).await;
        assert_eq!(read_exact(&mut server, big.len()).await, big);
        server.write_all(b"answer").await.unwrap();
        server.flush().await.unwrap();
        assert_eq!(client.read(6).await, b"answer");
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_key_update_is_answered_and_traffic_goes_on_both_ways() {
    tokio::time::timeout(DEADLINE, async {
        let (mut server, mut client) = pair(&[&rustls::version::TLS13]).await;
        for round in 0..3u8 {
            // The client's KeyUpdate asks the server to update its keys too.
            client.tls.refresh_traffic_keys().unwrap();
            client.write(&[round; 10], 10, usize::MAX).await;
            assert_eq!(read_exact(&mut server, 10).await, [round; 10]);
            server.write_all(&[round + 100; 5]).await.unwrap();
            server.flush().await.unwrap();
            assert_eq!(client.read(5).await, [round + 100; 5]);
        }
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn tls12_carries_traffic_too() {
    tokio::time::timeout(DEADLINE, async {
        let (mut server, mut client) = pair(&[&rustls::version::TLS12]).await;
        client.write(b"over tls 1.2", 4, 3).await;
        assert_eq!(read_exact(&mut server, 12).await, b"over tls 1.2");
        server.write_all(b"ok").await.unwrap();
        server.flush().await.unwrap();
        assert_eq!(client.read(2).await, b"ok");
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn close_notify_ends_the_stream_both_ways() {
    tokio::time::timeout(DEADLINE, async {
        let (mut server, mut client) = pair(&[&rustls::version::TLS13]).await;
        client.write(b"last", 4, usize::MAX).await;
        client.tls.send_close_notify();
        client.send(usize::MAX).await;
        assert_eq!(read_exact(&mut server, 4).await, b"last");
        let mut rest = [0u8; 8];
        assert_eq!(
            server.read(&mut rest).await.unwrap(),
            0,
            "the end of the stream"
        );
        server.shutdown().await.unwrap();
        while !client.tls.process_new_packets().unwrap().peer_has_closed() {
            assert!(
                client.receive().await,
                "the socket ended before close_notify"
            );
        }
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_quiet_stream_gives_its_buffers_back_and_a_busy_one_does_not_park() {
    tokio::time::timeout(DEADLINE, async {
        let (mut server, mut client) = pair(&[&rustls::version::TLS13]).await;
        client.write(&[1; 300], 300, usize::MAX).await;
        assert_eq!(read_exact(&mut server, 300).await, [1; 300]);
        server.write_all(b"x").await.unwrap();
        server.flush().await.unwrap();
        assert!(server.parkable());
        assert_eq!(
            (
                server.incoming.capacity(),
                server.outgoing.capacity(),
                server.plaintext.capacity()
            ),
            (0, 0, 0),
            "a parkable stream holds no record buffer"
        );
        // Two records, one read of 2 bytes: the rest waits decrypted, and the stream says so.
        client.write(b"abcd", 2, usize::MAX).await;
        assert_eq!(read_exact(&mut server, 1).await, b"a");
        assert!(!server.parkable(), "decrypted bytes wait");
        assert_eq!(read_exact(&mut server, 3).await, b"bcd");
        assert!(server.parkable());
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    tokio::time::timeout(DEADLINE, async {
        let (server_config, _, no_cert) = configs(&[&rustls::version::TLS13]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            accept(server_config, tcp).await.map(|_| ())
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = Client {
            tcp,
            tls: ClientConnection::new(no_cert, name).unwrap(),
        };
        // The client's flights, until the server gives up on it (its alert is the last thing
        // the client reads) or the socket ends.
        while client.tls.is_handshaking() {
            client.send(usize::MAX).await;
            let mut buf = vec![0; 16 * 1024];
            let n = client.tcp.read(&mut buf).await.unwrap_or(0);
            if n == 0 || client.tls.read_tls(&mut &buf[..n]).is_err() {
                break;
            }
            if client.tls.process_new_packets().is_err() {
                break;
            }
        }
        client.send(usize::MAX).await;
        let refused = server.await.unwrap();
        assert!(refused.is_err(), "a client without a certificate got in");
    })
    .await
    .expect("in time");
}
