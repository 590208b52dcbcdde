//! The fleet of connections and the one epoll loop (mio) that drives them all: TCP connect from
//! spread source addresses, CONNECT/CONNACK, SUBSCRIBE for the targets, PINGREQ on keep alive,
//! and the publishes that must reach each target. An idle client costs the tool a socket and a
//! few dozen bytes, so the tool stays light next to the broker it measures.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fleetcore_mqtt::protocol::{
    self, Connect, ConnectProperties, Packet, ProtocolVersion, PubAck, Publish, PublishProperties,
    QoS, Subscribe, SubscribeFilter, SubscribeProperties, SubscriptionOptions, Utf8,
};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use crate::limits::SourceAddresses;

/// Largest packet the tool accepts (it only ever gets acknowledgements and small publishes).
const MAX_PACKET: usize = 64 * 1024;
/// Token of the publisher connection (clients use their index).
const PUBLISHER: Token = Token(usize::MAX - 1);
/// Read buffer taken by a client only while bytes are arriving.
const READ_CHUNK: usize = 512;

/// What one run does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The broker's MQTT listener (on loopback).
    pub target: SocketAddr,
    /// Idle connections to open and hold.
    pub connections: usize,
    /// How many of them subscribe to their own topic and must each receive one publish.
    pub targets: usize,
    /// TCP + MQTT handshakes in progress at once.
    pub concurrency: usize,
    /// Where connections come from.
    pub sources: SourceAddresses,
    /// MQTT keep alive asked for in CONNECT, seconds (0: none).
    pub keep_alive: u16,
    /// MQTT version of every connection.
    pub version: ProtocolVersion,
    /// Client ids are `<prefix>-<i>`, target topics `<prefix>/<i>`.
    pub prefix: String,
    /// The whole ramp must finish within this.
    pub connect_timeout: Duration,
    /// Every target must have its message within this, once the publisher is connected.
    pub deliver_timeout: Duration,
    /// Print progress to stderr.
    pub progress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// TCP connect in progress.
    Connecting,
    /// CONNECT sent.
    AwaitConnAck,
    /// SUBSCRIBE sent (targets only).
    AwaitSubAck,
    /// Connected and holding.
    Idle,
    /// Closed: by the broker, on an error, or by the tool at the end.
    Closed,
}

/// One connection of the fleet.
struct Client {
    stream: TcpStream,
    stage: Stage,
    target: bool,
    received: bool,
    /// Bytes of an incomplete packet; no allocation while idle.
    rbuf: BytesMut,
    /// Bytes the socket did not take yet.
    out: Vec<u8>,
    /// Seconds since the run started at the last write (for keep-alive pings).
    last_sent_s: u32,
}

/// Counters of a run.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Tally {
    /// CONNACK with success.
    pub connected: u64,
    /// Connections that never got in (refused, reset, no port, no file descriptor, ...).
    pub failed: u64,
    /// The first failure, as text.
    pub first_error: Option<String>,
    /// Connections the broker closed after they were in.
    pub dropped: u64,
    /// Targets whose SUBSCRIBE was granted.
    pub subscribed: u64,
    /// Targets that received their message (each counted once).
    pub delivered: u64,
    /// Publishes a client received that were not meant for it.
    pub misdelivered: u64,
    /// PUBACKs the publisher received.
    pub publisher_acked: u64,
    /// PINGREQs sent.
    pub pings: u64,
}

/// The connections and the loop.
pub struct Fleet {
    plan: Plan,
    poll: Poll,
    events: Events,
    clients: Vec<Client>,
    publisher: Option<Publisher>,
    started: Instant,
    /// Handshakes started but not finished.
    in_flight: usize,
    /// Ping every this many seconds (half the keep alive in force; 0: never).
    ping_every_s: u32,
    /// What happened so far.
    pub tally: Tally,
}

/// The connection that publishes one message to each target.
struct Publisher {
    client: Client,
    /// Targets still to publish to, in order.
    queue: std::vec::IntoIter<usize>,
    /// QoS 1 publishes sent and not yet acknowledged.
    unacked: usize,
    /// How many may be unacknowledged (the broker's Receive Maximum, at most 64).
    window: usize,
    next_packet_id: u16,
}

