//! The dataset scheduler: a dataset with a `schedule` trigger gets a content each time its
//! expression fires. The next firing time of each dataset is stored, so a restart keeps the
//! schedule; a firing missed while the server was down runs once when it is back. A `rate`
//! counts from when the schedule was first seen (creation or the last update of its triggers).

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;

use crate::Analytics;
use crate::error::AnalyticsError;
use crate::model::DatasetRecord;
use crate::schedule::Schedule;

/// How often the scheduler looks for datasets due.
const TICK: Duration = Duration::from_secs(1);

/// The schedules in `triggers` (checked at create, so a bad one is skipped here).
fn schedules(triggers: &[Value]) -> Vec<Schedule> {
    triggers
        .iter()
        .filter_map(|t| Schedule::parse(t.pointer("/schedule/expression")?.as_str()?).ok())
        .collect()
}

/// The earliest firing of `schedules` after `after` (epoch milliseconds).
fn next_ms(schedules: &[Schedule], after_ms: i64) -> Option<i64> {
    let after = OffsetDateTime::from_unix_timestamp_nanos(i128::from(after_ms) * 1_000_000).ok()?;
    schedules
        .iter()
        .filter_map(|s| s.next_after(after))
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .min()
}

impl Analytics {
    /// Starts the contents of the scheduled datasets due at `now_ms`.
    pub(crate) fn run_schedules(self: &Arc<Self>, now_ms: i64) -> Result<(), AnalyticsError> {
        for dataset in self.catalog.list::<DatasetRecord>("dataset", "")? {
            let schedules = schedules(&dataset.triggers);
            if schedules.is_empty() {
                continue;
            }
            let due: Option<i64> = self.catalog.get("schedule", &dataset.name)?;
            let next = match due {
                None => next_ms(&schedules, now_ms),
                Some(due) if due <= now_ms => {
                    tracing::info!(dataset = %dataset.name, "scheduled dataset content");
                    self.create_content(&dataset.name)?;
                    next_ms(&schedules, now_ms)
                }
                Some(_) => continue,
            };
            // A schedule with no firing left is stored as never (i64::MAX).
            self.catalog
                .put("schedule", &dataset.name, &next.unwrap_or(i64::MAX))?;
        }
        Ok(())
    }
}

/// Runs the scheduler until the capability is dropped.
pub(crate) async fn run(analytics: Weak<Analytics>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(analytics) = analytics.upgrade() else {
            return;
        };
        if let Err(e) = analytics.run_schedules(crate::retention::now_ms()) {
            tracing::warn!(error = %e, "dataset scheduler failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::resources::NewDataset;
    use crate::test_support::analytics;

    fn dataset(name: &str, triggers: Vec<serde_json::Value>) -> NewDataset {
        NewDataset {
            name: name.into(),
            actions: vec![
                json!({"actionName": "q", "queryAction": {"sqlQuery": "SELECT 1 AS one"}}),
            ],
            triggers,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_schedule_fires_on_the_test_clock_and_is_stored() {
        let (analytics, _dir) = analytics();
        let rate = vec![json!({"schedule": {"expression": "rate(1 minute)"}})];
        analytics
            .create_dataset(dataset("s", rate), Default::default())
            .unwrap();
        let t0 = 1_800_000_000_000;
        analytics.run_schedules(t0).unwrap();
        assert_eq!(
            analytics.catalog.get::<i64>("schedule", "s").unwrap(),
            Some(t0 + 60_000)
        );
        analytics.run_schedules(t0 + 59_999).unwrap();
        assert!(analytics.contents("s").unwrap().is_empty());
        analytics.run_schedules(t0 + 60_000).unwrap();
        assert_eq!(analytics.contents("s").unwrap().len(), 1);
        assert_eq!(
            analytics.catalog.get::<i64>("schedule", "s").unwrap(),
            Some(t0 + 120_000)
        );
        // A firing missed while stopped runs once, then the schedule counts from then.
        analytics.run_schedules(t0 + 600_000).unwrap();
        assert_eq!(
            analytics.catalog.get::<i64>("schedule", "s").unwrap(),
            Some(t0 + 660_000)
        );
    }
}
