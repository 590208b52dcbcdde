//! `fleetcore serve` settings: command-line flags, `FLEETCORE_*` environment variables and the
//! TOML file share one definition, so a key cannot exist in one place and not the others.
//! Precedence: flag, then environment (both handled by clap), then file, then default.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use fleetcore_archive::lake::LakeConfig;
use fleetcore_identity::AdminCredentials;
use fleetcore_mqtt::broker::BrokerConfig;
use fleetcore_notify::{RecipientEntry, SmtpConfig, SmtpSecurity};
use serde::Deserialize;

use crate::cluster::{ClusterArgs, ClusterSettings};
use crate::state::{StateArgs, StateBackend};
use crate::streams::{StreamArgs, StreamBackend};

/// Options of `fleetcore serve`. Every field is optional here so that the file, the
/// environment and the flags can be layered; [`ServeArgs::resolve`] applies the defaults.
#[derive(clap::Args, Deserialize, Debug, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML configuration file. Its keys are the option names with `_` (e.g. `max_packet_size = 65536`).
    #[arg(long, env = "FLEETCORE_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,

    /// Data folder: store, CA, server certificate, credentials. [default: ./fleetcore-data]
    #[arg(long, env = "FLEETCORE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// HTTP address: AWS-compatible APIs, /health, /metrics. [default: 127.0.0.1:8080]
    #[arg(long, env = "FLEETCORE_HTTP", value_name = "ADDR")]
    http: Option<String>,

    /// MQTT over TLS; clients must present a certificate signed by the data folder's CA.
    /// `off` disables it. [default: 0.0.0.0:8883]
    #[arg(long, env = "FLEETCORE_MQTTS", value_name = "ADDR")]
    mqtts: Option<String>,

    /// MQTT over plain TCP (off unless given). Without --allow-anonymous every client is refused
    /// here, since plain TCP carries no certificate.
    #[arg(long, env = "FLEETCORE_MQTT", value_name = "ADDR")]
    mqtt: Option<String>,

    /// MQTT over WebSocket, plain (off unless given). Same anonymous rule as --mqtt.
    #[arg(long, env = "FLEETCORE_WS", value_name = "ADDR")]
    ws: Option<String>,

    /// MQTT over WebSocket over TLS, client certificate required (off unless given).
    #[arg(long, env = "FLEETCORE_WSS", value_name = "ADDR")]
    wss: Option<String>,

    /// Device HTTPS (the iot-data API over mutual TLS: shadows and publish, authorized by the
    /// client certificate's IoT policies). Off unless given.
    #[arg(long, env = "FLEETCORE_HTTPS", value_name = "ADDR")]
    https: Option<String>,

    /// Largest shadow state (desired + reported, as JSON), in bytes. [default: 8192]
    #[arg(long, env = "FLEETCORE_SHADOW_MAX_STATE_BYTES", value_name = "BYTES")]
    shadow_max_state_bytes: Option<usize>,

    /// How long a fleet-provisioning certificate ownership token stays usable, in seconds (as
    /// on AWS). [default: 3600]
    #[arg(
        long,
        env = "FLEETCORE_PROVISIONING_TOKEN_TTL_SECS",
        value_name = "SECONDS"
    )]
    provisioning_token_ttl_secs: Option<u64>,

    /// Device Defender's period, in milliseconds: how often each device's cloud-side metrics
    /// become a datapoint and security profiles are evaluated (AWS: 5 minutes). [default:
    /// 300000]
    #[arg(
        long,
        env = "FLEETCORE_DEFENDER_PERIOD_MS",
        value_name = "MILLISECONDS"
    )]
    defender_period_ms: Option<u64>,

    /// Test knob, not for production: the length of a day for Device Defender's scheduled
    /// audits, in seconds, so a test can watch a DAILY audit run. [default: 86400]
    #[arg(
        long,
        env = "FLEETCORE_DEFENDER_AUDIT_DAY_SECS",
        value_name = "SECONDS"
    )]
    defender_audit_day_secs: Option<u64>,

    /// The Python interpreter that runs `python3.x` functions (one that can `import boto3`, as
    /// on Lambda). [default: python3]
    #[arg(long, env = "FLEETCORE_FUNCTIONS_PYTHON", value_name = "PROGRAM")]
    functions_python: Option<PathBuf>,

    /// The Node.js binary that runs `nodejs*` functions. [default: node]
    #[arg(long, env = "FLEETCORE_FUNCTIONS_NODE", value_name = "PROGRAM")]
    functions_node: Option<PathBuf>,

    /// Most `Event` invocations stored and not yet finished; more are refused with
    /// TooManyRequestsException. [default: 10000]
    #[arg(long, env = "FLEETCORE_FUNCTIONS_EVENT_QUEUE", value_name = "N")]
    functions_event_queue: Option<usize>,

    /// Accept clients without a certificate on the plain listeners (--mqtt, --ws). For labs and CI.
    #[arg(long, env = "FLEETCORE_ALLOW_ANONYMOUS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    allow_anonymous: Option<bool>,

    /// IoT policy that governs anonymous clients (with --allow-anonymous): CONNECT, PUBLISH,
    /// SUBSCRIBE and delivery as for a certificate with that policy attached. Without it,
    /// anonymous clients may do everything.
    #[arg(long, env = "FLEETCORE_ANONYMOUS_POLICY", value_name = "NAME")]
    anonymous_policy: Option<String>,

    /// Host names and IP addresses the server certificate is issued for, comma separated.
    /// [default: localhost,127.0.0.1]
    #[arg(
        long,
        env = "FLEETCORE_SERVER_NAMES",
        value_name = "NAMES",
        value_delimiter = ','
    )]
    server_names: Option<Vec<String>>,

    /// Partitions of the rules engine's ingest log: each has its own file and writer, so their
    /// group commits (fsyncs) run in parallel; a publisher's messages all go to one partition.
    /// [default: the number of cores]
    #[arg(long, env = "FLEETCORE_INGEST_PARTITIONS", value_name = "N")]
    ingest_partitions: Option<usize>,

    /// Largest MQTT packet accepted from a client, in bytes. [default: 1048576]
    #[arg(long, env = "FLEETCORE_MAX_PACKET_SIZE", value_name = "BYTES")]
    max_packet_size: Option<usize>,

    /// Longest topic name or filter, in bytes. [default: 256]
    #[arg(long, env = "FLEETCORE_MAX_TOPIC_LENGTH", value_name = "BYTES")]
    max_topic_length: Option<usize>,

    /// QoS 1/2 messages in flight per client and direction (advertised as Receive Maximum). [default: 128]
    #[arg(long, env = "FLEETCORE_MAX_INFLIGHT", value_name = "N")]
    max_inflight: Option<u16>,

    /// Messages queued per session beyond the inflight window, online or offline. [default: 10000]
    #[arg(long, env = "FLEETCORE_MAX_QUEUED_MESSAGES", value_name = "N")]
    max_queued_messages: Option<usize>,

    /// Bytes (payloads and topics) queued for an online subscriber before its publishers wait:
    /// small keeps latency low when a subscriber cannot keep up. [default: 16384]
    #[arg(long, env = "FLEETCORE_MAX_QUEUED_BYTES", value_name = "BYTES")]
    max_queued_bytes: Option<usize>,

    /// Bytes a connection encodes before writing them to its socket in one call. [default: 65536]
    #[arg(long, env = "FLEETCORE_WRITE_BUFFER_BYTES", value_name = "BYTES")]
    write_buffer_bytes: Option<usize>,

    /// New connections accepted per second per listener; 0 for no limit. [default: 0]
    #[arg(long, env = "FLEETCORE_MAX_CONNECTIONS_PER_SECOND", value_name = "N")]
    max_connections_per_second: Option<u32>,

    /// Seconds a new connection has to complete its TLS/WebSocket handshake and CONNECT. [default: 10]
    #[arg(long, env = "FLEETCORE_CONNECT_TIMEOUT", value_name = "SECS")]
    connect_timeout: Option<u64>,

    /// Seconds a publisher waits for room in a subscriber's full queue (backpressure) before
    /// the message is dropped for that subscriber; a subscriber whose full queue made no
    /// progress for this long is dropped for at once, whatever the QoS. [default: 2]
    #[arg(long, env = "FLEETCORE_SLOW_SUBSCRIBER_TIMEOUT", value_name = "SECS")]
    slow_subscriber_timeout: Option<u64>,

    /// Milliseconds a subscriber's full queue may make no progress while its socket takes
    /// nothing (the client does not read) before it counts as stuck: publishers stop waiting for it, its
    /// QoS 0 messages are dropped (counted as reason="stuck") and QoS 1/2 messages to a
    /// persistent session go to its durable queue; a clean session's QoS 1/2 messages are
    /// still waited for, up to --slow-subscriber-timeout. [default: 200]
    #[arg(long, env = "FLEETCORE_STUCK_SUBSCRIBER_TIMEOUT_MS", value_name = "MS")]
    stuck_subscriber_timeout_ms: Option<u64>,

    /// Milliseconds the writer of sessions and retained messages gathers changes before one
    /// commit; a persistent session's CONNACK, SUBACK and UNSUBACK wait for that commit.
    /// [default: 0, commit as soon as the writer is free]
    #[arg(long, env = "FLEETCORE_SESSION_COMMIT_DELAY_MS", value_name = "MS")]
    session_commit_delay_ms: Option<u64>,

    /// Topic aliases a client may use towards the server (MQTT 5). [default: 64]
    #[arg(long, env = "FLEETCORE_TOPIC_ALIAS_MAXIMUM", value_name = "N")]
    topic_alias_maximum: Option<u16>,

    /// Longest keep alive a client may have, in seconds; a client asking for more, or for none,
    /// gets this one (announced as Server Keep Alive to MQTT 5 clients). 0: no maximum.
    /// [default: 1200]
    #[arg(long, env = "FLEETCORE_MAX_KEEP_ALIVE", value_name = "SECS")]
    max_keep_alive: Option<u16>,

    /// Access key id of the admin credentials (written to <data-dir>/credentials).
    #[arg(long, env = "FLEETCORE_ACCESS_KEY_ID", value_name = "ID")]
    access_key_id: Option<String>,

    /// Secret access key of the admin credentials.
    #[arg(
        long,
        env = "FLEETCORE_SECRET_ACCESS_KEY",
        value_name = "SECRET",
        hide_env_values = true
    )]
    secret_access_key: Option<String>,

    /// Region of the control plane: requests must be signed for it, and ARNs carry it.
    /// [default: us-east-1]
    #[arg(long, env = "FLEETCORE_REGION", value_name = "REGION")]
    region: Option<String>,

    /// Account id carried by ARNs (12 digits). [default: 000000000000]
    #[arg(long, env = "FLEETCORE_ACCOUNT_ID", value_name = "ID")]
    account_id: Option<String>,

    /// Log filter, e.g. `info` or `fleetcore_mqtt=debug`. [default: info]
    #[arg(long, env = "FLEETCORE_LOG", value_name = "FILTER")]
    log: Option<String>,

    /// PEM file of CA certificates the rules' https actions (http, openSearch) trust besides the
    /// system's roots, e.g. a private CA of your endpoints.
    #[arg(long, env = "FLEETCORE_RULES_HTTPS_CA_FILE", value_name = "FILE")]
    rules_https_ca_file: Option<PathBuf>,

    /// Delivery attempts of a rule action for one message before it goes to the rule's
    /// errorAction. With the default backoff, 5 attempts ride out an outage of about 15 s and
    /// 8 attempts one of about 40 s. [default: 5]
    #[arg(long, env = "FLEETCORE_RULES_RETRY_ATTEMPTS", value_name = "N")]
    rules_retry_attempts: Option<u32>,

    /// Wait before a rule action's second attempt, in milliseconds; doubled after each failed
    /// attempt, up to 8 times this value. [default: 1000]
    #[arg(long, env = "FLEETCORE_RULES_RETRY_BACKOFF_MS", value_name = "MS")]
    rules_retry_backoff_ms: Option<u64>,

    /// Seconds between samples of the platform's metrics into the embedded store
    /// (`<data>/metrics/`), and the width of its buckets. [default: 60]
    #[arg(long, env = "FLEETCORE_METRICS_RESOLUTION", value_name = "SECONDS")]
    metrics_resolution: Option<u64>,

    /// Days the store keeps full-resolution buckets (hourly ones are kept 455 days). [default: 15]
    #[arg(long, env = "FLEETCORE_METRICS_RETENTION_DAYS", value_name = "DAYS")]
    metrics_retention_days: Option<u64>,

    /// Sample the platform's own metrics into the store (the CloudWatch API works either way).
    /// [default: true]
    #[arg(long, env = "FLEETCORE_METRICS_SAMPLE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    metrics_sample: Option<bool>,

    /// An OpenTelemetry OTLP/HTTP receiver the platform's metrics are exported to as JSON
    /// (`http://collector:4318`; `/v1/metrics` is appended). Off unless given.
    #[arg(long, env = "FLEETCORE_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,

    /// Seconds between OTLP metric exports. [default: 60]
    #[arg(long, env = "FLEETCORE_OTLP_INTERVAL", value_name = "SECONDS")]
    otlp_interval: Option<u64>,

    /// The share of MQTT messages (and rule action deliveries) traced when `otlp_endpoint` is
    /// set, 0 to 1 (API requests and function invocations are always traced). [default: 0.01]
    #[arg(long, env = "FLEETCORE_OTLP_TRACE_SAMPLING", value_name = "RATIO")]
    otlp_trace_sampling: Option<f64>,

    /// The stream store (`[stream]` table in the file: `backend`, `servers`).
    #[command(flatten)]
    stream: StreamArgs,

    /// Where the state is kept (`[state]` in the file: `backend`, `url`).
    #[command(flatten)]
    #[serde(default)]
    state: StateArgs,

    /// This node's place in a cluster (`[cluster]` in the file: `nats`, `node_id`,
    /// `forward_max_messages`).
    #[command(flatten)]
    #[serde(default)]
    cluster: ClusterArgs,

    /// The data lake Firehose delivery streams write to (`[lake]` in the file).
    #[command(flatten)]
    #[serde(default)]
    lake: LakeArgs,

    /// SNS: the links in messages and the SMTP server of email subscriptions (`[sns]`).
    #[command(flatten)]
    #[serde(default)]
    sns: SnsArgs,
}

