//! The shadow service: requests from MQTT (through the broker's service tap) and HTTP go into
//! one bounded queue, and two threads work through it in batches (group commit):
//!
//! 1. the worker drains up to `max_batch` requests and applies them in memory, in order (one
//!    thread, so updates to a shadow are serialized and none is lost);
//! 2. the committer writes the batch's changed documents in ONE store transaction (one fsync
//!    for the whole batch), and only then publishes the answers.
//!
//! The worker applies the next batch while the committer writes the previous one (at most
//! [`PIPELINE_DEPTH`] batches in flight). If a commit fails, that batch and every batch built
//! on it are answered with 500, and the worker reloads from the store.
//!
//! Shared by several nodes ([`ShadowConfig::shared`], a cluster on PostgreSQL), the worker keeps
//! no cache (each batch reads the store, after this node's earlier commits), and the committer
//! writes each changed shadow by compare-and-set against the bytes the batch read: a shadow
//! another node changed in between is not written, and its requests of the batch go back to the
//! queue to run again on the new state (a stale `version` is then refused with 409, as on one
//! node), up to [`MAX_ATTEMPTS`] times (then 503). So the optimistic version holds across nodes.
//!
//! Backpressure: the queue is bounded. When it is full the request is refused at once with
//! code 429 (`/rejected` over MQTT, `ThrottlingException` over HTTP); the broker's connection
//! task never waits and memory never grows without bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TrySendError, channel, sync_channel};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fleetcore_core::{KvStore, WriteBatch};
use fleetcore_mqtt::broker::{Message, Router, ServiceTap};
use fleetcore_mqtt::protocol::{PublishProperties, QoS, Utf8};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::ShadowError;
use crate::document::{Limits, ShadowDocument};
use crate::request::{SectionPatch, parse_plain, parse_update};
use crate::response;
use crate::store::{ShadowRecord, ShadowStore, VERSION_MEMORY_SECS};
use crate::topic::{Operation, REQUEST_FILTERS, RequestTopic, ShadowId};

/// Settings of the shadow service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShadowConfig {
    /// Document limits.
    pub limits: Limits,
    /// Requests waiting for the worker; more are refused with 429.
    pub queue_capacity: usize,
    /// Most requests applied and committed together.
    pub max_batch: usize,
    /// Committed shadows kept in memory (the store is read on a miss).
    pub cache_capacity: usize,
    /// Other nodes write the same shadows (a cluster sharing them in PostgreSQL): no cache,
    /// and each write is a compare-and-set.
    pub shared: bool,
}

impl Default for ShadowConfig {
    fn default() -> ShadowConfig {
        ShadowConfig {
            limits: Limits::default(),
            queue_capacity: 16 * 1024,
            max_batch: 2048,
            cache_capacity: 100_000,
            shared: false,
        }
    }
}

/// Batches applied in memory and waiting for (or in) their commit.
const PIPELINE_DEPTH: usize = 1;

/// Runs of a request whose shadow another node kept changing before it is refused (503).
const MAX_ATTEMPTS: u8 = 8;

/// Seconds since the Unix epoch (shadow timestamps are seconds).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

type HttpReply = oneshot::Sender<Result<Bytes, ShadowError>>;

/// Where the answer to a request goes.
enum Reply {
    /// Over MQTT, on the shadow's response topics.
    Mqtt,
    /// To an HTTP handler (and, for update and delete, the MQTT notifications too).
    Http(HttpReply),
}

struct Job {
    /// Earlier runs lost to another node's write (shared shadows).
    attempts: u8,
    id: ShadowId,
    operation: Operation,
    payload: Bytes,
    reply: Reply,
}

enum Work {
    Job(Job),
    Stop,
}

/// The shadow service's handle: cheap to clone.
#[derive(Clone)]
pub struct ShadowService {
    inner: Arc<Inner>,
}

struct Inner {
    queue: SyncSender<Work>,
    store: ShadowStore,
    router: Arc<Router>,
    stopped: AtomicBool,
    worker: Mutex<Option<JoinHandle<()>>>,
    metrics: Metrics,
    /// Bumped by the committer when a commit fails: batches built before the worker saw the
    /// bump rest on state that never reached the disk, and are refused.
    epoch: AtomicU64,
}

#[derive(Clone)]
struct Metrics {
    accepted: metrics::Counter,
    rejected: metrics::Counter,
    throttled: metrics::Counter,
    commits: metrics::Counter,
    batch_size: metrics::Histogram,
    commit_seconds: metrics::Histogram,
}

