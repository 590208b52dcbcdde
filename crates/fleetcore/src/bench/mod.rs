//! `fleetcore bench`: an MQTT load generator that works against any MQTT 3.1.1 or 5 broker, so
//! fleetcore and an anchor such as Mosquitto are measured by the same client, side by side.
//!
//! Two modes:
//! - publish/subscribe (default): subscribers connect and subscribe first, then publishers send
//!   stamped messages for `--duration`; the tool drains in-flight messages and reports throughput,
//!   loss, duplicates, reordering and publish-to-delivery latency. By default every client
//!   behaves like a device: one packet per write call, TCP_NODELAY, nothing to batch, so the
//!   broker pays its per-message cost as it does with real fleets; `--batch` encodes many
//!   messages per write instead, as a gateway would.
//! - idle connections (`--connections N --idle`): open N connections, hold them, report the
//!   connect rate and, with `--broker-pid`, the broker's memory per connection.
//!
//! The client is a small loop per connection on fleetcore's own codec (`conn`, `publisher`,
//! `subscriber`, `idle`), reading with a large buffer; with `--batch` many messages are encoded
//! into one buffer per write, so the tool itself is rarely the bottleneck.

pub(crate) mod conn;
mod idle;
mod kinesis;
mod payload;
mod publisher;
mod report;
mod shadow;
mod subscriber;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use fleetcore_mqtt::protocol::{ProtocolVersion, QoS};
use fleetcore_mqtt::topic::{self, FilterKind};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use conn::{Link, Target, TlsTarget};
use report::{
    BrokerMemory, IdleReport, Latency, PubSubReport, Report, read_rss_kib, round1, round2,
};

/// Largest `--size`: keeps every PUBLISH well inside MQTT's 256 MiB packet limit.
const MAX_SIZE: usize = 128 * 1024 * 1024;

/// MQTT version, as `--protocol` spells it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    #[value(name = "3", alias = "3.1.1", alias = "4")]
    V3,
    /// MQTT 5.0.
    #[value(name = "5", alias = "5.0")]
    V5,
}