/// `[sns]`: where subscribers reach this server's links, and the SMTP server that delivers
/// `email` and `email-json` subscriptions (without `smtp_host`, those protocols are refused).
#[derive(clap::Args, Deserialize, Debug, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SnsArgs {
    /// Base URL of SubscribeURL, UnsubscribeURL and SigningCertURL in SNS messages: the HTTP
    /// listener as subscribers reach it (`[sns] public_url`). [default: http://<http address>,
    /// with the first server name for an unspecified address]
    #[arg(
        id = "sns_public_url",
        long = "sns-public-url",
        env = "FLEETCORE_SNS_PUBLIC_URL",
        value_name = "URL"
    )]
    public_url: Option<String>,

    /// SMTP server host of email subscriptions (`[sns] smtp_host`).
    #[arg(
        id = "sns_smtp_host",
        long = "sns-smtp-host",
        env = "FLEETCORE_SNS_SMTP_HOST",
        value_name = "HOST"
    )]
    smtp_host: Option<String>,

    /// SMTP port (`[sns] smtp_port`). [default: 587 for starttls, 465 for tls, 25 for none]
    #[arg(
        id = "sns_smtp_port",
        long = "sns-smtp-port",
        env = "FLEETCORE_SNS_SMTP_PORT",
        value_name = "PORT"
    )]
    smtp_port: Option<u16>,

    /// SMTP connection security: `starttls`, `tls` or `none` (`[sns] smtp_security`).
    /// [default: starttls]
    #[arg(
        id = "sns_smtp_security",
        long = "sns-smtp-security",
        env = "FLEETCORE_SNS_SMTP_SECURITY",
        value_name = "MODE"
    )]
    smtp_security: Option<String>,

    /// SMTP user name (`[sns] smtp_username`).
    #[arg(
        id = "sns_smtp_username",
        long = "sns-smtp-username",
        env = "FLEETCORE_SNS_SMTP_USERNAME",
        value_name = "USER"
    )]
    smtp_username: Option<String>,

    /// SMTP password (`[sns] smtp_password`).
    #[arg(
        id = "sns_smtp_password",
        long = "sns-smtp-password",
        env = "FLEETCORE_SNS_SMTP_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    smtp_password: Option<String>,

    /// Sender of SNS mails, e.g. `fleetcore <alerts@example.com>` (`[sns] smtp_from`).
    #[arg(
        id = "sns_smtp_from",
        long = "sns-smtp-from",
        env = "FLEETCORE_SNS_SMTP_FROM",
        value_name = "ADDRESS"
    )]
    smtp_from: Option<String>,

    /// MQTT topic an SMS gateway takes alarm text messages from, as JSON `{"phoneNumber",
    /// "senderId", "message"}` (`[sns] sms_topic`); without it, alarm models with
    /// `smsConfigurations` are refused.
    #[arg(
        id = "sns_sms_topic",
        long = "sns-sms-topic",
        env = "FLEETCORE_SNS_SMS_TOPIC",
        value_name = "TOPIC"
    )]
    sms_topic: Option<String>,

    /// The people alarm email and SMS notifications name, by IAM Identity Center identity
    /// (`[[sns.recipients]]` with `identity_store_id`, `user_id`, `email`, `phone`; file only).
    #[arg(skip)]
    recipients: Option<Vec<RecipientEntry>>,
}

