//! Retention: a channel's or datastore's `retentionPeriod.numberOfDays` deletes what is older.
//! A sweep runs when the server starts, every [`SWEEP_EVERY`] after, and right after an update
//! of a retention period. A channel file goes once it was written (its messages arrived)
//! before the cutoff;
//! the channel's last file is emptied instead of removed, so its numbering (which pipelines'
//! checkpoints count on) continues. A datastore's `__dt=YYYY-MM-DD` partition goes once the
//! whole day is before the cutoff (the day is the timestamp partition's, else the arrival's).
//! A customer-managed channel's or datastore's bucket is left alone: AWS ignores the retention
//! period of customer-managed storage, and so does this server (the objects are the customer's). Datastores
//! are swept before channels, so once a sweep has cleared a channel, the datastores' part of
//! that sweep is done. A dataset's content versions go after its retention period (see
//! [`crate::dataset`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::Analytics;
use crate::datastore::DAY_COLUMN;
use crate::error::AnalyticsError;
use crate::model::{ChannelRecord, DatastoreRecord, now_seconds};

/// How often the periodic sweep runs.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(3600);

const DAY_MS: i64 = 86_400_000;

/// The days a `retentionPeriod` keeps (`None`: unlimited).
pub(crate) fn days(retention: &Value) -> Option<u64> {
    retention.get("numberOfDays").and_then(Value::as_u64)
}

/// Removes the files of channel folder `dir` written before `cutoff_ms` (a file is written
/// when its messages arrive, so its modification time is theirs); the last file is emptied, not
/// removed (keeping its stream marks). How many files it cleared.
pub(crate) fn sweep_channel(dir: &Path, cutoff_ms: i64) -> Result<usize, std::io::Error> {
    let files = crate::channel::numbered(dir)?;
    let cutoff = std::time::UNIX_EPOCH + Duration::from_millis(cutoff_ms.max(0) as u64);
    let mut cleared = 0;
    for (i, (_, path)) in files.iter().enumerate() {
        let metadata = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if metadata.len() == 0 || metadata.modified()? >= cutoff {
            continue;
        }
        if i + 1 == files.len() {
            // Its stream marks stay: a stream source resumes from them.
            let marks = crate::channel::read_marks(path)?;
            let tmp = path.with_extension("tmp");
            let mut file = std::fs::File::create(&tmp)?;
            for mark in &marks {
                std::io::Write::write_all(&mut file, mark.line().as_bytes())?;
            }
            file.sync_all()?;
            std::fs::rename(&tmp, path)?;
        } else {
            std::fs::remove_file(path)?;
        }
        cleared += 1;
    }
    Ok(cleared)
}

/// Removes the day partitions of datastore folder `dir` whose day ended by `cutoff_ms`; how
/// many it removed.
pub(crate) fn sweep_datastore(dir: &Path, cutoff_ms: i64) -> Result<usize, std::io::Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(day) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DAY_COLUMN)?.strip_prefix('='))
        else {
            continue;
        };
        let Some(start_ms) = day_start_ms(day) else {
            continue;
        };
        if start_ms + DAY_MS <= cutoff_ms {
            std::fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Epoch milliseconds of the start of `YYYY-MM-DD` (UTC).
fn day_start_ms(day: &str) -> Option<i64> {
    let mut parts = day.splitn(3, '-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    let month = time::Month::try_from(month.parse::<u8>().ok()?).ok()?;
    let date = time::Date::from_calendar_date(year.parse().ok()?, month, day.parse().ok()?).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp() * 1000)
}

impl Analytics {
    /// Deletes what every channel's and datastore's retention period has expired, as of `now_ms`.
    pub(crate) async fn sweep(self: &Arc<Self>, now_ms: i64) -> Result<(), AnalyticsError> {
        for datastore in self.catalog.list::<DatastoreRecord>("datastore", "")? {
            let Some(days) = days(&datastore.retention) else {
                continue;
            };
            let lock = self.datastore_lock(&datastore.name);
            let _guard = lock.lock().await;
            let cutoff = now_ms - days as i64 * DAY_MS;
            // A customer-managed bucket keeps everything, as on AWS.
            if datastore.customer_s3().is_some() {
                continue;
            }
            let dir = self.datastores.dir(&datastore.name);
            let removed = tokio::task::spawn_blocking(move || sweep_datastore(&dir, cutoff))
                .await
                .map_err(|e| AnalyticsError::Invalid(e.to_string()))?
                .map_err(|e| {
                    AnalyticsError::io(format!("expiring datastore {}", datastore.name), e)
                })?;
            if removed > 0 {
                tracing::info!(datastore = %datastore.name, partitions = removed, "datastore retention expired partitions");
            }
        }
        for channel in self.catalog.list::<ChannelRecord>("channel", "")? {
            let Some(days) = days(&channel.retention) else {
                continue;
            };
            // A customer-managed bucket keeps everything, as on AWS.
            if channel.customer_s3().is_some() {
                continue;
            }
            let dir = self.channels.dir(&channel.name);
            let cutoff = now_ms - days as i64 * DAY_MS;
            let cleared = tokio::task::spawn_blocking(move || sweep_channel(&dir, cutoff))
                .await
                .map_err(|e| AnalyticsError::Invalid(e.to_string()))?
                .map_err(|e| AnalyticsError::io(format!("expiring channel {}", channel.name), e))?;
            if cleared > 0 {
                tracing::info!(channel = %channel.name, files = cleared, "channel retention expired files");
            }
        }
        self.expire_contents(now_ms as f64 / 1000.0)
    }

    /// Runs a sweep now, in the background.
    pub(crate) fn sweep_soon(self: &Arc<Self>) {
        let analytics = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = analytics.sweep(now_ms()).await {
                tracing::warn!(error = %e, "retention sweep failed");
            }
        });
    }
}

