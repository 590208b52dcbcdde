//! Scheduled audits: CreateScheduledAudit and its siblings store a schedule (`DAILY`,
//! `WEEKLY` on a `dayOfWeek`, `BIWEEKLY` on a `dayOfWeek` every other week, `MONTHLY` on a
//! `dayOfMonth` or `LAST`) with its next run time; a scheduler task runs each schedule's checks
//! as a `SCHEDULED_AUDIT_TASK` when due, at 00:00 UTC of the day, and stores the next run time.
//! The next run time is in the store, so a schedule survives a restart; one missed while the
//! server was down runs once when it is back.
//!
//! Test knob: `defender_audit_day_secs` (default 86400) is the length of a day for schedules
//! only, so a test can watch a `DAILY` audit run every second; it is not for production.

use std::sync::Arc;
use std::time::Duration;

use fleetcore_core::WriteBatch;
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime, Weekday};

use super::{Audits, TABLE, decode};
use crate::error::DefenderError;
use crate::store::now;

const PREFIX: &str = "scheduled/";
const DAY: f64 = 86_400.0;

/// A stored scheduled audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledAudit {
    /// The name.
    pub name: String,
    /// `DAILY`, `WEEKLY`, `BIWEEKLY` or `MONTHLY`.
    pub frequency: String,
    /// `1`..`31` or `LAST` (MONTHLY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day_of_month: Option<String>,
    /// `SUN`..`SAT` (WEEKLY, BIWEEKLY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day_of_week: Option<String>,
    /// The checks it runs.
    pub target_check_names: Vec<String>,
    /// Epoch seconds of the next run.
    pub next_run: f64,
    /// Epoch seconds of the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<f64>,
}

fn weekday(text: &str) -> Option<Weekday> {
    Some(match text {
        "SUN" => Weekday::Sunday,
        "MON" => Weekday::Monday,
        "TUE" => Weekday::Tuesday,
        "WED" => Weekday::Wednesday,
        "THU" => Weekday::Thursday,
        "FRI" => Weekday::Friday,
        "SAT" => Weekday::Saturday,
        _ => return None,
    })
}

/// Checks the frequency and its day.
pub fn validate(
    frequency: &str,
    day_of_month: Option<&str>,
    day_of_week: Option<&str>,
) -> Result<(), DefenderError> {
    let invalid = |m: String| Err(DefenderError::Invalid(m));
    match frequency {
        "DAILY" if day_of_month.is_some() || day_of_week.is_some() => {
            invalid("a DAILY audit takes no dayOfMonth or dayOfWeek".into())
        }
        "DAILY" => Ok(()),
        "WEEKLY" | "BIWEEKLY" => match day_of_week {
            _ if day_of_month.is_some() => invalid(format!(
                "a {frequency} audit takes dayOfWeek, not dayOfMonth"
            )),
            Some(d) if weekday(d).is_some() => Ok(()),
            Some(d) => invalid(format!(
                "dayOfWeek {d:?} must be one of SUN, MON, TUE, WED, THU, FRI, SAT"
            )),
            None => invalid(format!("a {frequency} audit needs a dayOfWeek")),
        },
        "MONTHLY" => match day_of_month {
            _ if day_of_week.is_some() => {
                invalid("a MONTHLY audit takes dayOfMonth, not dayOfWeek".into())
            }
            Some("LAST") => Ok(()),
            Some(d) if d.parse::<u8>().is_ok_and(|n| (1..=31).contains(&n)) => Ok(()),
            Some(d) => invalid(format!("dayOfMonth {d:?} must be 1 to 31 or LAST")),
            None => invalid("a MONTHLY audit needs a dayOfMonth".into()),
        },
        other => invalid(format!(
            "frequency {other:?} must be DAILY, WEEKLY, BIWEEKLY or MONTHLY"
        )),
    }
}

fn midnight(date: Date) -> f64 {
    date.midnight().assume_utc().unix_timestamp() as f64
}