/// MQTT load generator: measures a broker's throughput, latency and per-connection cost.
///
/// Works against any MQTT 3.1.1 or 5 broker. Without `--idle`, SUBSCRIBERS connect and
/// subscribe to FILTER, then PUBLISHERS publish stamped messages for DURATION seconds; the
/// report gives sent and received rates, loss, duplicates, reordering and latency percentiles.
/// With `--connections N --idle`, N connections are opened and held instead.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Broker host name or IP address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Broker port (1883 is MQTT over TCP; fleetcore's TLS listener defaults to 8883).
    #[arg(long, default_value_t = 1883)]
    pub port: u16,

    /// Port the subscribers connect to instead of --port, on the same host: another node of a
    /// fleetcore cluster, to measure messages crossing nodes. [default: --port]
    #[arg(long, value_name = "PORT")]
    pub subscriber_port: Option<u16>,

    /// TLS options. Boxed so the arguments stay small enough to sit unboxed in the CLI's
    /// command enum.
    #[command(flatten)]
    pub tls: Box<TlsArgs>,

    /// MQTT version: 3 (3.1.1) or 5.
    #[arg(long, value_enum, default_value = "5")]
    pub protocol: MqttVersion,

    /// Number of publishing connections.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub publishers: u32,

    /// Number of subscribing connections; each subscribes to --filter (0 = measure publishing only).
    #[arg(long, default_value_t = 1, value_name = "M")]
    pub subscribers: u32,

    /// Topic publishers send to; `{p}` is replaced by the publisher's index (0..N).
    #[arg(long, default_value = "bench/{p}", value_name = "PATTERN")]
    pub topic: String,

    /// Topic filter of every subscriber (a `$share/GROUP/...` filter spreads messages across them).
    #[arg(long, default_value = "bench/#")]
    pub filter: String,

    /// QoS of publishes and subscriptions: 0, 1 or 2.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,

    /// Payload size in bytes; the first 16 carry the send time and sequence number.
    #[arg(long, default_value_t = 256, value_name = "BYTES")]
    pub size: usize,

    /// Batching mode: each client encodes many packets (up to 64 KiB) per write call, as a
    /// gateway would. Without it, device mode: one packet per write call, TCP_NODELAY, as a
    /// fleet of devices sends (use many --publishers and a --rate for a paced fleet).
    #[arg(long)]
    pub batch: bool,

    /// Total messages per second over all publishers; 0 = as fast as the broker takes them.
    #[arg(long, default_value_t = 0, value_name = "MSGS_PER_SEC")]
    pub rate: u64,

    /// How long publishers publish (or idle connections are held), in seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,

    /// After publishing stops, how long to wait for outstanding acks and deliveries, in seconds.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub drain_timeout: f64,

    /// QoS 1/2: unacknowledged messages each publisher may have in flight (capped by the
    /// broker's Receive Maximum).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub inflight: u32,

    /// Idle mode: number of connections to open and hold (with --idle).
    #[arg(long, value_name = "N", requires = "idle")]
    pub connections: Option<u64>,

    /// Idle mode: open --connections connections, hold them for --duration, publish nothing.
    #[arg(long, requires = "connections")]
    pub idle: bool,

    /// Device-shadow mode (fleetcore or any AWS IoT-compatible broker): each of --publishers
    /// is a device updating its own classic shadow over MQTT, with up to --inflight updates
    /// awaiting `/update/accepted` (or paced to --rate in total); reports accepted updates per
    /// second and the update -> accepted and update -> delta latencies. --subscribers,
    /// --topic, --filter, --qos and --size do not apply (devices publish at QoS 1 to
    /// `$aws/things/<prefix>-t<i>/shadow/update`).
    #[arg(long, conflicts_with = "idle")]
    pub shadow: bool,

    /// Handshakes (TCP + TLS + CONNECT) in flight at once while connecting. Keep it at or below
    /// the broker's listen backlog (Mosquitto's is 100): beyond it the kernel drops SYNs and
    /// some connections wait a 1 s retransmit.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub connect_concurrency: usize,

    /// Keep-alive announced in CONNECT, in seconds (pings are sent when a connection is quiet).
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub keep_alive: u16,

    /// PID of the broker: its resident memory (VmRSS) is read before connecting and once all
    /// connections are up, and the growth per connection reported.
    #[arg(long, value_name = "PID")]
    pub broker_pid: Option<u32>,

    /// Print the results as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Prefix of client identifiers [default: fcbench-<our pid>].
    #[arg(long, value_name = "PREFIX")]
    pub client_prefix: Option<String>,

    /// Another load than MQTT.
    #[command(subcommand)]
    pub target: Option<BenchTarget>,
}

/// How to reach a TLS listener.
#[derive(clap::Args, Debug)]
pub struct TlsArgs {
    /// Connect over TLS; needs --ca.
    #[arg(long, help_heading = "TLS")]
    pub tls: bool,

    /// PEM file of the CA(s) that signed the broker's certificate (with --tls).
    #[arg(long, help_heading = "TLS", value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// PEM client certificate (chain) for mutual TLS; needs --key.
    #[arg(long, help_heading = "TLS", value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// PEM private key of --cert.
    #[arg(long, help_heading = "TLS", value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Name the broker's certificate must carry, if not --host.
    #[arg(long, help_heading = "TLS", value_name = "NAME")]
    pub server_name: Option<String>,
}

/// Arguments checked and resolved.
#[derive(Debug)]
struct Plan {
    version: ProtocolVersion,
    qos: QoS,
    duration: Duration,
    drain: Duration,
    client_prefix: String,
    /// The filter without a `$share/GROUP/` prefix, and whether it had one.
    plain_filter: String,
    shared: bool,
}

