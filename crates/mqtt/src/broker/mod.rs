//! The MQTT broker: listeners, connections, sessions and the router, started as one service.

mod config;
mod connection;
mod device_meter;
mod drain;
mod handover;
mod idle_watch;
mod ingest;
mod keep_alive;
mod message;
mod metrics;
mod parking;
mod persist;
mod queue_store;
mod retained;
mod router;
mod session;
mod shared;
mod subscriptions;
mod takeover;
mod tap;
#[cfg(test)]
mod test_support;
mod tls;
mod transport;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetcore_core::KvStore;
use fleetcore_core::auth::Authenticator;
use tokio::sync::{mpsc, watch};

pub use config::BrokerConfig;
pub use device_meter::{CountersTaken, DeviceCounters, DeviceMeter};
pub use drain::{Drainer, Redirect};
pub use handover::{
    HandoverError, OWNERS_TABLE, ReleaseFuture, SESSION_TABLES, SessionPlacement, SessionRelease,
};
pub use ingest::{IngestLog, Ingested, Publisher};
pub use message::{Delivery, Message};
pub use metrics::BrokerMetrics;
pub use router::{Blocked, LoadReport, Offered, Router};
pub use shared::SharedGroups;
pub use takeover::AttachObserver;
pub use tap::{MAX_TAPS, ServiceTap, TooManyTaps};
pub use transport::ListenerKind;

/// How long shutdown waits for connections to say goodbye before saving state anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running broker. Dropping it does not stop it; call [`Broker::shutdown`].
pub struct Broker {
    router: Arc<Router>,
    persister: Arc<persist::Persister>,
    authenticator: Arc<dyn Authenticator>,
    shutdown: watch::Sender<bool>,
    /// Every listener and connection task holds a clone; shutdown waits until all are gone.
    alive: mpsc::Sender<()>,
    all_done: mpsc::Receiver<()>,
}

impl Broker {
    /// Starts the broker's state: opens the persisted retained messages and sessions in `store`
    /// and starts the background writer. Listeners are added with [`Broker::listen`].
    pub fn start(
        config: BrokerConfig,
        store: Arc<dyn KvStore>,
        authenticator: Arc<dyn Authenticator>,
    ) -> Result<(Broker, LoadReport), fleetcore_core::StoreError> {
        Broker::start_with(config, store, authenticator, SessionPlacement::Local)
    }

    /// [`Broker::start`] with persistent sessions placed as `placement` says: with
    /// [`SessionPlacement::Shared`], `store` must hold [`SESSION_TABLES`] shared by the nodes,
    /// and only the sessions this node owns are loaded.
    pub fn start_with(
        config: BrokerConfig,
        store: Arc<dyn KvStore>,
        authenticator: Arc<dyn Authenticator>,
        placement: SessionPlacement,
    ) -> Result<(Broker, LoadReport), fleetcore_core::StoreError> {
        let queues = queue_store::QueueStore::new(Arc::clone(&store));
        tokio::spawn(Arc::clone(&queues).run());
        let persister = persist::Persister::new(store, config.session_commit_delay);
        tokio::spawn(Arc::clone(&persister).run());
        let router = Router::new(
            config,
            Arc::clone(&persister),
            queues,
            BrokerMetrics::register(),
        );
        router.set_placement(placement);
        let report = router.load()?;
        let (shutdown, _) = watch::channel(false);
        let (alive, all_done) = mpsc::channel(1);
        Ok((
            Broker {
                router,
                persister,
                authenticator,
                shutdown,
                alive,
                all_done,
            },
            report,
        ))
    }

    /// The router, for in-process clients.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// A handle that drains this broker (see [`Drainer::drain`]): it stops accepting
    /// connections and sends connected clients to other nodes; [`Broker::shutdown`] still
    /// saves the state afterwards.
    pub fn drainer(&self) -> Drainer {
        Drainer {
            router: Arc::clone(&self.router),
            stop_accepting: self.shutdown.clone(),
        }
    }

    /// Binds `addr` and serves `kind` connections on it until shutdown. Returns the bound
    /// address (useful with port 0).
    pub async fn listen(&self, addr: SocketAddr, kind: ListenerKind) -> io::Result<SocketAddr> {
        let listener = transport::bind(addr).await?;
        let local = listener.local_addr()?;
        let router = Arc::clone(&self.router);
        let authenticator = Arc::clone(&self.authenticator);
        let mut shutdown = self.shutdown.subscribe();
        let alive = self.alive.clone();
        tokio::spawn(async move {
            let config = router.config().clone();
            let mut rate = transport::RateLimit::new(config.max_connections_per_second);
            loop {
                let accepted = tokio::select! {
                    _ = shutdown.changed() => break,
                    accepted = listener.accept() => accepted,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, listener = %local, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if !rate.admit(Instant::now()) {
                    router.metrics().connections_refused.increment(1);
                    tracing::debug!(%peer, "connection rate limit reached");
                    drop(tcp);
                    continue;
                }
                let router = Arc::clone(&router);
                let authenticator = Arc::clone(&authenticator);
                let kind = kind.clone();
                let shutdown = shutdown.clone();
                let alive = alive.clone();
                tokio::spawn(async move {
                    let max_message = router.config().max_packet_size + 8;
                    // Boxed: the TLS and WebSocket handshake state is large and short-lived;
                    // inline, it would stay in every connection's task for its whole life.
                    let handshake = tokio::time::timeout(
                        router.config().connect_timeout,
                        Box::pin(transport::handshake(&kind, tcp, peer, max_message)),
                    )
                    .await;
                    match handshake {
                        // The connection keeps `alive` until it ends; a failed handshake drops
                        // it here.
                        Ok(Ok((stream, info))) => {
                            connection::serve(router, authenticator, stream, info, shutdown, alive)
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "transport handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "transport handshake timed out"),
                    }
                });
            }
            drop(alive);
        });
        Ok(local)
    }

    /// Stops accepting, disconnects every client (MQTT 5 clients get reason 0x8B), then saves
    /// persistent sessions and retained messages.
    pub async fn shutdown(self) -> Result<(), fleetcore_core::StoreError> {
        let Broker {
            router,
            persister,
            shutdown,
            alive,
            mut all_done,
            ..
        } = self;
        let _ = shutdown.send(true);
        router.begin_shutdown();
        drop(alive);
        if tokio::time::timeout(SHUTDOWN_GRACE, all_done.recv())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the shutdown grace period");
        }
        router.save_all().await?;
        persister.flush().await
    }
}
