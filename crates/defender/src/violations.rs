//! Violations: the alarms in force (ListActiveViolations) and the history of alarm changes
//! (ListViolationEvents). Held in memory: a restart starts with no alarm in force, and the
//! history keeps the newest [`MAX_EVENTS`] events.

use std::collections::{BTreeMap, VecDeque};

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::profile::{Behavior, MetricValue};

/// Most violation events kept (the oldest go first).
pub const MAX_EVENTS: usize = 100_000;

/// `violationEventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
#[derive(Debug, Clone)]
pub struct ViolationEvent {
    /// Shared by the events of one alarm.
    pub violation_id: String,
    /// The device.
    pub thing_name: String,
    /// The profile.
    pub security_profile_name: String,
    /// The behaviour as it was.
    pub behavior: Behavior,
    /// `STATIC` or `STATISTICAL`.
    pub criteria_type: &'static str,
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
#[derive(Debug, Clone)]
pub struct ActiveViolation {
    /// The alarm's id.
    pub violation_id: String,
    /// The device.
    pub thing_name: String,
    /// The profile.
    pub security_profile_name: String,
    /// The behaviour violated.
    pub behavior: Behavior,
    /// `STATIC` or `STATISTICAL`.
    pub criteria_type: &'static str,
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
#[derive(Default)]
pub struct Violations {
    active: Mutex<BTreeMap<AlarmKey, ActiveViolation>>,
    events: Mutex<VecDeque<ViolationEvent>>,
}

impl Violations {
    /// Records an event, and updates the alarms in force accordingly.
    pub fn record(&self, event: &ViolationEvent) {
        let key = (
            event.security_profile_name.clone(),
            event.behavior.name.clone(),
            event.thing_name.clone(),
        );
        {
            let mut active = self.active.lock();
            match event.event_type {
                EventType::InAlarm => {
                    active.insert(
                        key,
                        ActiveViolation {
                            violation_id: event.violation_id.clone(),
                            thing_name: event.thing_name.clone(),
                            security_profile_name: event.security_profile_name.clone(),
                            behavior: event.behavior.clone(),
                            criteria_type: event.criteria_type,
                            last_violation_value: event.metric_value.clone(),
                            last_violation_time: event.time,
                            violation_start_time: event.time,
                        },
                    );
                }
                EventType::AlarmCleared | EventType::AlarmInvalidated => {
                    active.remove(&key);
                }
            }
        }
        let mut events = self.events.lock();
        if events.len() == MAX_EVENTS {
            events.pop_front();
        }
        events.push_back(event.clone());
    }

    /// A violating measurement of an alarm already in force.
    pub fn still_violating(&self, key: &AlarmKey, value: MetricValue, time: f64) {
        if let Some(v) = self.active.lock().get_mut(key) {
            v.last_violation_value = value;
            v.last_violation_time = time;
        }
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
            .filter(|e| keep(e))
            .cloned()
            .collect()
    }
}