impl BenchArgs {
    /// Checks the arguments against each other; the message says which flag to change.
    fn validate(&self) -> Result<Plan, String> {
        let version = match self.protocol {
            MqttVersion::V3 => ProtocolVersion::V311,
            MqttVersion::V5 => ProtocolVersion::V5,
        };
        let qos = QoS::from_u8(self.qos).ok_or("--qos must be 0, 1 or 2")?;
        let tls = &self.tls;
        if !tls.tls
            && (tls.ca.is_some()
                || tls.cert.is_some()
                || tls.key.is_some()
                || tls.server_name.is_some())
        {
            return Err("--ca, --cert, --key and --server-name need --tls".into());
        }
        if tls.tls && tls.ca.is_none() {
            return Err(
                "--tls needs --ca FILE (the CA that signed the broker's certificate)".into(),
            );
        }
        if tls.cert.is_some() != tls.key.is_some() {
            return Err("--cert and --key go together (mutual TLS)".into());
        }
        let duration = positive_secs(self.duration, "--duration")?;
        let drain = if self.drain_timeout == 0.0 {
            Duration::ZERO
        } else {
            positive_secs(self.drain_timeout, "--drain-timeout")?
        };
        if self.connect_concurrency == 0 {
            return Err("--connect-concurrency must be at least 1".into());
        }
        let client_prefix = match &self.client_prefix {
            Some(p) if p.contains('\0') => {
                return Err("--client-prefix must not contain NUL".into());
            }
            Some(p) => p.clone(),
            None => format!("fcbench-{}", std::process::id()),
        };
        let mut plan = Plan {
            version,
            qos,
            duration,
            drain,
            client_prefix,
            plain_filter: String::new(),
            shared: false,
        };
        if self.idle {
            match self.connections {
                Some(n) if n > 0 => return Ok(plan),
                _ => return Err("--idle needs --connections N (N >= 1)".into()),
            }
        }
        if self.connections.is_some() {
            return Err("--connections is for idle mode: add --idle".into());
        }
        if self.publishers == 0 {
            return Err("--publishers must be at least 1".into());
        }
        if self.publishers >= payload::MAX_PUBLISHERS {
            return Err(format!(
                "--publishers must be below {}",
                payload::MAX_PUBLISHERS
            ));
        }
        if self.size < payload::HEADER_LEN {
            return Err(format!(
                "--size must be at least {} bytes (the send time and sequence number)",
                payload::HEADER_LEN
            ));
        }
        if self.size > MAX_SIZE {
            return Err(format!("--size must be at most {MAX_SIZE} bytes"));
        }
        if qos != QoS::AtMostOnce && !(1..=65535).contains(&self.inflight) {
            return Err("--inflight must be between 1 and 65535".into());
        }
        for p in [0, self.publishers - 1] {
            let topic = self.topic_for(p);
            if !topic::valid_topic_name(&topic, usize::from(u16::MAX)) {
                return Err(format!(
                    "--topic {:?} gives {topic:?}, not a topic name one can publish to (no + or #, not empty)",
                    self.topic
                ));
            }
        }
        match topic::parse_filter(&self.filter) {
            Ok(FilterKind::Plain(f)) => plan.plain_filter = f.to_owned(),
            Ok(FilterKind::Shared { filter, .. }) => {
                plan.plain_filter = filter.to_owned();
                plan.shared = true;
            }
            Err(e) => {
                return Err(format!(
                    "--filter {:?} is not a valid topic filter: {e}",
                    self.filter
                ));
            }
        }
        if self.filter.len() > usize::from(u16::MAX) {
            return Err("--filter is longer than MQTT allows".into());
        }
        Ok(plan)
    }

    /// The topic publisher `p` sends to.
    fn topic_for(&self, p: u32) -> String {
        self.topic.replace("{p}", &p.to_string())
    }

    fn protocol_label(&self) -> &'static str {
        match self.protocol {
            MqttVersion::V3 => "3.1.1",
            MqttVersion::V5 => "5",
        }
    }
}

fn positive_secs(v: f64, flag: &str) -> Result<Duration, String> {
    if v.is_finite() && v > 0.0 && v < 1e9 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("{flag} must be a positive number of seconds"))
    }
}

/// Loads other than MQTT.
#[derive(clap::Subcommand, Debug)]
pub enum BenchTarget {
    /// PutRecords and GetRecords throughput of fleetcore's Kinesis API.
    Kinesis(kinesis::KinesisBenchArgs),
}

