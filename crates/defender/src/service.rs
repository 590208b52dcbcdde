//! The Defender service: the store, the catalog the detector reads, the fleet meter, the
//! inbox of device metrics reports, the violations, and the detector's period task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetcore_core::{AccountContext, KvStore};
use fleetcore_identity::IdentityService;
use parking_lot::{Mutex, RwLock};

use crate::alerts::Alerts;
use crate::detector::{Catalog, Detector, ProfileEntry, ThingDirectory};
use crate::device_metrics::ReportInbox;
use crate::error::DefenderError;
use crate::meter::Datapoint;
use crate::meter::FleetMeter;
use crate::model::{self, Models, SharedSummaries};
use crate::profile::compile_behaviors;
use crate::store::{self, DefenderStore, Target};
use crate::violations::Violations;

/// How Defender runs.
#[derive(Debug, Clone)]
pub struct DefenderConfig {
    /// How often datapoints are taken and behaviours evaluated (AWS: 5 minutes).
    pub period: Duration,
}

impl Default for DefenderConfig {
    fn default() -> DefenderConfig {
        DefenderConfig {
            period: Duration::from_secs(300),
        }
    }
}

/// Device Defender: profiles, metrics, detector, violations.
pub struct Defender {
    store: DefenderStore,
    catalog: RwLock<Arc<Catalog>>,
    meter: Arc<FleetMeter>,
    reports: ReportInbox,
    violations: Arc<Violations>,
    summaries: SharedSummaries,
    /// The ML Detect models read at open, until the detector starts with them.
    restored_models: Mutex<Models>,
    account: AccountContext,
    config: DefenderConfig,
    directory: Arc<dyn ThingDirectory>,
    /// Serializes writes, so check-then-write operations do not interleave.
    writing: Mutex<()>,
}

impl ThingDirectory for IdentityService {
    fn is_thing(&self, name: &str) -> bool {
        matches!(self.thing(name), Ok(Some(_)))
    }

    fn groups(&self, name: &str) -> Vec<String> {
        self.thing_groups_for_thing(name).unwrap_or_default()
    }

    fn group_exists(&self, name: &str) -> bool {
        self.registry().describe_thing_group(name).is_ok()
    }
}

impl Defender {
    /// Opens Defender's state in `store`; targets are resolved through `directory`.
    pub fn open(
        config: DefenderConfig,
        store: Arc<dyn KvStore>,
        account: AccountContext,
        directory: Arc<dyn ThingDirectory>,
    ) -> Result<Arc<Defender>, DefenderError> {
        let violations = Violations::open(Arc::clone(&store))?;
        let meter = FleetMeter::default();
        meter.restore_sightings(store.as_ref())?;
        // The devices with alarms in force are known as offline until they connect, so the
        // first period after a restart does not take them for forgotten.
        let now = Instant::now();
        for v in violations.active_where(|_| true) {
            meter.remember_offline(&v.thing_name, now);
        }
        let models = model::load(store.as_ref())?;
        let summaries = SharedSummaries::default();
        summaries.set_from(&models);
        let defender = Arc::new(Defender {
            store: DefenderStore::new(store),
            catalog: RwLock::new(Arc::default()),
            meter: Arc::new(meter),
            reports: ReportInbox::default(),
            summaries,
            restored_models: Mutex::new(models),
            violations: Arc::new(violations),
            account,
            config,
            directory,
            writing: Mutex::new(()),
        });
        defender.reload()?;
        Ok(defender)
    }

    /// The meter to install on the broker (`Router::set_device_meter`).
    pub fn meter(&self) -> Arc<FleetMeter> {
        Arc::clone(&self.meter)
    }

    /// Where accepted device metrics reports wait for the end of the period.
    pub fn reports(&self) -> &ReportInbox {
        &self.reports
    }