impl Metrics {
    fn register() -> Metrics {
        Metrics {
            accepted: metrics::counter!("fleetcore_shadow_requests_total", "result" => "accepted"),
            rejected: metrics::counter!("fleetcore_shadow_requests_total", "result" => "rejected"),
            throttled: metrics::counter!("fleetcore_shadow_requests_total", "result" => "throttled"),
            commits: metrics::counter!("fleetcore_shadow_commits_total"),
            batch_size: metrics::histogram!("fleetcore_shadow_batch_size"),
            commit_seconds: metrics::histogram!("fleetcore_shadow_commit_seconds"),
        }
    }
}

impl ShadowService {
    /// Starts the service on `store` and registers it as a tap on `router` for the shadow
    /// request topics (see [`REQUEST_FILTERS`]).
    pub fn start(
        config: ShadowConfig,
        store: Arc<dyn KvStore>,
        router: Arc<Router>,
    ) -> std::io::Result<ShadowService> {
        let (queue, jobs) = sync_channel(config.queue_capacity.max(1));
        let inner = Arc::new(Inner {
            queue,
            store: ShadowStore::new(store),
            router: Arc::clone(&router),
            stopped: AtomicBool::new(false),
            worker: Mutex::new(None),
            metrics: Metrics::register(),
            epoch: AtomicU64::new(0),
        });
        // Two stages: the worker applies batches in memory, the committer commits each batch
        // and then answers it. The worker runs at most PIPELINE_DEPTH batches ahead.
        let (to_committer, pending) = sync_channel(PIPELINE_DEPTH);
        let (done_tx, done) = channel();
        let committer = Committer {
            inner: Arc::clone(&inner),
            done: done_tx,
        };
        let committer = std::thread::Builder::new()
            .name("shadow-commit".into())
            .spawn(move || committer.run(pending))?;
        let worker = Worker {
            inner: Arc::clone(&inner),
            config,
            cache: HashMap::new(),
            epoch: 0,
            to_committer: Some(to_committer),
            done,
            in_flight: 0,
        };
        let handle = std::thread::Builder::new()
            .name("shadow-worker".into())
            .spawn(move || worker.run(jobs, committer))?;
        if let Ok(mut slot) = inner.worker.lock() {
            *slot = Some(handle);
        }
        // The tap holds the service weakly: the router must not keep it (and so itself,
        // through the service's handle on it) alive.
        let service = ShadowService { inner };
        let tap = Arc::new(ShadowTap {
            inner: Arc::downgrade(&service.inner),
        });
        let filters = REQUEST_FILTERS.iter().map(|f| f.to_string()).collect();
        if let Err(e) = router.add_tap(filters, tap) {
            // Stop the threads just started: the service could never receive MQTT requests.
            let _ = service.inner.queue.send(Work::Stop);
            return Err(std::io::Error::other(e));
        }
        Ok(service)
    }

    /// Runs one request for an HTTP caller; the answer is the response document (JSON).
    /// Update and delete also publish their MQTT notifications, as AWS does.
    pub async fn request(
        &self,
        id: ShadowId,
        operation: Operation,
        payload: Bytes,
    ) -> Result<Bytes, ShadowError> {
        let (tx, rx) = oneshot::channel();
        self.inner.submit(Job {
            attempts: 0,
            id,
            operation,
            payload,
            reply: Reply::Http(tx),
        })?;
        rx.await.map_err(|_| ShadowError::Unavailable)?
    }

    /// The committed document of a shadow as GetThingShadow shows it (with delta), or `None`.
    /// For in-process readers such as the rules engine's `get_thing_shadow()`.
    pub fn get(
        &self,
        thing: &str,
        shadow_name: Option<&str>,
    ) -> Result<Option<Value>, ShadowError> {
        let id = ShadowId::new(thing, shadow_name)?;
        let record = self.inner.store.load(&id)?;
        Ok(record
            .as_ref()
            .and_then(ShadowRecord::live)
            .map(|doc| response::get_accepted(doc, now_secs(), None)))
    }

    /// Names of `thing`'s named shadows (not the classic one), a page of at most `page_size`
    /// after `next_token`; the second value is the token of the next page.
    pub fn list_named(
        &self,
        thing: &str,
        next_token: Option<&str>,
        page_size: usize,
    ) -> Result<(Vec<String>, Option<String>), ShadowError> {
        crate::topic::validate_thing_name(thing)?;
        let (names, more) = self
            .inner
            .store
            .named_shadows(thing, next_token, page_size.max(1))?;
        let next = if more { names.last().cloned() } else { None };
        Ok((names, next))
    }

