//! The device HTTPS listener: the iot-data routes over mutual TLS, where the client certificate
//! is the identity and its IoT policies authorize each request (`iot:GetThingShadow`,
//! `iot:UpdateThingShadow`, `iot:DeleteThingShadow`, `iot:ListNamedShadowsForThing` on
//! `thing/<name>`, `iot:Publish` on `topic/<topic>`), as on AWS IoT's data endpoint.
//!
//! TLS handshakes run on their own tasks (a slow client cannot hold up the others); a
//! connection whose certificate is not registered and ACTIVE is closed after the handshake.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::DeviceCaller;
use crate::error::ApiError;

/// Turns a verified client certificate (DER) into the caller it stands for, or says why the
/// device may not use the listener.
pub type DeviceAuthorizer = Arc<dyn Fn(&[u8]) -> Result<DeviceCaller, String> + Send + Sync>;

/// Time a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Authenticated connections waiting for the HTTP server.
const ACCEPT_QUEUE: usize = 64;

/// Accepted, authenticated device connections, for [`serve`].
pub struct DeviceListener {
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, DeviceCaller)>,
}

impl Listener for DeviceListener {
    type Io = TlsStream<TcpStream>;
    type Addr = DeviceCaller;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(connection) => connection,
            // The acceptor only stops when the listener is dropped; wait for shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Err(io::Error::other(
            "a device listener's address is a socket address, see bind()",
        ))
    }
}

impl Connected<IncomingStream<'_, DeviceListener>> for DeviceCaller {
    fn connect_info(stream: IncomingStream<'_, DeviceListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Binds `addr` and starts accepting TLS connections (client certificate required by `tls`'s
/// verifier) whose certificate `authorize` accepts. Returns the listener and the bound address.
pub async fn bind(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    authorize: DeviceAuthorizer,
) -> io::Result<(DeviceListener, SocketAddr)> {
    let tcp = TcpListener::bind(addr).await?;
    let local = tcp.local_addr()?;
    let mut config = (*tls).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, incoming) = mpsc::channel(ACCEPT_QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => break,
                accepted = tcp.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "device HTTPS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (acceptor, authorize, tx) = (acceptor.clone(), Arc::clone(&authorize), tx.clone());
            tokio::spawn(async move {
                let tls =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "device HTTPS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "device HTTPS handshake timed out");
                            return;
                        }
                    };
                let certificate = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|der| der.as_ref().to_vec());
                let Some(der) = certificate else {
                    tracing::debug!(%peer, "device HTTPS client presented no certificate");
                    return;
                };
                match authorize(&der) {
                    Ok(caller) => {
                        let _ = tx.send((tls, caller)).await;
                    }
                    Err(reason) => {
                        metrics::counter!("fleetcore_iotdata_device_refused_total").increment(1);
                        tracing::info!(%peer, reason, "device HTTPS connection refused");
                    }
                }
            });
        }
    });
    Ok((DeviceListener { incoming }, local))
}

/// Serves `routes` (the iot-data routes) to the devices of `listener` until `shutdown`.
pub async fn serve(
    listener: DeviceListener,
    routes: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let routes = routes.fallback(|request: axum::extract::Request| async move {
        ApiError::new(
            "UnknownOperationException",
            axum::http::StatusCode::NOT_FOUND,
            format!(
                "{} {} is not an operation of the device data endpoint.",
                request.method(),
                request.uri().path()
            ),
        )
    });
    axum::serve(
        listener,
        routes.into_make_service_with_connect_info::<DeviceCaller>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
