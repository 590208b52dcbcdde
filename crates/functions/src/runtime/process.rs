//! Pools of warm worker processes. Each worker is one process (the language's runtime
//! interface client, or the function's own `bootstrap`) with its own Runtime API port; an
//! invocation takes an idle worker, or starts one (a cold start), hands it the event and
//! waits for its answer until the deadline. A worker that times out, exits or fails to load
//! its handler is killed with its whole process group and never reused.
//!
//! Output (stdout and stderr) goes to a file per worker opened in append mode; after each
//! invocation the pool reads what was written and truncates the file. The runtime interface
//! clients flush before they post the result, so the output of an invocation is complete when
//! its answer arrives, without racing a pipe reader.

use std::ffi::OsString;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::runtime_api::{self, Pending, Reply, WorkerChannel};
use super::{Concurrency, Invocation, Outcome};
use crate::FunctionsError;
use crate::logs::MAX_INVOCATION_OUTPUT;

/// How long a new worker may take to load its handler and ask for its first event, on top of
/// the function's timeout. Lambda gives the init phase 10 s and, when that is not enough, runs
/// init again inside the invocation's own timeout; a busy machine (many workers starting at
/// once on two cores) needs that slack too, or slow starts are killed and restarted forever.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to start one worker of a function version.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The program (`python3`, `node`, or the function's `bootstrap`).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// The whole environment (nothing is inherited); `AWS_LAMBDA_RUNTIME_API` is added per worker.
    pub env: Vec<(String, String)>,
    /// The working directory (the function's code).
    pub cwd: PathBuf,
    /// `RLIMIT_DATA` in bytes: the memory limit of the process (heap and private mappings).
    pub data_limit: Option<u64>,
    /// Where the workers' output files live.
    pub run_dir: PathBuf,
}

/// The workers of one function version.
pub struct Pool {
    spec: WorkerSpec,
    /// Warm workers, each with the time it became idle (most recent last).
    idle: Mutex<Vec<(Worker, Instant)>>,
    concurrency: Concurrency,
    id: u64,
    next_worker: AtomicU64,
}

static NEXT_POOL: AtomicU64 = AtomicU64::new(1);

impl Pool {
    /// A pool running at most `concurrency` invocations at once; with `strict`, one more is
    /// refused (`TooManyRequestsException`) instead of queued.
    pub fn new(spec: WorkerSpec, concurrency: usize, strict: bool) -> Pool {
        Pool {
            spec,
            idle: Mutex::new(Vec::new()),
            concurrency: Concurrency::new(concurrency, strict),
            id: NEXT_POOL.fetch_add(1, Ordering::Relaxed),
            next_worker: AtomicU64::new(1),
        }
    }

    /// Stops the workers idle for longer than `ttl` (their memory goes back to the machine;
    /// the next invocation is a cold start again).
    pub fn reap(&self, ttl: Duration) {
        let stale: Vec<Worker> = {
            let mut idle = self.idle.lock();
            let (keep, stale): (Vec<_>, Vec<_>) =
                idle.drain(..).partition(|(_, since)| since.elapsed() < ttl);
            *idle = keep;
            stale.into_iter().map(|(worker, _)| worker).collect()
        };
        drop(stale);
    }