    /// Stops the worker after the requests already queued; later requests get 503.
    pub async fn shutdown(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        let inner = Arc::clone(&self.inner);
        let joined = tokio::task::spawn_blocking(move || {
            let _ = inner.queue.send(Work::Stop);
            let handle = inner.worker.lock().ok().and_then(|mut h| h.take());
            if let Some(handle) = handle {
                let _ = handle.join();
            }
        })
        .await;
        if let Err(e) = joined {
            tracing::warn!(error = %e, "the shadow worker did not stop cleanly");
        }
    }
}

impl Inner {
    fn submit(&self, job: Job) -> Result<(), ShadowError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(ShadowError::Unavailable);
        }
        match self.queue.try_send(Work::Job(job)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.metrics.throttled.increment(1);
                Err(ShadowError::Throttled)
            }
            Err(TrySendError::Disconnected(_)) => Err(ShadowError::Unavailable),
        }
    }

    fn publish(&self, topic: String, payload: Bytes) {
        let Some(topic) = Utf8::new(topic) else {
            return;
        };
        self.router.publish(Arc::new(Message {
            topic,
            payload,
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: PublishProperties::default(),
            expires_at: None,
            origin: None,
        }));
    }

    fn reject_mqtt(
        &self,
        prefix: &str,
        operation: Operation,
        error: &ShadowError,
        token: Option<&str>,
    ) {
        self.metrics.rejected.increment(1);
        self.publish(
            format!("{prefix}/{}/rejected", operation.as_str()),
            json_bytes(&response::rejected(error, now_secs(), token)),
        );
    }
}

/// The client token of a payload, for rejections that happen before it is parsed properly.
fn token_of(payload: &[u8]) -> Option<String> {
    parse_plain(payload).ok().and_then(|p| p.client_token)
}

/// The service as the broker sees it: requests come in through [`ServiceTap::on_message`].
struct ShadowTap {
    inner: Weak<Inner>,
}

impl ServiceTap for ShadowTap {
    fn on_message(&self, message: &Arc<Message>) {
        let Some(request) = RequestTopic::parse(&message.topic) else {
            return;
        };
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let id = match ShadowId::new(request.thing, request.name) {
            Ok(id) => id,
            Err(error) => {
                inner.reject_mqtt(
                    &request.prefix(),
                    request.operation,
                    &error,
                    token_of(&message.payload).as_deref(),
                );
                return;
            }
        };
        let job = Job {
            attempts: 0,
            id,
            operation: request.operation,
            payload: message.payload.clone(),
            reply: Reply::Mqtt,
        };
        if let Err(error) = inner.submit(job) {
            inner.reject_mqtt(
                &request.prefix(),
                request.operation,
                &error,
                token_of(&message.payload).as_deref(),
            );
        }
    }
}

/// Serializes a response document. Done on the worker, so the many small allocations of a
/// JSON tree are made and freed on one thread; only the bytes travel on.
fn json_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// What an accepted request answers, serialized.
enum Answer {
    Updated {
        accepted: Bytes,
        delta: Option<Bytes>,
        documents: Bytes,
    },
    Got(Bytes),
    Deleted(Bytes),
}

struct Outcome {
    job: Job,
    result: Result<Answer, (ShadowError, Option<String>)>,
}

/// A batch applied in memory, on its way to the disk.
struct Pending {
    /// The epoch the batch was built in.
    epoch: u64,
    writes: WriteBatch,
    /// Shared shadows: each changed shadow, the bytes the batch read (`None`: absent) and its
    /// new record, written by compare-and-set instead of `writes`.
    guarded: Vec<(ShadowId, Option<Vec<u8>>, ShadowRecord)>,
    outcomes: Vec<Outcome>,
}

/// First stage: applies batches in memory, in arrival order (one thread, so updates to a
/// shadow are serialized).
struct Worker {
    inner: Arc<Inner>,
    config: ShadowConfig,
    /// Records as the batches applied so far leave them (`None`: known absent); the ones not
    /// yet committed are in flight to the committer.
    cache: HashMap<ShadowId, Option<ShadowRecord>>,
    /// The epoch the cache belongs to.
    epoch: u64,
    to_committer: Option<SyncSender<Pending>>,
    /// One message per batch the committer finished.
    done: Receiver<()>,
    in_flight: usize,
}