/// Runs the benchmark the arguments describe and prints its report.
pub async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    if let Some(BenchTarget::Kinesis(kinesis)) = args.target.take() {
        return kinesis::run(kinesis).await;
    }
    let plan = args.validate().map_err(anyhow::Error::msg)?;
    let target = Arc::new(build_target(&args, &plan, args.port).await?);
    let subscriber_target = match args.subscriber_port {
        Some(port) => Arc::new(build_target(&args, &plan, port).await?),
        None => Arc::clone(&target),
    };
    let broker = format!("{}:{}", args.host, args.port);
    let progress = std::io::stderr().is_terminal();
    if args.shadow {
        return shadow::run(&args, &plan, target, broker).await;
    }
    let report = if args.idle {
        let connections = args.connections.unwrap_or(0);
        let idle_plan = idle::IdlePlan {
            connections,
            concurrency: args.connect_concurrency,
            hold: plan.duration,
            client_prefix: plan.client_prefix.clone(),
            broker_pid: args.broker_pid,
            progress,
        };
        let empty = IdleReport {
            mode: "idle",
            broker,
            protocol: args.protocol_label(),
            tls: args.tls.tls,
            connections,
            connected: 0,
            failed: 0,
            failures: Default::default(),
            first_error: None,
            ramp_s: 0.0,
            connects_per_s: 0.0,
            connect_latency_us: None,
            hold_s: 0.0,
            dropped: 0,
            broker_memory: None,
        };
        Report::Idle(idle::run(target, idle_plan, empty).await?)
    } else {
        let targets = Targets {
            publishers: target,
            subscribers: subscriber_target,
        };
        Report::PubSub(run_pubsub(&args, &plan, targets, broker, progress).await?)
    };
    report.print(args.json)?;
    if let Report::PubSub(r) = &report
        && !r.errors.is_empty()
    {
        anyhow::bail!(
            "{} connection(s) failed during the run (see the report)",
            r.errors.len()
        );
    }
    Ok(())
}

/// Where publishers and subscribers connect (the same broker unless `--subscriber-port`).
struct Targets {
    publishers: Arc<Target>,
    subscribers: Arc<Target>,
}

async fn build_target(args: &BenchArgs, plan: &Plan, port: u16) -> anyhow::Result<Target> {
    let addrs: Vec<_> = tokio::net::lookup_host((args.host.as_str(), port))
        .await
        .with_context(|| format!("cannot resolve broker host {:?}", args.host))?
        .collect();
    anyhow::ensure!(
        !addrs.is_empty(),
        "broker host {:?} resolves to no address",
        args.host
    );
    let tls = match (&args.tls.ca, args.tls.tls) {
        (Some(ca), true) => {
            let client = args.tls.cert.as_deref().zip(args.tls.key.as_deref());
            let name = args.tls.server_name.as_deref().unwrap_or(&args.host);
            Some(TlsTarget::new(ca, client, name)?)
        }
        _ => None,
    };
    Ok(Target {
        addrs,
        tls,
        version: plan.version,
        keep_alive: args.keep_alive,
        connect_timeout: Duration::from_secs(15),
        max_packet_size: (args.size + 64 * 1024).max(1024 * 1024),
    })
}

/// Opens `count` connections with at most `concurrency` handshakes at once; `setup` runs on
/// each (to subscribe). Fails on the first error.
async fn connect_all<F, Fut>(
    target: &Arc<Target>,
    count: u32,
    concurrency: usize,
    client_id: impl Fn(u32) -> String,
    receive_maximum: Option<u16>,
    read_capacity: usize,
    setup: F,
) -> anyhow::Result<Vec<Link>>
where
    F: Fn(Link) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Link, conn::ConnectError>> + Send,
{
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let target = Arc::clone(target);
        let permits = Arc::clone(&permits);
        let id = client_id(i);
        let setup = setup.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let link = target.connect(&id, receive_maximum, read_capacity).await?;
            setup(link).await.map(|link| (i, link))
        });
    }
    let mut links: Vec<Option<Link>> = (0..count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, link) = joined.context("connection task failed")??;
        links[i as usize] = Some(link);
    }
    Ok(links.into_iter().flatten().collect())
}

