//! Idle-connection mode: open many connections with a bounded number of handshakes in flight,
//! hold them (answering keep-alive) for the run's duration and measure what that costs the
//! broker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fleetcore_mqtt::protocol::Packet;
use tokio::io::AsyncReadExt;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::conn::{ConnectError, Link, Target};
use super::publisher::keep_alive_interval;
use super::report::{BrokerMemory, IdleReport, Latency, read_rss_kib, round2};
use super::subscriber::new_latency_histogram;

/// What an idle run does.
pub(crate) struct IdlePlan {
    pub connections: u64,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    /// How long to hold the connections once all are up.
    pub hold: Duration,
    pub client_prefix: String,
    pub broker_pid: Option<u32>,
    /// Print a progress line each second on stderr.
    pub progress: bool,
}

/// Runs the idle mode; `report` is filled in except for the broker/protocol labels.
pub(crate) async fn run(
    target: Arc<Target>,
    plan: IdlePlan,
    mut report: IdleReport,
) -> anyhow::Result<IdleReport> {
    let rss_before = plan.broker_pid.map(read_rss_kib).transpose()?;
    let permits = Arc::new(Semaphore::new(plan.concurrency));
    let (stop_tx, stop_rx) = watch::channel(false);
    let dropped = Arc::new(AtomicU64::new(0));
    // Each task sends exactly one outcome, so the channel never holds more than `connections`.
    let capacity = usize::try_from(plan.connections)
        .unwrap_or(usize::MAX)
        .clamp(1, 1 << 20);
    let (up_tx, mut up_rx) = mpsc::channel::<Result<Duration, ConnectError>>(capacity);
    let mut tasks = JoinSet::new();
    let ramp_start = Instant::now();
    for i in 0..plan.connections {
        let target = Arc::clone(&target);
        let permits = Arc::clone(&permits);
        let up_tx = up_tx.clone();
        let stop = stop_rx.clone();
        let dropped = Arc::clone(&dropped);
        let client_id = format!("{}-idle-{i}", plan.client_prefix);
        tasks.spawn(async move {
            let Ok(permit) = permits.acquire_owned().await else {
                return;
            };
            let begun = Instant::now();
            let result = target.connect(&client_id, None, 512).await;
            drop(permit);
            match result {
                Ok(link) => {
                    let _ = up_tx.send(Ok(begun.elapsed())).await;
                    drop(up_tx);
                    hold(link, stop, dropped).await;
                }
                Err(e) => {
                    let _ = up_tx.send(Err(e)).await;
                }
            }
        });
    }
    drop(up_tx);

    let mut latency = new_latency_histogram();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut done = 0u64;
    while done < plan.connections {
        tokio::select! {
            outcome = up_rx.recv() => {
                let Some(outcome) = outcome else { break };
                done += 1;
                match outcome {
                    Ok(took) => {
                        report.connected += 1;
                        let _ = latency.record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
                    }
                    Err(e) => {
                        report.failed += 1;
                        *report.failures.entry(e.kind()).or_insert(0) += 1;
                        report.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            _ = tick.tick(), if plan.progress => {
                eprintln!(
                    "  ramp: {} connected, {} failed of {} ({:.1} s)",
                    report.connected, report.failed, plan.connections, ramp_start.elapsed().as_secs_f64()
                );
            }
        }
    }
    let ramp = ramp_start.elapsed();
    let rss_connected = plan.broker_pid.map(read_rss_kib).transpose()?;
    if report.connected == 0 {
        stop_tx.send_replace(true);
        tasks.shutdown().await;
        anyhow::bail!(
            "no connection succeeded: {}",
            report.first_error.as_deref().unwrap_or("unknown error")
        );
    }
    if plan.progress {
        eprintln!(
            "  all {} connected; holding for {:.1} s",
            report.connected,
            plan.hold.as_secs_f64()
        );
    }

    let hold_start = Instant::now();
    tokio::time::sleep(plan.hold).await;
    report.hold_s = round2(hold_start.elapsed().as_secs_f64());
    report.dropped = dropped.load(Ordering::Relaxed);
    let rss_end = plan.broker_pid.map(read_rss_kib).transpose()?;
    stop_tx.send_replace(true);
    // Closing is bounded by each link's own DISCONNECT timeout.
    while tasks.join_next().await.is_some() {}

    report.ramp_s = round2(ramp.as_secs_f64());
    report.connects_per_s = round2(report.connected as f64 / ramp.as_secs_f64().max(1e-9));
    report.connect_latency_us = Latency::from_histogram(&latency, 1000.0);
    if let (Some(pid), Some(before), Some(connected), Some(end)) =
        (plan.broker_pid, rss_before, rss_connected, rss_end)
    {
        report.broker_memory = Some(BrokerMemory::new(
            pid,
            before,
            connected,
            end,
            report.connected,
        ));
    }
    Ok(report)
}

/// Holds one connection: answers nothing, pings on keep-alive, notices if the broker drops it.
async fn hold(mut link: Link, mut stop: watch::Receiver<bool>, dropped: Arc<AtomicU64>) {
    let keep_alive = keep_alive_interval(link.keep_alive);
    let mut next_ping = keep_alive.map(|ka| Instant::now() + ka);
    loop {
        if *stop.borrow_and_update() {
            link.close().await;
            return;
        }
        let ping = async {
            match next_ping {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            read = link.rd.read_buf(&mut link.rbuf) => {
                let closed = !matches!(read, Ok(n) if n > 0);
                // Anything but PINGRESP (or undecodable bytes) is not expected; only a close matters.
                let broken = loop {
                    match link.decode() {
                        Ok(Some(Packet::Disconnect(_))) | Err(_) => break true,
                        Ok(Some(_)) => {}
                        Ok(None) => break false,
                    }
                };
                if closed || broken {
                    if !*stop.borrow() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
            }
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = ping => {
                if link.send(&Packet::PingReq).await.is_err() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                next_ping = keep_alive.map(|ka| Instant::now() + ka);
            }
        }
    }
}
