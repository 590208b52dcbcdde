//! Joda-Time style date patterns, as `parse_time` and `time_to_epoch` take them
//! (`yyyy-MM-dd'T'HH:mm:ss.SSSZ`).
//!
//! Supported letters: `y` year, `M` month (`M`/`MM` number, `MMM` short name, `MMMM` full
//! name), `d` day of month, `D` day of year, `H` hour 0-23, `k` hour 1-24, `h` hour 1-12, `K`
//! hour 0-11, `m` minute, `s` second, `S` fraction of a second, `a` AM/PM, `E` day of week
//! (`E`-`EEE` short, `EEEE` full), `Z` offset (`Z` +0000, `ZZ` +00:00), `z` zone name (UTC or
//! the offset), `'text'` literal text (`''` is a quote). Other ASCII letters are refused.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// A pattern, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(char, usize),
}

const FIELDS: &str = "yMdDHkhKmsSaEZz";

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

impl Pattern {
    /// Splits `pattern`; `None` when it uses an unsupported letter or an unclosed quote.
    pub(crate) fn parse(pattern: &str) -> Option<Pattern> {
        let mut parts = Vec::new();
        let mut chars = pattern.chars().peekable();
        let mut literal = String::new();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    literal.push('\'');
                    continue;
                }
                let mut closed = false;
                while let Some(q) = chars.next() {
                    if q == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                            literal.push('\'');
                        } else {
                            closed = true;
                            break;
                        }
                    } else {
                        literal.push(q);
                    }
                }
                if !closed {
                    return None;
                }
            } else if c.is_ascii_alphabetic() {
                if !FIELDS.contains(c) {
                    return None;
                }
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                let mut count = 1;
                while chars.peek() == Some(&c) {
                    chars.next();
                    count += 1;
                }
                parts.push(Part::Field(c, count));
            } else {
                literal.push(c);
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Some(Pattern { parts })
    }

    /// Formats `at` (already in the wanted offset).
    pub(crate) fn format(&self, at: OffsetDateTime) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Field(c, n) => format_field(&mut out, *c, *n, at),
            }
        }
        out
    }

    /// Parses `text` into an instant; fields the pattern lacks default to 1970-01-01 00:00:00
    /// UTC. `None` when the text does not fit the pattern.
    pub(crate) fn parse_instant(&self, text: &str) -> Option<OffsetDateTime> {
        let mut fields = Parsed::default();
        let mut rest = text;
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::Literal(s) => rest = rest.strip_prefix(s.as_str())?,
                Part::Field(c, n) => {
                    // A numeric field followed directly by another numeric field takes exactly
                    // its width (yyyyMMdd); otherwise as many digits as are there.
                    let adjacent = matches!(self.parts.get(i + 1), Some(Part::Field(..)));
                    rest = fields.take(*c, *n, rest, adjacent)?;
                }
            }
        }
        if !rest.is_empty() {
            return None;
        }
        fields.instant()
    }
}

fn pad(out: &mut String, value: i64, width: usize) {
    if value < 0 {
        out.push('-');
    }
    let digits = value.unsigned_abs().to_string();
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(&digits);
}

fn format_field(out: &mut String, c: char, n: usize, at: OffsetDateTime) {
    match c {
        'y' if n == 2 => pad(out, i64::from(at.year()).rem_euclid(100), 2),
        'y' => pad(out, i64::from(at.year()), n),
        'M' if n >= 4 => out.push_str(MONTHS[usize::from(u8::from(at.month())) - 1]),
        'M' if n == 3 => out.push_str(&MONTHS[usize::from(u8::from(at.month())) - 1][..3]),
        'M' => pad(out, i64::from(u8::from(at.month())), n),
        'd' => pad(out, i64::from(at.day()), n),
        'D' => pad(out, i64::from(at.ordinal()), n),
        'H' => pad(out, i64::from(at.hour()), n),
        'k' => pad(
            out,
            i64::from(if at.hour() == 0 { 24 } else { at.hour() }),
            n,
        ),
        'h' => pad(out, i64::from((at.hour() + 11) % 12 + 1), n),
        'K' => pad(out, i64::from(at.hour() % 12), n),
        'm' => pad(out, i64::from(at.minute()), n),
        's' => pad(out, i64::from(at.second()), n),
        'S' => {
            let nanos = format!("{:09}", at.nanosecond());
            let mut digits: String = nanos.chars().take(n).collect();
            while digits.len() < n {
                digits.push('0');
            }
            out.push_str(&digits);
        }
        'a' => out.push_str(if at.hour() < 12 { "AM" } else { "PM" }),
        'E' => {
            let day = DAYS[usize::from(at.weekday().number_days_from_monday())];
            out.push_str(if n >= 4 { day } else { &day[..3] });
        }
        'Z' | 'z' => {
            let offset = at.offset();
            if c == 'z' && offset.is_utc() {
                out.push_str("UTC");
                return;
            }
            let (h, m, _) = offset.as_hms();
            out.push(if offset.is_negative() { '-' } else { '+' });
            pad(out, i64::from(h.unsigned_abs()), 2);
            if n >= 2 || c == 'z' {
                out.push(':');
            }
            pad(out, i64::from(m.unsigned_abs()), 2);
        }
        _ => {}
    }
}