    /// Runs `invocation` on a warm worker, or a new one.
    pub async fn invoke(&self, invocation: Invocation) -> Result<Outcome, FunctionsError> {
        let _permit = self.concurrency.permit(invocation.when_busy).await?;
        let warm = loop {
            let Some((worker, _)) = self.idle.lock().pop() else {
                break None;
            };
            if worker.alive() {
                break Some(worker);
            }
        };
        let (mut worker, cold) = match warm {
            Some(worker) => (worker, false),
            None => (self.spawn()?, true),
        };
        let request_id = invocation.request_id.clone();
        let timeout = invocation.timeout;
        let (delivered_tx, delivered_rx) = oneshot::channel();
        let (reply_tx, mut reply_rx) = oneshot::channel();
        *worker.channel.current.lock() = Some(Pending {
            request_id: request_id.clone(),
            delivered: Some(delivered_tx),
            reply: reply_tx,
        });
        let queued = Instant::now();
        if worker.events.send(invocation).await.is_err() {
            return Err(FunctionsError::Io(
                "the worker stopped before the event".into(),
            ));
        }
        // The init phase (cold start) has its own limit; the timeout runs from delivery.
        let mut early = None;
        let init = tokio::select! {
            delivered = tokio::time::timeout(INIT_TIMEOUT + timeout, delivered_rx) => match delivered {
                Ok(Ok(())) => cold.then(|| queued.elapsed()),
                Ok(Err(_)) => None,
                Err(_) => {
                    early = Some(Reply::Exited(format!(
                        "the runtime did not ask for an event within {} s of starting",
                        (INIT_TIMEOUT + timeout).as_secs()
                    )));
                    None
                }
            },
            reply = &mut reply_rx => {
                early = Some(reply.unwrap_or_else(|_| Reply::Exited("the worker went away".into())));
                None
            }
        };
        let started = Instant::now();
        let reply = match early {
            Some(reply) => Some(reply),
            None => match tokio::time::timeout(timeout, reply_rx).await {
                Ok(Ok(reply)) => Some(reply),
                Ok(Err(_)) => Some(Reply::Exited("the worker went away".into())),
                Err(_) => None,
            },
        };
        let duration = started.elapsed();
        let (output, written) = worker.take_output();
        let mut outcome = match reply {
            Some(Reply::Response(body)) => Outcome {
                output,
                written,
                duration,
                init,
                ..Outcome::result(body)
            },
            Some(Reply::Error(body)) => Outcome {
                function_error: Some("Unhandled"),
                output,
                written,
                duration,
                init,
                ..Outcome::result(error_document(body, &request_id))
            },
            Some(Reply::InitError(body)) => {
                worker.kill();
                Outcome {
                    function_error: Some("Unhandled"),
                    output,
                    written,
                    duration,
                    init,
                    ..Outcome::result(error_document(body, &request_id))
                }
            }
            Some(Reply::Exited(how)) => {
                worker.kill();
                let mut outcome = Outcome::failed(
                    "Runtime.ExitError",
                    format!("RequestId: {request_id} Error: Runtime exited with error: {how}"),
                );
                outcome.output = output;
                outcome.written = written;
                outcome.duration = duration;
                outcome.init = init;
                outcome
            }
            None => {
                worker.kill();
                let seconds = timeout.as_secs_f64();
                let mut outcome = Outcome::failed(
                    "Sandbox.Timedout",
                    format!(
                        "RequestId: {request_id} Error: Task timed out after {seconds:.2} seconds"
                    ),
                );
                let mut output = output;
                output.extend_from_slice(
                    format!(
                        "{} {request_id} Task timed out after {seconds:.2} seconds\n",
                        crate::clock::iso8601_now()
                    )
                    .as_bytes(),
                );
                outcome.output = output;
                outcome.written = written;
                outcome.duration = duration;
                outcome.init = init;
                outcome
            }
        };
        if worker.alive() {
            self.idle.lock().push((worker, Instant::now()));
        }
        outcome.duration = duration;
        Ok(outcome)
    }

    fn spawn(&self) -> Result<Worker, FunctionsError> {
        let n = self.next_worker.fetch_add(1, Ordering::Relaxed);
        Worker::start(&self.spec, &format!("{}-{n}", self.id))
    }
}

/// A runtime's error report as the Invoke payload: its JSON as is, anything else wrapped.
fn error_document(body: Bytes, request_id: &str) -> Bytes {
    if serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v.is_object()) {
        return body;
    }
    Outcome::failed(
        "Runtime.Unknown",
        format!(
            "RequestId: {request_id} Error: the runtime reported an error that is not a JSON \
             object: {}",
            String::from_utf8_lossy(&body[..body.len().min(1024)])
        ),
    )
    .payload
}

/// One worker process, its Runtime API server and its output file.
struct Worker {
    channel: Arc<WorkerChannel>,
    events: mpsc::Sender<Invocation>,
    /// Dropping it kills the process group.
    kill: Option<oneshot::Sender<()>>,
    exited: Arc<std::sync::atomic::AtomicBool>,
    server: tokio::task::JoinHandle<()>,
    output: std::fs::File,
    output_path: PathBuf,
}

