//! AWS schedule expressions, as dataset triggers take them: `rate(N minute|minutes|hour|hours|
//! day|days)` and `cron(minutes hours day-of-month month day-of-week year)` in UTC. Cron fields
//! take `*`, numbers, `a-b` ranges, `/step`, comma lists, month names (JAN-DEC) and day names
//! (SUN-SAT, 1 = Sunday); one of the day fields must be `?`. `L`, `W` and `#` are refused.

use time::{Date, Duration, OffsetDateTime, Time};

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every so many seconds.
    Rate(i64),
    /// A cron expression.
    Cron(Box<Cron>),
}

/// The allowed values of each cron field, as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: Option<u64>,
    months: u64,
    weekdays: Option<u64>,
    years: Option<(i32, i32, i32)>,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// The latest year a cron expression may name.
const LAST_YEAR: i32 = 2199;

fn value(text: &str, names: &[&str], first: u32) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(first + i as u32);
    }
    text.parse().map_err(|_| {
        format!(
            "`{text}` is not a number{}",
            if names.is_empty() { "" } else { " or a name" }
        )
    })
}

/// The values `field` allows within [min, max], as (bit set, every value given by `*`).
fn field(field: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    if field.contains(['L', 'W', '#']) && !names.iter().any(|n| field.contains(n)) {
        return Err(format!(
            "`{field}`: L, W and # are not supported by this server"
        ));
    }
    let mut set = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("`{part}`: the step must be a positive number"))?,
            ),
            None => (part, 1),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a, names, min)?, value(b, names, min)?)
        } else {
            let v = value(range, names, min)?;
            (v, if part.contains('/') { max } else { v })
        };
        if low < min || high > max || low > high {
            return Err(format!("`{part}` is outside {min}-{max}"));
        }
        for v in (low..=high).step_by(step as usize) {
            set |= 1 << v;
        }
    }
    Ok(set)
}

impl Schedule {
    /// Parses an AWS schedule expression.
    pub fn parse(expression: &str) -> Result<Schedule, String> {
        let expression = expression.trim();
        if let Some(body) = expression
            .strip_prefix("rate(")
            .and_then(|r| r.strip_suffix(')'))
        {
            let (count, unit) = body
                .trim()
                .split_once(' ')
                .ok_or_else(|| format!("`{expression}`: write rate(N unit)"))?;
            let count: i64 = count
                .parse()
                .ok()
                .filter(|c| *c > 0)
                .ok_or_else(|| format!("`{expression}`: N must be a positive number"))?;
            let unit = match unit.trim() {
                "minute" | "minutes" => 60,
                "hour" | "hours" => 3600,
                "day" | "days" => 86_400,
                other => {
                    return Err(format!(
                        "`{expression}`: the unit `{other}` is not minute(s), hour(s) or day(s)"
                    ));
                }
            };
            return Ok(Schedule::Rate(count * unit));
        }
        let Some(body) = expression
            .strip_prefix("cron(")
            .and_then(|r| r.strip_suffix(')'))
        else {
            return Err(format!(
                "`{expression}` is not a schedule expression: write cron(...) or rate(...)"
            ));
        };
        let fields: Vec<&str> = body.split_whitespace().collect();
        let [minutes, hours, days, months, weekdays, years] = fields.as_slice() else {
            return Err(format!(
                "`{expression}`: a cron expression has six fields (minutes hours day-of-month month day-of-week year)"
            ));
        };
        let wrap = |name: &str, r: Result<u64, String>| r.map_err(|e| format!("cron {name}: {e}"));
        let (days, weekdays) = match (*days, *weekdays) {
            ("?", "?") => {
                return Err(format!(
                    "`{expression}`: only one of day-of-month and day-of-week may be ?"
                ));
            }
            ("?", w) => (None, Some(wrap("day-of-week", field(w, 1, 7, &WEEKDAYS))?)),
            (d, "?") => (Some(wrap("day-of-month", field(d, 1, 31, &[]))?), None),
            _ => {
                return Err(format!(
                    "`{expression}`: one of day-of-month and day-of-week must be ?"
                ));
            }
        };
        let years = if *years == "*" {
            None
        } else {
            let (range, step) = years.split_once('/').unwrap_or((years, "1"));
            let step: i32 = step
                .parse()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| format!("cron year: `{years}` has a bad step"))?;
            let (low, high) = match range.split_once('-') {
                Some((a, b)) => (a.parse().ok(), b.parse().ok()),
                None => (range.parse().ok(), range.parse().ok()),
            };
            let (Some(low), Some(high)) = (low, high) else {
                return Err(format!("cron year: `{years}` is not a year, a range or *"));
            };
            if !(1970..=LAST_YEAR).contains(&low) || !(low..=LAST_YEAR).contains(&high) {
                return Err(format!("cron year: `{years}` is outside 1970-{LAST_YEAR}"));
            }
            Some((low, high, step))
        };
        Ok(Schedule::Cron(Box::new(Cron {
            minutes: wrap("minutes", field(minutes, 0, 59, &[]))?,
            hours: wrap("hours", field(hours, 0, 23, &[]))?,
            days,
            months: wrap("month", field(months, 1, 12, &MONTHS))?,
            weekdays,
            years,
        })))
    }

    /// The first time after `after` the schedule fires (none for a cron whose years are past).
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        match self {
            Schedule::Rate(seconds) => Some(after + Duration::seconds(*seconds)),
            Schedule::Cron(cron) => cron.next_after(after),
        }
    }
}