/// The first run time of `schedule` after `after` (both in scaled epoch seconds, where a day
/// lasts 86400).
fn next_after(schedule: &ScheduledAudit, after: f64) -> f64 {
    let today = OffsetDateTime::from_unix_timestamp(after.floor() as i64)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .date();
    // Candidate days start tomorrow unless today's midnight is still ahead (never: it is past).
    let mut day = today.next_day().unwrap_or(today);
    match schedule.frequency.as_str() {
        "WEEKLY" | "BIWEEKLY" => {
            let wanted = schedule
                .day_of_week
                .as_deref()
                .and_then(weekday)
                .unwrap_or(Weekday::Sunday);
            while day.weekday() != wanted {
                day = day.next_day().unwrap_or(day);
            }
            let mut at = midnight(day);
            if schedule.frequency == "BIWEEKLY"
                && let Some(last) = schedule.last_run
                && at < last + 14.0 * DAY - DAY / 2.0
            {
                at += 7.0 * DAY;
            }
            at
        }
        "MONTHLY" => {
            let wanted = schedule.day_of_month.as_deref().unwrap_or("1");
            let (mut year, mut month) = (today.year(), today.month());
            loop {
                let last = month.length(year);
                let d = match wanted {
                    "LAST" => last,
                    n => n.parse::<u8>().unwrap_or(1).min(last),
                };
                if let Ok(date) = Date::from_calendar_date(year, month, d) {
                    let at = midnight(date);
                    if at > after {
                        return at;
                    }
                }
                month = month.next();
                if month == time::Month::January {
                    year += 1;
                }
            }
        }
        _ => midnight(day),
    }
}

/// How schedules see time: a day of `day_secs` real seconds.
#[derive(Debug, Clone, Copy)]
pub struct ScheduleClock {
    /// Scaled seconds per real second.
    scale: f64,
}

impl ScheduleClock {
    /// A clock whose day lasts `day` (86400 s in production).
    pub fn new(day: Duration) -> ScheduleClock {
        ScheduleClock {
            scale: DAY / day.as_secs_f64().max(0.001),
        }
    }

    /// The next run of `schedule` after real time `after`, in real epoch seconds.
    pub fn next_run(&self, schedule: &ScheduledAudit, after: f64) -> f64 {
        let mut scaled = schedule.clone();
        scaled.last_run = schedule.last_run.map(|t| t * self.scale);
        next_after(&scaled, after * self.scale) / self.scale
    }

    /// How often the scheduler looks for due audits.
    fn tick(&self) -> Duration {
        Duration::from_secs_f64((DAY / self.scale / 8.0).clamp(0.1, 60.0))
    }
}

fn key(name: &str) -> Vec<u8> {
    format!("{PREFIX}{name}").into_bytes()
}