impl Fleet {
    /// An empty fleet.
    pub fn new(plan: Plan) -> io::Result<Fleet> {
        let ping_every_s = u32::from(plan.keep_alive / 2);
        Ok(Fleet {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            clients: Vec::with_capacity(plan.connections),
            publisher: None,
            started: Instant::now(),
            in_flight: 0,
            ping_every_s,
            tally: Tally::default(),
            plan,
        })
    }

    /// Opens every connection, `concurrency` handshakes at a time; returns when all are in
    /// (or failed) or the connect timeout passed.
    pub fn ramp(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + self.plan.connect_timeout;
        let target_every = self
            .plan
            .connections
            .checked_div(self.plan.targets)
            .unwrap_or(usize::MAX)
            .max(1);
        let mut next_report = Instant::now() + Duration::from_secs(1);
        while self.clients.len() < self.plan.connections || self.in_flight > 0 {
            while self.clients.len() < self.plan.connections
                && self.in_flight < self.plan.concurrency
            {
                let i = self.clients.len();
                let target = i.is_multiple_of(target_every) && i / target_every < self.plan.targets;
                let source = self.plan.sources.of(i);
                match self.open(Token(i), source) {
                    Ok(stream) => {
                        self.clients.push(Client::new(stream, target));
                        self.in_flight += 1;
                    }
                    Err(e) => {
                        self.fail(format!("connect from {source}: {e}"));
                        // Keep indices aligned with tokens: a closed placeholder is not
                        // possible without a socket, so stop opening on a local error.
                        return Ok(());
                    }
                }
            }
            self.turn(Duration::from_millis(20))?;
            let now = Instant::now();
            if now >= deadline {
                self.fail(format!(
                    "{} handshakes unfinished after {:?}",
                    self.in_flight, self.plan.connect_timeout
                ));
                return Ok(());
            }
            if self.plan.progress && now >= next_report {
                next_report = now + Duration::from_secs(1);
                eprintln!(
                    "  ramp: {} connected, {} failed of {} ({:.1} s)",
                    self.tally.connected,
                    self.tally.failed,
                    self.plan.connections,
                    self.started.elapsed().as_secs_f64()
                );
            }
        }
        Ok(())
    }

