//! An alarm instance (one per key value) and its state machine, as AWS documents it:
//!
//! ```text
//! NORMAL --rule breached--> ACTIVE --acknowledge--> ACKNOWLEDGED --rule normal--> NORMAL
//!                             |  \--rule normal, acknowledge flow on--> LATCHED --acknowledge--> NORMAL
//!                             \--rule normal, acknowledge flow off--> NORMAL
//! LATCHED --rule breached--> ACTIVE;  ACTIVE / ACKNOWLEDGED / LATCHED --reset--> NORMAL
//! any --disable--> DISABLED --enable--> NORMAL
//! enabled --snooze(s)--> SNOOZE_DISABLED --s elapsed, or enable--> NORMAL
//! ```
//!
//! DISABLED and SNOOZE_DISABLED alarms do not evaluate their rule.

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

/// The state of an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlarmStateName {
    /// Not evaluating its rule until enabled.
    Disabled,
    /// Evaluating; the rule is not breached.
    Normal,
    /// The rule is breached and nobody acknowledged it.
    Active,
    /// The rule is breached and somebody acknowledged it.
    Acknowledged,
    /// Not evaluating its rule until the snooze ends.
    SnoozeDisabled,
    /// The rule was breached, is normal again, and nobody acknowledged it.
    Latched,
}

impl AlarmStateName {
    /// The API's name.
    pub fn name(self) -> &'static str {
        match self {
            AlarmStateName::Disabled => "DISABLED",
            AlarmStateName::Normal => "NORMAL",
            AlarmStateName::Active => "ACTIVE",
            AlarmStateName::Acknowledged => "ACKNOWLEDGED",
            AlarmStateName::SnoozeDisabled => "SNOOZE_DISABLED",
            AlarmStateName::Latched => "LATCHED",
        }
    }
}

/// An operator's request on an alarm (the `iotevents-data` Batch*Alarm operations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerAction {
    /// BatchAcknowledgeAlarm.
    Acknowledge {
        /// `note`.
        note: Option<String>,
    },
    /// BatchResetAlarm.
    Reset {
        /// `note`.
        note: Option<String>,
    },
    /// BatchDisableAlarm.
    Disable {
        /// `note`.
        note: Option<String>,
    },
    /// BatchEnableAlarm.
    Enable {
        /// `note`.
        note: Option<String>,
    },
    /// BatchSnoozeAlarm.
    Snooze {
        /// `note`.
        note: Option<String>,
        /// `snoozeDuration`, seconds.
        seconds: u64,
    },
}

impl CustomerAction {
    /// The API's `customerAction` member.
    fn to_api(&self) -> Json {
        let (name, config, note) = match self {
            CustomerAction::Acknowledge { note } => {
                ("ACKNOWLEDGE", "acknowledgeActionConfiguration", note)
            }
            CustomerAction::Reset { note } => ("RESET", "resetActionConfiguration", note),
            CustomerAction::Disable { note } => ("DISABLE", "disableActionConfiguration", note),
            CustomerAction::Enable { note } => ("ENABLE", "enableActionConfiguration", note),
            CustomerAction::Snooze { note, seconds } => {
                return json!({
                    "actionName": "SNOOZE",
                    "snoozeActionConfiguration": { "snoozeDuration": seconds, "note": note },
                });
            }
        };
        json!({ "actionName": name, config: { "note": note } })
    }
}

/// One evaluation of the simple rule, as `ruleEvaluation.simpleRuleEvaluation` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleEvaluation {
    /// The input property's value.
    pub input_property_value: String,
    /// The comparison operator's name.
    pub operator: String,
    /// The threshold's value.
    pub threshold_value: String,
}

/// What last changed an alarm's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Created (initial state).
    Created,
    /// An evaluation of the rule.
    Rule,
    /// An operator's action.
    Customer(CustomerAction),
    /// The snooze ended.
    SnoozeTimeout,
}

/// An alarm instance's durable state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// The alarm model's name.
    pub model: String,
    /// The model version that last evaluated it.
    pub version: u32,
    /// The key value (`None` for a model without key).
    pub key: Option<String>,
    /// The state.
    pub state: AlarmStateName,
    /// The latest evaluation of the rule.
    pub rule_evaluation: Option<RuleEvaluation>,
    /// What last changed the state.
    pub change: Change,
    /// When a snooze ends, epoch milliseconds.
    pub snooze_until_ms: Option<u64>,
    /// Epoch milliseconds.
    pub created_ms: u64,
    /// Epoch milliseconds.
    pub updated_ms: u64,
}

