//! One bench connection: TCP or TLS transport, the CONNECT/CONNACK handshake and SUBSCRIBE, on
//! fleetcore's own codec. After the handshake the publisher, subscriber and idle loops drive the
//! read and write halves themselves, so each can batch to its own rhythm.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use fleetcore_mqtt::protocol::{
    self, ConnAck, Connect, ConnectProperties, DecodeError, Disconnect, Packet, ProtocolVersion,
    QoS, SubAck, Subscribe, SubscribeFilter, SubscribeProperties, SubscriptionOptions, Utf8,
    reason,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Read half of a connection, TCP or TLS.
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// Write half of a connection, TCP or TLS.
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Why a connection could not be set up. Idle mode counts these by kind; the pub/sub mode stops
/// at the first one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// Nothing listens at the address.
    #[error("cannot connect to {addr}: connection refused (is a broker listening there?)")]
    Refused { addr: SocketAddr },
    /// This process ran out of file descriptors.
    #[error("cannot connect to {addr}: too many open files (raise the limit with `ulimit -n`)")]
    TooManyFiles { addr: SocketAddr },
    /// Any other socket error.
    #[error("cannot connect to {addr}: {error}")]
    Io { addr: SocketAddr, error: io::Error },
    /// The TLS handshake failed, or the broker dropped the session right after it (a rejected
    /// client certificate shows up there with TLS 1.3).
    #[error("TLS failure with {addr}: {error}{}", tls_hint(.error))]
    Tls { addr: SocketAddr, error: io::Error },
    /// CONNACK carried a failure reason code.
    #[error("the broker refused the connection: CONNACK reason {code:#04x} ({}){detail}", reason_name(*.code))]
    ConnAckRefused { code: u8, detail: String },
    /// A step did not finish in time.
    #[error("timed out after {timeout:?} waiting for {step}")]
    Timeout {
        step: &'static str,
        timeout: Duration,
    },
    /// The broker closed the connection mid-handshake.
    #[error("the broker closed the connection while we waited for {0}")]
    Closed(&'static str),
    /// The broker sent something we cannot decode or did not expect.
    #[error("protocol error from the broker while waiting for {step}: {detail}")]
    Protocol { step: &'static str, detail: String },
    /// SUBACK refused the subscription.
    #[error("the broker refused the subscription to {filter:?}: SUBACK reason {code:#04x} ({})", reason_name(*.code))]
    SubscribeRefused { filter: String, code: u8 },
}

impl ConnectError {
    /// A short label for counting failures by kind.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ConnectError::Refused { .. } => "refused",
            ConnectError::TooManyFiles { .. } => "too_many_files",
            ConnectError::Io { .. } => "io",
            ConnectError::Tls { .. } => "tls",
            ConnectError::ConnAckRefused { .. } => "connack_refused",
            ConnectError::Timeout { .. } => "timeout",
            ConnectError::Closed(_) => "closed",
            ConnectError::Protocol { .. } => "protocol",
            ConnectError::SubscribeRefused { .. } => "subscribe_refused",
        }
    }
}

/// Where and how to connect; shared by every connection of a run.
pub(crate) struct Target {
    /// The broker's resolved addresses, tried in order.
    pub addrs: Vec<SocketAddr>,
    /// TLS settings, if the transport is TLS.
    pub tls: Option<TlsTarget>,
    /// MQTT version spoken.
    pub version: ProtocolVersion,
    /// Keep-alive announced in CONNECT, in seconds.
    pub keep_alive: u16,
    /// Deadline for TCP + TLS + CONNACK together.
    pub connect_timeout: Duration,
    /// Largest packet accepted from the broker (announced in MQTT 5 CONNECT).
    pub max_packet_size: usize,
}

/// The TLS half of a [`Target`].
pub(crate) struct TlsTarget {
    /// Connector built from the CA and the optional client certificate.
    pub connector: tokio_rustls::TlsConnector,
    /// Name the server certificate must carry.
    pub server_name: ServerName<'static>,
}

