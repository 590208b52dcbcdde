//! Alarm models (`alarmRule.simpleRule` with capabilities, event actions and notifications) and
//! alarm instances with their state machine. The engine runs alarms beside detectors, in the
//! same shards and the same group commit ([`crate::engine`]).

mod model;
mod recipients;
mod state;

pub use model::{AlarmModel, AlarmModelRecord, Capabilities, Operator, SharedAlarmModel, compile};
pub use state::{Alarm, AlarmStateName, Change, CustomerAction, RuleEvaluation};
