//! The Lambda Runtime API one worker process talks to, on its own loopback port
//! (`AWS_LAMBDA_RUNTIME_API`): `GET /2018-06-01/runtime/invocation/next` hands it the next
//! event, `POST .../invocation/{id}/response` and `.../error` return the result,
//! `POST /2018-06-01/runtime/init/error` reports a handler that could not be loaded.
//!
//! A port per worker (rather than one shared listener) means the server always knows which
//! process holds which invocation, so a timeout kills exactly that process, and the published
//! runtime interface clients (which take `AWS_LAMBDA_RUNTIME_API` as `host:port`) work as well.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::{Invocation, MAX_RESPONSE_BYTES};

/// What the worker answered for the pending invocation.
#[derive(Debug)]
pub enum Reply {
    /// `/response`: the result.
    Response(Bytes),
    /// `/error`: the error document the runtime reported.
    Error(Bytes),
    /// `/init/error`: the handler could not be loaded.
    InitError(Bytes),
    /// The process ended (the text says how).
    Exited(String),
}

/// The invocation a worker is running.
pub struct Pending {
    /// Its request id (answers for another id are refused).
    pub request_id: String,
    /// Told when the worker fetched the event (the timeout runs from then).
    pub delivered: Option<oneshot::Sender<()>>,
    /// Told how it ended.
    pub reply: oneshot::Sender<Reply>,
}

/// State shared by a worker's Runtime API and its pool.
pub struct WorkerChannel {
    next: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    /// The invocation in progress.
    pub current: Mutex<Option<Pending>>,
}

impl WorkerChannel {
    /// A channel and the sender the pool hands invocations to.
    pub fn new() -> (Arc<WorkerChannel>, mpsc::Sender<Invocation>) {
        let (tx, rx) = mpsc::channel(1);
        (
            Arc::new(WorkerChannel {
                next: tokio::sync::Mutex::new(rx),
                current: Mutex::new(None),
            }),
            tx,
        )
    }

    /// Ends the pending invocation with `reply` (if its id is `request_id`, when given).
    pub fn finish(&self, request_id: Option<&str>, reply: Reply) -> bool {
        let mut current = self.current.lock();
        let matches = match (current.as_ref(), request_id) {
            (Some(pending), Some(id)) => pending.request_id == id,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if !matches {
            return false;
        }
        if let Some(pending) = current.take() {
            let _ = pending.reply.send(reply);
        }
        true
    }
}

/// The Runtime API of one worker.
pub fn routes(channel: Arc<WorkerChannel>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .layer(DefaultBodyLimit::max(MAX_RESPONSE_BYTES + 1))
        .with_state(channel)
}

fn epoch_ms(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// An X-Ray style trace id, as the `Lambda-Runtime-Trace-Id` header carries it.
fn trace_id(request_id: &str) -> String {
    let seconds = epoch_ms(SystemTime::now()) / 1000;
    let hex: String = request_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(24)
        .collect();
    format!(
        "Root=1-{seconds:08x}-{hex:0>24};Parent={};Sampled=0",
        &hex[..hex.len().min(16)]
    )
}

async fn next(State(channel): State<Arc<WorkerChannel>>) -> Response {
    let invocation = {
        let mut next = channel.next.lock().await;
        next.recv().await
    };
    let Some(invocation) = invocation else {
        return (StatusCode::GONE, "this worker is being stopped").into_response();
    };
    let started = Instant::now();
    if let Some(pending) = channel.current.lock().as_mut()
        && let Some(delivered) = pending.delivered.take()
    {
        let _ = delivered.send(());
    }
    let deadline = SystemTime::now() + invocation.timeout;
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set("lambda-runtime-aws-request-id", &invocation.request_id);
    set(
        "lambda-runtime-deadline-ms",
        &epoch_ms(deadline).to_string(),
    );
    set(
        "lambda-runtime-invoked-function-arn",
        &invocation.invoked_arn,
    );
    set("lambda-runtime-trace-id", &trace_id(&invocation.request_id));
    set("content-type", "application/json");
    if let Some(context) = &invocation.client_context {
        set("lambda-runtime-client-context", context);
    }
    tracing::trace!(request_id = %invocation.request_id, waited = ?started.elapsed(), "event handed to worker");
    (StatusCode::OK, headers, invocation.payload).into_response()
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
}

fn unknown(id: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        format!(r#"{{"errorMessage":"Invalid request ID: {id}","errorType":"InvalidRequestID"}}"#),
    )
        .into_response()
}

async fn response(
    State(channel): State<Arc<WorkerChannel>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let reply = if body.len() > MAX_RESPONSE_BYTES {
        Reply::Error(Bytes::from(format!(
            r#"{{"errorType":"Function.ResponseSizeTooLarge","errorMessage":"Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."}}"#
        )))
    } else {
        Reply::Response(body)
    };
    if channel.finish(Some(&id), reply) {
        accepted()
    } else {
        unknown(&id)
    }
}

async fn error(
    State(channel): State<Arc<WorkerChannel>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if channel.finish(Some(&id), Reply::Error(body)) {
        accepted()
    } else {
        unknown(&id)
    }
}

async fn init_error(State(channel): State<Arc<WorkerChannel>>, body: Bytes) -> Response {
    channel.finish(None, Reply::InitError(body));
    accepted()
}