/// The current time, epoch milliseconds.
pub(crate) fn now_ms() -> i64 {
    (now_seconds() * 1000.0) as i64
}

/// Sweeps every [`SWEEP_EVERY`], the first right away; ends when the capability is dropped.
pub(crate) async fn run(analytics: std::sync::Weak<Analytics>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let Some(analytics) = analytics.upgrade() else {
            return;
        };
        if let Err(e) = analytics.sweep(now_ms()).await {
            tracing::warn!(error = %e, "retention sweep failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, seq: u64, written_ms: i64) {
        let path = dir.join(format!("{seq:020}.jsonl"));
        std::fs::write(&path, format!("{written_ms}\t{{\"seq\":{seq}}}\n")).unwrap();
        let when = std::time::UNIX_EPOCH + Duration::from_millis(written_ms as u64);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    #[test]
    fn channel_files_expire_and_the_last_keeps_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let old = day_start_ms("2020-01-01").unwrap();
        let new = day_start_ms("2026-01-10").unwrap();
        write(dir.path(), 1, old);
        write(dir.path(), 2, new);
        write(dir.path(), 3, old);
        write(dir.path(), 4, new);
        let cutoff = new - 3 * DAY_MS;
        assert_eq!(sweep_channel(dir.path(), cutoff).unwrap(), 2);
        let left: Vec<u64> = crate::channel::numbered(dir.path())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(left, [2, 4]);
        // Everything old: the last file stays, empty, so numbering continues after it.
        assert_eq!(sweep_channel(dir.path(), new + 1).unwrap(), 2);
        let left = crate::channel::numbered(dir.path()).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, 4);
        assert!(crate::channel::read_file(&left[0].1).unwrap().is_empty());
        assert_eq!(sweep_channel(dir.path(), new + 1).unwrap(), 0);
    }

    #[test]
    fn the_emptied_last_file_keeps_its_stream_marks() {
        let dir = tempfile::tempdir().unwrap();
        let old = day_start_ms("2020-01-01").unwrap();
        let path = dir.path().join(format!("{:020}.jsonl", 1));
        std::fs::write(&path, format!("#mark\tg\t0\t42\n{old}\t{{\"seq\":1}}\n")).unwrap();
        let when = std::time::UNIX_EPOCH + Duration::from_millis(old as u64);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
        assert_eq!(sweep_channel(dir.path(), old + DAY_MS).unwrap(), 1);
        assert!(crate::channel::read_file(&path).unwrap().is_empty());
        let mark = crate::channel::Mark {
            group: "g".into(),
            shard: 0,
            next: 42,
        };
        assert_eq!(crate::channel::read_marks(&path).unwrap(), [mark]);
    }

    #[test]
    fn datastore_days_expire_whole() {
        let dir = tempfile::tempdir().unwrap();
        for day in ["2020-01-01", "2026-01-09", "2026-01-10"] {
            let part = dir.path().join(format!("__dt={day}")).join("site=a");
            std::fs::create_dir_all(&part).unwrap();
            std::fs::write(part.join("x.parquet"), b"x").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("not_a_partition")).unwrap();
        // The cutoff falls inside 2026-01-10: that day stays, the days before go.
        let cutoff = day_start_ms("2026-01-10").unwrap() + 1000;
        assert_eq!(sweep_datastore(dir.path(), cutoff).unwrap(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(left, ["__dt=2026-01-10", "not_a_partition"]);
        assert_eq!(day_start_ms("1970-01-02"), Some(DAY_MS));
        assert_eq!(day_start_ms("nope"), None);
    }
}