    /// The period's datapoints: the meter's, with the period's reports joined by thing name.
    /// The period's new sightings are staged for its commit.
    fn collect(&self, now: Instant) -> Vec<(Arc<str>, Datapoint)> {
        let mut points = self.meter.collect(now);
        self.violations.stage(self.meter.sightings_to_save());
        let mut reports = self.reports.take();
        if reports.is_empty() {
            return points;
        }
        for (thing, point) in &mut points {
            if let Some(sample) = reports.remove(thing) {
                point.report = Some(Box::new(sample));
            }
        }
        points.extend(reports.into_iter().map(|(thing, sample)| {
            (
                thing,
                Datapoint {
                    report: Some(Box::new(sample)),
                    ..Datapoint::default()
                },
            )
        }));
        points
    }

    /// The stored state.
    pub fn store(&self) -> &DefenderStore {
        &self.store
    }

    /// The ML Detect models' training summaries.
    pub fn training_summaries(&self) -> &SharedSummaries {
        &self.summaries
    }

    /// The alarms and their history.
    pub fn violations(&self) -> &Violations {
        &self.violations
    }

    /// The account and region ARNs are written for.
    pub fn account(&self) -> &AccountContext {
        &self.account
    }

    /// What targets are resolved against.
    pub fn directory(&self) -> &dyn ThingDirectory {
        self.directory.as_ref()
    }

    /// Holds writes off until the guard drops.
    pub(crate) fn write_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.writing.lock()
    }

    /// The ARN of profile `name`.
    pub fn profile_arn(&self, name: &str) -> String {
        self.account
            .iot_arn(format!("securityprofile/{name}"))
            .to_string()
    }

    /// The ARN of custom metric `name`.
    pub fn custom_metric_arn(&self, name: &str) -> String {
        self.account
            .iot_arn(format!("custommetric/{name}"))
            .to_string()
    }

    /// The ARN of `target`.
    pub fn target_arn(&self, target: &Target) -> String {
        self.account.iot_arn(target.resource()).to_string()
    }

    /// Rebuilds the detector's catalog from the store (after every write).
    pub fn reload(&self) -> Result<(), DefenderError> {
        let attachments = self.store.attachments()?;
        let mut profiles = Vec::new();
        for record in self.store.profiles()? {
            let behaviors = match compile_behaviors(&record.behaviors, &self.store) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(profile = %record.name, error = %e, "a stored security profile no longer compiles; it is not evaluated");
                    continue;
                }
            };
            let targets = attachments
                .iter()
                .filter(|(p, _)| *p == record.name)
                .map(|(_, t)| t.clone())
                .collect();
            profiles.push(ProfileEntry {
                record,
                behaviors,
                targets,
            });
        }
        *self.catalog.write() = Arc::new(Catalog { profiles });
        Ok(())
    }

    /// Starts the detector: every period it evaluates the attached profiles and sends
    /// `alerts`. Runs until the runtime stops.
    pub fn start(self: &Arc<Self>, alerts: Alerts) -> tokio::task::JoinHandle<()> {
        let defender = Arc::clone(self);
        let period = self.config.period;
        tokio::spawn(async move {
            let mut detector = Detector::new(
                period.as_secs_f64(),
                Arc::clone(&defender.violations),
                alerts,
                Arc::clone(&defender.directory),
            )
            .with_summaries(Arc::clone(&defender.summaries))
            .with_models(std::mem::take(&mut *defender.restored_models.lock()));
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let points = defender.collect(Instant::now());
                let catalog = Arc::clone(&defender.catalog.read());
                // Resolving targets reads the registry: off the async workers.
                let evaluated = tokio::task::spawn_blocking(move || {
                    detector.run_period(points, &catalog, store::now());
                    detector
                })
                .await;
                match evaluated {
                    Ok(d) => detector = d,
                    Err(e) => {
                        tracing::error!(error = %e, "the Defender detector failed; it stops");
                        return;
                    }
                }
            }
        })
    }
}
