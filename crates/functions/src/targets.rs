//! Resolved invocation targets, kept for callers that invoke the same function again and again
//! (a rule's `lambda` action, an IoT Events action, a Firehose processor): the version's
//! configuration, its runner and its metric handles are looked up and copied once, not per
//! message. Every change to any function (create, update, publish, alias, concurrency,
//! delete) moves the cache's generation, after which each cached target is resolved afresh on
//! its next use: an invocation never runs a configuration older than the change that preceded it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::model::VersionConfig;
use crate::runtime::Runner;

/// Most targets kept; past it the cache starts over (a cache, not a registry).
const MAX_TARGETS: usize = 1024;

/// A function version ready to invoke, as resolved from a reference.
pub(crate) struct Target {
    /// The generation of the functions it was resolved in.
    pub generation: u64,
    /// The version's configuration.
    pub config: VersionConfig,
    /// The function's reserved concurrency, if any.
    pub reserved: Option<u32>,
    /// Its worker pool or compiled module.
    pub runner: Runner,
    /// The ARN the caller named (with its qualifier).
    pub invoked_arn: Arc<str>,
    /// `fleetcore_functions_invocations_total` of the function.
    pub invocations: metrics::Counter,
    /// `fleetcore_functions_failures_total` of the function.
    pub failures: metrics::Counter,
    /// `fleetcore_functions_invocation_seconds` of the function.
    pub seconds: metrics::Histogram,
}

impl Target {
    /// A target for `config` with the function's metric handles.
    pub fn new(
        generation: u64,
        config: VersionConfig,
        reserved: Option<u32>,
        runner: Runner,
        invoked_arn: Arc<str>,
    ) -> Target {
        let function = config.name.clone();
        Target {
            generation,
            invocations: metrics::counter!("fleetcore_functions_invocations_total", "function" => function.clone()),
            failures: metrics::counter!("fleetcore_functions_failures_total", "function" => function.clone()),
            seconds: metrics::histogram!("fleetcore_functions_invocation_seconds", "function" => function),
            config,
            reserved,
            runner,
            invoked_arn,
        }
    }
}

/// Targets by the reference text callers name them with, valid for one generation.
#[derive(Default)]
pub(crate) struct TargetCache {
    generation: AtomicU64,
    targets: Mutex<HashMap<String, Arc<Target>>>,
}

impl TargetCache {
    /// The current generation: read it before resolving a target from the records.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Something changed: every cached target is stale. Call after the change is visible.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The target cached for `reference`, if it is of the current generation.
    pub fn get(&self, reference: &str) -> Option<Arc<Target>> {
        let generation = self.generation();
        self.targets
            .lock()
            .get(reference)
            .filter(|t| t.generation == generation)
            .cloned()
    }

    /// Keeps `target` for `reference`.
    pub fn put(&self, reference: &str, target: &Arc<Target>) {
        let mut targets = self.targets.lock();
        if targets.len() >= MAX_TARGETS && !targets.contains_key(reference) {
            targets.clear();
        }
        targets.insert(reference.to_string(), Arc::clone(target));
    }
}