impl Audits {
    /// The scheduled audit `name`, if any.
    pub fn scheduled_audit(&self, name: &str) -> Result<Option<ScheduledAudit>, DefenderError> {
        self.store
            .get(TABLE, &key(name))?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Every scheduled audit, by name.
    pub fn scheduled_audits(&self) -> Result<Vec<ScheduledAudit>, DefenderError> {
        self.store
            .scan_prefix(TABLE, PREFIX.as_bytes())?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// Writes `schedule` (create or update).
    pub fn put_scheduled_audit(&self, schedule: &ScheduledAudit) -> Result<(), DefenderError> {
        let mut batch = WriteBatch::new();
        batch.put(
            TABLE,
            key(&schedule.name),
            serde_json::to_vec(schedule).unwrap_or_default(),
        );
        Ok(self.store.apply(batch)?)
    }

    /// Deletes scheduled audit `name`; false when there was none.
    pub fn delete_scheduled_audit(&self, name: &str) -> Result<bool, DefenderError> {
        let _writing = self.writing.lock();
        if self.scheduled_audit(name)?.is_none() {
            return Ok(false);
        }
        let mut batch = WriteBatch::new();
        batch.delete(TABLE, key(name));
        self.store.apply(batch)?;
        Ok(true)
    }

    /// Checks that every check of `names` is enabled and runnable.
    pub fn check_runnable(&self, names: &[String]) -> Result<(), DefenderError> {
        if names.is_empty() {
            return Err(DefenderError::Invalid("targetCheckNames is empty".into()));
        }
        let config = self.configuration()?;
        let registry = super::checks::registry();
        for name in names {
            if !config.enabled(name) {
                return Err(DefenderError::Invalid(format!(
                    "{name} is not enabled in the account audit configuration"
                )));
            }
            if !registry.iter().any(|c| c.name() == name) {
                return Err(DefenderError::Invalid(format!(
                    "{name} is not supported by this server"
                )));
            }
        }
        Ok(())
    }

    /// Runs the scheduled audits that are due at `now` and stores their next run time.
    fn run_due(&self, at: f64) -> Result<(), DefenderError> {
        let clock = self.clock;
        for mut schedule in self.scheduled_audits()? {
            if schedule.next_run > at {
                continue;
            }
            match self.run_task(&schedule.target_check_names, Some(&schedule.name)) {
                Ok(task) => {
                    tracing::info!(audit = %schedule.name, task = %task.task_id, "scheduled audit ran")
                }
                Err(e) => {
                    tracing::warn!(audit = %schedule.name, error = %e, "a scheduled audit could not run")
                }
            }
            let _writing = self.writing.lock();
            // It may have been updated or deleted while it ran.
            let Some(current) = self.scheduled_audit(&schedule.name)? else {
                continue;
            };
            schedule = current;
            schedule.last_run = Some(at);
            schedule.next_run = clock.next_run(&schedule, at);
            self.put_scheduled_audit(&schedule)?;
        }
        Ok(())
    }

    /// Starts the scheduler: runs due scheduled audits until the runtime stops.
    pub fn start_scheduler(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let audits = Arc::clone(self);
        let clock = self.clock;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(clock.tick());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let audits = Arc::clone(&audits);
                // Checks read the store and the registry: off the async workers.
                let ran = tokio::task::spawn_blocking(move || audits.run_due(now())).await;
                match ran {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "the audit scheduler failed a round"),
                    Err(e) => {
                        tracing::error!(error = %e, "the audit scheduler failed; it stops");
                        return;
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(frequency: &str, dom: Option<&str>, dow: Option<&str>) -> ScheduledAudit {
        ScheduledAudit {
            name: "s".into(),
            frequency: frequency.into(),
            day_of_month: dom.map(String::from),
            day_of_week: dow.map(String::from),
            target_check_names: Vec::new(),
            next_run: 0.0,
            last_run: None,
        }
    }

    fn at(y: i32, m: u8, d: u8) -> f64 {
        let month = time::Month::try_from(m).expect("month");
        midnight(Date::from_calendar_date(y, month, d).expect("date"))
    }

    #[test]
    fn next_runs_fall_on_the_schedules_days() {
        // 2026-12-06 is a Sunday.
        let now = at(2026, 12, 6) + 3600.0;
        assert_eq!(
            next_after(&schedule("DAILY", None, None), now),
            at(2026, 12, 7)
        );
        assert_eq!(
            next_after(&schedule("WEEKLY", None, Some("WED")), now),
            at(2026, 12, 9)
        );
        assert_eq!(
            next_after(&schedule("WEEKLY", None, Some("SUN")), now),
            at(2026, 12, 13)
        );
        let mut biweekly = schedule("BIWEEKLY", None, Some("WED"));
        biweekly.last_run = Some(at(2026, 12, 2));
        assert_eq!(next_after(&biweekly, now), at(2026, 12, 16));
        assert_eq!(
            next_after(&schedule("MONTHLY", Some("LAST"), None), now),
            at(2026, 12, 31)
        );
        assert_eq!(
            next_after(
                &schedule("MONTHLY", Some("31"), None),
                at(2027, 1, 31) + 1.0
            ),
            at(2027, 2, 28)
        );
        assert_eq!(
            next_after(&schedule("MONTHLY", Some("1"), None), now),
            at(2027, 1, 1)
        );
    }

    #[test]
    fn a_short_test_day_scales_the_schedule() {
        let clock = ScheduleClock::new(Duration::from_secs(2));
        let s = schedule("DAILY", None, None);
        let next = clock.next_run(&s, 1001.0);
        assert!(next > 1001.0 && next <= 1003.0, "{next}");
    }

    #[test]
    fn frequencies_need_their_day() {
        assert!(validate("DAILY", None, None).is_ok());
        assert!(validate("DAILY", Some("1"), None).is_err());
        assert!(validate("WEEKLY", None, Some("MON")).is_ok());
        assert!(validate("WEEKLY", None, Some("MONDAY")).is_err());
        assert!(validate("BIWEEKLY", None, None).is_err());
        assert!(validate("MONTHLY", Some("LAST"), None).is_ok());
        assert!(validate("MONTHLY", Some("32"), None).is_err());
        assert!(validate("HOURLY", None, None).is_err());
    }
}