    /// Serves the fleet (pings, closes) for `how_long`.
    pub fn hold(&mut self, how_long: Duration) -> io::Result<()> {
        let until = Instant::now() + how_long;
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            self.turn((until - now).min(Duration::from_millis(200)))?;
        }
    }

    /// Connects the publisher (from `source`), publishes one QoS 1 message to each subscribed
    /// target and waits until every target has it; returns how long that took.
    pub fn deliver(&mut self, source: Ipv4Addr) -> io::Result<Duration> {
        let targets: Vec<usize> = (0..self.clients.len())
            .filter(|&i| self.clients[i].target && self.clients[i].stage == Stage::Idle)
            .collect();
        let stream = self.open(PUBLISHER, source)?;
        self.publisher = Some(Publisher {
            client: Client::new(stream, false),
            queue: targets.into_iter(),
            unacked: 0,
            window: 64,
            next_packet_id: 1,
        });
        let start = Instant::now();
        let deadline = start + self.plan.deliver_timeout;
        while self.tally.delivered < self.tally.subscribed {
            if Instant::now() >= deadline {
                break;
            }
            self.turn(Duration::from_millis(20))?;
        }
        Ok(start.elapsed())
    }

    /// Sends DISCONNECT on every open connection and closes it.
    pub fn close_all(&mut self) {
        let mut disconnect = BytesMut::new();
        protocol::encode(
            &Packet::Disconnect(protocol::Disconnect::default()),
            self.plan.version,
            &mut disconnect,
        );
        let publisher = self.publisher.take().map(|p| p.client);
        for mut c in self.clients.drain(..).chain(publisher) {
            if c.stage != Stage::Closed {
                let _ = c.stream.write(&disconnect);
            }
        }
    }

    /// Connections still open.
    pub fn open_count(&self) -> usize {
        self.clients
            .iter()
            .filter(|c| c.stage != Stage::Closed)
            .count()
    }

    fn open(&self, token: Token, source: Ipv4Addr) -> io::Result<TcpStream> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        socket.bind(&SocketAddr::new(source.into(), 0).into())?;
        match socket.connect(&self.plan.target.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let mut stream = TcpStream::from_std(socket.into());
        self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(stream)
    }

    fn fail(&mut self, why: String) {
        self.tally.failed += 1;
        if self.tally.first_error.is_none() {
            self.tally.first_error = Some(why);
        }
    }

    /// One turn of the loop: wait for events (at most `timeout`), handle them, send the pings
    /// that are due.
    fn turn(&mut self, timeout: Duration) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let ready: Vec<(Token, bool)> = self
            .events
            .iter()
            .map(|e| (e.token(), e.is_writable()))
            .collect();
        let now_s = self.now_s();
        for (token, writable) in ready {
            if token == PUBLISHER {
                self.serve_publisher(writable, now_s);
            } else if token.0 < self.clients.len() {
                self.serve_client(token.0, writable, now_s);
            }
        }
        self.ping_due(now_s);
        Ok(())
    }

    fn now_s(&self) -> u32 {
        u32::try_from(self.started.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn ping_due(&mut self, now_s: u32) {
        if self.ping_every_s == 0 {
            return;
        }
        let mut ping = BytesMut::new();
        protocol::encode(&Packet::PingReq, self.plan.version, &mut ping);
        for c in &mut self.clients {
            if c.stage == Stage::Idle && now_s.saturating_sub(c.last_sent_s) >= self.ping_every_s {
                self.tally.pings += 1;
                if c.send(&ping, now_s).is_err() {
                    c.stage = Stage::Closed;
                    self.tally.dropped += 1;
                }
            }
        }
    }

    fn serve_client(&mut self, i: usize, writable: bool, now_s: u32) {
        let id = match self.clients[i].stage {
            Stage::Connecting => format!("{}-{i}", self.plan.prefix),
            _ => String::new(),
        };
        let hello = self.hello(&id);
        let c = &mut self.clients[i];
        let before = c.stage;
        let result = c.pump(writable, &hello, now_s, |c, packet, out| {
            let stage = c.stage;
            match (stage, packet) {
                (Stage::AwaitConnAck, Packet::ConnAck(ack)) if ack.reason < 0x80 => {
                    out.connack_keep_alive = ack.properties.server_keep_alive;
                    if c.target {
                        c.stage = Stage::AwaitSubAck;
                        out.subscribe = true;
                    } else {
                        c.stage = Stage::Idle;
                    }
                    out.connected = true;
                    Ok(())
                }
                (Stage::AwaitConnAck, Packet::ConnAck(ack)) => {
                    Err(format!("CONNACK refused with reason {:#04x}", ack.reason))
                }
                (Stage::AwaitSubAck, Packet::SubAck(ack)) => match ack.reasons.first() {
                    Some(&r) if r < 0x80 => {
                        c.stage = Stage::Idle;
                        out.subscribed = true;
                        Ok(())
                    }
                    other => Err(format!("SUBACK refused: {other:?}")),
                },
                (_, Packet::Publish(p)) => {
                    out.publish = Some((p.topic, p.payload, p.qos, p.packet_id));
                    Ok(())
                }
                (_, Packet::PingResp) => Ok(()),
                (_, Packet::Disconnect(d)) => Err(format!(
                    "DISCONNECT from the broker, reason {:#04x}",
                    d.reason
                )),
                (_, other) => Err(format!("unexpected {other:?}")),
            }
        });
        match result {
            Ok(events) => self.apply(i, events, now_s),
            Err(why) => {
                self.clients[i].stage = Stage::Closed;
                if before == Stage::Idle || before == Stage::AwaitSubAck {
                    self.tally.dropped += 1;
                    if self.tally.first_error.is_none() {
                        self.tally.first_error = Some(format!("client {i} dropped: {why}"));
                    }
                } else {
                    self.in_flight -= 1;
                    self.fail(format!("client {i}: {why}"));
                }
            }
        }
    }

    fn apply(&mut self, i: usize, events: Vec<ClientEvent>, now_s: u32) {
        for ev in events {
            if ev.connected {
                self.tally.connected += 1;
                if let Some(ka) = ev.connack_keep_alive {
                    self.ping_every_s = u32::from(ka / 2);
                }
                if !ev.subscribe {
                    self.in_flight -= 1;
                }
            }
            if ev.subscribe {
                let subscribe = Packet::Subscribe(Subscribe {
                    packet_id: 1,
                    filters: vec![SubscribeFilter {
                        filter: Utf8::new(self.topic(i)).unwrap_or_default(),
                        options: SubscriptionOptions {
                            qos: QoS::AtLeastOnce,
                            ..SubscriptionOptions::default()
                        },
                    }],
                    properties: SubscribeProperties::default(),
                });
                self.write_packet(i, &subscribe, now_s);
            }
            if ev.subscribed {
                self.tally.subscribed += 1;
                self.in_flight -= 1;
            }
            if let Some((topic, payload, qos, packet_id)) = ev.publish {
                let expected = self.topic(i);
                if topic.as_str() == expected && payload.as_ref() == expected.as_bytes() {
                    if !self.clients[i].received {
                        self.clients[i].received = true;
                        self.tally.delivered += 1;
                    }
                } else {
                    self.tally.misdelivered += 1;
                }
                if qos == QoS::AtLeastOnce {
                    self.write_packet(
                        i,
                        &Packet::PubAck(PubAck {
                            packet_id,
                            ..PubAck::default()
                        }),
                        now_s,
                    );
                }
            }
        }
    }

    fn write_packet(&mut self, i: usize, packet: &Packet, now_s: u32) {
        let mut buf = BytesMut::new();
        protocol::encode(packet, self.plan.version, &mut buf);
        if self.clients[i].send(&buf, now_s).is_err() {
            self.clients[i].stage = Stage::Closed;
            self.tally.dropped += 1;
        }
    }

    fn hello<'a>(&self, client_id: &'a str) -> Hello<'a> {
        Hello {
            version: self.plan.version,
            keep_alive: self.plan.keep_alive,
            client_id,
        }
    }

    fn topic(&self, i: usize) -> String {
        format!("{}/{i}", self.plan.prefix)
    }

    fn serve_publisher(&mut self, writable: bool, now_s: u32) {
        let Some(mut p) = self.publisher.take() else {
            return;
        };
        let id = format!("{}-publisher", self.plan.prefix);
        let hello = self.hello(&id);
        let result = p.client.pump(writable, &hello, now_s, |c, packet, out| {
            match (c.stage, packet) {
                (Stage::AwaitConnAck, Packet::ConnAck(ack)) if ack.reason < 0x80 => {
                    c.stage = Stage::Idle;
                    out.receive_maximum = ack.properties.receive_maximum;
                    out.connected = true;
                    Ok(())
                }
                (_, Packet::PubAck(ack)) if ack.reason < 0x80 => {
                    out.acked = true;
                    Ok(())
                }
                (_, Packet::PingResp) => Ok(()),
                (_, other) => Err(format!("publisher got {other:?}")),
            }
        });
        match result {
            Ok(events) => {
                for ev in events {
                    if ev.connected {
                        p.window = usize::from(ev.receive_maximum.unwrap_or(64).clamp(1, 64));
                    }
                    if ev.acked {
                        p.unacked = p.unacked.saturating_sub(1);
                        self.tally.publisher_acked += 1;
                    }
                }
                if p.client.stage == Stage::Idle {
                    self.publish_more(&mut p, now_s);
                }
                self.publisher = Some(p);
            }
            Err(why) => {
                if self.tally.first_error.is_none() {
                    self.tally.first_error = Some(format!("publisher: {why}"));
                }
            }
        }
    }

    fn publish_more(&mut self, p: &mut Publisher, now_s: u32) {
        let mut buf = BytesMut::new();
        while p.unacked < p.window {
            let Some(i) = p.queue.next() else { break };
            let topic = self.topic(i);
            let publish = Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                packet_id: p.next_packet_id,
                payload: Bytes::from(topic.clone()),
                topic: Utf8::new(topic).unwrap_or_default(),
                properties: PublishProperties::default(),
            };
            p.next_packet_id = p.next_packet_id.checked_add(1).unwrap_or(1);
            publish.encode(self.plan.version, &mut buf);
            p.unacked += 1;
        }
        if !buf.is_empty() && p.client.send(&buf, now_s).is_err() {
            p.client.stage = Stage::Closed;
            if self.tally.first_error.is_none() {
                self.tally.first_error = Some("publisher: write failed".into());
            }
        }
    }
}

