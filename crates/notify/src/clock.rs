//! Timestamps as SNS writes them.

use time::macros::format_description;

/// Now, as `2026-12-06T14:00:00.000Z` (the envelope's `Timestamp`).
pub fn iso8601_now() -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}