async fn run_pubsub(
    args: &BenchArgs,
    plan: &Plan,
    targets: Targets,
    broker: String,
    progress: bool,
) -> anyhow::Result<PubSubReport> {
    let rss_before = args.broker_pid.map(read_rss_kib).transpose()?;

    let filter = args.filter.clone();
    let qos = plan.qos;
    let subscribe_timeout = targets.subscribers.connect_timeout;
    let subscribers = connect_all(
        &targets.subscribers,
        args.subscribers,
        args.connect_concurrency,
        |i| format!("{}-sub-{i}", plan.client_prefix),
        Some(u16::MAX),
        subscriber::READ_CHUNK,
        move |mut link: Link| {
            let filter = filter.clone();
            async move {
                let granted = link.subscribe(&filter, qos, subscribe_timeout).await?;
                if granted < qos {
                    eprintln!(
                        "warning: the broker granted QoS {} instead of {}",
                        granted as u8, qos as u8
                    );
                }
                Ok(link)
            }
        },
    )
    .await
    .context("a subscriber could not connect")?;
    let publishers = connect_all(
        &targets.publishers,
        args.publishers,
        args.connect_concurrency,
        |i| format!("{}-pub-{i}", plan.client_prefix),
        None,
        16 * 1024,
        |link: Link| async move { Ok(link) },
    )
    .await
    .context("a publisher could not connect")?;
    for link in &publishers {
        if let Some(max_qos) = link.connack.properties.maximum_qos
            && max_qos < args.qos
        {
            anyhow::bail!(
                "the broker supports QoS up to {max_qos} only (CONNACK Maximum QoS); lower --qos"
            );
        }
    }
    let rss_connected = args.broker_pid.map(read_rss_kib).transpose()?;

    // Which publishers' topics the subscribers' filter matches, to know what they are owed.
    let matching: Vec<bool> = (0..args.publishers)
        .map(|p| topic::matches(&plan.plain_filter, &args.topic_for(p)))
        .collect();
    let matched = matching.iter().filter(|&&m| m).count();
    if args.subscribers > 0 && matched < matching.len() {
        eprintln!(
            "warning: --filter {:?} matches the topics of {matched} of {} publishers",
            args.filter,
            matching.len()
        );
    }
    let deliveries_per_message = match (args.subscribers, plan.shared) {
        (0, _) => 0,
        (_, true) => 1,
        (n, false) => u64::from(n),
    };

    let sent_counter = Arc::new(AtomicU64::new(0));
    let received_counter = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sub_tasks = JoinSet::new();
    for link in subscribers {
        sub_tasks.spawn(subscriber::run(
            link,
            subscriber::SubscriberPlan {
                publishers: args.publishers,
                stop: stop_rx.clone(),
                received_counter: Arc::clone(&received_counter),
                one_per_write: !args.batch,
            },
        ));
    }

    // A short lead so every publisher starts on the same schedule.
    let start = Instant::now() + Duration::from_millis(20);
    let stop = start + plan.duration;
    let drain_deadline = stop + plan.drain;
    let per_publisher_rate = args.rate as f64 / f64::from(args.publishers);
    let mut pub_tasks = JoinSet::new();
    for (index, link) in (0u32..).zip(publishers) {
        let publisher = publisher::run(
            link,
            publisher::PublisherPlan {
                index,
                topic: args.topic_for(index),
                qos,
                size: args.size,
                rate: per_publisher_rate,
                phase: (f64::from(index) + 0.5) / f64::from(args.publishers),
                inflight: u16::try_from(args.inflight).unwrap_or(u16::MAX),
                start,
                stop,
                drain_deadline,
                sent_counter: Arc::clone(&sent_counter),
                one_per_write: !args.batch,
            },
        );
        pub_tasks.spawn(async move { (index, publisher.await) });
    }

    let progress_task = progress.then(|| {
        let sent = Arc::clone(&sent_counter);
        let received = Arc::clone(&received_counter);
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
            let (mut last_sent, mut last_received) = (0, 0);
            loop {
                tick.tick().await;
                let (s, r) = (
                    sent.load(Ordering::Relaxed),
                    received.load(Ordering::Relaxed),
                );
                eprintln!(
                    "  {:>5.1} s: sent {s} (+{}/s), received {r} (+{}/s)",
                    start.elapsed().as_secs_f64(),
                    s - last_sent,
                    r - last_received
                );
                (last_sent, last_received) = (s, r);
            }
        })
    });

    let mut errors = Vec::new();
    let mut pub_stats = vec![publisher::PublisherStats::default(); args.publishers as usize];
    while let Some(joined) = pub_tasks.join_next().await {
        let (index, stats) = joined.context("publisher task failed")?;
        if let Some(e) = &stats.error {
            errors.push(e.clone());
        }
        pub_stats[index as usize] = stats;
    }
    let sent: u64 = pub_stats.iter().map(|s| s.sent).sum();
    let sent_matching = matching_sent(&pub_stats, &matching);
    let expected = sent_matching * deliveries_per_message;

    // Drain: until every owed delivery arrived or the deadline passed.
    while received_counter.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain_end = Instant::now();
    let rss_end = args.broker_pid.map(read_rss_kib).transpose()?;
    stop_tx.send_replace(true);
    let mut latency = subscriber::new_latency_histogram();
    let (mut received, mut duplicates, mut out_of_order, mut foreign, mut bytes) = (0, 0, 0, 0, 0);
    let mut last_delivery = None::<Instant>;
    while let Some(joined) = sub_tasks.join_next().await {
        let s = joined.context("subscriber task failed")?;
        if let Some(e) = &s.error {
            errors.push(format!("subscriber: {e}"));
        }
        received += s.unique;
        duplicates += s.duplicates;
        out_of_order += s.out_of_order;
        foreign += s.foreign;
        bytes += s.bytes;
        latency
            .add(&s.latency_ns)
            .context("merging latency histograms")?;
        last_delivery = last_delivery.max(s.last_delivery);
    }
    if let Some(task) = progress_task {
        task.abort();
    }

    let publish_secs = plan.duration.as_secs_f64();
    // Deliveries are rated over the time they actually took: from the start to the last one.
    let receive_secs = last_delivery.map_or(publish_secs, |t| {
        (t - start).as_secs_f64().max(publish_secs)
    });
    let loss = expected.saturating_sub(received);
    let rejected = pub_stats.iter().map(|s| s.rejected).sum();
    let reject_reason = pub_stats
        .iter()
        .find_map(|s| s.reject_reason)
        .map(|code| format!("{code:#04x} ({})", conn::reason_name(code)));
    let memory = match (args.broker_pid, rss_before, rss_connected, rss_end) {
        (Some(pid), Some(b), Some(c), Some(e)) => Some(BrokerMemory::new(
            pid,
            b,
            c,
            e,
            u64::from(args.publishers) + u64::from(args.subscribers),
        )),
        _ => None,
    };
    let mb = |n: u64, secs: f64| round2(n as f64 / 1e6 / secs.max(1e-9));
    Ok(PubSubReport {
        mode: "pubsub",
        writes: if args.batch { "batch" } else { "device" },
        broker,
        protocol: args.protocol_label(),
        tls: args.tls.tls,
        qos: args.qos,
        publishers: args.publishers,
        subscribers: args.subscribers,
        size: args.size,
        topic: args.topic.clone(),
        filter: args.filter.clone(),
        rate_target: args.rate,
        duration_s: round2(publish_secs),
        sent,
        sent_per_s: round1(sent as f64 / publish_secs),
        sent_mb_per_s: mb(sent * args.size as u64, publish_secs),
        acked: pub_stats.iter().map(|s| s.acked).sum(),
        rejected,
        reject_reason,
        unacked: pub_stats.iter().map(|s| s.unacked).sum(),
        expected,
        received,
        received_per_s: round1(received as f64 / receive_secs),
        received_mb_per_s: mb(bytes, receive_secs),
        loss_pct: if expected == 0 {
            0.0
        } else {
            round2(loss as f64 * 100.0 / expected as f64)
        },
        duplicates,
        out_of_order,
        foreign,
        drain_s: round2(drain_end.saturating_duration_since(stop).as_secs_f64()),
        latency_us: Latency::from_histogram(&latency, 1.0),
        broker_memory: memory,
        errors,
    })
}

