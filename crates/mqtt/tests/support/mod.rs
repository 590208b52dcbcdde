//! What the broker's integration tests share: an authenticator that lets everyone in, and a
//! raw MQTT 5 client that reads and writes packets with deadlines.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fleetcore_core::access::{ConnectionGrant, MqttAction};
use fleetcore_core::auth::{AuthOutcome, Authenticator, ClientCredentials};
use fleetcore_mqtt::protocol::{
    self, AckProperties, Connect, ConnectProperties, Packet, ProtocolVersion, PubAck, Publish,
    PublishProperties, QoS, Subscribe, SubscribeFilter, SubscribeProperties, SubscriptionOptions,
    Utf8, reason,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct AllowAll;

impl ConnectionGrant for AllowAll {
    fn allows(&self, _: MqttAction, _: &str) -> bool {
        true
    }

    fn revalidate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Lets every client in, allowed to do everything.
pub struct Anyone;

impl Authenticator for Anyone {
    fn authenticate(&self, c: &ClientCredentials<'_>) -> AuthOutcome {
        AuthOutcome::Allowed {
            principal: c.client_id.to_string(),
            grant: Arc::new(AllowAll),
        }
    }
}

/// A raw MQTT 5 client.
pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    /// Connects as `client_id` with clean start; returns the client once CONNACK says success.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> Client {
        Client::connect_with(addr, client_id, true, None).await.0
    }

    /// Connects with the given clean start and session expiry interval; returns the client and
    /// CONNACK's Session Present.
    pub async fn connect_with(
        addr: SocketAddr,
        client_id: &str,
        clean_start: bool,
        session_expiry: Option<u32>,
    ) -> (Client, bool) {
        let mut c = Client {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: BytesMut::new(),
        };
        c.send(Packet::Connect(Box::new(Connect {
            protocol: ProtocolVersion::V5,
            clean_start,
            keep_alive: 30,
            client_id: Utf8::new(client_id).expect("id"),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties {
                session_expiry_interval: session_expiry,
                ..ConnectProperties::default()
            },
        })))
        .await;
        match c.recv(Duration::from_secs(5)).await {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(ack.reason, reason::SUCCESS);
                (c, ack.session_present)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// The socket, for writing several packets at once.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Sends one packet.
    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        protocol::encode(&packet, ProtocolVersion::V5, &mut out);
        self.stream.write_all(&out).await.expect("write");
    }

    /// Subscribes to `filter` with `qos` and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.send(Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![SubscribeFilter {
                filter: Utf8::new(filter).expect("filter"),
                options: SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            }],
            properties: SubscribeProperties::default(),
        }))
        .await;
        match self.recv(Duration::from_secs(5)).await {
            Some(Packet::SubAck(_)) => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes `payload` to `topic`.
    pub async fn publish(&mut self, topic: &str, qos: QoS, packet_id: u16, payload: Bytes) {
        self.send(Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: Utf8::new(topic).expect("topic"),
            packet_id,
            properties: PublishProperties::default(),
            payload,
        }))
        .await;
    }

    /// Acknowledges a QoS 1 delivery.
    pub async fn puback(&mut self, packet_id: u16) {
        self.send(Packet::PubAck(PubAck {
            packet_id,
            reason: reason::SUCCESS,
            properties: AckProperties::default(),
        }))
        .await;
    }

    /// True if the broker closes the connection within `wait` (bytes still arriving are read
    /// and dropped).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let mut rest = [0u8; 256];
        tokio::time::timeout(wait, async {
            loop {
                match self.stream.read(&mut rest).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    /// The next packet within `wait`, or `None` if none came.
    pub async fn recv(&mut self, wait: Duration) -> Option<Packet> {
        tokio::time::timeout(wait, async {
            loop {
                if let Some(p) = protocol::decode(&mut self.buf, ProtocolVersion::V5, 1 << 20)
                    .expect("valid packet")
                {
                    return p;
                }
                assert!(
                    self.stream.read_buf(&mut self.buf).await.expect("read") > 0,
                    "the broker closed the connection"
                );
            }
        })
        .await
        .ok()
    }
}
