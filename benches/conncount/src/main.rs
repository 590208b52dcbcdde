//! `conncount`: opens N idle MQTT connections to one broker from source addresses spread over
//! 127.0.0.0/8 (so ephemeral ports do not run out), holds them, measures the broker's resident
//! memory per connection, then publishes one message to each of a sample of them and checks that
//! every one arrives. Works against any MQTT 3.1.1 / 5 broker on loopback.
//!
//! ```text
//! conncount --port 1883 --connections 200000 --targets 1000 --broker-pid $(pidof fleetcore)
//! ```
//!
//! Prints a JSON report on stdout; exits non-zero unless every connection got in, none was
//! dropped, and every target received its message.

mod fleet;
mod limits;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use fleetcore_mqtt::protocol::ProtocolVersion;
use serde::Serialize;

use fleet::{Fleet, Plan, Tally};
use limits::SourceAddresses;

/// Hold many idle MQTT connections to one broker, then check that publishes reach a sample.
#[derive(Debug, Parser)]
#[command(name = "conncount", version)]
struct Args {
    /// Broker address (loopback only).
    #[arg(long, default_value = "127.0.0.1")]
    host: Ipv4Addr,
    /// Broker MQTT port (plain TCP).
    #[arg(long)]
    port: u16,
    /// Idle connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// How many of them subscribe to their own topic and must receive one publish each.
    #[arg(long, default_value_t = 1_000)]
    targets: usize,
    /// Connections per source address (127.1.0.1, 127.1.0.2, ...); below the ephemeral range.
    #[arg(long, default_value_t = 10_000)]
    per_source: usize,
    /// TCP + MQTT handshakes in progress at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// MQTT version: 3 (3.1.1) or 5.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(3..=5))]
    protocol: u8,
    /// Keep alive asked for in CONNECT, seconds (the tool pings at half of it; 0: none).
    #[arg(long, default_value_t = 600)]
    keep_alive: u16,
    /// Seconds the connections sit idle before the broker's memory is read.
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    /// Seconds to keep holding after the deliveries (drops are still counted).
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// Seconds the whole ramp may take.
    #[arg(long, default_value_t = 600.0)]
    connect_timeout: f64,
    /// Seconds the deliveries may take.
    #[arg(long, default_value_t = 30.0)]
    deliver_timeout: f64,
    /// PID of the broker, to report its resident memory per connection.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Client ids are `<prefix>-<i>`, target topics `<prefix>/<i>`.
    #[arg(long)]
    prefix: Option<String>,
    /// Progress lines on stderr.
    #[arg(long)]
    progress: bool,
}

/// The broker's resident memory over the run.
#[derive(Debug, Serialize)]
struct BrokerMemory {
    pid: u32,
    /// Before the first connection.
    before_kib: u64,
    /// After every connection sat idle for `--settle` seconds.
    connected_kib: u64,
    /// After the deliveries.
    delivered_kib: u64,
    /// `(connected - before) / connected connections`.
    per_connection_kib: f64,
}

/// What a run reports.
#[derive(Debug, Serialize)]
struct Report {
    broker: String,
    protocol: u8,
    connections: usize,
    source_addresses: usize,
    ephemeral_ports_per_source: u32,
    open_files_limit: u64,
    #[serde(flatten)]
    tally: Tally,
    open_after_hold: usize,
    ramp_s: f64,
    connects_per_s: f64,
    targets: usize,
    deliver_ms: f64,
    broker_memory: Option<BrokerMemory>,
    tool_rss_kib: Option<u64>,
    ok: bool,
}

fn main() {
    let args = Args::parse();
    match run(args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("conncount: {e:#}");
            std::process::exit(2);
        }
    }
}

