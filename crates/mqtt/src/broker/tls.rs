//! MQTT over TLS driven through rustls's unbuffered API: the TLS record buffers (received
//! records not yet processed, records not yet written, decrypted bytes not yet read) are owned
//! here, not by rustls, so a quiet connection gives them back (`ClientStream::parkable`) and a
//! parked one keeps only rustls's keys and session state. rustls's buffered API keeps a 4 KiB
//! read buffer for the connection's whole life.
//!
//! TLS semantics are rustls's: records may arrive split across reads or several to a read,
//! handshake messages (session tickets, a TLS 1.3 key update answered with our own) that rustls
//! emits after the handshake are written before any later application data, and close_notify
//! ends the stream both ways.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    AppDataRecord, ConnectionState, EncodeError, EncryptError, InsufficientSizeError,
    UnbufferedStatus,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::connection::ClientStream;
use super::idle_watch::Socket;

/// Bytes of room made for each read from the socket (rustls's buffered API reads as much).
const READ_SIZE: usize = 4096;
/// Received TLS bytes held without a complete record to process: a handshake message may span
/// records up to 64 KiB (rustls's own limit), an application record is at most ~16.7 KiB.
const MAX_INCOMING: usize = 0x1_0000 + READ_SIZE;
/// Encrypted bytes not yet written above which a write waits for the socket.
const MAX_OUTGOING: usize = 64 * 1024;
/// First guess of the room a handshake record needs (retried with rustls's exact figure).
const ENCODE_GUESS: usize = 2048;
/// Room per record on top of its plaintext: header, content type, tag (TLS 1.2 adds a nonce).
const RECORD_OVERHEAD: usize = 64;
/// Largest plaintext per record (TLS's limit; rustls may cut smaller).
const MAX_FRAGMENT: usize = 16 * 1024;

/// A server-side TLS connection over TCP whose buffers are its own (see the module docs).
pub(crate) struct TlsStream {
    tcp: Socket,
    tls: UnbufferedServerConnection,
    /// Received TLS bytes not yet processed: at most one incomplete record once processed.
    incoming: Vec<u8>,
    /// TLS bytes to write; `sent` of them are written.
    outgoing: Vec<u8>,
    sent: usize,
    /// Decrypted bytes not yet read; `taken` of them are read.
    plaintext: Vec<u8>,
    taken: usize,
    /// The peer closed (close_notify, or the socket's end): reads see the end of the stream.
    peer_closed: bool,
    /// Our close_notify is queued.
    close_sent: bool,
}

/// Where driving rustls stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driven {
    /// Traffic may flow; whatever complete records were received are processed.
    Traffic,
    /// The handshake needs more bytes from the peer.
    NeedData,
    /// Both sides sent close_notify.
    Closed,
}

/// What to do once rustls reaches the traffic state.
#[derive(Clone, Copy)]
enum Then<'a> {
    Nothing,
    Encrypt(&'a [u8]),
    CloseNotify,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Appends what `write` puts into a slice of `out`, growing the room until it fits: `write`
/// says `Err(Some(n))` when it needs `n` bytes, `Err(None)` when it cannot write at all.
fn append_with(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> io::Result<()> {
    let start = out.len();
    let mut room = guess;
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(needed)) if needed > room => room = needed,
            Err(_) => {
                out.truncate(start);
                return Err(io::Error::other("TLS record could not be written"));
            }
        }
    }
}

fn encrypt_needs(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(required_size)
        }
        _ => None,
    }
}

fn encode_needs(e: EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(required_size)
        }
        _ => None,
    }
}

/// Hands `payload` to the reader: straight into `dest` while nothing is waiting before it,
/// the rest (or all of it) into `plaintext`.
fn hand_over(payload: &[u8], dest: Option<&mut ReadBuf<'_>>, plaintext: &mut Vec<u8>) {
    let direct = match dest {
        Some(dest) if plaintext.is_empty() => {
            let n = payload.len().min(dest.remaining());
            dest.put_slice(&payload[..n]);
            n
        }
        _ => 0,
    };
    plaintext.extend_from_slice(&payload[direct..]);
}

/// Completes the server side of the TLS handshake on `tcp` (the client certificate is checked
/// as `config` says) and returns the stream, its record buffers its own.
pub(crate) async fn accept(config: Arc<ServerConfig>, tcp: TcpStream) -> io::Result<TlsStream> {
    let mut stream = TlsStream {
        tcp: Socket::Live(tcp),
        tls: UnbufferedServerConnection::new(config).map_err(tls_error)?,
        incoming: Vec::new(),
        outgoing: Vec::new(),
        sent: 0,
        plaintext: Vec::new(),
        taken: 0,
        peer_closed: false,
        close_sent: false,
    };
    poll_fn(|cx| stream.poll_handshake(cx)).await?;
    Ok(stream)
}