/// Fields read by [`Pattern::parse_instant`].
#[derive(Debug, Default)]
struct Parsed {
    year: Option<i32>,
    month: Option<u8>,
    day: Option<u8>,
    ordinal: Option<u16>,
    hour: Option<u8>,
    hour12: Option<u8>,
    pm: Option<bool>,
    minute: Option<u8>,
    second: Option<u8>,
    nanos: Option<u32>,
    offset_seconds: Option<i32>,
}

fn digits(text: &str, max: usize) -> Option<(i64, &str)> {
    let len = text
        .bytes()
        .take(max)
        .take_while(u8::is_ascii_digit)
        .count();
    if len == 0 {
        return None;
    }
    Some((text[..len].parse().ok()?, &text[len..]))
}

fn name<'t>(text: &'t str, names: &[&str], short: bool) -> Option<(usize, &'t str)> {
    names.iter().enumerate().find_map(|(i, full)| {
        let candidate = if short { &full[..3] } else { full };
        let head = text.get(..candidate.len())?;
        head.eq_ignore_ascii_case(candidate)
            .then(|| (i, &text[candidate.len()..]))
    })
}

impl Parsed {
    fn take<'t>(&mut self, c: char, n: usize, text: &'t str, fixed: bool) -> Option<&'t str> {
        let width = |default: usize| if fixed { n.max(1) } else { default };
        match c {
            'y' => {
                let (negative, text) = match text.strip_prefix('-') {
                    Some(t) => (true, t),
                    None => (false, text),
                };
                let (v, rest) = digits(text, width(9))?;
                let mut year = i32::try_from(v).ok()?;
                if n == 2 && text.len() - rest.len() == 2 {
                    year += 2000;
                }
                self.year = Some(if negative { -year } else { year });
                Some(rest)
            }
            'M' if n >= 3 => {
                let (i, rest) = name(text, &MONTHS, n == 3)?;
                self.month = Some(u8::try_from(i + 1).ok()?);
                Some(rest)
            }
            'E' => {
                // Read, not checked against the date (as Joda's default parser does).
                let (_, rest) = name(text, &DAYS, n < 4)?;
                Some(rest)
            }
            'a' => {
                let head = text.get(..2)?;
                self.pm = Some(if head.eq_ignore_ascii_case("PM") {
                    true
                } else if head.eq_ignore_ascii_case("AM") {
                    false
                } else {
                    return None;
                });
                Some(&text[2..])
            }
            'S' => {
                let (_, rest) = digits(text, width(9))?;
                let taken = &text[..text.len() - rest.len()];
                let mut padded = taken.to_string();
                while padded.len() < 9 {
                    padded.push('0');
                }
                self.nanos = Some(padded.parse().ok()?);
                Some(rest)
            }
            'Z' | 'z' => {
                if let Some(rest) = text.strip_prefix('Z') {
                    self.offset_seconds = Some(0);
                    return Some(rest);
                }
                if let Some(rest) = text.strip_prefix("UTC") {
                    self.offset_seconds = Some(0);
                    return Some(rest);
                }
                let sign = match text.as_bytes().first()? {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let (h, rest) = digits(&text[1..], 2)?;
                let rest = rest.strip_prefix(':').unwrap_or(rest);
                let (m, rest) = digits(rest, 2)?;
                self.offset_seconds = Some(sign * i32::try_from(h * 3600 + m * 60).ok()?);
                Some(rest)
            }
            _ => {
                let (v, rest) = digits(text, width(if c == 'D' { 3 } else { 2 }))?;
                match c {
                    'M' => self.month = Some(u8::try_from(v).ok()?),
                    'd' => self.day = Some(u8::try_from(v).ok()?),
                    'D' => self.ordinal = Some(u16::try_from(v).ok()?),
                    'H' | 'K' => self.hour = Some(u8::try_from(v).ok()?),
                    'k' => self.hour = Some(u8::try_from(v % 24).ok()?),
                    'h' => self.hour12 = Some(u8::try_from(v).ok()?),
                    'm' => self.minute = Some(u8::try_from(v).ok()?),
                    's' => self.second = Some(u8::try_from(v).ok()?),
                    _ => return None,
                }
                Some(rest)
            }
        }
    }

    fn instant(&self) -> Option<OffsetDateTime> {
        let year = self.year.unwrap_or(1970);
        let date = match (self.ordinal, self.month, self.day) {
            (Some(ordinal), None, None) => Date::from_ordinal_date(year, ordinal).ok()?,
            (_, month, day) => Date::from_calendar_date(
                year,
                Month::try_from(month.unwrap_or(1)).ok()?,
                day.unwrap_or(1),
            )
            .ok()?,
        };
        let hour = match (self.hour, self.hour12, self.pm) {
            (Some(h), _, Some(true)) if h < 12 => h + 12,
            (Some(h), _, _) => h,
            (None, Some(h), pm) if (1..=12).contains(&h) => {
                h % 12 + if pm == Some(true) { 12 } else { 0 }
            }
            (None, Some(_), _) => return None,
            (None, None, _) => 0,
        };
        let time = Time::from_hms_nano(
            hour,
            self.minute.unwrap_or(0),
            self.second.unwrap_or(0),
            self.nanos.unwrap_or(0),
        )
        .ok()?;
        let offset = UtcOffset::from_whole_seconds(self.offset_seconds.unwrap_or(0)).ok()?;
        Some(PrimitiveDateTime::new(date, time).assume_offset(offset))
    }
}