fn run(args: Args) -> anyhow::Result<bool> {
    if !args.host.is_loopback() {
        bail!("--host must be a loopback address (127.0.0.0/8): the load stays on this machine");
    }
    if args.targets > args.connections {
        bail!(
            "--targets ({}) exceeds --connections ({})",
            args.targets,
            args.connections
        );
    }
    let ports = limits::ephemeral_ports()?;
    if args.per_source as u64 >= u64::from(ports) {
        bail!(
            "--per-source {} does not fit the {ports} ephemeral ports of one address \
             (net.ipv4.ip_local_port_range); lower it",
            args.per_source
        );
    }
    // One more address for the publisher.
    let sources = SourceAddresses::new(args.per_source, args.connections + 1)?;
    let open_files_limit = limits::raise_open_files(args.connections)?;
    let version = match args.protocol {
        5 => ProtocolVersion::V5,
        3 | 4 => ProtocolVersion::V311,
        _ => unreachable!("clap limits --protocol to 3..=5"),
    };
    let secs = |v: f64, flag: &str| {
        Duration::try_from_secs_f64(v).with_context(|| format!("--{flag} must be >= 0 seconds"))
    };
    let plan = Plan {
        target: SocketAddr::new(IpAddr::V4(args.host), args.port),
        connections: args.connections,
        targets: args.targets,
        concurrency: args.concurrency.max(1),
        sources,
        keep_alive: args.keep_alive,
        version,
        prefix: args
            .prefix
            .clone()
            .unwrap_or_else(|| format!("cc{}", std::process::id())),
        connect_timeout: secs(args.connect_timeout, "connect-timeout")?,
        deliver_timeout: secs(args.deliver_timeout, "deliver-timeout")?,
        progress: args.progress,
    };
    let rss = |pid: Option<u32>| pid.map(read_rss_kib).transpose();

    let before = rss(args.broker_pid)?;
    let mut fleet = Fleet::new(plan).context("creating the epoll instance")?;
    let ramp_start = Instant::now();
    fleet.ramp().context("ramp")?;
    let ramp = ramp_start.elapsed();
    if args.progress {
        eprintln!(
            "  ramp done: {} connected, {} failed in {:.1} s; settling {} s",
            fleet.tally.connected,
            fleet.tally.failed,
            ramp.as_secs_f64(),
            args.settle
        );
    }
    fleet.hold(secs(args.settle, "settle")?)?;
    let connected = rss(args.broker_pid)?;
    let deliver = fleet
        .deliver(sources.of(args.connections))
        .context("deliveries")?;
    let delivered = rss(args.broker_pid)?;
    fleet.hold(secs(args.hold, "hold")?)?;
    let open_after_hold = fleet.open_count();
    let tool_rss_kib = read_rss_kib(std::process::id()).ok();
    fleet.close_all();

    let tally = fleet.tally.clone();
    let ok = tally.connected == args.connections as u64
        && tally.failed == 0
        && tally.dropped == 0
        && tally.subscribed == args.targets as u64
        && tally.delivered == args.targets as u64
        && tally.misdelivered == 0
        && open_after_hold == args.connections;
    let broker_memory = match (args.broker_pid, before, connected, delivered) {
        (Some(pid), Some(before_kib), Some(connected_kib), Some(delivered_kib)) => {
            Some(BrokerMemory {
                pid,
                before_kib,
                connected_kib,
                delivered_kib,
                per_connection_kib: round2(
                    (connected_kib as f64 - before_kib as f64) / tally.connected.max(1) as f64,
                ),
            })
        }
        _ => None,
    };
    let report = Report {
        broker: args
            .broker_pid
            .and_then(process_name)
            .unwrap_or_else(|| "unknown".into()),
        protocol: args.protocol,
        connections: args.connections,
        source_addresses: sources.count(args.connections),
        ephemeral_ports_per_source: ports,
        open_files_limit,
        open_after_hold,
        ramp_s: round2(ramp.as_secs_f64()),
        connects_per_s: round2(tally.connected as f64 / ramp.as_secs_f64().max(1e-9)),
        targets: args.targets,
        deliver_ms: round2(deliver.as_secs_f64() * 1000.0),
        broker_memory,
        tool_rss_kib,
        ok,
        tally,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ok)
}

/// VmRSS of `pid`, in KiB.
fn read_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {path} (is --broker-pid {pid} running?)"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .with_context(|| format!("no VmRSS line in {path}"))?;
    line["VmRSS:".len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unreadable VmRSS line in {path}: {line}"))
}

fn process_name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim().to_owned())
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
