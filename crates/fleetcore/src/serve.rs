//! `fleetcore serve`: prepares the data folder, starts the broker and the HTTP API, and shuts
//! everything down gracefully on SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fleetcore_api::iot::IotState;
use fleetcore_api::iotdata::{self, IotDataState};
use fleetcore_api::kinesis::KinesisState;
use fleetcore_api::kinesis::token::TokenCodec;
use fleetcore_api::{ApiState, ControlPlane};
use fleetcore_archive::{Archive, ArchiveSettings};
use fleetcore_core::AccountContext;
use fleetcore_identity::policy::{Policies, ResourceArns};
use fleetcore_identity::{
    AdminCredentials, AttachmentCheck, ClientVerifier, IdentityService, Pki,
    credentials::credentials_path,
};
use fleetcore_mqtt::broker::{Broker, ListenerKind};
use fleetcore_provisioning::claim::ClaimFlow;
use fleetcore_provisioning::jit::JustInTime;
use fleetcore_provisioning::{Provisioning, ProvisioningConfig};
use fleetcore_rules::actions::{HttpsClient, HttpsConfig};
use fleetcore_rules::destinations::TopicRuleDestinations;
use fleetcore_rules::registry::RuleRegistry;
use fleetcore_shadow::{Limits, ShadowConfig, ShadowService};
use fleetcore_stream::Stream;
use metrics_exporter_prometheus::PrometheusBuilder;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::danger::ClientCertVerifier;
use tokio::sync::oneshot;

use crate::auth::IdentityAuthenticator;
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