/// What reading a client's socket turned up, for the fleet to act on.
#[derive(Default)]
struct ClientEvent {
    connected: bool,
    connack_keep_alive: Option<u16>,
    receive_maximum: Option<u16>,
    subscribe: bool,
    subscribed: bool,
    acked: bool,
    publish: Option<(Utf8, Bytes, QoS, u16)>,
}

impl Client {
    fn new(stream: TcpStream, target: bool) -> Client {
        Client {
            stream,
            stage: Stage::Connecting,
            target,
            received: false,
            rbuf: BytesMut::new(),
            out: Vec::new(),
            last_sent_s: 0,
        }
    }

    /// Writes what the socket takes now and keeps the rest for the next writable event.
    fn send(&mut self, bytes: &[u8], now_s: u32) -> io::Result<()> {
        self.last_sent_s = now_s;
        if !self.out.is_empty() {
            self.out.extend_from_slice(bytes);
            return Ok(());
        }
        let n = write_some(&mut self.stream, bytes)?;
        self.out.extend_from_slice(&bytes[n..]);
        Ok(())
    }

    /// Handles readiness: finishes the TCP connect (then sends CONNECT), flushes pending
    /// output, reads and decodes every packet, handing each to `on_packet`.
    fn pump(
        &mut self,
        writable: bool,
        hello: &Hello<'_>,
        now_s: u32,
        mut on_packet: impl FnMut(&mut Client, Packet, &mut ClientEvent) -> Result<(), String>,
    ) -> Result<Vec<ClientEvent>, String> {
        if self.stage == Stage::Closed {
            return Ok(Vec::new());
        }
        if self.stage == Stage::Connecting {
            if let Some(e) = self.stream.take_error().map_err(|e| e.to_string())? {
                return Err(format!("connect: {e}"));
            }
            match self.stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => return Ok(Vec::new()),
                Err(e) => return Err(format!("connect: {e}")),
            }
            self.stage = Stage::AwaitConnAck;
            let mut buf = BytesMut::new();
            protocol::encode(&hello.connect(), hello.version, &mut buf);
            self.send(&buf, now_s)
                .map_err(|e| format!("CONNECT: {e}"))?;
        }
        if writable && !self.out.is_empty() {
            let n = write_some(&mut self.stream, &self.out).map_err(|e| e.to_string())?;
            self.out.drain(..n);
            if self.out.is_empty() {
                self.out = Vec::new();
            }
        }
        let mut closed = false;
        loop {
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 2 {
                self.rbuf.reserve(READ_CHUNK);
            }
            let spare = self.rbuf.spare_capacity_mut();
            // SAFETY: `read` only writes initialized bytes into the slice it is given, and the
            // length is advanced by exactly the count it reports.
            let spare =
                unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast(), spare.len()) };
            match self.stream.read(spare) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                // SAFETY: `n` bytes were just written into the spare capacity.
                Ok(n) => unsafe { self.rbuf.set_len(self.rbuf.len() + n) },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let mut events = Vec::new();
        loop {
            match protocol::decode(&mut self.rbuf, hello.version, MAX_PACKET) {
                Ok(Some(packet)) => {
                    let mut ev = ClientEvent::default();
                    on_packet(self, packet, &mut ev)?;
                    events.push(ev);
                }
                Ok(None) => break,
                Err(e) => return Err(format!("undecodable bytes from the broker: {e}")),
            }
        }
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        if closed {
            return Err(format!(
                "closed by the broker ({} events first)",
                events.len()
            ));
        }
        Ok(events)
    }
}

/// What a client says in CONNECT.
struct Hello<'a> {
    version: ProtocolVersion,
    keep_alive: u16,
    client_id: &'a str,
}

impl Hello<'_> {
    fn connect(&self) -> Packet {
        Packet::Connect(Box::new(Connect {
            protocol: self.version,
            clean_start: true,
            keep_alive: self.keep_alive,
            client_id: Utf8::new(self.client_id).unwrap_or_default(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }))
    }
}

fn write_some(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < bytes.len() {
        match stream.write(&bytes[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