impl Alarm {
    /// A new alarm: NORMAL, or DISABLED when the model says so.
    pub fn new(
        model: &str,
        version: u32,
        key: Option<String>,
        disabled: bool,
        now_ms: u64,
    ) -> Alarm {
        Alarm {
            model: model.to_string(),
            version,
            key,
            state: if disabled {
                AlarmStateName::Disabled
            } else {
                AlarmStateName::Normal
            },
            rule_evaluation: None,
            change: Change::Created,
            snooze_until_ms: None,
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }

    /// Applies one evaluation of the rule (`breached`: the rule holds); true when the state
    /// changed. A disabled or snoozed alarm ignores it.
    pub fn evaluate(
        &mut self,
        breached: bool,
        evaluation: RuleEvaluation,
        acknowledge_flow: bool,
        now_ms: u64,
    ) -> bool {
        use AlarmStateName::*;
        let next = match (self.state, breached) {
            (Disabled | SnoozeDisabled, _) => return false,
            (Normal | Latched, true) => Active,
            (Active, false) if acknowledge_flow => Latched,
            (Active | Acknowledged, false) => Normal,
            (state, _) => state,
        };
        self.rule_evaluation = Some(evaluation);
        self.updated_ms = now_ms;
        self.moved(next, Change::Rule)
    }

    /// Applies an operator's action; `Ok(true)` when the state changed, `Err` when the action
    /// does not apply to the alarm's state (the entry's InvalidRequestException).
    pub fn act(
        &mut self,
        action: CustomerAction,
        acknowledge_flow: bool,
        now_ms: u64,
    ) -> Result<bool, String> {
        use AlarmStateName::*;
        let state = self.state;
        let next = match &action {
            CustomerAction::Acknowledge { .. } if !acknowledge_flow => {
                return Err(format!(
                    "alarm model {} has no acknowledge flow (alarmCapabilities.acknowledgeFlow.enabled is false): its alarms cannot be acknowledged",
                    self.model
                ));
            }
            CustomerAction::Acknowledge { .. } => match state {
                Active => Acknowledged,
                Latched => Normal,
                _ => {
                    return Err(format!(
                        "the alarm is {}: only an ACTIVE or LATCHED alarm can be acknowledged",
                        state.name()
                    ));
                }
            },
            CustomerAction::Reset { .. } => match state {
                Disabled | SnoozeDisabled => {
                    return Err(format!(
                        "the alarm is {}: enable it before resetting it",
                        state.name()
                    ));
                }
                _ => Normal,
            },
            CustomerAction::Disable { .. } => Disabled,
            CustomerAction::Enable { .. } => match state {
                Disabled | SnoozeDisabled => Normal,
                other => other,
            },
            CustomerAction::Snooze { seconds, .. } => match state {
                Disabled => {
                    return Err("the alarm is DISABLED: enable it before snoozing it".to_string());
                }
                _ => {
                    self.snooze_until_ms =
                        Some(now_ms.saturating_add(seconds.saturating_mul(1000)));
                    SnoozeDisabled
                }
            },
        };
        if next != SnoozeDisabled {
            self.snooze_until_ms = None;
        }
        self.updated_ms = now_ms;
        let snoozed_again = next == SnoozeDisabled && state == SnoozeDisabled;
        let changed = self.moved(next, Change::Customer(action.clone()));
        if snoozed_again {
            self.change = Change::Customer(action);
        }
        Ok(changed)
    }

    /// Ends a snooze that is due at `now_ms`; true when the alarm went back to NORMAL.
    pub fn snooze_over(&mut self, now_ms: u64) -> bool {
        if self.state != AlarmStateName::SnoozeDisabled
            || self.snooze_until_ms.is_none_or(|until| until > now_ms)
        {
            return false;
        }
        self.snooze_until_ms = None;
        self.updated_ms = now_ms;
        self.moved(AlarmStateName::Normal, Change::SnoozeTimeout)
    }

    fn moved(&mut self, next: AlarmStateName, change: Change) -> bool {
        if next == self.state {
            return false;
        }
        self.state = next;
        self.change = change;
        true
    }

    /// The API's `alarmState`.
    pub fn state_api(&self) -> Json {
        let mut state = json!({ "stateName": self.state.name() });
        if let Some(e) = &self.rule_evaluation {
            state["ruleEvaluation"] = json!({ "simpleRuleEvaluation": {
                "inputPropertyValue": e.input_property_value,
                "operator": e.operator,
                "thresholdValue": e.threshold_value,
            }});
        }
        match &self.change {
            Change::Customer(action) => state["customerAction"] = action.to_api(),
            Change::SnoozeTimeout => {
                state["systemEvent"] = json!({
                    "eventType": "STATE_CHANGE",
                    "stateChangeConfiguration": { "triggerType": "SNOOZE_TIMEOUT" },
                })
            }
            Change::Created | Change::Rule => {}
        }
        state
    }

    /// The API's `alarm` (DescribeAlarm), which is also the payload an alarm action without
    /// `payload` sends.
    pub fn to_api(&self, severity: Option<i64>) -> Json {
        json!({
            "alarmModelName": self.model,
            "alarmModelVersion": self.version.to_string(),
            "keyValue": self.key,
            "alarmState": self.state_api(),
            "severity": severity,
            "creationTime": self.created_ms as f64 / 1000.0,
            "lastUpdateTime": self.updated_ms as f64 / 1000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evaluation(v: &str) -> RuleEvaluation {
        RuleEvaluation {
            input_property_value: v.into(),
            operator: "GREATER".into(),
            threshold_value: "30".into(),
        }
    }

    fn alarm() -> Alarm {
        Alarm::new("m", 1, Some("k".into()), false, 0)
    }

    #[test]
    fn acknowledge_flow_latches_until_acknowledged() {
        let mut a = alarm();
        assert!(a.evaluate(true, evaluation("35"), true, 1));
        assert_eq!(a.state, AlarmStateName::Active);
        assert!(!a.evaluate(true, evaluation("36"), true, 2));
        assert!(a.evaluate(false, evaluation("20"), true, 3));
        assert_eq!(a.state, AlarmStateName::Latched);
        assert!(!a.evaluate(false, evaluation("19"), true, 4));
        assert_eq!(
            a.act(CustomerAction::Acknowledge { note: None }, true, 5),
            Ok(true)
        );
        assert_eq!(a.state, AlarmStateName::Normal);
    }

    #[test]
    fn acknowledged_alarm_returns_to_normal_with_the_data() {
        let mut a = alarm();
        a.evaluate(true, evaluation("35"), true, 1);
        assert_eq!(
            a.act(
                CustomerAction::Acknowledge {
                    note: Some("seen".into())
                },
                true,
                2
            ),
            Ok(true)
        );
        assert_eq!(a.state, AlarmStateName::Acknowledged);
        assert_eq!(
            a.state_api()["customerAction"]["acknowledgeActionConfiguration"]["note"],
            "seen"
        );
        assert!(a.evaluate(false, evaluation("20"), true, 3));
        assert_eq!(a.state, AlarmStateName::Normal);
    }

    #[test]
    fn without_acknowledge_flow_the_alarm_clears_itself_and_refuses_acknowledgement() {
        let mut a = alarm();
        a.evaluate(true, evaluation("35"), false, 1);
        assert!(
            a.act(CustomerAction::Acknowledge { note: None }, false, 2)
                .is_err()
        );
        assert!(a.evaluate(false, evaluation("20"), false, 3));
        assert_eq!(a.state, AlarmStateName::Normal);
    }

    #[test]
    fn actions_that_do_not_apply_are_refused_and_change_nothing() {
        let mut a = alarm();
        assert!(
            a.act(CustomerAction::Acknowledge { note: None }, true, 1)
                .is_err()
        );
        a.act(CustomerAction::Disable { note: None }, true, 2)
            .unwrap();
        let before = a.clone();
        assert!(
            a.act(CustomerAction::Reset { note: None }, true, 3)
                .is_err()
        );
        assert!(
            a.act(
                CustomerAction::Snooze {
                    note: None,
                    seconds: 5
                },
                true,
                3
            )
            .is_err()
        );
        assert!(!a.evaluate(true, evaluation("99"), true, 4));
        assert_eq!(a, before);
    }

    #[test]
    fn snooze_ends_on_time_and_enable_ends_it_early() {
        let mut a = alarm();
        a.evaluate(true, evaluation("35"), true, 0);
        assert_eq!(
            a.act(
                CustomerAction::Snooze {
                    note: None,
                    seconds: 2
                },
                true,
                1_000
            ),
            Ok(true)
        );
        assert_eq!(
            (a.state, a.snooze_until_ms),
            (AlarmStateName::SnoozeDisabled, Some(3_000))
        );
        assert!(!a.evaluate(true, evaluation("40"), true, 1_500));
        assert!(!a.snooze_over(2_999));
        assert!(a.snooze_over(3_000));
        assert_eq!(a.state, AlarmStateName::Normal);
        assert_eq!(
            a.state_api()["systemEvent"]["stateChangeConfiguration"]["triggerType"],
            "SNOOZE_TIMEOUT"
        );
        a.act(
            CustomerAction::Snooze {
                note: None,
                seconds: 60,
            },
            true,
            4_000,
        )
        .unwrap();
        assert_eq!(
            a.act(CustomerAction::Enable { note: None }, true, 5_000),
            Ok(true)
        );
        assert_eq!((a.state, a.snooze_until_ms), (AlarmStateName::Normal, None));
    }

    #[test]
    fn reset_returns_an_invoked_alarm_to_normal() {
        for breach_then_normal in [false, true] {
            let mut a = alarm();
            a.evaluate(true, evaluation("35"), true, 1);
            if breach_then_normal {
                a.evaluate(false, evaluation("20"), true, 2);
            }
            assert_eq!(
                a.act(CustomerAction::Reset { note: None }, true, 3),
                Ok(true)
            );
            assert_eq!(a.state, AlarmStateName::Normal);
        }
    }
}