impl Worker {
    fn run(mut self, jobs: Receiver<Work>, committer: JoinHandle<()>) {
        let mut batch = Vec::with_capacity(self.config.max_batch);
        let mut stop = false;
        while !stop {
            match jobs.recv() {
                Ok(Work::Job(job)) => batch.push(job),
                Ok(Work::Stop) | Err(_) => break,
            }
            while batch.len() < self.config.max_batch {
                match jobs.try_recv() {
                    Ok(Work::Job(job)) => batch.push(job),
                    Ok(Work::Stop) => {
                        stop = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.process(std::mem::take(&mut batch));
        }
        // Closing the channel lets the committer finish what it has and stop.
        self.to_committer = None;
        let _ = committer.join();
        tracing::debug!("shadow worker stopped");
    }

    /// Waits until the committer has finished every batch sent to it.
    fn settle(&mut self) {
        while self.in_flight > 0 {
            if self.done.recv().is_err() {
                break;
            }
            self.in_flight -= 1;
        }
    }

    fn load(
        &self,
        working: &mut HashMap<ShadowId, Option<ShadowRecord>>,
        read: &mut HashMap<ShadowId, Option<Vec<u8>>>,
        id: &ShadowId,
    ) -> Result<(), ShadowError> {
        if working.contains_key(id) {
            return Ok(());
        }
        let record = match self.cache.get(id) {
            Some(cached) => cached.clone(),
            None if self.config.shared => {
                let stored = self.inner.store.load_stored(id)?;
                let (record, bytes) = stored.unzip();
                read.insert(id.clone(), bytes);
                record
            }
            None => self.inner.store.load(id)?,
        };
        working.insert(id.clone(), record);
        Ok(())
    }

    /// Applies a batch in memory and hands it to the committer, which answers it once it is
    /// on disk.
    fn process(&mut self, batch: Vec<Job>) {
        while self.done.try_recv().is_ok() {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        let epoch = self.inner.epoch.load(Ordering::Acquire);
        if self.config.shared
            || epoch != self.epoch
            || self.cache.len() >= self.config.cache_capacity
        {
            // After a failed commit the cache holds state that never reached the disk; when
            // full it is emptied. Either way the store must be current before it is read.
            self.settle();
            self.cache.clear();
            self.epoch = self.inner.epoch.load(Ordering::Acquire);
        }
        self.inner.metrics.batch_size.record(batch.len() as f64);
        let now = now_secs();
        let mut working: HashMap<ShadowId, Option<ShadowRecord>> = HashMap::new();
        let mut read: HashMap<ShadowId, Option<Vec<u8>>> = HashMap::new();
        let mut dirty: Vec<ShadowId> = Vec::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        for job in batch {
            let result = self
                .load(&mut working, &mut read, &job.id)
                .map_err(|e| (e, token_of(&job.payload)))
                .and_then(|()| {
                    let slot = working
                        .get_mut(&job.id)
                        .ok_or((ShadowError::Unavailable, None))?;
                    let (answer, changed) = self.apply(&job, slot, now)?;
                    if changed && !dirty.contains(&job.id) {
                        dirty.push(job.id.clone());
                    }
                    Ok(answer)
                });
            outcomes.push(Outcome { job, result });
        }
        let mut writes = WriteBatch::new();
        let mut guarded = Vec::new();
        for id in &dirty {
            if let Some(Some(record)) = working.get(id) {
                if self.config.shared {
                    let expected = read.remove(id).flatten();
                    guarded.push((id.clone(), expected, record.clone()));
                } else {
                    ShadowStore::put(&mut writes, id, record);
                }
            }
        }
        if !self.config.shared {
            for (id, record) in working {
                self.cache.insert(id, record);
            }
        }
        let pending = Pending {
            epoch: self.epoch,
            writes,
            guarded,
            outcomes,
        };
        let Some(to_committer) = &self.to_committer else {
            return;
        };
        if to_committer.send(pending).is_ok() {
            self.in_flight += 1;
        }
    }

    /// Runs one request against the working copy of its shadow; true when it changed it.
    fn apply(
        &self,
        job: &Job,
        slot: &mut Option<ShadowRecord>,
        now: u64,
    ) -> Result<(Answer, bool), (ShadowError, Option<String>)> {
        let limits = &self.config.limits;
        match job.operation {
            Operation::Update => {
                let request =
                    parse_update(&job.payload, limits).map_err(|r| (r.error, r.client_token))?;
                let token = request.client_token.as_deref();
                let fail = |e| (e, request.client_token.clone());
                let (mut document, previous) = match slot {
                    Some(r) if r.deleted_at.is_none() => (r.document.clone(), Some(&r.document)),
                    Some(r)
                        if r.deleted_at
                            .is_some_and(|at| now.saturating_sub(at) < VERSION_MEMORY_SECS) =>
                    {
                        (
                            ShadowDocument {
                                version: r.document.version,
                                ..ShadowDocument::default()
                            },
                            None,
                        )
                    }
                    _ => (ShadowDocument::default(), None),
                };
                if request.version.is_some_and(|v| v != document.version) {
                    return Err(fail(ShadowError::VersionConflict));
                }
                let applied = document.apply(&request, now, limits).map_err(fail)?;
                let accepted = response::update_accepted(
                    &request.state,
                    applied.touched,
                    document.version,
                    now,
                    token,
                );
                let delta = match request.desired {
                    SectionPatch::Absent => None,
                    _ => response::delta(&document, now, token),
                };
                let documents = response::documents(previous, &document, now, token);
                *slot = Some(ShadowRecord {
                    document,
                    deleted_at: None,
                });
                Ok((
                    Answer::Updated {
                        accepted: json_bytes(&accepted),
                        delta: delta.as_ref().map(json_bytes),
                        documents: json_bytes(&documents),
                    },
                    true,
                ))
            }
            Operation::Get => {
                let request = parse_plain(&job.payload).map_err(|r| (r.error, r.client_token))?;
                let token = request.client_token;
                match slot.as_ref().and_then(ShadowRecord::live) {
                    Some(document) => Ok((
                        Answer::Got(json_bytes(&response::get_accepted(
                            document,
                            now,
                            token.as_deref(),
                        ))),
                        false,
                    )),
                    None => Err((
                        ShadowError::NotFound(job.id.display_name().to_string()),
                        token,
                    )),
                }
            }
            Operation::Delete => {
                let request = parse_plain(&job.payload).map_err(|r| (r.error, r.client_token))?;
                let token = request.client_token;
                let Some(document) = slot.as_ref().and_then(ShadowRecord::live) else {
                    return Err((
                        ShadowError::NotFound(job.id.display_name().to_string()),
                        token,
                    ));
                };
                let version = document.version;
                if request.version.is_some_and(|v| v != version) {
                    return Err((ShadowError::VersionConflict, token));
                }
                *slot = Some(ShadowRecord {
                    document: ShadowDocument {
                        version,
                        ..ShadowDocument::default()
                    },
                    deleted_at: Some(now),
                });
                Ok((
                    Answer::Deleted(json_bytes(&response::delete_accepted(
                        version,
                        now,
                        token.as_deref(),
                    ))),
                    true,
                ))
            }
        }
    }
}

/// Second stage: commits each batch in one transaction, then answers its requests.
struct Committer {
    inner: Arc<Inner>,
    done: Sender<()>,
}

impl Committer {
    fn run(self, pending: Receiver<Pending>) {
        while let Ok(batch) = pending.recv() {
            self.commit_and_answer(batch);
            let _ = self.done.send(());
        }
    }

    fn commit_and_answer(&self, batch: Pending) {
        let Pending {
            epoch,
            writes,
            guarded,
            mut outcomes,
        } = batch;
        if !guarded.is_empty() {
            outcomes = self.replace_guarded(guarded, outcomes);
        }
        let failure = if epoch != self.inner.epoch.load(Ordering::Acquire) {
            Some("an earlier shadow commit failed".to_string())
        } else if writes.is_empty() {
            None
        } else {
            let started = std::time::Instant::now();
            let committed = self.inner.store.commit(writes);
            let metrics = &self.inner.metrics;
            metrics
                .commit_seconds
                .record(started.elapsed().as_secs_f64());
            match committed {
                Ok(()) => {
                    metrics.commits.increment(1);
                    None
                }
                Err(e) => {
                    tracing::error!(error = %e, "committing shadow updates failed");
                    self.inner.epoch.fetch_add(1, Ordering::AcqRel);
                    Some(e.to_string())
                }
            }
        };
        if let Some(message) = failure {
            for outcome in &mut outcomes {
                if outcome.result.is_ok() {
                    let token = token_of(&outcome.job.payload);
                    outcome.result = Err((
                        ShadowError::Store(fleetcore_core::StoreError::Backend {
                            operation: "commit",
                            message: message.clone(),
                        }),
                        token,
                    ));
                }
            }
        }
        for outcome in outcomes {
            self.answer(outcome);
        }
    }

    /// Writes each shared shadow by compare-and-set; returns the outcomes to answer. The
    /// requests of a shadow another node changed since the batch read it run again (back in
    /// the queue), or get 503 after [`MAX_ATTEMPTS`] runs; a store failure fails the shadow's
    /// requests.
    fn replace_guarded(
        &self,
        guarded: Vec<(ShadowId, Option<Vec<u8>>, ShadowRecord)>,
        outcomes: Vec<Outcome>,
    ) -> Vec<Outcome> {
        let started = std::time::Instant::now();
        let mut lost: Vec<ShadowId> = Vec::new();
        let mut failed: Vec<(ShadowId, String)> = Vec::new();
        for (id, expected, record) in &guarded {
            match self.inner.store.replace(id, expected.as_deref(), record) {
                Ok(true) => {}
                Ok(false) => lost.push(id.clone()),
                Err(e) => {
                    tracing::error!(error = %e, "committing a shared shadow failed");
                    failed.push((id.clone(), e.to_string()));
                }
            }
        }
        let metrics = &self.inner.metrics;
        metrics
            .commit_seconds
            .record(started.elapsed().as_secs_f64());
        metrics.commits.increment(1);
        let mut answer = Vec::with_capacity(outcomes.len());
        for mut outcome in outcomes {
            if let Some((_, message)) = failed.iter().find(|(id, _)| *id == outcome.job.id) {
                let token = token_of(&outcome.job.payload);
                outcome.result = Err((
                    ShadowError::Store(fleetcore_core::StoreError::Backend {
                        operation: "commit",
                        message: message.clone(),
                    }),
                    token,
                ));
                answer.push(outcome);
            } else if lost.contains(&outcome.job.id) {
                let mut job = outcome.job;
                job.attempts += 1;
                if job.attempts >= MAX_ATTEMPTS {
                    let token = token_of(&job.payload);
                    answer.push(Outcome {
                        job,
                        result: Err((ShadowError::Unavailable, token)),
                    });
                    continue;
                }
                tracing::debug!(shadow = %job.id.topic_prefix(), attempts = job.attempts, "another node changed the shadow: running the request again");
                if let Err(
                    TrySendError::Full(Work::Job(job)) | TrySendError::Disconnected(Work::Job(job)),
                ) = self.inner.queue.try_send(Work::Job(job))
                {
                    let token = token_of(&job.payload);
                    answer.push(Outcome {
                        job,
                        result: Err((ShadowError::Throttled, token)),
                    });
                }
            } else {
                answer.push(outcome);
            }
        }
        answer
    }

    fn answer(&self, outcome: Outcome) {
        let Outcome { job, result } = outcome;
        let prefix = job.id.topic_prefix();
        let op = job.operation.as_str();
        let inner = &self.inner;
        match result {
            Ok(answer) => {
                inner.metrics.accepted.increment(1);
                let mqtt = matches!(job.reply, Reply::Mqtt);
                let body = match answer {
                    Answer::Updated {
                        accepted,
                        delta,
                        documents,
                    } => {
                        inner.publish(format!("{prefix}/update/accepted"), accepted.clone());
                        if let Some(delta) = delta {
                            inner.publish(format!("{prefix}/update/delta"), delta);
                        }
                        inner.publish(format!("{prefix}/update/documents"), documents);
                        accepted
                    }
                    Answer::Got(document) => {
                        if mqtt {
                            inner.publish(format!("{prefix}/get/accepted"), document.clone());
                        }
                        document
                    }
                    Answer::Deleted(document) => {
                        inner.publish(format!("{prefix}/delete/accepted"), document.clone());
                        document
                    }
                };
                if let Reply::Http(tx) = job.reply {
                    let _ = tx.send(Ok(body));
                }
            }
            Err((error, token)) => match job.reply {
                Reply::Mqtt => inner.reject_mqtt(&prefix, job.operation, &error, token.as_deref()),
                Reply::Http(tx) => {
                    inner.metrics.rejected.increment(1);
                    tracing::debug!(operation = op, shadow = %prefix, error = %error, "shadow request rejected");
                    let _ = tx.send(Err(error));
                }
            },
        }
    }
}