impl TlsStream {
    /// DER of the verified client certificate, if the client presented one.
    pub(crate) fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.tls
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| c.as_ref().to_vec())
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let driven = self.drive(None, Then::Nothing)?;
            ready!(self.poll_send(cx))?;
            if !self.tls.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if driven == Driven::Closed || self.peer_closed {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Processes every complete record received (decrypted data goes to `dest`, then to
    /// `plaintext`; handshake records rustls emits go to `outgoing`), then does `then` once
    /// traffic may flow.
    fn drive(&mut self, mut dest: Option<&mut ReadBuf<'_>>, then: Then<'_>) -> io::Result<Driven> {
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.tls.process_tls_records(&mut self.incoming);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    self.send_alert();
                    return Err(tls_error(e));
                }
            };
            let stop = match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let AppDataRecord {
                            discard: more,
                            payload,
                        } = record.map_err(tls_error)?;
                        discard += more;
                        hand_over(payload, dest.as_deref_mut(), &mut self.plaintext);
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut record) => {
                    append_with(&mut self.outgoing, ENCODE_GUESS, |out| {
                        record.encode(out).map_err(encode_needs)
                    })?;
                    None
                }
                // Queued in `outgoing`, written before anything queued after it.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    None
                }
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    None
                }
                ConnectionState::Closed => Some(Driven::Closed),
                ConnectionState::BlockedHandshake => Some(Driven::NeedData),
                ConnectionState::WriteTraffic(mut traffic) => {
                    match then {
                        Then::Nothing => {}
                        Then::Encrypt(data) => {
                            let guess =
                                data.len() + (data.len() / MAX_FRAGMENT + 1) * RECORD_OVERHEAD;
                            append_with(&mut self.outgoing, guess, |out| {
                                traffic.encrypt(data, out).map_err(encrypt_needs)
                            })?;
                        }
                        Then::CloseNotify => {
                            if !self.close_sent {
                                append_with(&mut self.outgoing, RECORD_OVERHEAD, |out| {
                                    traffic.queue_close_notify(out).map_err(encrypt_needs)
                                })?;
                                self.close_sent = true;
                            }
                        }
                    }
                    Some(Driven::Traffic)
                }
                ConnectionState::ReadEarlyData(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "TLS early data is not accepted",
                    ));
                }
                other => {
                    return Err(io::Error::other(format!("unexpected TLS state {other:?}")));
                }
            };
            if discard > 0 {
                self.incoming.drain(..discard);
            }
            if let Some(stop) = stop {
                return Ok(stop);
            }
        }
    }

    /// After a fatal error rustls has an alert queued for the peer: written if the socket
    /// takes it now, never waited for.
    fn send_alert(&mut self) {
        if let UnbufferedStatus {
            state: Ok(ConnectionState::EncodeTlsData(mut record)),
            ..
        } = self.tls.process_tls_records(&mut [])
        {
            let _ = append_with(&mut self.outgoing, ENCODE_GUESS, |out| {
                record.encode(out).map_err(encode_needs)
            });
        }
        if self.sent < self.outgoing.len()
            && let Ok(tcp) = self.tcp.live()
        {
            let _ = tcp.try_write(&self.outgoing[self.sent..]);
        }
    }

    /// Writes `outgoing` to the socket, all of it.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(self.tcp.live()?).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads what the socket has into `incoming`; 0 at the socket's end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() >= MAX_INCOMING {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS record larger than allowed",
            )));
        }
        self.incoming.reserve(READ_SIZE);
        loop {
            let tcp = self.tcp.live()?;
            ready!(tcp.poll_read_ready(cx))?;
            match tcp.try_read_buf(&mut self.incoming) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.taken < this.plaintext.len() {
                let n = (this.plaintext.len() - this.taken).min(buf.remaining());
                buf.put_slice(&this.plaintext[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.plaintext.len() {
                    this.plaintext.clear();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            let driven = this.drive(Some(&mut *buf), Then::Nothing)?;
            // What rustls answers to the records read (a key update) goes out without waiting.
            if this.sent < this.outgoing.len()
                && let Poll::Ready(Err(e)) = this.poll_send(cx)
            {
                return Poll::Ready(Err(e));
            }
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            if this.taken < this.plaintext.len() {
                continue;
            }
            if driven == Driven::Closed {
                this.peer_closed = true;
            }
            if this.peer_closed {
                continue;
            }
            if ready!(this.poll_fill(cx))? == 0 {
                // The socket ended without close_notify: the end of the stream all the same.
                this.peer_closed = true;
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.outgoing.len() - this.sent >= MAX_OUTGOING {
            ready!(this.poll_send(cx))?;
        }
        match this.drive(None, Then::Encrypt(data))? {
            Driven::Traffic => {}
            Driven::NeedData => return Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
            Driven::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.drive(None, Then::CloseNotify)?;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

impl ClientStream for TlsStream {
    /// Parkable when nothing received, decrypted or to send is buffered; the buffers are then
    /// given back, so a parked connection holds rustls's keys and state only.
    fn parkable(&mut self) -> bool {
        let quiet = self.incoming.is_empty()
            && self.taken >= self.plaintext.len()
            && self.sent >= self.outgoing.len()
            && !self.peer_closed;
        if quiet {
            self.incoming = Vec::new();
            self.outgoing = Vec::new();
            self.plaintext = Vec::new();
            self.sent = 0;
            self.taken = 0;
        }
        quiet
    }

    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp.live()?.poll_read_ready(cx)
    }

    fn park_socket(&mut self, waker: &Waker) -> bool {
        self.tcp.park(waker)
    }

    fn unpark_socket(&mut self) {
        self.tcp.unpark();
    }
}

#[cfg(test)]
mod tests;
