//! Violations: the alarms in force (ListActiveViolations) and the history of alarm changes
//! (ListViolationEvents), the newest [`MAX_EVENTS`] events. Both are served from memory and
//! kept in the store: the detector's changes of one period are written in one batch
//! ([`Violations::commit`], one fsync per period, before the period's alerts go out), and
//! [`Violations::open`] reads them back, so a restart neither forgets an alarm nor raises it
//! again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use fleetcore_core::{KvStore, WriteBatch};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::DefenderError;
use crate::profile::{Behavior, MetricValue};

const ACTIVE: &str = "defender_active_violations";
const EVENTS: &str = "defender_violation_events";

/// Most violation events kept (the oldest go first).
pub const MAX_EVENTS: usize = 100_000;

/// `violationEventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// The alarm was raised.
    InAlarm,
    /// The device behaved for enough datapoints.
    AlarmCleared,
    /// The behaviour or the attachment that raised it is gone.
    AlarmInvalidated,
}

impl EventType {
    /// AWS's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::InAlarm => "in-alarm",
            EventType::AlarmCleared => "alarm-cleared",
            EventType::AlarmInvalidated => "alarm-invalidated",
        }
    }
}

/// One alarm change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViolationEvent {
    /// Shared by the events of one alarm.
    pub violation_id: String,
    /// The device.
    pub thing_name: String,
    /// The profile.
    pub security_profile_name: String,
    /// The behaviour as it was.
    pub behavior: Behavior,
    /// `STATIC`, `STATISTICAL` or `MACHINE_LEARNING`.
    pub criteria_type: String,
    /// The measurement.
    pub metric_value: MetricValue,
    /// What happened.
    pub event_type: EventType,
    /// Seconds since the epoch.
    pub time: f64,
}

impl ViolationEvent {
    /// As ListViolationEvents writes it.
    pub fn to_json(&self) -> Value {
        json!({
            "violationId": self.violation_id,
            "thingName": self.thing_name,
            "securityProfileName": self.security_profile_name,
            "behavior": self.behavior,
            "metricValue": self.metric_value,
            "violationEventType": self.event_type.as_str(),
            "violationEventTime": self.time,
        })
    }
}

/// An alarm in force.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActiveViolation {
    /// The alarm's id.
    pub violation_id: String,
    /// The device.
    pub thing_name: String,
    /// The profile.
    pub security_profile_name: String,
    /// The behaviour violated.
    pub behavior: Behavior,
    /// `STATIC`, `STATISTICAL` or `MACHINE_LEARNING`.
    pub criteria_type: String,
    /// The latest violating measurement.
    pub last_violation_value: MetricValue,
    /// Seconds since the epoch.
    pub last_violation_time: f64,
    /// Seconds since the epoch.
    pub violation_start_time: f64,
}

impl ActiveViolation {
    /// As ListActiveViolations writes it.
    pub fn to_json(&self) -> Value {
        json!({
            "violationId": self.violation_id,
            "thingName": self.thing_name,
            "securityProfileName": self.security_profile_name,
            "behavior": self.behavior,
            "lastViolationValue": self.last_violation_value,
            "lastViolationTime": self.last_violation_time,
            "violationStartTime": self.violation_start_time,
        })
    }
}

/// The key of an alarm: (profile, behaviour, device).
pub type AlarmKey = (String, String, String);

/// Alarms in force and the event history, shared by the detector and the API.
pub struct Violations {
    store: Arc<dyn KvStore>,
    active: Mutex<BTreeMap<AlarmKey, ActiveViolation>>,
    /// The events with their sequence number (their key in the store).
    events: Mutex<VecDeque<(u64, ViolationEvent)>>,
    /// Changes not yet written.
    pending: Mutex<WriteBatch>,
}