impl TlsTarget {
    /// Builds a TLS client trusting `ca` and, for mutual TLS, presenting `cert` with `key`.
    pub(crate) fn new(
        ca: &Path,
        client: Option<(&Path, &Path)>,
        server_name: &str,
    ) -> anyhow::Result<TlsTarget> {
        use anyhow::Context as _;
        let mut roots = rustls::RootCertStore::empty();
        let mut count = 0;
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("cannot read CA file {}", ca.display()))?
        {
            let cert = cert.with_context(|| format!("bad PEM in CA file {}", ca.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("unusable CA certificate in {}", ca.display()))?;
            count += 1;
        }
        anyhow::ensure!(
            count > 0,
            "no certificate found in CA file {}",
            ca.display()
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .with_context(|| format!("cannot read certificate file {}", cert.display()))?
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("bad PEM in certificate file {}", cert.display()))?;
                anyhow::ensure!(
                    !chain.is_empty(),
                    "no certificate found in {}",
                    cert.display()
                );
                let key = PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("cannot read a private key from {}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .context("client certificate and key do not form a usable pair")?
            }
        };
        let server_name = ServerName::try_from(server_name.to_owned())
            .with_context(|| format!("{server_name:?} is not a valid TLS server name"))?;
        Ok(TlsTarget {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// An open MQTT connection, past CONNACK.
pub(crate) struct Link {
    /// Read half.
    pub rd: ReadHalf,
    /// Write half.
    pub wr: WriteHalf,
    /// Bytes read but not yet decoded.
    pub rbuf: BytesMut,
    /// MQTT version spoken.
    pub version: ProtocolVersion,
    /// Largest packet accepted from the broker.
    pub max_packet_size: usize,
    /// Keep-alive in effect (the broker's Server Keep Alive if it sent one), seconds; 0 = none.
    pub keep_alive: u16,
    /// The broker's CONNACK.
    pub connack: ConnAck,
}

impl Target {
    /// Opens a transport, sends CONNECT and waits for a successful CONNACK, within the
    /// connect timeout. `receive_maximum` is announced to the broker (MQTT 5).
    pub(crate) async fn connect(
        &self,
        client_id: &str,
        receive_maximum: Option<u16>,
        read_capacity: usize,
    ) -> Result<Link, ConnectError> {
        let timeout = self.connect_timeout;
        tokio::time::timeout(
            timeout,
            self.connect_inner(client_id, receive_maximum, read_capacity),
        )
        .await
        .map_err(|_| ConnectError::Timeout {
            step: "the connection and CONNACK",
            timeout,
        })?
    }

    async fn connect_inner(
        &self,
        client_id: &str,
        receive_maximum: Option<u16>,
        read_capacity: usize,
    ) -> Result<Link, ConnectError> {
        let (tcp, addr) = self.open_tcp().await?;
        let (rd, wr): (ReadHalf, WriteHalf) = match &self.tls {
            None => {
                let (rd, wr) = tcp.into_split();
                (Box::new(rd), Box::new(wr))
            }
            Some(tls) => {
                let stream = tls
                    .connector
                    .connect(tls.server_name.clone(), tcp)
                    .await
                    .map_err(|source| ConnectError::Tls {
                        addr,
                        error: source,
                    })?;
                let (rd, wr) = tokio::io::split(stream);
                (Box::new(rd), Box::new(wr))
            }
        };
        let mut link = Link {
            rd,
            wr,
            rbuf: BytesMut::with_capacity(read_capacity.max(64)),
            version: self.version,
            max_packet_size: self.max_packet_size,
            keep_alive: self.keep_alive,
            connack: ConnAck::default(),
        };
        let connect = Packet::Connect(Box::new(Connect {
            protocol: self.version,
            clean_start: true,
            keep_alive: self.keep_alive,
            client_id: Utf8::new(client_id).unwrap_or_default(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties {
                receive_maximum,
                maximum_packet_size: u32::try_from(self.max_packet_size).ok(),
                ..ConnectProperties::default()
            },
        }));
        let io_err = |source: io::Error| match &self.tls {
            Some(_) => ConnectError::Tls {
                addr,
                error: source,
            },
            None => ConnectError::Io {
                addr,
                error: source,
            },
        };
        link.send(&connect).await.map_err(io_err)?;
        let connack = loop {
            if self.version == ProtocolVersion::V5 && looks_like_v311_connack(&link.rbuf) {
                // A 3.1.1-only broker answers an MQTT 5 CONNECT with a 3.1.1 CONNACK.
                let code = link.rbuf[3];
                return Err(ConnectError::ConnAckRefused {
                    code: if code == 1 {
                        reason::UNSUPPORTED_PROTOCOL_VERSION
                    } else {
                        reason::UNSPECIFIED_ERROR
                    },
                    detail: format!(
                        ": the broker answered in MQTT 3.1.1 (return code {code}); try --protocol 3"
                    ),
                });
            }
            match link.decode() {
                Ok(Some(Packet::ConnAck(connack))) => break connack,
                Ok(Some(other)) => {
                    return Err(ConnectError::Protocol {
                        step: "CONNACK",
                        detail: format!("got {} first", packet_name(&other)),
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(ConnectError::Protocol {
                        step: "CONNACK",
                        detail: e.to_string(),
                    });
                }
            }
            link.rbuf.reserve(256);
            match link.rd.read_buf(&mut link.rbuf).await {
                Ok(0) => return Err(ConnectError::Closed("CONNACK")),
                Ok(_) => {}
                Err(source) => return Err(io_err(source)),
            }
        };
        if connack.reason >= 0x80 {
            let mut detail = match self.version {
                ProtocolVersion::V311 => {
                    format!(" [3.1.1 return code {}]", v311_return_code(connack.reason))
                }
                ProtocolVersion::V5 => String::new(),
            };
            if let Some(reason_string) = &connack.properties.reason_string {
                detail.push_str(&format!(": {reason_string}"));
            }
            return Err(ConnectError::ConnAckRefused {
                code: connack.reason,
                detail,
            });
        }
        if let Some(server_keep_alive) = connack.properties.server_keep_alive {
            link.keep_alive = server_keep_alive;
        }
        link.connack = connack;
        Ok(link)
    }

    async fn open_tcp(&self) -> Result<(TcpStream, SocketAddr), ConnectError> {
        let mut last = None;
        for &addr in &self.addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    // Batching is ours to do; Nagle would only add latency on top of it.
                    tcp.set_nodelay(true).map_err(|source| ConnectError::Io {
                        addr,
                        error: source,
                    })?;
                    return Ok((tcp, addr));
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    last = Some(ConnectError::Refused { addr });
                }
                // EMFILE / ENFILE: no portable ErrorKind yet.
                Err(e) if matches!(e.raw_os_error(), Some(23 | 24)) => {
                    return Err(ConnectError::TooManyFiles { addr });
                }
                Err(source) => {
                    last = Some(ConnectError::Io {
                        addr,
                        error: source,
                    })
                }
            }
        }
        Err(last.unwrap_or(ConnectError::Closed("an address to connect to")))
    }
}

/// The 3.1.1 return code the codec mapped to `reason` (3.1.1 §3.2.2.3), for messages that
/// should match the broker's own logs.
fn v311_return_code(reason: u8) -> u8 {
    match reason {
        reason::UNSUPPORTED_PROTOCOL_VERSION => 1,
        reason::CLIENT_IDENTIFIER_NOT_VALID => 2,
        reason::SERVER_UNAVAILABLE => 3,
        reason::BAD_USERNAME_OR_PASSWORD => 4,
        reason::NOT_AUTHORIZED => 5,
        _ => 3,
    }
}

/// rustls reports certificate and protocol problems as `InvalidData`; anything else during
/// the handshake (a reset, an early close) usually means the port does not speak TLS.
fn tls_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::InvalidData => "",
        _ => " (is this port a TLS listener?)",
    }
}

/// 3.1.1 CONNACK bytes (`20 02 flags code`) where an MQTT 5 one (remaining length >= 3) was due.
fn looks_like_v311_connack(buf: &[u8]) -> bool {
    buf.len() >= 4 && buf[0] == 0x20 && buf[1] == 0x02
}

/// A failure on an established link.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// Socket or TLS error.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The broker sent bytes that do not decode.
    #[error("undecodable packet from the broker: {0}")]
    Decode(#[from] DecodeError),
}

impl Link {
    /// Encodes `packet`, writes it and flushes.
    pub(crate) async fn send(&mut self, packet: &Packet) -> io::Result<()> {
        let mut buf = BytesMut::new();
        protocol::encode(packet, self.version, &mut buf);
        self.wr.write_all(&buf).await?;
        self.wr.flush().await
    }