impl SnsArgs {
    /// The SMTP server, if one is configured.
    fn smtp(self) -> anyhow::Result<Option<SmtpConfig>> {
        let Some(host) = self.smtp_host.filter(|h| !h.is_empty()) else {
            return Ok(None);
        };
        let security = match self.smtp_security.as_deref().unwrap_or("starttls") {
            "starttls" => SmtpSecurity::Starttls,
            "tls" => SmtpSecurity::Tls,
            "none" => SmtpSecurity::None,
            other => bail!("sns smtp_security must be starttls, tls or none, not `{other}`"),
        };
        let Some(from) = self.smtp_from else {
            bail!("sns smtp_host needs smtp_from (the sender address)");
        };
        Ok(Some(SmtpConfig {
            host,
            port: self.smtp_port,
            security,
            username: self.smtp_username,
            password: self.smtp_password,
            from,
        }))
    }
}

/// `[lake]`: where delivery streams write objects. Without an endpoint, a local folder
/// (`<data dir>/lake/<bucket>/`); with one, that S3-compatible store.
#[derive(clap::Args, Deserialize, Debug, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LakeArgs {
    /// S3-compatible endpoint URL of the lake, e.g. http://127.0.0.1:9000 (`[lake] endpoint`).
    /// [default: the local folder <data dir>/lake]
    #[arg(
        id = "lake_endpoint",
        long = "lake-endpoint",
        env = "FLEETCORE_LAKE_ENDPOINT",
        value_name = "URL"
    )]
    endpoint: Option<String>,

    /// Signing region of the lake's endpoint (`[lake] region`). [default: us-east-1]
    #[arg(
        id = "lake_region",
        long = "lake-region",
        env = "FLEETCORE_LAKE_REGION",
        value_name = "REGION"
    )]
    region: Option<String>,

    /// Access key id for the lake's endpoint (`[lake] access_key_id`).
    #[arg(
        id = "lake_access_key_id",
        long = "lake-access-key-id",
        env = "FLEETCORE_LAKE_ACCESS_KEY_ID",
        value_name = "ID"
    )]
    access_key_id: Option<String>,

    /// Secret access key for the lake's endpoint (`[lake] secret_access_key`).
    #[arg(
        id = "lake_secret_access_key",
        long = "lake-secret-access-key",
        env = "FLEETCORE_LAKE_SECRET_ACCESS_KEY",
        value_name = "SECRET",
        hide_env_values = true
    )]
    secret_access_key: Option<String>,

    /// Path-style requests (endpoint/bucket/key, as MinIO and moto expect) instead of
    /// virtual-hosted ones (`[lake] path_style`). [default: true]
    #[arg(id = "lake_path_style", long = "lake-path-style", env = "FLEETCORE_LAKE_PATH_STYLE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    path_style: Option<bool>,

    /// Undelivered DirectPut MiB per delivery stream before PutRecord answers
    /// ServiceUnavailableException (`[lake] backlog_limit_mb`). [default: 256]
    #[arg(
        id = "lake_backlog_limit_mb",
        long = "lake-backlog-limit-mb",
        env = "FLEETCORE_LAKE_BACKLOG_LIMIT_MB",
        value_name = "MB"
    )]
    backlog_limit_mb: Option<usize>,
}