/// [`init_logging`] for `serve`, plus the layer that copies the platform's failure events
/// (rules, authorization) into CloudWatch Logs' `AWSIotLogsV2` (it sees INFO and above whatever
/// `filter` says, so a quieter stderr does not silence them), and with `traces`, the layer that
/// turns the spans under `fleetcore_core::trace::TARGET` into OTLP spans.
pub fn init_serve_logging(filter: &str, account_id: &str, traces: bool) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let platform = fleetcore_observe::logs::platform::PlatformLogLayer::new(account_id)
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let traces = traces.then(|| {
        fleetcore_observe::trace::TraceLayer.with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target(fleetcore_core::trace::TARGET, tracing::Level::TRACE),
        )
    });
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(platform)
        .with(traces)
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
    let signals = ShutdownSignals::install()?;
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
    let (credentials, source) =
        AdminCredentials::load_or_create(data_dir, settings.credentials.clone())
            .context("preparing the admin credentials")?;
    tracing::info!(file = %credentials_path(data_dir).display(), ?source, "admin credentials ready (profile fleetcore)");

    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    // Kept across restarts: it names this node's per-node state and its consumer-group leases.
    let node_id = crate::cluster::node_id(settings.cluster.node_id.as_deref(), data_dir)?;
    let state = crate::state::open(&settings.state, data_dir, &node_id).await?;
    // Identity, policies and topic rules are shared by every node of a cluster; the rest of the
    // state is this node's own (the same store when embedded).
    let (shared, store, state_changes) = (state.shared, state.node, state.changes);
    // A cluster on PostgreSQL shares the persistent sessions' tables (a session resumes on any
    // node: the other nodes are asked over NATS to release it) and the shadows (written by
    // compare-and-set).
    let (broker_store, placement, shared_shadows) = match (state.clustered, &settings.cluster.nats)
    {
        (Some(clustered), Some(_)) => (
            clustered,
            fleetcore_mqtt::broker::SessionPlacement::Shared {
                node_id: node_id.clone(),
            },
            true,
        ),
        _ => (
            Arc::clone(&store),
            fleetcore_mqtt::broker::SessionPlacement::Local,
            false,
        ),
    };

    tracing::info!(backend = ?settings.state, node = %node_id, "state store ready");
    let streams = crate::streams::open(&settings.stream, data_dir).await?;
    tracing::info!(backend = ?settings.stream, "stream store ready");
    let pki = Arc::new(pki);
    let account = AccountContext::new(&settings.region, &settings.account_id);
    let identity = Arc::new(IdentityService::new(
        Arc::clone(&shared),
        Arc::clone(&pki),
        account,
    ));
    let policies = Arc::new(Policies::new(Arc::clone(&shared)));
    let rules =
        Arc::new(RuleRegistry::open(Arc::clone(&shared)).context("loading the topic rules")?);
    // The HTTPS client of rule actions and destination confirmations: one pool per server,
    // signing the requests of http actions with `auth.sigv4` with the admin credentials.
    let https = HttpsClient::new(&HttpsConfig {
        ca_file: settings.rules_https_ca_file.clone(),
        signing_credentials: Some(Arc::new(fleetcore_api::Credentials {
            access_key_id: credentials.access_key_id.clone(),
            secret_access_key: credentials.secret_access_key.clone(),
        })),
        ..HttpsConfig::default()
    })?;
    let topic_rule_destinations = Arc::new(
        TopicRuleDestinations::open(Arc::clone(&shared), https.clone())
            .context("loading the topic rule destinations")?,
    );
    identity.set_attachment_check(Arc::clone(&policies) as Arc<dyn AttachmentCheck>);
    if let Some(name) = &settings.anonymous_policy
        && policies.get(name).is_err()
    {
        tracing::warn!(policy = %name, "the anonymous policy does not exist (yet): anonymous clients are refused until it is created");
    }
    // Functions (Lambda): their SDK calls reach this server's HTTP API with the admin
    // credentials.
    let functions = crate::functions::start(
        &settings,
        &credentials,
        (&shared, state_changes.is_some()),
        &node_id,
        &streams,
    )
    .await?;
    // The archive (Firehose) delivers from the streams, through Lambda processors if any.
    let archive = Archive::start(
        Arc::clone(&shared),
        Arc::clone(&streams),
        ArchiveSettings {
            lake: settings.lake.clone(),
            region: settings.region.clone(),
            account_id: settings.account_id.clone(),
            backlog_limit_bytes: settings.lake_backlog_limit_bytes,
            shutdown_grace: Duration::from_secs(20),
            consumer_owner: node_id.clone(),
        },
        Some(Arc::clone(&functions.functions) as Arc<dyn fleetcore_core::FunctionInvoker>),
    )
    .await
    .context("starting the delivery streams")?;
    tracing::info!(lake = ?settings.lake, "delivery streams started");
    let verifier = ClientVerifier::new(&trusted_roots(&pki, &identity)?)
        .context("building the client certificate verifier")?;
    let authenticator = Arc::new(IdentityAuthenticator {
        identity: Arc::clone(&identity),
        policies: Arc::clone(&policies),
        arns: ResourceArns::new(&settings.region, &settings.account_id),
        allow_anonymous: settings.allow_anonymous,
        anonymous_policy: settings.anonymous_policy.clone(),
        just_in_time: std::sync::OnceLock::new(),
    });
    let (broker, loaded) = Broker::start_with(
        settings.broker.clone(),
        Arc::clone(&broker_store),
        Arc::clone(&authenticator) as Arc<dyn fleetcore_core::auth::Authenticator>,
        placement,
    )
    .context("restoring broker state")?;
    let shadows = ShadowService::start(
        ShadowConfig {
            limits: Limits {
                max_state_bytes: settings.shadow_max_state_bytes,
                ..Limits::default()
            },
            shared: shared_shadows,
            ..ShadowConfig::default()
        },
        broker_store,
        Arc::clone(broker.router()),
    )
    .context("starting the shadow service")?;
    // The HTTP listener is bound now: SNS messages link to it (SubscribeURL, SigningCertURL).
    let http = fleetcore_api::bind(settings.http)
        .await
        .with_context(|| format!("binding the HTTP listener on {}", settings.http))?;
    let http_addr = http.local_addr()?;
    let notify = crate::notify::start(
        &settings,
        &shared,
        &store,
        broker.router(),
        Arc::clone(&functions.functions) as Arc<dyn fleetcore_core::FunctionInvoker>,
        http_addr,
    )?;
    // IoT Analytics: pipelines resume from their checkpoints; contents download from here.
    #[cfg(feature = "analytics")]
    let analytics = crate::analytics::start(
        &settings,
        &store,
        &identity,
        &shadows,
        Arc::clone(&functions.functions) as Arc<dyn fleetcore_core::FunctionInvoker>,
        &streams,
        (http_addr, &node_id),
    )?;
    #[cfg(feature = "analytics")]
    let channels = Some(Arc::clone(&analytics) as Arc<dyn fleetcore_core::ChannelSink>);
    #[cfg(not(feature = "analytics"))]
    let channels = None;
    // Fleet provisioning: the claim flow's topics are served through a broker tap, and
    // unregistered certificates from registered CAs get just-in-time provisioning, before any
    // listener accepts a client.
    let provisioning = Arc::new(Provisioning::new(
        ProvisioningConfig {
            token_ttl: settings.provisioning_token_ttl,
            ..ProvisioningConfig::default()
        },
        Arc::clone(&shared),
        Arc::clone(&identity),
        Arc::clone(&policies),
        Some(Arc::clone(&functions.functions) as Arc<dyn fleetcore_core::FunctionInvoker>),
    ));
    ClaimFlow::start(Arc::clone(&provisioning), Arc::clone(broker.router()))
        .context("starting the fleet provisioning service")?;
    let _ = authenticator.just_in_time.set(Arc::new(JustInTime::new(
        Arc::clone(&provisioning),
        Arc::clone(broker.router()),
    )));
    // Device Defender: its meter counts on every connection accepted from here on.
    let defender = crate::defender::start(
        &settings,
        &store,
        &identity,
        broker.router(),
        Arc::clone(&notify) as Arc<dyn fleetcore_core::TopicPublisher>,
    )?;
    let logging = crate::defender::logging(&store)?;
    let audits = crate::defender::audits(
        &settings,
        &store,
        &policies,
        &identity,
        &defender,
        &logging,
        Arc::clone(&notify) as Arc<dyn fleetcore_core::TopicPublisher>,
    );
    let mitigations = Arc::new(fleetcore_defender::mitigation::Mitigations::new(
        Arc::clone(&store),
        Arc::clone(&defender),
        Arc::clone(&identity) as Arc<dyn fleetcore_defender::mitigation::Mitigator>,
        Arc::clone(&policies),
        Arc::clone(&notify) as Arc<dyn fleetcore_core::TopicPublisher>,
        Arc::clone(&logging),
    ));
    // Observability: the metric store sampled from this process's registry, CloudWatch.
    let observe = crate::observe::start(
        &settings,
        broker.router(),
        Arc::clone(&notify) as Arc<dyn fleetcore_core::TopicPublisher>,
        &prometheus,
    )?;
    functions.functions.set_log_sink(
        Arc::clone(&observe.lambda_logs) as Arc<dyn fleetcore_core::InvocationLogSink>
    );
    // IoT Events: detectors resume in their stored state before any input arrives.
    let events = crate::events::start(
        &settings,
        &store,
        broker.router(),
        &archive,
        Arc::clone(&functions.functions) as Arc<dyn fleetcore_core::FunctionInvoker>,
        Arc::clone(&notify) as Arc<dyn fleetcore_core::TopicPublisher>,
        notify.recipients(),
    )?;
    // The rules engine: its ingest log is installed before any listener accepts a client.
    let rules_engine = crate::rules::RulesEngine::start(
        data_dir,
        settings.ingest_partitions,
        settings.rules_retry,
        Arc::clone(&rules),
        broker.router(),
        crate::rules::RuleTargets {
            streams: Arc::clone(&streams),
            archive: Arc::clone(&archive),
            shadows: shadows.clone(),
            topic_rule_destinations: Arc::clone(&topic_rule_destinations),
            functions: Arc::clone(&functions.functions) as Arc<dyn fleetcore_core::FunctionInvoker>,
            events: Arc::clone(&events) as Arc<dyn fleetcore_core::InputSink>,
            analytics: channels,
            notifications: Arc::clone(&notify) as Arc<dyn fleetcore_core::TopicPublisher>,
            cloudwatch: Arc::clone(&observe.observe) as Arc<dyn fleetcore_core::CloudWatchSink>,
        },
    )
    .await
    .context("starting the rules engine")?;
    tracing::info!("rules engine started");
    let iotdata_state = IotDataState {
        shadows: shadows.clone(),
        broker: Arc::clone(broker.router()),
        arns: ResourceArns::new(&settings.region, &settings.account_id),
    };
    // Identity changes take effect on live connections at once: each connection re-asks its
    // grant (certificate still ACTIVE? policies still allow?), and the TLS listeners trust
    // exactly the ACTIVE registered CAs plus the built-in one.
    {
        let router = Arc::clone(broker.router());
        let (identity_for_roots, pki, verifier) = (
            Arc::clone(&identity),
            Arc::clone(&pki),
            Arc::clone(&verifier),
        );
        identity.on_change(Arc::new(move || {
            match trusted_roots(&pki, &identity_for_roots) {
                Ok(roots) => {
                    if let Err(e) = verifier.set_roots(&roots) {
                        tracing::error!(error = %e, "could not update the trusted CAs");
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not read the registered CAs"),
            }
            router.revalidate_all();
        }));
        let router = Arc::clone(broker.router());
        policies.on_change(Arc::new(move || router.revalidate_all()));
    }
    // With shared state, the other nodes' changes take effect here as if made here.
    if let Some(feed) = state_changes {
        crate::state::follow(
            feed,
            crate::state::Followers {
                identity: Arc::clone(&identity),
                policies: Arc::clone(&policies),
                rules: Arc::clone(&rules),
                destinations: Arc::clone(&topic_rule_destinations),
                provisioning: Arc::clone(&provisioning),
                functions: Arc::clone(&functions.functions),
                mappings: Arc::clone(&functions.mappings),
                notify: Arc::clone(&notify),
                archive: Arc::clone(&archive),
            },
        );
    }
    // In a cluster, messages published here reach the other nodes' subscribers and theirs ours.
    let cluster = match &settings.cluster.nats {
        Some(nats) => Some(Arc::new(
            fleetcore_cluster::Cluster::join(
                {
                    let mut config = fleetcore_cluster::ClusterConfig::new(nats.clone(), &node_id);
                    if let Some(count) = settings.cluster.forward_max_messages {
                        config.forward_max_messages = count;
                    }
                    config
                },
                Arc::clone(broker.router()),
            )
            .await
            .context("joining the cluster")?,
        )),
        None => None,
    };
    tracing::info!(
        retained = loaded.retained,
        sessions = loaded.sessions,
        queued = loaded.queued,
        skipped = loaded.skipped,
        "broker state restored"
    );

    let tls =
        || pki.server_config_with_verifier(Arc::clone(&verifier) as Arc<dyn ClientCertVerifier>);
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
        let transport = kind.transport();
        let bound = broker
            .listen(addr, kind)
            .await
            .with_context(|| format!("binding the {name} listener on {addr}"))?;
        tracing::info!(listener = name, address = %bound, "listening");
        if let Some(cluster) = &cluster {
            cluster.advertise(
                transport,
                crate::cluster::advertised_address(
                    settings.cluster.advertise_host.as_deref(),
                    bound,
                    settings
                        .server_names
                        .first()
                        .map_or("localhost", String::as_str),
                ),
            );
        }
    }

    let (stop_https, https_stopped) = oneshot::channel::<()>();
    let https_task = match settings.https {
        Some(addr) => {
            let authenticator = Arc::clone(&authenticator);
            let (listener, bound) = iotdata::device::bind(
                addr,
                tls()?,
                Arc::new(move |der: &[u8]| authenticator.device_caller(der)),
            )
            .await
            .with_context(|| format!("binding the device HTTPS listener on {addr}"))?;
            tracing::info!(listener = "https", address = %bound, "listening");
            Some(tokio::spawn(iotdata::device::serve(
                listener,
                iotdata::routes(iotdata_state.clone()),
                async move {
                    let _ = https_stopped.await;
                },
            )))
        }
        None => None,
    };

    let api_state = ApiState::new(prometheus.clone()).with_ca_pem(pki.ca_pem());
    // The web console (/console): signed in with the admin credentials, one page per section.
    let render = prometheus.clone();
    let console = fleetcore_observe::console::Console::new(
        Arc::clone(&observe.observe),
        Arc::new(move || render.render()),
        vec![
            Arc::new(crate::console::Things(Arc::clone(&identity))),
            Arc::new(crate::console::FunctionList(Arc::clone(
                &functions.functions,
            ))),
            Arc::new(crate::console::StreamList(Arc::clone(&streams))),
            Arc::new(crate::console::ConsumerLag {
                streams: Arc::clone(&streams),
                mappings: Arc::clone(&functions.mappings),
                archive: Arc::clone(&archive),
            }),
            Arc::new(crate::console::DeliveryStreams(Arc::clone(&archive))),
            Arc::new(crate::console::DetectorModels(Arc::clone(&events))),
            Arc::new(crate::console::Violations(Arc::clone(&defender))),
        ],
        &credentials.access_key_id,
        &credentials.secret_access_key,
    );
    let control_plane = control_plane(
        &settings,
        credentials,
        &identity,
        &policies,
        &streams,
        RulesApi {
            registry: &rules,
            destinations: &topic_rule_destinations,
            base_url: format!("http://{http_addr}"),
        },
    )
    .service_with_body_limit(
        "firehose",
        fleetcore_api::firehose::routes(Arc::clone(&archive)),
        fleetcore_api::firehose::BODY_LIMIT,
    )
    .service_routes("iot", fleetcore_provisioning::api::routes(provisioning))
    .service_routes(
        "iot",
        fleetcore_defender::mitigation::routes(Arc::clone(&mitigations)),
    )
    .service_routes(
        "iot",
        fleetcore_defender::mitigation::audit_tasks::routes(mitigations, Arc::clone(&audits)),
    )
    .service_routes("iot", fleetcore_defender::audit::api::routes(audits))
    .service_routes("iot", fleetcore_defender::api::routes(defender))
    .service_routes("iot", fleetcore_defender::logging::routes(logging))
    .service("iotdata", iotdata::routes(iotdata_state))
    .service(
        "monitoring",
        fleetcore_observe::cloudwatch::routes(Arc::clone(&observe.observe)),
    )
    .service(
        "logs",
        fleetcore_observe::logs::routes(Arc::clone(&observe.observe.logs)),
    )
    .service_with_body_limit(
        "lambda",
        fleetcore_functions::api::routes(functions.clone()),
        fleetcore_functions::api::BODY_LIMIT,
    )
    .service(
        "iotevents",
        fleetcore_events::api::control_routes(Arc::clone(&events)),
    )
    .service("ioteventsdata", fleetcore_events::api::data_routes(events))
    .service("sns", fleetcore_notify::api::routes(Arc::clone(&notify)))
    .public(fleetcore_notify::public::routes(Arc::clone(&notify)))
    .public(fleetcore_observe::console::routes(console))
    .service(
        "fleetcore",
        crate::cluster::admin_routes(cluster.as_ref().map(|c| (Arc::clone(c), broker.drainer()))),
    )
    .public(crate::cluster::health_routes(
        node_id.clone(),
        match settings.state {
            crate::state::StateBackend::Embedded => "embedded",
            crate::state::StateBackend::Postgres { .. } => "postgres",
        },
        cluster.clone(),
    ));
    #[cfg(feature = "analytics")]
    let control_plane = control_plane
        .service(
            "iotanalytics",
            fleetcore_analytics::api::routes(Arc::clone(&analytics)),
        )
        .public(fleetcore_analytics::api::public_routes(analytics));
    let (stop_http, http_stopped) = oneshot::channel::<()>();
    let http_task = tokio::spawn(fleetcore_api::serve(
        http,
        control_plane.into_router(api_state.clone()),
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
    tracing::info!(address = %http_addr, region = %settings.region, account_id = %settings.account_id, "HTTP API (SigV4), /health and /metrics ready");

    signals.wait().await;
    tracing::info!("shutting down");
    // In a cluster, the clients are sent to the other nodes first (unless already drained).
    if let Some(cluster) = &cluster {
        match cluster.drain(&broker.drainer()) {
            Ok(_) => {}
            Err(e) => tracing::info!(reason = %e, "not draining before the shutdown"),
        }
    }
    api_state.set_ready(false);
    broker
        .shutdown()
        .await
        .context("saving broker state at shutdown")?;
    shadows.shutdown().await;
    rules_engine.shutdown().await;
    functions.mappings.shutdown().await;
    let _ = stop_https.send(());
    if let Some(task) = https_task
        && tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
    {
        tracing::warn!("device HTTPS server did not stop in time");
    }
    let _ = stop_http.send(());
    match tokio::time::timeout(Duration::from_secs(5), http_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server stopped with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
        Err(_) => tracing::warn!("HTTP server did not stop in time"),
    }
    // No request comes in any more: flush every delivery stream's buffer to the lake.
    archive.shutdown().await;
    upkeep.abort();
    observe.task.abort();
    tracing::info!("stopped");
    Ok(())
}

/// The AWS-compatible services on the HTTP listener, verified against the admin credentials.
/// The CAs client certificates may chain to: the built-in CA and every ACTIVE registered CA.
fn trusted_roots(
    pki: &Pki,
    identity: &IdentityService,
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let mut roots = vec![pki.ca_cert_der().clone()];
    for ca in identity
        .active_ca_certificates()
        .context("reading the registered CA certificates")?
    {
        match CertificateDer::from_pem_slice(ca.pem.as_bytes()) {
            Ok(der) if der != roots[0] => roots.push(der),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(ca = %ca.id, error = %e, "skipping an unreadable registered CA")
            }
        }
    }
    Ok(roots)
}

/// What the `iot` rule operations serve from, and where the API is reached (for enableUrls).
struct RulesApi<'a> {
    registry: &'a Arc<RuleRegistry>,
    destinations: &'a Arc<TopicRuleDestinations>,
    base_url: String,
}

