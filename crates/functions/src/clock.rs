//! Times as Lambda writes them.

use time::OffsetDateTime;
use time::macros::format_description;

/// Now as `2024-01-31T12:00:00.000+0000` (`LastModified` of a function).
pub fn last_modified_now() -> String {
    let format = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+0000"
    );
    OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}

/// Now as `2024-01-31T12:00:00.000Z` (log lines).
pub fn iso8601_now() -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}

/// Now as `2024/01/31` (the date part of a log stream name).
pub fn log_stream_date() -> String {
    let format = format_description!("[year]/[month]/[day]");
    OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}

/// Seconds since the epoch, as a JSON number (`Date` members of the REST-JSON protocol).
pub fn epoch_seconds(at: std::time::SystemTime) -> f64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
