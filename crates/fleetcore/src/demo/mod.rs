//! `fleetcore demo`: the whole reference architecture in one command. Starts a server on
//! loopback with a temporary (or given) data folder, applies the reference stack through the
//! HTTP API, and runs a simulated fleet — each device its own thing and certificate over mTLS —
//! publishing telemetry with occasional threshold breaches and answering shadow deltas. Prints
//! where to look and a status line until Ctrl-C, then stops the fleet and the server cleanly.

mod device;
mod stack_files;
mod status;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fleetcore_mqtt::protocol::ProtocolVersion;
use fleetcore_stack::resources::Action;
use fleetcore_stack::{Api, Stack, VarInputs};
use tokio::sync::watch;

use crate::bench::conn::{Target, TlsTarget};
use crate::cli::client::ApiClient;
use device::FleetCounters;

/// `fleetcore demo` options.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Devices in the simulated fleet (each its own thing, certificate and mTLS connection).
    #[arg(long, default_value_t = 50)]
    pub devices: u32,
    /// Data folder to use (kept afterwards). Default: a temporary folder, removed on exit.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server's HTTP API address.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub http: SocketAddr,
    /// The server's MQTT over TLS (mTLS) address.
    #[arg(long, default_value = "127.0.0.1:8883", value_name = "ADDR")]
    pub mqtts: SocketAddr,
}

/// Runs the demo until Ctrl-C (or SIGTERM).
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let (data_dir, temporary) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("fleetcore-demo-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let outcome = demo(&args, &data_dir).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    outcome
}

async fn demo(args: &DemoArgs, data_dir: &Path) -> anyhow::Result<()> {
    println!("fleetcore demo: data folder {}", data_dir.display());
    let mut server = start_server(args, data_dir)?;
    let result = with_server(args, data_dir).await;
    stop_server(&mut server).await;
    result
}