fn control_plane(
    settings: &Settings,
    credentials: AdminCredentials,
    identity: &Arc<IdentityService>,
    policies: &Arc<Policies>,
    streams: &Arc<dyn Stream>,
    rules: RulesApi<'_>,
) -> ControlPlane {
    let account = AccountContext::new(&settings.region, &settings.account_id);
    // DescribeEndpoint answers the first name the server certificate is issued for.
    let endpoint_host = settings
        .server_names
        .first()
        .map_or("localhost", String::as_str);
    let iot = IotState::new(endpoint_host, account)
        .with_identity(Arc::clone(identity))
        .with_policies(Arc::clone(policies))
        .with_rules(Arc::clone(rules.registry))
        .with_destinations(Arc::clone(rules.destinations), &rules.base_url);
    // Iterators are sealed with a key derived from the admin secret, so they survive a restart.
    let tokens = TokenCodec::from_secret(&credentials.secret_access_key)
        .with_iterator_ttl(crate::streams::iterator_ttl());
    let kinesis = KinesisState::new(Arc::clone(streams), tokens);
    let credentials = fleetcore_api::Credentials {
        access_key_id: credentials.access_key_id,
        secret_access_key: credentials.secret_access_key,
    };
    ControlPlane::new(credentials, &settings.region, &settings.account_id)
        .service("iot", fleetcore_api::iot::routes(iot))
        .service_with_body_limit(
            "kinesis",
            fleetcore_api::kinesis::routes(kinesis),
            fleetcore_api::kinesis::BODY_LIMIT,
        )
}

/// SIGTERM and SIGINT, caught from the start of `run`: a signal that arrives while the server
/// is still starting (or in the instant after it reports ready) ends in the same graceful
/// shutdown instead of the default action killing the process.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<ShutdownSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Waits for the first of them.
    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