fn active_key(key: &AlarmKey) -> Vec<u8> {
    format!("{}\n{}\n{}", key.0, key.1, key.2).into_bytes()
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain records cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, DefenderError> {
    serde_json::from_slice(bytes).map_err(|e| {
        DefenderError::Store(fleetcore_core::StoreError::Backend {
            operation: "decode",
            message: format!("a stored violation does not parse: {e}"),
        })
    })
}

impl Violations {
    /// The violations kept in `store`, as the last commit left them.
    pub fn open(store: Arc<dyn KvStore>) -> Result<Violations, DefenderError> {
        let mut active = BTreeMap::new();
        for (_, v) in store.scan_prefix(ACTIVE, b"")?.iter() {
            let v: ActiveViolation = decode(v)?;
            active.insert(
                (
                    v.security_profile_name.clone(),
                    v.behavior.name.clone(),
                    v.thing_name.clone(),
                ),
                v,
            );
        }
        let mut events = VecDeque::new();
        for (k, v) in store.scan_prefix(EVENTS, b"")?.iter() {
            let seq = k
                .as_slice()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| {
                    DefenderError::Store(fleetcore_core::StoreError::Backend {
                        operation: "decode",
                        message: "a stored violation event has a malformed key".into(),
                    })
                })?;
            events.push_back((seq, decode(v)?));
        }
        Ok(Violations {
            store,
            active: Mutex::new(active),
            events: Mutex::new(events),
            pending: Mutex::new(WriteBatch::new()),
        })
    }

    /// Records an event, and updates the alarms in force accordingly (written at the next
    /// [`commit`](Violations::commit)).
    pub fn record(&self, event: &ViolationEvent) {
        let key = (
            event.security_profile_name.clone(),
            event.behavior.name.clone(),
            event.thing_name.clone(),
        );
        let mut pending = self.pending.lock();
        {
            let mut active = self.active.lock();
            match event.event_type {
                EventType::InAlarm => {
                    let v = ActiveViolation {
                        violation_id: event.violation_id.clone(),
                        thing_name: event.thing_name.clone(),
                        security_profile_name: event.security_profile_name.clone(),
                        behavior: event.behavior.clone(),
                        criteria_type: event.criteria_type.clone(),
                        last_violation_value: event.metric_value.clone(),
                        last_violation_time: event.time,
                        violation_start_time: event.time,
                    };
                    pending.put(ACTIVE, active_key(&key), encode(&v));
                    active.insert(key, v);
                }
                EventType::AlarmCleared | EventType::AlarmInvalidated => {
                    pending.delete(ACTIVE, active_key(&key));
                    active.remove(&key);
                }
            }
        }
        let mut events = self.events.lock();
        if events.len() >= MAX_EVENTS
            && let Some((oldest, _)) = events.pop_front()
        {
            pending.delete(EVENTS, oldest.to_be_bytes().to_vec());
        }
        let seq = events.back().map_or(0, |(s, _)| s + 1);
        pending.put(EVENTS, seq.to_be_bytes().to_vec(), encode(event));
        events.push_back((seq, event.clone()));
    }

    /// A violating measurement of an alarm already in force.
    pub fn still_violating(&self, key: &AlarmKey, value: MetricValue, time: f64) {
        let mut pending = self.pending.lock();
        if let Some(v) = self.active.lock().get_mut(key) {
            v.last_violation_value = value;
            v.last_violation_time = time;
            pending.put(ACTIVE, active_key(key), encode(v));
        }
    }

    /// Adds `writes` of the period's other state (sightings, ML Detect training data) to the
    /// next [`commit`](Violations::commit), so a period costs one batch.
    pub fn stage(&self, writes: WriteBatch) {
        self.pending.lock().extend(writes);
    }

    /// Writes the changes recorded since the last commit, in one batch.
    pub fn commit(&self) -> Result<(), DefenderError> {
        let batch = std::mem::take(&mut *self.pending.lock());
        if batch.is_empty() {
            return Ok(());
        }
        Ok(self.store.apply(batch)?)
    }

    /// The alarm in force for `key`, if any.
    pub fn active(&self, key: &AlarmKey) -> Option<ActiveViolation> {
        self.active.lock().get(key).cloned()
    }

    /// Every alarm in force that `keep` accepts, in key order.
    pub fn active_where(&self, keep: impl Fn(&ActiveViolation) -> bool) -> Vec<ActiveViolation> {
        self.active
            .lock()
            .values()
            .filter(|v| keep(v))
            .cloned()
            .collect()
    }

    /// Every event that `keep` accepts, oldest first.
    pub fn events_where(&self, keep: impl Fn(&ViolationEvent) -> bool) -> Vec<ViolationEvent> {
        self.events
            .lock()
            .iter()
            .map(|(_, e)| e)
            .filter(|e| keep(e))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetcore_core::RedbStore;

    fn event(kind: EventType, time: f64) -> ViolationEvent {
        ViolationEvent {
            violation_id: "v1".into(),
            thing_name: "t".into(),
            security_profile_name: "p".into(),
            behavior: serde_json::from_value(json!({"name": "b"})).expect("behavior"),
            criteria_type: "STATIC".into(),
            metric_value: MetricValue {
                count: Some(9),
                ..MetricValue::default()
            },
            event_type: kind,
            time,
        }
    }

    #[test]
    fn committed_alarms_and_events_survive_a_reopen_and_uncommitted_ones_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn KvStore> =
            Arc::new(RedbStore::open(&dir.path().join("s.redb")).expect("store"));
        let v = Violations::open(Arc::clone(&store)).expect("open");
        v.record(&event(EventType::InAlarm, 1.0));
        let key = ("p".to_string(), "b".to_string(), "t".to_string());
        v.still_violating(
            &key,
            MetricValue {
                count: Some(12),
                ..MetricValue::default()
            },
            2.0,
        );
        v.commit().expect("commit");
        v.record(&event(EventType::AlarmCleared, 3.0));
        let reopened = Violations::open(Arc::clone(&store)).expect("reopen");
        let active = reopened.active(&key).expect("in force");
        assert_eq!(active.violation_id, "v1");
        assert_eq!(active.last_violation_value.count, Some(12));
        assert_eq!(active.violation_start_time, 1.0);
        assert_eq!(reopened.events_where(|_| true).len(), 1);
        v.commit().expect("commit");
        let reopened = Violations::open(store).expect("reopen");
        assert!(reopened.active(&key).is_none());
        let kinds: Vec<_> = reopened
            .events_where(|_| true)
            .iter()
            .map(|e| e.event_type)
            .collect();
        assert_eq!(kinds, [EventType::InAlarm, EventType::AlarmCleared]);
    }

    #[test]
    fn an_alarms_start_time_reads_back_to_the_same_bits() {
        // A time whose shortest decimal form serde_json parses one bit off without
        // `float_roundtrip`: ListActiveViolations would answer a different microsecond
        // after a restart.
        let time = 1_796_615_488.259_737_7;
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn KvStore> =
            Arc::new(RedbStore::open(&dir.path().join("s.redb")).expect("store"));
        let v = Violations::open(Arc::clone(&store)).expect("open");
        v.record(&event(EventType::InAlarm, time));
        v.commit().expect("commit");
        let key = ("p".to_string(), "b".to_string(), "t".to_string());
        let reopened = Violations::open(store).expect("reopen");
        let active = reopened.active(&key).expect("in force");
        assert_eq!(active.violation_start_time.to_bits(), time.to_bits());
    }
}
