//! Network listeners: plain TCP, TLS (client certificate required; driven by `tls`), and MQTT
//! over WebSocket, plain and TLS (through tokio-rustls: WebSocket connections never park). Each
//! accepted socket is turned into a [`ClientStream`] and handed to the connection code, which
//! does not know which transport it runs on.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use fleetcore_core::auth::TransportKind;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::connection::{ClientStream, ConnectionInfo};
use super::idle_watch::Socket;
use super::tls;

/// Which protocol stack a listener speaks.
#[derive(Clone)]
pub enum ListenerKind {
    /// MQTT over plain TCP.
    Tcp,
    /// MQTT over TLS; the config decides whether a client certificate is required.
    Tls(Arc<rustls::ServerConfig>),
    /// MQTT over WebSocket.
    WebSocket,
    /// MQTT over WebSocket over TLS.
    WebSocketTls(Arc<rustls::ServerConfig>),
}

impl ListenerKind {
    /// The transport clients of this listener use.
    pub fn transport(&self) -> TransportKind {
        match self {
            ListenerKind::Tcp => TransportKind::Tcp,
            ListenerKind::Tls(_) => TransportKind::Tls,
            ListenerKind::WebSocket => TransportKind::WebSocket,
            ListenerKind::WebSocketTls(_) => TransportKind::WebSocketTls,
        }
    }
}

/// Counts accepted connections per one-second window to enforce a connection rate.
pub(crate) struct RateLimit {
    per_second: u32,
    window_start: Instant,
    count: u32,
}

impl RateLimit {
    pub(crate) fn new(per_second: u32) -> RateLimit {
        RateLimit {
            per_second,
            window_start: Instant::now(),
            count: 0,
        }
    }

    /// True if one more connection may be accepted now.
    pub(crate) fn admit(&mut self, now: Instant) -> bool {
        if self.per_second == 0 {
            return true;
        }
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.count = 0;
        }
        self.count += 1;
        self.count <= self.per_second
    }
}

/// Binds a TCP listener.
pub(crate) async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Completes the transport handshake of an accepted socket (TLS, WebSocket upgrade).
pub(crate) async fn handshake(
    kind: &ListenerKind,
    tcp: TcpStream,
    peer: SocketAddr,
    max_message: usize,
) -> io::Result<(Box<dyn ClientStream>, ConnectionInfo)> {
    let _ = tcp.set_nodelay(true);
    let mut info = ConnectionInfo {
        transport: kind.transport(),
        peer,
        peer_certificate: None,
    };
    let stream: Box<dyn ClientStream> = match kind {
        ListenerKind::Tcp => Box::new(Socket::Live(tcp)),
        // rustls's unbuffered API, so that a parked connection holds no TLS buffer (`tls`).
        ListenerKind::Tls(config) => {
            let tls = tls::accept(Arc::clone(config), tcp).await?;
            info.peer_certificate = tls.peer_certificate();
            Box::new(tls)
        }
        ListenerKind::WebSocket => Box::new(upgrade(tcp, max_message).await?),
        ListenerKind::WebSocketTls(config) => {
            let tls = TlsAcceptor::from(Arc::clone(config)).accept(tcp).await?;
            info.peer_certificate = leaf_certificate(&tls);
            Box::new(upgrade(tls, max_message).await?)
        }
    };
    Ok((stream, info))
}

fn leaf_certificate(tls: &tokio_rustls::server::TlsStream<TcpStream>) -> Option<Vec<u8>> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.as_ref().to_vec())
}

/// Subprotocols MQTT clients ask for: `mqtt` (MQTT 3.1.1 and 5) and the older `mqttv3.1`.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

#[allow(clippy::result_large_err)] // the error type is tungstenite's callback contract
fn choose_subprotocol(
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    let Some(offered) = request.headers().get("sec-websocket-protocol") else {
        // No subprotocol offered: accept, as Mosquitto does, for clients that omit it.
        return Ok(response);
    };
    let offered = offered.to_str().unwrap_or("");
    let chosen = offered
        .split(',')
        .map(str::trim)
        .find(|p| SUBPROTOCOLS.contains(p));
    match chosen {
        Some(p) => {
            if let Ok(v) = HeaderValue::from_str(p) {
                response.headers_mut().insert("sec-websocket-protocol", v);
            }
            Ok(response)
        }
        None => {
            let mut refusal =
                ErrorResponse::new(Some("MQTT over WebSocket needs subprotocol mqtt".into()));
            *refusal.status_mut() = StatusCode::BAD_REQUEST;
            Err(refusal)
        }
    }
}

async fn upgrade<S>(stream: S, max_message: usize) -> io::Result<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, choose_subprotocol, Some(config))
            .await
            .map_err(io::Error::other)?;
    Ok(WsStream {
        inner: ws,
        pending: Bytes::new(),
    })
}

impl ClientStream for Socket {
    fn parkable(&mut self) -> bool {
        true
    }

    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.live()?.poll_read_ready(cx)
    }

    fn park_socket(&mut self, waker: &Waker) -> bool {
        self.park(waker)
    }

    fn unpark_socket(&mut self) {
        self.unpark();
    }
}

/// WebSocket connections never park: tungstenite buffers frames of its own.
impl<S: AsyncRead + AsyncWrite + Unpin + Send> ClientStream for WsStream<S> {}

/// A WebSocket connection seen as a byte stream: binary messages in, binary messages out.
/// MQTT packets may span messages and a message may hold several packets (MQTT §6).
pub(crate) struct WsStream<S> {
    inner: WebSocketStream<S>,
    pending: Bytes,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                Some(Ok(WsMessage::Binary(data))) => self.pending = data,
                Some(Ok(WsMessage::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Ok(WsMessage::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket must use binary messages",
                    )));
                }
                Some(Ok(_)) => {} // ping/pong are answered by tungstenite
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.inner).poll_ready(cx)).map_err(io::Error::other)?;
        Pin::new(&mut self.inner)
            .start_send(WsMessage::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_admits_per_second() {
        let start = Instant::now();
        let mut limit = RateLimit::new(2);
        assert!(limit.admit(start));
        assert!(limit.admit(start));
        assert!(!limit.admit(start));
        assert!(limit.admit(start + Duration::from_millis(1001)));
        let mut unlimited = RateLimit::new(0);
        assert!((0..1000).all(|_| unlimited.admit(start)));
    }
}