impl Cron {
    fn date_matches(&self, date: Date) -> bool {
        let year_ok = self.years.is_none_or(|(low, high, step)| {
            (low..=high).contains(&date.year()) && (date.year() - low) % step == 0
        });
        let weekday = u32::from(date.weekday().number_from_sunday());
        year_ok
            && self.months & (1 << u8::from(date.month())) != 0
            && self.days.is_none_or(|d| d & (1 << date.day()) != 0)
            && self.weekdays.is_none_or(|w| w & (1 << weekday) != 0)
    }

    fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        let after = after.to_offset(time::UtcOffset::UTC);
        let start =
            after.replace_nanosecond(0).ok()?.replace_second(0).ok()? + Duration::minutes(1);
        let mut date = start.date();
        while date.year() <= LAST_YEAR {
            if self.date_matches(date) {
                let from = if date == start.date() {
                    (start.hour(), start.minute())
                } else {
                    (0, 0)
                };
                for hour in from.0..24 {
                    if self.hours & (1 << hour) == 0 {
                        continue;
                    }
                    let first_minute = if hour == from.0 { from.1 } else { 0 };
                    for minute in first_minute..60 {
                        if self.minutes & (1 << minute) != 0 {
                            let time = Time::from_hms(hour, minute, 0).ok()?;
                            return Some(date.with_time(time).assume_utc());
                        }
                    }
                }
            }
            date = date.next_day()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
    }

    fn next(expression: &str, after: &str) -> String {
        let schedule = Schedule::parse(expression).unwrap();
        let t = schedule.next_after(at(after)).unwrap();
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    }

    #[test]
    fn rates() {
        assert_eq!(Schedule::parse("rate(5 minutes)"), Ok(Schedule::Rate(300)));
        assert_eq!(Schedule::parse("rate(1 day)"), Ok(Schedule::Rate(86_400)));
        assert!(Schedule::parse("rate(0 minutes)").is_err());
        assert!(
            Schedule::parse("rate(5 weeks)")
                .unwrap_err()
                .contains("weeks")
        );
    }

    #[test]
    fn crons_as_aws_writes_them() {
        // Every day at 12:00 UTC.
        assert_eq!(
            next("cron(0 12 * * ? *)", "2026-03-01T12:00:00Z"),
            "2026-03-02T12:00:00Z"
        );
        assert_eq!(
            next("cron(0 12 * * ? *)", "2026-03-01T11:59:30Z"),
            "2026-03-01T12:00:00Z"
        );
        // Every 15 minutes.
        assert_eq!(
            next("cron(0/15 * * * ? *)", "2026-03-01T10:16:00Z"),
            "2026-03-01T10:30:00Z"
        );
        // 18:00 Monday to Friday (2026-03-07 is a Saturday).
        assert_eq!(
            next("cron(0 18 ? * MON-FRI *)", "2026-03-06T18:00:00Z"),
            "2026-03-09T18:00:00Z"
        );
        // 8:00 on the first day of the month.
        assert_eq!(
            next("cron(0 8 1 * ? *)", "2026-03-01T09:00:00Z"),
            "2026-04-01T08:00:00Z"
        );
        // Day 1 = Sunday.
        assert_eq!(
            next("cron(30 2 ? * 1 *)", "2026-03-01T03:00:00Z"),
            "2026-03-08T02:30:00Z"
        );
        // Years.
        assert_eq!(
            next("cron(0 0 1 JAN ? 2028)", "2026-03-01T00:00:00Z"),
            "2028-01-01T00:00:00Z"
        );
        assert!(
            Schedule::parse("cron(0 0 1 JAN ? 2020)")
                .unwrap()
                .next_after(at("2026-01-01T00:00:00Z"))
                .is_none()
        );
    }

    #[test]
    fn bad_crons_say_why() {
        let err = |e: &str| Schedule::parse(e).unwrap_err();
        assert!(err("cron(0 12 * * *)").contains("six fields"));
        assert!(err("cron(0 12 * * * *)").contains("must be ?"));
        assert!(err("cron(0 12 ? * ? *)").contains("only one"));
        assert!(err("cron(61 12 * * ? *)").contains("minutes"));
        assert!(err("cron(0 12 L * ? *)").contains("not supported"));
        assert!(err("cron(0 12 ? * 6#3 *)").contains("not supported"));
        assert!(err("every day").contains("cron(...)"));
    }
}