/// The offset a `parse_time` time zone argument names: `UTC`, `GMT`, `Z`, `Etc/UTC`, or a
/// fixed offset such as `+05:30`, `-08`, `UTC+2`. Region names (`America/New_York`) need a
/// time-zone database, which this build does not carry: `None`.
pub(crate) fn zone_offset(zone: &str) -> Option<UtcOffset> {
    let zone = zone.trim();
    let rest = ["UTC", "GMT", "Etc/UTC", "Etc/GMT"]
        .iter()
        .find_map(|p| zone.strip_prefix(p))
        .unwrap_or(zone);
    if rest.is_empty() || rest == "Z" {
        return Some(UtcOffset::UTC);
    }
    let sign: i32 = match rest.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let body = &rest[1..];
    let (h, m) = match body.split_once(':') {
        Some((h, m)) => (h.parse::<i32>().ok()?, m.parse::<i32>().ok()?),
        None if body.len() == 4 => (body[..2].parse().ok()?, body[2..].parse().ok()?),
        None => (body.parse().ok()?, 0),
    };
    if !(0..=18).contains(&h) || !(0..60).contains(&m) {
        return None;
    }
    UtcOffset::from_whole_seconds(sign * (h * 3600 + m * 60)).ok()
}

/// Epoch milliseconds as a date-time in `offset`; `None` outside the supported range.
pub(crate) fn from_epoch_ms(ms: i64, offset: UtcOffset) -> Option<OffsetDateTime> {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .map(|t| t.to_offset(offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(pattern: &str, ms: i64) -> String {
        Pattern::parse(pattern)
            .expect("pattern")
            .format(from_epoch_ms(ms, UtcOffset::UTC).expect("time"))
    }

    #[test]
    fn formats_like_joda() {
        // 2016-05-24T17:46:01.123Z
        let ms = 1_464_111_961_123;
        assert_eq!(
            fmt("yyyy-MM-dd'T'HH:mm:ss.SSSZ", ms),
            "2016-05-24T17:46:01.123+0000"
        );
        assert_eq!(fmt("yy/M/d h:mm a", ms), "16/5/24 5:46 PM");
        assert_eq!(fmt("EEE, dd MMM yyyy", ms), "Tue, 24 May 2016");
        assert_eq!(fmt("EEEE MMMM D", ms), "Tuesday May 145");
        assert_eq!(fmt("'quote''s' HH", ms), "quote's 17");
        assert!(Pattern::parse("yyyy-QQ").is_none());
        assert!(Pattern::parse("'open").is_none());
    }

    #[test]
    fn parses_what_it_formats() {
        let p = Pattern::parse("yyyy-MM-dd'T'HH:mm:ss.SSSZZ").expect("pattern");
        let t = p
            .parse_instant("2016-05-24T19:46:01.123+02:00")
            .expect("parsed");
        assert_eq!(t.unix_timestamp_nanos() / 1_000_000, 1_464_111_961_123);
        let p = Pattern::parse("yyyyMMddHHmmss").expect("pattern");
        let t = p.parse_instant("20160524174601").expect("parsed");
        assert_eq!(t.unix_timestamp(), 1_464_111_961);
        let p = Pattern::parse("dd MMM yyyy hh:mm a").expect("pattern");
        let t = p.parse_instant("24 may 2016 05:46 PM").expect("parsed");
        assert_eq!(t.unix_timestamp(), 1_464_111_960);
        assert!(p.parse_instant("24 may 2016 05:46").is_none());
        assert!(
            Pattern::parse("yyyy-MM-dd")
                .expect("p")
                .parse_instant("2016-02-30")
                .is_none()
        );
    }

    #[test]
    fn zones() {
        assert_eq!(zone_offset("UTC"), Some(UtcOffset::UTC));
        assert_eq!(
            zone_offset("+05:30").map(|o| o.whole_seconds()),
            Some(19_800)
        );
        assert_eq!(
            zone_offset("UTC-8").map(|o| o.whole_seconds()),
            Some(-28_800)
        );
        assert_eq!(zone_offset("America/New_York"), None);
    }
}