impl LakeArgs {
    /// Where the lake is: the S3-compatible endpoint given, else `<data_dir>/lake`.
    pub fn config(&self, data_dir: &std::path::Path) -> anyhow::Result<LakeConfig> {
        let Some(endpoint) = self.endpoint.clone().filter(|e| !e.is_empty()) else {
            return Ok(LakeConfig::Local {
                root: data_dir.join("lake"),
            });
        };
        if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            bail!("lake endpoint `{endpoint}` must be an http:// or https:// URL");
        }
        let (Some(access_key_id), Some(secret_access_key)) =
            (self.access_key_id.clone(), self.secret_access_key.clone())
        else {
            bail!("a lake endpoint needs lake access_key_id and secret_access_key");
        };
        Ok(LakeConfig::S3 {
            endpoint,
            region: self.region.clone().unwrap_or_else(|| "us-east-1".into()),
            access_key_id,
            secret_access_key,
            path_style: self.path_style.unwrap_or(true),
        })
    }
}

/// Resolved settings of `fleetcore serve`.
#[derive(Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub mqtts: Option<SocketAddr>,
    pub mqtt: Option<SocketAddr>,
    pub ws: Option<SocketAddr>,
    pub wss: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub shadow_max_state_bytes: usize,
    pub provisioning_token_ttl: std::time::Duration,
    pub defender_period: std::time::Duration,
    pub defender_audit_day: std::time::Duration,
    pub ingest_partitions: usize,
    pub functions_python: PathBuf,
    pub functions_node: PathBuf,
    pub functions_event_queue: usize,
    pub allow_anonymous: bool,
    pub anonymous_policy: Option<String>,
    pub server_names: Vec<String>,
    pub broker: BrokerConfig,
    pub credentials: Option<AdminCredentials>,
    pub region: String,
    pub account_id: String,
    pub log: String,
    pub stream: StreamBackend,
    pub state: StateBackend,
    pub cluster: ClusterSettings,
    pub lake: LakeConfig,
    pub lake_backlog_limit_bytes: usize,
    pub rules_https_ca_file: Option<PathBuf>,
    pub rules_retry: RulesRetry,
    pub sns_public_url: Option<String>,
    pub sns_sms_topic: Option<String>,
    pub sns_recipients: Vec<RecipientEntry>,
    pub smtp: Option<SmtpConfig>,
    pub metrics_resolution: u64,
    pub metrics_retention_days: u64,
    pub metrics_sample: bool,
    pub otlp_endpoint: Option<String>,
    pub otlp_interval: u64,
    pub otlp_trace_sampling: f64,
}

/// How rule actions retry a failed delivery before the errorAction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RulesRetry {
    /// Attempts per message, at least 1.
    pub attempts: u32,
    /// Wait before the second attempt; doubled after each failed one, up to 8 times this.
    pub initial_backoff: Duration,
}

impl RulesRetry {
    fn resolve(attempts: Option<u32>, backoff_ms: Option<u64>) -> anyhow::Result<RulesRetry> {
        let attempts = attempts.unwrap_or(5);
        anyhow::ensure!(
            (1..=100).contains(&attempts),
            "rules_retry_attempts: {attempts} is out of range (1 to 100)"
        );
        let backoff_ms = backoff_ms.unwrap_or(1000);
        anyhow::ensure!(
            (1..=600_000).contains(&backoff_ms),
            "rules_retry_backoff_ms: {backoff_ms} is out of range (1 to 600000)"
        );
        Ok(RulesRetry {
            attempts,
            initial_backoff: Duration::from_millis(backoff_ms),
        })
    }
}

