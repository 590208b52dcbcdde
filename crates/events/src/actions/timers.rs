//! `setTimer{timerName, seconds | durationExpression}`, `resetTimer{timerName}`,
//! `clearTimer{timerName}`. A timer's expiry is evaluated as an input-less event in which
//! `timeout("<name>")` is true; the engine fires it even when no message comes.

use serde_json::Value as Json;

use super::{DetectorAction, Run, Targets, Timer, required_str};
use crate::expr::{self, Expr, Value};

/// Longest timer: 31 days (AWS's limit).
const MAX_SECONDS: u64 = 31 * 24 * 3600;

enum Duration {
    Fixed(u64),
    Expression(Expr),
}

struct SetTimer {
    name: String,
    duration: Duration,
}

struct ResetTimer {
    name: String,
}

struct ClearTimer {
    name: String,
}

fn timer_name(members: &Json) -> Result<String, String> {
    let name = required_str(members, "timerName")?;
    if name.len() > 128 {
        return Err("timerName is longer than 128 characters".into());
    }
    Ok(name.to_string())
}

pub(super) fn build_set(
    members: &Json,
    _targets: &Targets,
) -> Result<Box<dyn DetectorAction>, String> {
    let name = timer_name(members)?;
    let duration = match (members.get("seconds"), members.get("durationExpression")) {
        (Some(Json::Number(n)), None) => match n.as_u64() {
            Some(s) if (1..=MAX_SECONDS).contains(&s) => Duration::Fixed(s),
            _ => return Err(format!("seconds must be 1 to {MAX_SECONDS}")),
        },
        (None, Some(Json::String(text))) => Duration::Expression(
            expr::parse(text)
                .map_err(|e| format!("durationExpression {text:?} is not valid: {e}"))?,
        ),
        (Some(_), Some(_)) => {
            return Err("give either seconds or durationExpression, not both".into());
        }
        _ => return Err("seconds (a number) or durationExpression (a string) is required".into()),
    };
    Ok(Box::new(SetTimer { name, duration }))
}

pub(super) fn build_reset(
    members: &Json,
    _targets: &Targets,
) -> Result<Box<dyn DetectorAction>, String> {
    Ok(Box::new(ResetTimer {
        name: timer_name(members)?,
    }))
}

pub(super) fn build_clear(
    members: &Json,
    _targets: &Targets,
) -> Result<Box<dyn DetectorAction>, String> {
    Ok(Box::new(ClearTimer {
        name: timer_name(members)?,
    }))
}

impl DetectorAction for SetTimer {
    fn expressions(&self) -> Vec<&Expr> {
        match &self.duration {
            Duration::Expression(e) => vec![e],
            Duration::Fixed(_) => vec![],
        }
    }

    fn run(&self, run: &mut Run<'_>) {
        let seconds = match &self.duration {
            Duration::Fixed(s) => *s,
            Duration::Expression(e) => match run.eval(e) {
                Value::Int(i) if i >= 1 => i as u64,
                Value::Decimal(d) if d >= 1.0 && d.is_finite() => d.round() as u64,
                other => {
                    tracing::debug!(timer = %self.name, value = ?other, "setTimer duration is not a number >= 1: timer not set");
                    return;
                }
            },
        }
        .min(MAX_SECONDS);
        run.timers.insert(
            self.name.clone(),
            Timer {
                due_ms: run.now_ms + seconds * 1000,
                seconds,
            },
        );
    }
}

impl DetectorAction for ResetTimer {
    fn expressions(&self) -> Vec<&Expr> {
        vec![]
    }

    fn run(&self, run: &mut Run<'_>) {
        let now = run.now_ms;
        if let Some(timer) = run.timers.get_mut(&self.name) {
            timer.due_ms = now + timer.seconds * 1000;
        }
    }
}

impl DetectorAction for ClearTimer {
    fn expressions(&self) -> Vec<&Expr> {
        vec![]
    }

    fn run(&self, run: &mut Run<'_>) {
        run.timers.remove(&self.name);
    }
}