impl Worker {
    fn start(spec: &WorkerSpec, name: &str) -> Result<Worker, FunctionsError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| FunctionsError::io("binding a Runtime API port", e))?;
        let address = listener
            .local_addr()
            .map_err(|e| FunctionsError::io("binding a Runtime API port", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| FunctionsError::io("binding a Runtime API port", e))?;
        // No Nagle delay: a runtime client sends an invocation's result and the request for the
        // next event together (pipelined), so the answer to the first is not acknowledged
        // before the second is written, which Nagle would hold for the peer's delayed ACK.
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| FunctionsError::io("binding a Runtime API port", e))?
            .tap_io(|stream| {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "TCP_NODELAY on a Runtime API connection");
                }
            });
        let (channel, events) = WorkerChannel::new();
        let router = runtime_api::routes(Arc::clone(&channel));
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::warn!(%error, "a Runtime API server stopped");
            }
        });

        std::fs::create_dir_all(&spec.run_dir)
            .map_err(|e| FunctionsError::io(spec.run_dir.display(), e))?;
        let output_path = spec.run_dir.join(format!("worker-{name}.out"));
        let output = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&output_path)
            .map_err(|e| FunctionsError::io(output_path.display(), e))?;
        let appender = || {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&output_path)
                .map_err(|e| FunctionsError::io(output_path.display(), e))
        };

        let mut command = tokio::process::Command::new(&spec.program);
        command
            .args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(appender()?))
            .stderr(Stdio::from(appender()?))
            .process_group(0)
            .kill_on_drop(true);
        let data_limit = spec.data_limit;
        // SAFETY: the closure runs in the child between fork and exec, so it may only call
        // async-signal-safe functions: prctl(2) and setrlimit(2) are, and it touches no memory
        // of the parent beyond the copied `data_limit` and stack values.
        unsafe {
            command.pre_exec(move || {
                // A worker dies with the server (even on SIGKILL), so a crashed server leaves no
                // orphan finishing an invocation the restarted server runs again.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(limit) = data_limit {
                    let rlimit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_DATA, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| FunctionsError::io(format!("starting {}", spec.program.display()), e))?;
        metrics::counter!("fleetcore_functions_cold_starts_total").increment(1);
        let pid = child.id();
        let (kill, kill_rx) = oneshot::channel::<()>();
        let exited = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let channel = Arc::clone(&channel);
            let exited = Arc::clone(&exited);
            tokio::spawn(async move {
                let status = tokio::select! {
                    status = child.wait() => status,
                    _ = kill_rx => {
                        kill_group(pid);
                        let _ = child.start_kill();
                        child.wait().await
                    }
                };
                // A handler's own children must not outlive it either.
                kill_group(pid);
                exited.store(true, Ordering::Release);
                let how = match status {
                    Ok(status) => match (
                        status.code(),
                        std::os::unix::process::ExitStatusExt::signal(&status),
                    ) {
                        (Some(code), _) => format!("exit status {code}"),
                        (None, Some(signal)) => format!("signal: {signal}"),
                        (None, None) => status.to_string(),
                    },
                    Err(e) => format!("waiting for it failed: {e}"),
                };
                channel.finish(None, Reply::Exited(how));
            });
        }
        Ok(Worker {
            channel,
            events,
            kill: Some(kill),
            exited,
            server,
            output,
            output_path,
        })
    }

    fn alive(&self) -> bool {
        self.kill.is_some() && !self.exited.load(Ordering::Acquire)
    }

    fn kill(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }

    /// What the worker wrote since the last call (its end, at most the log's limit) and how
    /// much that was; the file is emptied. An invocation that wrote nothing costs one `fstat`.
    fn take_output(&mut self) -> (Vec<u8>, u64) {
        let written = self.output.metadata().map_or(0, |m| m.len());
        if written == 0 {
            return (Vec::new(), 0);
        }
        let keep = written.min(MAX_INVOCATION_OUTPUT as u64);
        let mut tail = vec![0; keep as usize];
        if let Err(error) = self.output.read_exact_at(&mut tail, written - keep) {
            tracing::warn!(%error, "could not read a worker's output");
            tail.clear();
        }
        if let Err(error) = self.output.set_len(0) {
            tracing::warn!(%error, "could not empty a worker's output file");
        }
        (tail, written)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
        self.server.abort();
        let _ = std::fs::remove_file(&self.output_path);
    }
}

/// Kills the process group led by `pid` (the worker and whatever its handler started).
fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory; a group that is already gone
    // gives ESRCH, which is ignored.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}
