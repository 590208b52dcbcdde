//! `fleetcore serve`: prepares the data folder, starts the broker and the HTTP API, and shuts
//! everything down gracefully on SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fleetcore_api::ApiState;
use fleetcore_core::RedbStore;
use fleetcore_identity::{AdminCredentials, ClientAuth, Pki, credentials::credentials_path};
use fleetcore_mqtt::broker::{Broker, ListenerKind};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::sync::oneshot;

use crate::auth::CertificateAuthenticator;
use crate::config::Settings;

/// Sets up logging to stderr with `filter` (RUST_LOG wins when set).
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn create_data_dir(settings: &Settings) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(&settings.data_dir)
        .with_context(|| format!("creating data folder {}", settings.data_dir.display()))
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    create_data_dir(&settings)?;
    let data_dir = &settings.data_dir;
    let pki = Pki::load_or_create(data_dir, &settings.server_names)
        .context("preparing the CA and server certificate")?;
    tracing::info!(
        ca = %pki.ca_cert_path().display(),
        ca_state = ?pki.ca_provenance(),
        server_certificate = ?pki.server_cert_provenance(),
        names = ?settings.server_names,
        "certificates ready"
    );
    let (_credentials, source) =
        AdminCredentials::load_or_create(data_dir, settings.credentials.clone())
            .context("preparing the admin credentials")?;
    tracing::info!(file = %credentials_path(data_dir).display(), ?source, "admin credentials ready (profile fleetcore)");

    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let store_path = data_dir.join("store.redb");
    let store = RedbStore::open(&store_path).with_context(|| {
        format!(
            "opening the store {} (is another fleetcore running on this data folder?)",
            store_path.display()
        )
    })?;
    let authenticator = Arc::new(CertificateAuthenticator {
        allow_anonymous: settings.allow_anonymous,
    });
    let (broker, loaded) = Broker::start(settings.broker.clone(), Arc::new(store), authenticator)
        .context("restoring broker state")?;
    tracing::info!(
        retained = loaded.retained,
        sessions = loaded.sessions,
        skipped = loaded.skipped,
        "broker state restored"
    );

    let tls = || pki.server_config(ClientAuth::Required);
    let listeners = [
        ("mqtt", settings.mqtt, None),
        ("mqtts", settings.mqtts, Some(true)),
        ("ws", settings.ws, Some(false)),
        ("wss", settings.wss, Some(true)),
    ];
    for (name, addr, _) in listeners {
        let Some(addr) = addr else { continue };
        let kind = match name {
            "mqtt" => ListenerKind::Tcp,
            "mqtts" => ListenerKind::Tls(tls()?),
            "ws" => ListenerKind::WebSocket,
            _ => ListenerKind::WebSocketTls(tls()?),
        };
        let bound = broker
            .listen(addr, kind)
            .await
            .with_context(|| format!("binding the {name} listener on {addr}"))?;
        tracing::info!(listener = name, address = %bound, "listening");
    }

    let http = fleetcore_api::bind(settings.http)
        .await
        .with_context(|| format!("binding the HTTP listener on {}", settings.http))?;
    let http_addr = http.local_addr()?;
    let api_state = ApiState::new(prometheus.clone());
    let (stop_http, http_stopped) = oneshot::channel::<()>();
    let http_task = tokio::spawn(fleetcore_api::serve(
        http,
        fleetcore_api::router(api_state.clone()),
        async move {
            let _ = http_stopped.await;
        },
    ));
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            prometheus.run_upkeep();
        }
    });
    api_state.set_ready(true);
    tracing::info!(address = %http_addr, "HTTP API, /health and /metrics ready");

    wait_for_signal().await?;
    tracing::info!("shutting down");
    api_state.set_ready(false);
    broker
        .shutdown()
        .await
        .context("saving broker state at shutdown")?;
    let _ = stop_http.send(());
    match tokio::time::timeout(Duration::from_secs(5), http_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server stopped with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
        Err(_) => tracing::warn!("HTTP server did not stop in time"),
    }
    upkeep.abort();
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
