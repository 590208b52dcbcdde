//! Parked sockets wait outside tokio's reactor. tokio keeps a cache-padded readiness record
//! (about 250 B) for every socket registered with it; a parked connection's socket is instead
//! handed to one poll of the broker's own (mio, one thread for the process), which wakes the
//! connection's parking spot when the socket becomes readable or closes, and the socket goes
//! back to tokio when the connection wakes. What a parked socket costs here is one map entry.
//!
//! [`Socket`] is the TCP socket a connection reads and writes: live in tokio's reactor, or
//! parked here.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll as MioPoll, Registry, Token};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The process's watch over parked sockets.
struct IdleWatch {
    registry: Registry,
    /// What to wake, by the token a parked socket is registered with.
    wakers: Mutex<HashMap<usize, Waker, foldhash::fast::RandomState>>,
    next_token: AtomicUsize,
}

/// The watch, started on first use; `None` if the OS refused a poll or a thread (parking then
/// leaves sockets in tokio's reactor).
fn watch() -> Option<&'static IdleWatch> {
    static WATCH: OnceLock<Option<IdleWatch>> = OnceLock::new();
    WATCH
        .get_or_init(|| match start() {
            Ok(watch) => Some(watch),
            Err(e) => {
                tracing::warn!(error = %e, "parked sockets stay in tokio's reactor");
                None
            }
        })
        .as_ref()
}

fn start() -> io::Result<IdleWatch> {
    let mut poll = MioPoll::new()?;
    let registry = poll.registry().try_clone()?;
    std::thread::Builder::new()
        .name("mqtt-idle-watch".into())
        .spawn(move || {
            let mut events = Events::with_capacity(256);
            loop {
                match poll.poll(&mut events, None) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // Parked connections still wake for deliveries, kicks and the
                        // keep-alive sweep; only their own traffic goes unseen.
                        tracing::error!(error = %e, "watching parked sockets failed");
                        return;
                    }
                }
                let Some(watch) = watch() else { return };
                for event in &events {
                    let waker = watch.wakers.lock().remove(&event.token().0);
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                }
            }
        })?;
    Ok(IdleWatch {
        registry,
        wakers: Mutex::new(HashMap::default()),
        next_token: AtomicUsize::new(0),
    })
}

/// A parked socket: out of tokio's reactor, watched here until its connection wakes.
pub(crate) struct Parked {
    stream: MioStream,
    token: usize,
}

/// A connection's TCP socket.
pub(crate) enum Socket {
    /// In tokio's reactor: the connection is served.
    Live(TcpStream),
    /// Watched here: the connection is parked.
    Parked(Parked),
    /// Lost while moving between the two (the OS refused a registration): the connection ends.
    Lost,
}

fn lost() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "socket lost while unparking")
}

impl Socket {
    /// The socket in tokio's reactor, or the error that ends the connection.
    pub(crate) fn live(&mut self) -> io::Result<&mut TcpStream> {
        match self {
            Socket::Live(tcp) => Ok(tcp),
            _ => Err(lost()),
        }
    }

    /// Moves the socket out of tokio's reactor into the watch, which wakes `waker` once the
    /// socket is readable (at once if it is already). False if it stays in tokio's reactor
    /// (the caller registers `waker` there instead).
    pub(crate) fn park(&mut self, waker: &Waker) -> bool {
        let Some(watch) = watch() else { return false };
        let Socket::Live(_) = self else { return false };
        let Socket::Live(tcp) = std::mem::replace(self, Socket::Lost) else {
            return false;
        };
        let std = match tcp.into_std() {
            Ok(std) => std,
            Err(e) => {
                tracing::debug!(error = %e, "a parked socket left tokio's reactor badly");
                return false;
            }
        };
        let mut stream = MioStream::from_std(std);
        let token = watch.next_token.fetch_add(1, Ordering::Relaxed);
        // The waker is in the map before the socket can report readiness.
        watch.wakers.lock().insert(token, waker.clone());
        match watch
            .registry
            .register(&mut stream, Token(token), Interest::READABLE)
        {
            Ok(()) => {
                *self = Socket::Parked(Parked { stream, token });
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "a parked socket stays in tokio's reactor");
                watch.wakers.lock().remove(&token);
                self.relive(stream.into());
                false
            }
        }
    }

    /// Brings a parked socket back into tokio's reactor; called in the runtime's context.
    pub(crate) fn unpark(&mut self) {
        let Socket::Parked(_) = self else { return };
        let Socket::Parked(Parked { mut stream, token }) = std::mem::replace(self, Socket::Lost)
        else {
            return;
        };
        if let Some(watch) = watch() {
            let _ = watch.registry.deregister(&mut stream);
            watch.wakers.lock().remove(&token);
        }
        self.relive(stream.into());
    }

    fn relive(&mut self, std: std::net::TcpStream) {
        *self = match TcpStream::from_std(std) {
            Ok(tcp) => Socket::Live(tcp),
            Err(e) => {
                tracing::info!(error = %e, "a socket could not rejoin tokio's reactor");
                Socket::Lost
            }
        };
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().live()?).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().live()?).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().live()?).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().live()?).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::Notify;

    use super::*;

    /// A waker that notifies `notify`.
    struct Wakes(std::sync::Arc<Notify>);

    impl std::task::Wake for Wakes {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.notify_one();
        }
    }

    async fn connected() -> (Socket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Socket::Live(server), client)
    }

    #[tokio::test]
    async fn a_parked_socket_wakes_when_readable_and_serves_again_after_unparking() {
        let (mut socket, mut client) = connected().await;
        let notify = std::sync::Arc::new(Notify::new());
        let waker = Waker::from(std::sync::Arc::new(Wakes(notify.clone())));
        assert!(socket.park(&waker));
        assert!(matches!(socket, Socket::Parked(_)));
        assert!(socket.live().is_err(), "a parked socket is not read");
        client.write_all(b"ping").await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), notify.notified())
            .await
            .expect("the watch woke the parked socket");
        socket.unpark();
        let mut got = [0u8; 4];
        socket.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        socket.write_all(b"pong").await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }

    #[tokio::test]
    async fn a_socket_readable_before_parking_wakes_at_once_and_a_closed_one_too() {
        let (mut socket, mut client) = connected().await;
        client.write_all(b"early").await.unwrap();
        let notify = std::sync::Arc::new(Notify::new());
        let waker = Waker::from(std::sync::Arc::new(Wakes(notify.clone())));
        assert!(socket.park(&waker));
        tokio::time::timeout(Duration::from_secs(10), notify.notified())
            .await
            .expect("already readable: woken at once");
        socket.unpark();
        let mut got = [0u8; 5];
        socket.read_exact(&mut got).await.unwrap();
        assert!(socket.park(&waker));
        drop(client);
        tokio::time::timeout(Duration::from_secs(10), notify.notified())
            .await
            .expect("the client's close wakes the parked socket");
        socket.unpark();
        assert_eq!(socket.read(&mut got).await.unwrap(), 0);
    }
}