/// Fills every `None` of `$over` from `$under`.
macro_rules! layer {
    ($over:ident, $under:ident, $($field:ident),+ $(,)?) => {
        $( if $over.$field.is_none() { $over.$field = $under.$field.take(); } )+
    };
}

fn address(
    key: &str,
    value: Option<String>,
    default: Option<&str>,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(text) = value.or_else(|| default.map(str::to_string)) else {
        return Ok(None);
    };
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let addr = text
        .to_socket_addrs()
        .with_context(|| format!("{key}: `{text}` is not an address (HOST:PORT, or `off`)"))?
        .next()
        .with_context(|| format!("{key}: `{text}` resolves to no address"))?;
    Ok(Some(addr))
}

impl ServeArgs {
    /// Layers the config file under these flags and applies defaults.
    pub fn resolve(mut self) -> anyhow::Result<Settings> {
        if let Some(path) = self.config.take() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let mut file: ServeArgs = toml::from_str(&text)
                .with_context(|| format!("in config file {}", path.display()))?;
            let under = &mut file;
            let over = &mut self;
            layer!(
                over,
                under,
                data_dir,
                http,
                mqtts,
                mqtt,
                ws,
                wss,
                https,
                shadow_max_state_bytes,
                provisioning_token_ttl_secs,
                defender_period_ms,
                defender_audit_day_secs,
                ingest_partitions,
                functions_python,
                functions_node,
                functions_event_queue,
                allow_anonymous,
                anonymous_policy,
                server_names,
                max_packet_size,
                max_topic_length,
                max_inflight,
                max_queued_messages,
                max_queued_bytes,
                write_buffer_bytes,
                max_connections_per_second,
                connect_timeout,
                slow_subscriber_timeout,
                stuck_subscriber_timeout_ms,
                session_commit_delay_ms,
                topic_alias_maximum,
                max_keep_alive,
                access_key_id,
                secret_access_key,
                region,
                account_id,
                log,
                rules_https_ca_file,
                rules_retry_attempts,
                rules_retry_backoff_ms,
                metrics_resolution,
                metrics_retention_days,
                metrics_sample,
                otlp_endpoint,
                otlp_interval,
                otlp_trace_sampling,
            );
            over.stream.layer(&mut under.stream);
            over.state.layer(&mut under.state);
            over.cluster.layer(&mut under.cluster);
            let (lake_over, lake_under) = (&mut over.lake, &mut under.lake);
            layer!(
                lake_over,
                lake_under,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
                path_style,
                backlog_limit_mb,
            );
            let (sns_over, sns_under) = (&mut over.sns, &mut under.sns);
            layer!(
                sns_over,
                sns_under,
                public_url,
                smtp_host,
                smtp_port,
                smtp_security,
                smtp_username,
                smtp_password,
                smtp_from,
                sms_topic,
                recipients,
            );
        }
        let defaults = BrokerConfig::default();
        let broker = BrokerConfig {
            max_packet_size: self.max_packet_size.unwrap_or(defaults.max_packet_size),
            max_topic_length: self.max_topic_length.unwrap_or(defaults.max_topic_length),
            max_inflight: self.max_inflight.unwrap_or(defaults.max_inflight),
            max_queued_messages: self
                .max_queued_messages
                .unwrap_or(defaults.max_queued_messages),
            max_queued_bytes: self.max_queued_bytes.unwrap_or(defaults.max_queued_bytes),
            write_buffer_bytes: self
                .write_buffer_bytes
                .unwrap_or(defaults.write_buffer_bytes),
            max_connections_per_second: self
                .max_connections_per_second
                .unwrap_or(defaults.max_connections_per_second),
            connect_timeout: self
                .connect_timeout
                .map_or(defaults.connect_timeout, Duration::from_secs),
            topic_alias_maximum: self
                .topic_alias_maximum
                .unwrap_or(defaults.topic_alias_maximum),
            slow_subscriber_timeout: self
                .slow_subscriber_timeout
                .map_or(defaults.slow_subscriber_timeout, Duration::from_secs),
            // Unset, it is never longer than the slow-subscriber timeout.
            stuck_subscriber_timeout: self.stuck_subscriber_timeout_ms.map_or(
                defaults.stuck_subscriber_timeout.min(
                    self.slow_subscriber_timeout
                        .map_or(defaults.slow_subscriber_timeout, Duration::from_secs),
                ),
                Duration::from_millis,
            ),
            session_commit_delay: self
                .session_commit_delay_ms
                .map_or(defaults.session_commit_delay, Duration::from_millis),
            max_keep_alive: self.max_keep_alive.unwrap_or(defaults.max_keep_alive),
        };
        if broker.max_packet_size < 64 || broker.max_packet_size > 268_435_455 {
            bail!("max_packet_size must be between 64 and 268435455 bytes (the MQTT limit)");
        }
        if broker.max_inflight == 0 {
            bail!("max_inflight must be at least 1 (MQTT forbids a Receive Maximum of 0)");
        }
        if broker.max_queued_messages == 0 {
            bail!("max_queued_messages must be at least 1");
        }
        if broker.max_queued_bytes == 0 {
            bail!("max_queued_bytes must be at least 1");
        }
        if broker.stuck_subscriber_timeout > broker.slow_subscriber_timeout {
            bail!(
                "stuck_subscriber_timeout_ms must not exceed slow_subscriber_timeout (a subscriber is stuck before it is given up on)"
            );
        }
        if broker.write_buffer_bytes < 1024 {
            bail!("write_buffer_bytes must be at least 1024");
        }
        if broker.max_topic_length == 0 || broker.max_topic_length > 65_535 {
            bail!("max_topic_length must be between 1 and 65535 bytes");
        }
        let credentials = match (self.access_key_id, self.secret_access_key) {
            (Some(access_key_id), Some(secret_access_key)) => Some(AdminCredentials {
                access_key_id,
                secret_access_key,
            }),
            (None, None) => None,
            _ => bail!("access_key_id and secret_access_key must be given together"),
        };
        let region = self.region.unwrap_or_else(|| "us-east-1".into());
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            bail!("region `{region}` must be lower-case letters, digits and `-`, e.g. us-east-1");
        }
        let account_id = self.account_id.unwrap_or_else(|| "000000000000".into());
        if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            bail!("account_id `{account_id}` must be 12 digits, e.g. 000000000000");
        }
        let shadow_max_state_bytes = self.shadow_max_state_bytes.unwrap_or(8 * 1024);
        if shadow_max_state_bytes == 0 {
            bail!("shadow_max_state_bytes must be at least 1");
        }
        let provisioning_token_ttl = match self.provisioning_token_ttl_secs.unwrap_or(3600) {
            0 => bail!("provisioning_token_ttl_secs must be at least 1"),
            secs => std::time::Duration::from_secs(secs),
        };
        let defender_period = match self.defender_period_ms.unwrap_or(300_000) {
            ms @ 100..=86_400_000 => std::time::Duration::from_millis(ms),
            ms => bail!("defender_period_ms must be between 100 and 86400000, not {ms}"),
        };
        let defender_audit_day = match self.defender_audit_day_secs.unwrap_or(86_400) {
            secs @ 1..=86_400 => std::time::Duration::from_secs(secs),
            secs => bail!("defender_audit_day_secs must be between 1 and 86400, not {secs}"),
        };
        let ingest_partitions = match self.ingest_partitions {
            Some(n @ 1..=256) => n,
            Some(n) => bail!("ingest_partitions must be between 1 and 256, not {n}"),
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        let functions_event_queue = match self.functions_event_queue {
            Some(n @ 1..=1_000_000) => n,
            Some(n) => bail!("functions_event_queue must be between 1 and 1000000, not {n}"),
            None => 10_000,
        };
        let server_names = self
            .server_names
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| vec!["localhost".into(), "127.0.0.1".into()]);
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from("fleetcore-data"));
        let lake = self.lake;
        let lake_config = lake.config(&data_dir)?;
        let metrics_resolution = self.metrics_resolution.unwrap_or(60);
        if !(1..=3600).contains(&metrics_resolution) {
            bail!(
                "metrics_resolution must be between 1 and 3600 seconds, not {metrics_resolution}"
            );
        }
        let metrics_retention_days = self.metrics_retention_days.unwrap_or(15);
        if !(1..=455).contains(&metrics_retention_days) {
            bail!("metrics_retention_days must be between 1 and 455, not {metrics_retention_days}");
        }
        let otlp_endpoint = self.otlp_endpoint.filter(|e| !e.is_empty());
        if let Some(endpoint) = &otlp_endpoint {
            fleetcore_observe::otlp::check_endpoint(endpoint).map_err(anyhow::Error::msg)?;
        }
        let otlp_interval = self.otlp_interval.unwrap_or(60);
        if !(1..=3600).contains(&otlp_interval) {
            bail!("otlp_interval must be between 1 and 3600 seconds, not {otlp_interval}");
        }
        let otlp_trace_sampling = self.otlp_trace_sampling.unwrap_or(0.01);
        if !(0.0..=1.0).contains(&otlp_trace_sampling) {
            bail!("otlp_trace_sampling must be between 0 and 1, not {otlp_trace_sampling}");
        }
        let backlog_limit_mb = lake.backlog_limit_mb.unwrap_or(256);
        if backlog_limit_mb == 0 {
            bail!("lake backlog_limit_mb must be at least 1");
        }
        Ok(Settings {
            data_dir,
            http: address("http", self.http, Some("127.0.0.1:8080"))?
                .context("http cannot be off: /health and the API live there")?,
            mqtts: address("mqtts", self.mqtts, Some("0.0.0.0:8883"))?,
            mqtt: address("mqtt", self.mqtt, None)?,
            ws: address("ws", self.ws, None)?,
            wss: address("wss", self.wss, None)?,
            https: address("https", self.https, None)?,
            shadow_max_state_bytes,
            provisioning_token_ttl,
            defender_period,
            defender_audit_day,
            ingest_partitions,
            functions_python: self
                .functions_python
                .unwrap_or_else(|| PathBuf::from("python3")),
            functions_node: self.functions_node.unwrap_or_else(|| PathBuf::from("node")),
            functions_event_queue,
            allow_anonymous: self.allow_anonymous.unwrap_or(false),
            anonymous_policy: self.anonymous_policy.filter(|p| !p.is_empty()),
            server_names,
            broker,
            credentials,
            region,
            account_id,
            log: self.log.unwrap_or_else(|| "info".into()),
            stream: self.stream.resolve()?,
            state: self.state.resolve()?,
            cluster: self.cluster.resolve()?,
            lake: lake_config,
            lake_backlog_limit_bytes: backlog_limit_mb << 20,
            rules_https_ca_file: self.rules_https_ca_file,
            rules_retry: RulesRetry::resolve(
                self.rules_retry_attempts,
                self.rules_retry_backoff_ms,
            )?,
            sns_public_url: self.sns.public_url.clone().filter(|u| !u.is_empty()),
            sns_sms_topic: self.sns.sms_topic.take().filter(|t| !t.is_empty()),
            sns_recipients: self.sns.recipients.take().unwrap_or_default(),
            smtp: self.sns.smtp()?,
            metrics_resolution,
            metrics_retention_days,
            metrics_sample: self.metrics_sample.unwrap_or(true),
            otlp_endpoint,
            otlp_interval,
            otlp_trace_sampling,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse(argv: &[&str]) -> ServeArgs {
        Cli::try_parse_from(std::iter::once("serve").chain(argv.iter().copied()))
            .expect("parse")
            .args
    }

    #[test]
    fn defaults_follow_the_design_contract() {
        let s = parse(&[]).resolve().expect("resolve");
        assert_eq!(s.http, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(s.mqtts, Some("0.0.0.0:8883".parse().expect("addr")));
        assert_eq!((s.mqtt, s.ws, s.wss), (None, None, None));
        assert!(!s.allow_anonymous);
        assert_eq!(s.data_dir, PathBuf::from("fleetcore-data"));
        assert_eq!(s.server_names, ["localhost", "127.0.0.1"]);
        assert_eq!(
            (s.region.as_str(), s.account_id.as_str()),
            ("us-east-1", "000000000000")
        );
    }

    #[test]
    fn sns_recipients_and_sms_topic_come_from_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("fleetcore.toml");
        std::fs::write(
            &file,
            "[sns]\nsms_topic = \"sms/out\"\n[[sns.recipients]]\nidentity_store_id = \"d-1\"\nuser_id = \"ann\"\nemail = \"ann@example.com\"\n",
        )
        .expect("write");
        let config = file.to_str().expect("utf8");
        let s = parse(&["--config", config]).resolve().expect("resolve");
        assert_eq!(s.sns_sms_topic.as_deref(), Some("sms/out"));
        assert_eq!(
            s.sns_recipients,
            [RecipientEntry {
                identity_store_id: "d-1".into(),
                user_id: "ann".into(),
                email: Some("ann@example.com".into()),
                phone: None,
            }]
        );
        let flag = parse(&["--config", config, "--sns-sms-topic", "gw/sms"]);
        assert_eq!(
            flag.resolve().expect("resolve").sns_sms_topic.as_deref(),
            Some("gw/sms")
        );
    }

    #[test]
    fn sns_smtp_comes_from_the_file_and_is_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("fleetcore.toml");
        std::fs::write(
            &file,
            "[sns]\nsmtp_host = \"mail.example.com\"\nsmtp_port = 2525\nsmtp_security = \"none\"\nsmtp_from = \"fc <a@example.com>\"\n",
        )
        .expect("write");
        let config = file.to_str().expect("utf8");
        let s = parse(&["--config", config]).resolve().expect("resolve");
        let smtp = s.smtp.expect("smtp");
        assert_eq!(
            (smtp.host.as_str(), smtp.port, smtp.security),
            ("mail.example.com", Some(2525), SmtpSecurity::None)
        );
        assert!(parse(&[]).resolve().expect("resolve").smtp.is_none());
        let err = parse(&["--sns-smtp-host", "h"])
            .resolve()
            .expect_err("no sender");
        assert!(format!("{err:#}").contains("smtp_from"), "{err:#}");
        let err = parse(&[
            "--sns-smtp-host",
            "h",
            "--sns-smtp-from",
            "a@b.c",
            "--sns-smtp-security",
            "ssl",
        ])
        .resolve()
        .expect_err("bad mode");
        assert!(format!("{err:#}").contains("smtp_security"), "{err:#}");
    }

    #[test]
    fn region_and_account_id_come_from_flags_or_the_file_and_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("fleetcore.toml");
        std::fs::write(
            &file,
            "region = \"eu-west-1\"\naccount_id = \"123456789012\"\n",
        )
        .expect("write");
        let config = file.to_str().expect("utf8");
        let s = parse(&["--config", config]).resolve().expect("resolve");
        assert_eq!(
            (s.region.as_str(), s.account_id.as_str()),
            ("eu-west-1", "123456789012")
        );
        let s = parse(&["--config", config, "--region", "ap-south-1"])
            .resolve()
            .expect("resolve");
        assert_eq!(s.region, "ap-south-1");
        let err = parse(&["--account-id", "42"])
            .resolve()
            .expect_err("short id");
        assert!(format!("{err:#}").contains("account_id"), "{err:#}");
        let err = parse(&["--region", "US East"])
            .resolve()
            .expect_err("bad region");
        assert!(format!("{err:#}").contains("region"), "{err:#}");
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("fleetcore.toml");
        std::fs::write(
            &file,
            "mqtt = \"127.0.0.1:1999\"\nmax_packet_size = 2048\nallow_anonymous = true\nmqtts = \"off\"\n",
        )
        .expect("write");
        let config = file.to_str().expect("utf8");
        let s = parse(&["--config", config, "--max-packet-size", "4096"])
            .resolve()
            .expect("resolve");
        assert_eq!(s.broker.max_packet_size, 4096);
        assert_eq!(s.mqtt, Some("127.0.0.1:1999".parse().expect("addr")));
        assert_eq!(s.mqtts, None);
        assert!(s.allow_anonymous);
    }

    #[test]
    fn the_state_and_cluster_tables_configure_a_node_and_flags_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("fleetcore.toml");
        std::fs::write(
            &file,
            "[state]\nbackend = \"postgres\"\nurl = \"postgres://u@db/fleet\"\n\
             [cluster]\nnats = \"nats://10.0.0.1:4222\"\nnode_id = \"edge-1\"\n",
        )
        .expect("write");
        let config = file.to_str().expect("utf8");
        let s = parse(&["--config", config]).resolve().expect("resolve");
        assert_eq!(
            s.state,
            StateBackend::Postgres {
                url: "postgres://u@db/fleet".into()
            }
        );
        assert_eq!(s.cluster.node_id.as_deref(), Some("edge-1"));
        assert_eq!(s.cluster.nats.as_deref(), Some("nats://10.0.0.1:4222"));
        let s = parse(&["--config", config, "--cluster-node-id", "edge-2"])
            .resolve()
            .expect("resolve");
        assert_eq!(s.cluster.node_id.as_deref(), Some("edge-2"));
        let s = parse(&[]).resolve().expect("default");
        assert_eq!((s.state, s.cluster.nats), (StateBackend::Embedded, None));
        std::fs::write(&file, "[state]\nbackend = \"postgres\"\n").expect("write");
        let err = parse(&["--config", config]).resolve().expect_err("no url");
        assert!(format!("{err:#}").contains("needs a url"), "{err:#}");
    }

    #[test]
    fn the_stream_table_selects_the_backend_and_flags_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("fleetcore.toml");
        std::fs::write(
            &file,
            "log = \"info\"\n[stream]\nbackend = \"jetstream\"\nservers = \"nats://10.0.0.1:4222\"\n",
        )
        .expect("write");
        let config = file.to_str().expect("utf8");
        let s = parse(&["--config", config]).resolve().expect("resolve");
        assert_eq!(
            s.stream,
            StreamBackend::JetStream {
                servers: "nats://10.0.0.1:4222".into()
            }
        );
        let s = parse(&["--config", config, "--stream-backend", "embedded"])
            .resolve()
            .expect("resolve");
        assert_eq!(s.stream, StreamBackend::Embedded);
        assert_eq!(
            parse(&[]).resolve().expect("default").stream,
            StreamBackend::Embedded
        );
        std::fs::write(&file, "[stream]\nbackend = \"kafka\"\n").expect("write");
        let err = parse(&["--config", config])
            .resolve()
            .expect_err("unknown backend");
        assert!(format!("{err:#}").contains("kafka"), "{err:#}");
    }

    #[test]
    fn the_lake_is_a_local_folder_or_an_s3_endpoint_from_the_lake_table() {
        let s = parse(&["--data-dir", "/d"]).resolve().expect("resolve");
        assert_eq!(
            s.lake,
            LakeConfig::Local {
                root: PathBuf::from("/d/lake")
            }
        );
        assert_eq!(s.lake_backlog_limit_bytes, 256 << 20);
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("fleetcore.toml");
        std::fs::write(
            &file,
            "[lake]\nendpoint = \"http://127.0.0.1:9000\"\naccess_key_id = \"a\"\nsecret_access_key = \"s\"\nbacklog_limit_mb = 8\n",
        )
        .expect("write");
        let config = file.to_str().expect("utf8");
        let s = parse(&["--config", config, "--lake-region", "eu-west-1"])
            .resolve()
            .expect("resolve");
        assert_eq!(
            s.lake,
            LakeConfig::S3 {
                endpoint: "http://127.0.0.1:9000".into(),
                region: "eu-west-1".into(),
                access_key_id: "a".into(),
                secret_access_key: "s".into(),
                path_style: true,
            }
        );
        assert_eq!(s.lake_backlog_limit_bytes, 8 << 20);
        let err = parse(&["--lake-endpoint", "http://x:1"])
            .resolve()
            .expect_err("no keys");
        assert!(format!("{err:#}").contains("access_key_id"), "{err:#}");
    }

    #[test]
    fn device_https_and_shadow_limit() {
        let s = parse(&[]).resolve().expect("resolve");
        assert_eq!((s.https, s.shadow_max_state_bytes), (None, 8192));
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("fleetcore.toml");
        std::fs::write(
            &file,
            "https = \"127.0.0.1:8443\"\nshadow_max_state_bytes = 16384\n",
        )
        .expect("write");
        let s = parse(&["--config", file.to_str().expect("utf8")])
            .resolve()
            .expect("resolve");
        assert_eq!(s.https, Some("127.0.0.1:8443".parse().expect("addr")));
        assert_eq!(s.shadow_max_state_bytes, 16384);
        let err = parse(&["--shadow-max-state-bytes", "0"])
            .resolve()
            .expect_err("zero");
        assert!(
            format!("{err:#}").contains("shadow_max_state_bytes"),
            "{err:#}"
        );
    }

    #[test]
    fn defender_period() {
        let s = parse(&[]).resolve().expect("resolve");
        assert_eq!(s.defender_period, std::time::Duration::from_secs(300));
        let s = parse(&["--defender-period-ms", "1000"])
            .resolve()
            .expect("resolve");
        assert_eq!(s.defender_period, std::time::Duration::from_secs(1));
        let err = parse(&["--defender-period-ms", "10"])
            .resolve()
            .expect_err("too short");
        assert!(format!("{err:#}").contains("defender_period_ms"), "{err:#}");
        assert_eq!(
            parse(&[]).resolve().expect("resolve").defender_audit_day,
            std::time::Duration::from_secs(86_400)
        );
        let err = parse(&["--defender-audit-day-secs", "0"])
            .resolve()
            .expect_err("zero");
        assert!(
            format!("{err:#}").contains("defender_audit_day_secs"),
            "{err:#}"
        );
    }

    #[test]
    fn provisioning_token_lifetime() {
        let s = parse(&[]).resolve().expect("resolve");
        assert_eq!(
            s.provisioning_token_ttl,
            std::time::Duration::from_secs(3600)
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("fleetcore.toml");
        std::fs::write(&file, "provisioning_token_ttl_secs = 60\n").expect("write");
        let s = parse(&["--config", file.to_str().expect("utf8")])
            .resolve()
            .expect("resolve");
        assert_eq!(s.provisioning_token_ttl, std::time::Duration::from_secs(60));
        let err = parse(&["--provisioning-token-ttl-secs", "0"])
            .resolve()
            .expect_err("zero");
        assert!(
            format!("{err:#}").contains("provisioning_token_ttl_secs"),
            "{err:#}"
        );
    }

    #[test]
    fn ingest_partitions_default_to_the_cores_and_are_bounded() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(
            parse(&[]).resolve().expect("resolve").ingest_partitions,
            cores
        );
        let s = parse(&["--ingest-partitions", "3"]).resolve().expect("3");
        assert_eq!(s.ingest_partitions, 3);
        for bad in ["0", "257"] {
            let err = parse(&["--ingest-partitions", bad])
                .resolve()
                .expect_err(bad);
            assert!(format!("{err:#}").contains("ingest_partitions"), "{err:#}");
        }
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "max_pakcet_size = 1\n").expect("write");
        let err = parse(&["--config", file.to_str().expect("utf8")])
            .resolve()
            .expect_err("unknown key");
        assert!(format!("{err:#}").contains("max_pakcet_size"), "{err:#}");
        let err = parse(&["--mqtt", "nowhere"])
            .resolve()
            .expect_err("bad addr");
        assert!(format!("{err:#}").contains("mqtt"), "{err:#}");
        let err = parse(&["--max-inflight", "0"]).resolve().expect_err("zero");
        assert!(format!("{err:#}").contains("max_inflight"), "{err:#}");
    }
}