    /// Decodes the next packet, reading as needed; `Ok(None)` when the broker closed the
    /// connection. For the handshake steps; the hot loops decode from `rbuf` themselves.
    pub(crate) async fn next_packet(&mut self) -> Result<Option<Packet>, LinkError> {
        loop {
            if let Some(packet) = self.decode()? {
                return Ok(Some(packet));
            }
            self.rbuf.reserve(4096);
            if self.rd.read_buf(&mut self.rbuf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Decodes one packet already in `rbuf`, if complete.
    pub(crate) fn decode(&mut self) -> Result<Option<Packet>, DecodeError> {
        protocol::decode(&mut self.rbuf, self.version, self.max_packet_size)
    }

    /// Subscribes to `filter` and waits for a granting SUBACK; returns the granted QoS.
    /// Publishes that arrive first (retained messages) are dropped.
    pub(crate) async fn subscribe(
        &mut self,
        filter: &str,
        qos: QoS,
        timeout: Duration,
    ) -> Result<QoS, ConnectError> {
        let subscribe = Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![SubscribeFilter {
                filter: Utf8::new(filter).unwrap_or_default(),
                options: SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            }],
            properties: SubscribeProperties::default(),
        });
        let wait = async {
            self.send(&subscribe)
                .await
                .map_err(|e| ConnectError::Protocol {
                    step: "SUBACK",
                    detail: e.to_string(),
                })?;
            loop {
                match self.next_packet().await {
                    Ok(Some(Packet::SubAck(SubAck {
                        packet_id: 1,
                        reasons,
                        ..
                    }))) => {
                        let code = reasons
                            .first()
                            .copied()
                            .unwrap_or(reason::UNSPECIFIED_ERROR);
                        return match QoS::from_u8(code) {
                            Some(granted) => Ok(granted),
                            None => Err(ConnectError::SubscribeRefused {
                                filter: filter.to_owned(),
                                code,
                            }),
                        };
                    }
                    Ok(Some(Packet::Disconnect(d))) => {
                        return Err(ConnectError::Protocol {
                            step: "SUBACK",
                            detail: format!(
                                "the broker disconnected with reason {:#04x} ({})",
                                d.reason,
                                reason_name(d.reason)
                            ),
                        });
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return Err(ConnectError::Closed("SUBACK")),
                    Err(e) => {
                        return Err(ConnectError::Protocol {
                            step: "SUBACK",
                            detail: e.to_string(),
                        });
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ConnectError::Timeout {
                step: "SUBACK",
                timeout,
            })?
    }

    /// Sends DISCONNECT and closes the write side, ignoring errors: the run is over either way.
    pub(crate) async fn close(mut self) {
        let packet = Packet::Disconnect(Disconnect::default());
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.send(&packet).await;
            let _ = self.wr.shutdown().await;
        })
        .await;
    }
}

/// One step of a batched write: writes some of `buf`, or flushes when it is empty (TLS keeps
/// written data in its own buffer until flushed). Cancel-safe, so it can race a read in
/// `select!`: a cancelled write has written nothing.
pub(crate) async fn write_or_flush(wr: &mut WriteHalf, buf: &[u8]) -> io::Result<usize> {
    if buf.is_empty() {
        wr.flush().await.map(|()| 0)
    } else {
        wr.write(buf).await
    }
}

/// Takes the outcome of a [`write_or_flush`] of `wbuf` that moved `n` bytes: advances past them
/// (the connection then needs a flush and `last_write` moves), or, for a flush, clears
/// `needs_flush`. A write that takes nothing means the peer stopped reading.
pub(crate) fn wrote(
    n: usize,
    wbuf: &mut BytesMut,
    needs_flush: &mut bool,
    last_write: &mut Instant,
) -> anyhow::Result<()> {
    if wbuf.is_empty() {
        *needs_flush = false;
    } else if n == 0 {
        anyhow::bail!("the connection stopped accepting data");
    } else {
        wbuf.advance(n);
        *needs_flush = true;
        *last_write = Instant::now();
    }
    Ok(())
}

/// What of `buf` the next write call takes: all of it, or with `one_per_write` only its first
/// packet (a device writes each packet on its own).
pub(crate) fn writable(buf: &[u8], one_per_write: bool) -> &[u8] {
    if !one_per_write {
        return buf;
    }
    // Fixed header: one type byte, then the remaining length in up to four 7-bit groups.
    let mut remaining = 0usize;
    for (i, byte) in buf.iter().skip(1).take(4).enumerate() {
        remaining |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return &buf[..(2 + i + remaining).min(buf.len())];
        }
    }
    buf
}

/// Name of a packet type, for messages.
pub(crate) fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect(_) => "DISCONNECT",
        Packet::Auth(_) => "AUTH",
    }
}

/// Human name of an MQTT 5 reason code (3.1.1 return codes arrive already mapped to these).
pub(crate) fn reason_name(code: u8) -> &'static str {
    use reason::*;
    match code {
        SUCCESS => "success",
        NO_MATCHING_SUBSCRIBERS => "no matching subscribers",
        UNSPECIFIED_ERROR => "unspecified error",
        MALFORMED_PACKET => "malformed packet",
        PROTOCOL_ERROR => "protocol error",
        IMPLEMENTATION_SPECIFIC_ERROR => "implementation specific error",
        UNSUPPORTED_PROTOCOL_VERSION => "unsupported protocol version",
        CLIENT_IDENTIFIER_NOT_VALID => "client identifier not valid",
        BAD_USERNAME_OR_PASSWORD => "bad user name or password",
        NOT_AUTHORIZED => "not authorized",
        SERVER_UNAVAILABLE => "server unavailable",
        SERVER_BUSY => "server busy",
        BANNED => "banned",
        SERVER_SHUTTING_DOWN => "server shutting down",
        BAD_AUTHENTICATION_METHOD => "bad authentication method",
        KEEP_ALIVE_TIMEOUT => "keep alive timeout",
        SESSION_TAKEN_OVER => "session taken over",
        TOPIC_FILTER_INVALID => "topic filter invalid",
        TOPIC_NAME_INVALID => "topic name invalid",
        PACKET_IDENTIFIER_IN_USE => "packet identifier in use",
        RECEIVE_MAXIMUM_EXCEEDED => "receive maximum exceeded",
        TOPIC_ALIAS_INVALID => "topic alias invalid",
        PACKET_TOO_LARGE => "packet too large",
        MESSAGE_RATE_TOO_HIGH => "message rate too high",
        QUOTA_EXCEEDED => "quota exceeded",
        ADMINISTRATIVE_ACTION => "administrative action",
        PAYLOAD_FORMAT_INVALID => "payload format invalid",
        RETAIN_NOT_SUPPORTED => "retain not supported",
        QOS_NOT_SUPPORTED => "QoS not supported",
        USE_ANOTHER_SERVER => "use another server",
        SERVER_MOVED => "server moved",
        SHARED_SUBSCRIPTIONS_NOT_SUPPORTED => "shared subscriptions not supported",
        CONNECTION_RATE_EXCEEDED => "connection rate exceeded",
        MAXIMUM_CONNECT_TIME => "maximum connect time",
        SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED => "subscription identifiers not supported",
        WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED => "wildcard subscriptions not supported",
        _ => "unknown reason",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v311_connack_is_spotted() {
        assert!(looks_like_v311_connack(&[0x20, 0x02, 0x00, 0x01]));
        // An MQTT 5 CONNACK has at least a property length byte more.
        assert!(!looks_like_v311_connack(&[0x20, 0x03, 0x00, 0x00, 0x00]));
        assert!(!looks_like_v311_connack(&[0x20, 0x02, 0x00]));
    }

    #[test]
    fn device_writes_take_one_packet_at_a_time() {
        let mut buf = bytes::BytesMut::new();
        let ack = |id| {
            Packet::PubAck(fleetcore_mqtt::protocol::PubAck {
                packet_id: id,
                ..Default::default()
            })
        };
        fleetcore_mqtt::protocol::encode(&ack(1), ProtocolVersion::V311, &mut buf);
        fleetcore_mqtt::protocol::encode(&ack(2), ProtocolVersion::V311, &mut buf);
        assert_eq!(writable(&buf, true), &buf[..4]);
        assert_eq!(writable(&buf, false), &buf[..]);
        // A packet whose remaining length takes two bytes.
        let big = [&[0x30, 0x80, 0x01][..], &[0u8; 128][..], &[0xC0, 0x00][..]].concat();
        assert_eq!(writable(&big, true).len(), 131);
        // An incomplete header: everything, as it is.
        assert_eq!(writable(&[0x30, 0x80], true), &[0x30, 0x80]);
    }

    #[test]
    fn refusal_message_names_the_reason() {
        let e = ConnectError::ConnAckRefused {
            code: 0x87,
            detail: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "the broker refused the connection: CONNACK reason 0x87 (not authorized)"
        );
    }
}