fn matching_sent(stats: &[publisher::PublisherStats], matching: &[bool]) -> u64 {
    stats
        .iter()
        .zip(matching)
        .filter(|(_, m)| **m)
        .map(|(s, _)| s.sent)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(flags: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(flags.iter().copied())).map(|c| c.args)
    }

    fn plan(flags: &[&str]) -> Result<Plan, String> {
        parse(flags).map_err(|e| e.to_string())?.validate()
    }

    #[test]
    fn defaults() {
        let args = parse(&[]).unwrap();
        assert_eq!((args.host.as_str(), args.port), ("127.0.0.1", 1883));
        assert_eq!(args.protocol, MqttVersion::V5);
        assert_eq!(
            (args.publishers, args.subscribers, args.qos, args.size),
            (1, 1, 0, 256)
        );
        assert_eq!((args.rate, args.duration, args.inflight), (0, 10.0, 64));
        assert_eq!(
            (args.topic.as_str(), args.filter.as_str()),
            ("bench/{p}", "bench/#")
        );
        let plan = args.validate().unwrap();
        assert_eq!(plan.version, ProtocolVersion::V5);
        assert_eq!(plan.qos, QoS::AtMostOnce);
        assert_eq!(plan.duration, Duration::from_secs(10));
        assert!(plan.client_prefix.starts_with("fcbench-"));
        assert!(!plan.shared);
    }

    #[test]
    fn protocol_and_qos_values() {
        assert_eq!(
            plan(&["--protocol", "3"]).unwrap().version,
            ProtocolVersion::V311
        );
        assert_eq!(
            plan(&["--protocol", "3.1.1"]).unwrap().version,
            ProtocolVersion::V311
        );
        assert_eq!(
            plan(&["--protocol", "5"]).unwrap().version,
            ProtocolVersion::V5
        );
        assert!(parse(&["--protocol", "4.0"]).is_err());
        assert_eq!(plan(&["--qos", "2"]).unwrap().qos, QoS::ExactlyOnce);
        assert!(parse(&["--qos", "3"]).is_err());
    }

    #[test]
    fn size_must_hold_the_stamp() {
        assert!(plan(&["--size", "16"]).is_ok());
        let e = plan(&["--size", "15"]).unwrap_err();
        assert!(e.contains("--size must be at least 16"), "{e}");
        assert!(plan(&["--size", &(MAX_SIZE + 1).to_string()]).is_err());
    }

    #[test]
    fn tls_flags_go_together() {
        assert!(
            plan(&["--ca", "ca.pem"])
                .unwrap_err()
                .contains("need --tls")
        );
        assert!(plan(&["--tls"]).unwrap_err().contains("--tls needs --ca"));
        assert!(
            plan(&["--tls", "--ca", "ca.pem", "--cert", "c.pem"])
                .unwrap_err()
                .contains("--key")
        );
        assert!(
            plan(&[
                "--tls", "--ca", "ca.pem", "--cert", "c.pem", "--key", "k.pem"
            ])
            .is_ok()
        );
    }

    #[test]
    fn idle_mode_needs_a_count() {
        // clap ties the two flags together...
        assert!(parse(&["--idle"]).is_err());
        assert!(parse(&["--connections", "10"]).is_err());
        // ...and validation refuses an empty count.
        assert!(
            plan(&["--idle", "--connections", "0"])
                .unwrap_err()
                .contains("--connections")
        );
        let p = plan(&["--idle", "--connections", "2000", "--duration", "3"]).unwrap();
        assert_eq!(p.duration, Duration::from_secs(3));
    }

    #[test]
    fn counts_and_durations() {
        assert!(
            plan(&["--publishers", "0"])
                .unwrap_err()
                .contains("--publishers")
        );
        assert!(plan(&["--subscribers", "0"]).is_ok());
        assert!(
            plan(&["--duration", "0"])
                .unwrap_err()
                .contains("--duration")
        );
        assert!(plan(&["--duration", "-1"]).is_err());
        assert!(plan(&["--duration", "NaN"]).is_err());
        assert_eq!(
            plan(&["--duration", "0.5"]).unwrap().duration,
            Duration::from_millis(500)
        );
        assert!(plan(&["--drain-timeout", "0"]).is_ok());
        assert!(
            plan(&["--qos", "1", "--inflight", "0"])
                .unwrap_err()
                .contains("--inflight")
        );
        assert!(plan(&["--qos", "1", "--inflight", "65536"]).is_err());
        // The window does not apply to QoS 0.
        assert!(plan(&["--inflight", "0"]).is_ok());
        assert!(plan(&["--connect-concurrency", "0"]).is_err());
    }

    #[test]
    fn topics_and_filters() {
        let args = parse(&["--topic", "fleet/{p}/telemetry"]).unwrap();
        assert_eq!(args.topic_for(7), "fleet/7/telemetry");
        assert!(
            plan(&["--topic", "bench/+/x"])
                .unwrap_err()
                .contains("--topic")
        );
        assert!(plan(&["--topic", "{p}"]).is_ok());
        assert!(
            plan(&["--filter", "bench/#/x"])
                .unwrap_err()
                .contains("--filter")
        );
        assert!(plan(&["--filter", "bench/+"]).is_ok());
        let shared = plan(&["--filter", "$share/g/bench/#"]).unwrap();
        assert!(shared.shared);
        assert_eq!(shared.plain_filter, "bench/#");
    }

    #[test]
    fn client_prefix() {
        assert_eq!(
            plan(&["--client-prefix", "run1"]).unwrap().client_prefix,
            "run1"
        );
    }
}