async fn with_server(args: &DemoArgs, data_dir: &Path) -> anyhow::Result<()> {
    wait_healthy(args.http, Duration::from_secs(60)).await?;
    println!(
        "server up: http://{} (mTLS MQTT on {})",
        args.http, args.mqtts
    );

    let stack_dir = data_dir.join("reference-stack");
    for (name, bytes) in stack_files::FILES {
        let path = stack_dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    let inputs = VarInputs {
        files: Vec::new(),
        vars: vec![("device_count".to_string(), args.devices.to_string())],
    };
    let stack = Stack::load(&stack_dir, &inputs)?;
    let credentials = crate::stack::data_dir_credentials(data_dir)?;
    let client = ApiClient::with_credentials(&args.http.to_string(), "us-east-1", credentials);
    let api = Api::new(Arc::new(crate::stack::SignedHttp(client)));
    let mut state = stack.state()?;
    print!("applying the reference stack ({} devices)...", args.devices);
    let mut progress = |_: &str, _: &Action| {};
    let plan = stack.apply(&api, &mut state, &mut progress).await?;
    println!(" {} resources", plan.changes.len());

    let output = |name: &str| plan.outputs.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let threshold = output("temperature_threshold")
        .and_then(|v| v.as_f64())
        .unwrap_or(30.0);
    let named = |name: &str| -> anyhow::Result<String> {
        output(name)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .with_context(|| format!("the reference stack has no `{name}` output"))
    };
    let watched = status::Watched {
        detector_model: named("detector_model")?,
        alarm_model: named("alarm_model")?,
        security_profile: named("security_profile")?,
    };
    let stream = named("stream_name")?;
    let bucket = named("lake_bucket")?;
    let targets = device_targets(args, data_dir, &state)?;
    let targets_things: Vec<String> = targets.iter().map(|(thing, _)| thing.clone()).collect();

    println!();
    println!("Where to look:");
    println!(
        "  console:    http://{}/console (access key and secret: {})",
        args.http,
        data_dir.join("credentials").display()
    );
    println!("  metrics:    http://{}/metrics", args.http);
    println!(
        "  lake:       {} (gzip NDJSON, partitioned by hour)",
        data_dir.join("lake").join(&bucket).display()
    );
    println!(
        "  stack:      {} (state: fleetcore.tfstate.json)",
        stack_dir.display()
    );
    println!(
        "  the stream: AWS_SHARED_CREDENTIALS_FILE={} AWS_PROFILE=fleetcore aws --endpoint-url http://{} --region us-east-1 kinesis get-records --shard-iterator \"$(aws --endpoint-url http://{} --region us-east-1 kinesis get-shard-iterator --stream-name {} --shard-id shardId-000000000000 --shard-iterator-type TRIM_HORIZON --query ShardIterator --output text)\"",
        data_dir.join("credentials").display(),
        args.http,
        args.http,
        stream
    );
    let alert_topic = output("alert_topic")
        .and_then(|v| v.as_str())
        .unwrap_or("?");
    println!(
        "  alerts:     MQTT topic {alert_topic} (SNS topic fleet-alerts: detector {}, alarm {}, Device Defender profile {})",
        watched.detector_model, watched.alarm_model, watched.security_profile
    );
    println!("Ctrl-C stops the fleet and the server.");
    println!();

    let counters = Arc::new(FleetCounters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut fleet = tokio::task::JoinSet::new();
    for (i, (thing, target)) in targets.into_iter().enumerate() {
        fleet.spawn(device::run(
            Arc::new(target),
            thing,
            i as u64,
            threshold,
            Arc::clone(&counters),
            stop_rx.clone(),
        ));
    }

    let things: Vec<String> = targets_things;
    let started = Instant::now();
    let (mut last, mut last_at) = (0, Instant::now());
    let mut desired_sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Listeners made once: a signal that lands while the status line is being gathered is
    // kept for the next poll instead of being missed.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Every 5 s an operator changes one device's desired state (round robin); the
                // device answers the delta by reporting it.
                let due = started.elapsed().as_secs() / 5;
                if due > desired_sent && !things.is_empty() {
                    let thing = &things[(desired_sent as usize) % things.len()];
                    if status::set_desired(&api, thing, 1 + desired_sent % 5).await.is_ok() {
                        desired_sent = due;
                    }
                }
                let sent = counters.telemetry.load(Ordering::Relaxed);
                let metrics = get(args.http, "/metrics").await.map(|(_, text)| text).unwrap_or_default();
                let server = status::line(&api, &watched).await;
                let rate = (sent - last) as f64 / last_at.elapsed().as_secs_f64().max(0.001);
                println!(
                    "[{:>4}s] devices {}/{} | telemetry {} ({:.0}/s) | breaches {} | deltas answered {} | rule actions {} | alerts delivered {} | lake objects {} | {server}",
                    started.elapsed().as_secs(),
                    counters.connected.load(Ordering::Relaxed),
                    args.devices,
                    sent,
                    rate,
                    counters.breaches.load(Ordering::Relaxed),
                    counters.deltas.load(Ordering::Relaxed),
                    rule_actions(&metrics),
                    status::alerts_delivered(&metrics),
                    count_files(&data_dir.join("lake")),
                );
                (last, last_at) = (sent, Instant::now());
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    println!("\nstopping the fleet...");
    let _ = stop_tx.send(true);
    while fleet.join_next().await.is_some() {}
    Ok(())
}

/// An mTLS target per device, from the certificates the stack created (kept in its state).
fn device_targets(
    args: &DemoArgs,
    data_dir: &Path,
    state: &fleetcore_stack::State,
) -> anyhow::Result<Vec<(String, Target)>> {
    let ca = data_dir.join("ca").join("ca.pem");
    let devices = data_dir.join("devices");
    let mut out = Vec::new();
    for i in 0..args.devices {
        let thing = state
            .get(&format!("aws_iot_thing.device[{i}]"))
            .and_then(|r| {
                r.arguments
                    .get("name")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            })
            .with_context(|| format!("the stack made no aws_iot_thing.device[{i}]"))?;
        let cert = state
            .get(&format!("aws_iot_certificate.device[{i}]"))
            .with_context(|| format!("the stack made no aws_iot_certificate.device[{i}]"))?;
        let dir = devices.join(&thing);
        std::fs::create_dir_all(&dir)?;
        let pem = cert.attributes["certificate_pem"]
            .as_str()
            .unwrap_or_default();
        let key = cert.attributes["private_key"].as_str().unwrap_or_default();
        std::fs::write(dir.join("cert.pem"), pem)?;
        std::fs::write(dir.join("private.key"), key)?;
        let tls = TlsTarget::new(
            &ca,
            Some((&dir.join("cert.pem"), &dir.join("private.key"))),
            "localhost",
        )?;
        out.push((
            thing,
            Target {
                addrs: vec![args.mqtts],
                tls: Some(tls),
                version: ProtocolVersion::V5,
                keep_alive: 30,
                connect_timeout: Duration::from_secs(15),
                max_packet_size: 1024 * 1024,
            },
        ));
    }
    Ok(out)
}

fn start_server(args: &DemoArgs, data_dir: &Path) -> anyhow::Result<tokio::process::Child> {
    let exe = std::env::current_exe().context("finding the fleetcore binary")?;
    let log = std::fs::File::create(data_dir.join("server.log"))?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--http")
        .arg(args.http.to_string())
        .arg("--mqtts")
        .arg(args.mqtts.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        // Its own process group: Ctrl-C reaches the demo only, which stops the fleet first and
        // then the server.
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2),
    // which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            // The server dies with the demo, even if the demo is killed.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().context("starting the server")
}

async fn stop_server(server: &mut tokio::process::Child) {
    if let Some(pid) = server.id().and_then(|p| i32::try_from(p).ok()) {
        println!("stopping the server...");
        // SAFETY: kill(2) takes plain integers and touches no memory; the pid is our own child,
        // not yet reaped, so it cannot have been reused.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    match tokio::time::timeout(Duration::from_secs(30), server.wait()).await {
        Ok(_) => {}
        Err(_) => {
            let _ = server.kill().await;
        }
    }
}

async fn wait_healthy(http: SocketAddr, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if get(http, "/health")
            .await
            .map(|(status, _)| status == 200)
            .unwrap_or(false)
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the server did not become healthy within {within:?} (see server.log in the data folder)"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plain GET on the server: (status, body).
async fn get(http: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(http).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", http.to_string())
        .body(Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The rule actions delivered so far, from `/metrics` text.
fn rule_actions(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("fleetcore_rules_action_succeeded_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() { count_files(&path) } else { 1 }
        })
        .sum()
}
