//! Invocation logs, as Lambda prints them: `START`, what the function wrote, `END`, `REPORT`.
//! Each function's log is a file `<data dir>/functions/logs/<name>.log`, rotated to `.1` past
//! 8 MiB, read by `fleetcore function logs` (and by the CloudWatch Logs API when it exists).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;

/// Size at which a function's log file is rotated.
const ROTATE_BYTES: u64 = 8 << 20;
/// Most of one invocation's own output kept in its log (the rest is cut, with a note).
pub const MAX_INVOCATION_OUTPUT: usize = 256 << 10;
/// What `LogType=Tail` returns: the last 4 KB of the invocation's log.
pub const TAIL_BYTES: usize = 4096;

/// The log files of every function.
pub struct FunctionLogs {
    dir: PathBuf,
    /// Open log files by function, with their size.
    open: Mutex<HashMap<String, (File, u64)>>,
}

/// The figures of an invocation's `REPORT` line.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// How long the invocation ran.
    pub duration: Duration,
    /// The configured memory size (MB).
    pub memory_size: u32,
    /// How long starting a worker took, for a cold start.
    pub init: Option<Duration>,
}

impl FunctionLogs {
    /// Logs under `dir` (created if missing).
    pub fn open(dir: &Path) -> std::io::Result<FunctionLogs> {
        std::fs::create_dir_all(dir)?;
        Ok(FunctionLogs {
            dir: dir.to_path_buf(),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The log file of `function`.
    pub fn path(&self, function: &str) -> PathBuf {
        self.dir.join(format!("{function}.log"))
    }

    /// Appends one invocation's log; failures are logged, never fail the invocation.
    pub fn append(&self, function: &str, text: &str) {
        let mut open = self.open.lock();
        let result = (|| -> std::io::Result<()> {
            if open
                .get(function)
                .is_none_or(|(_, size)| *size > ROTATE_BYTES)
            {
                let path = self.path(function);
                if open.remove(function).is_some() {
                    std::fs::rename(&path, self.dir.join(format!("{function}.log.1")))?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                let size = file.metadata()?.len();
                open.insert(function.to_string(), (file, size));
            }
            if let Some((file, size)) = open.get_mut(function) {
                file.write_all(text.as_bytes())?;
                *size += text.len() as u64;
            }
            Ok(())
        })();
        if let Err(error) = result {
            open.remove(function);
            tracing::warn!(%function, %error, "could not write the function log");
        }
    }

    /// Removes the logs of a deleted function.
    pub fn remove(&self, function: &str) {
        let mut open = self.open.lock();
        open.remove(function);
        let _ = std::fs::remove_file(self.path(function));
        let _ = std::fs::remove_file(self.dir.join(format!("{function}.log.1")));
    }
}

/// Appends one invocation's log to `text`, framed as Lambda frames it: `START`, the end of what
/// the function wrote (`output`; `written` is how much it wrote in all), `END`, `REPORT`. A
/// batch of invocations is framed into one buffer and written at once.
pub fn frame_into(
    text: &mut String,
    request_id: &str,
    version: &str,
    output: &[u8],
    written: u64,
    report: &Report,
) {
    use std::fmt::Write as _;
    let shown = &output[output.len().saturating_sub(MAX_INVOCATION_OUTPUT)..];
    // About the frame's size at once; writing to a String cannot fail.
    text.reserve(shown.len() + 3 * request_id.len() + 160);
    let _ = writeln!(text, "START RequestId: {request_id} Version: {version}");
    let cut = written.saturating_sub(shown.len() as u64);
    if cut > 0 {
        let _ = writeln!(
            text,
            "[fleetcore: {cut} bytes of output cut, the last {} follow]",
            shown.len()
        );
    }
    text.push_str(&String::from_utf8_lossy(shown));
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let _ = writeln!(text, "END RequestId: {request_id}");
    let _ = write!(
        text,
        "REPORT RequestId: {request_id}\tDuration: {} ms\tBilled Duration: {} ms\tMemory Size: {} MB",
        Millis(report.duration),
        report.duration.as_nanos().div_ceil(1_000_000),
        report.memory_size
    );
    if let Some(init) = report.init {
        let _ = write!(text, "\tInit Duration: {} ms", Millis(init));
    }
    text.push_str("\t\n");
}

/// A duration as Lambda's REPORT line shows it: milliseconds with two decimals (integer
/// arithmetic, rounded half up, rather than a float formatted per invocation).
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hundredths = (self.0.as_nanos() + 5_000) / 10_000;
        write!(f, "{}.{:02}", hundredths / 100, hundredths % 100)
    }
}

/// The last [`TAIL_BYTES`] of `log`, cut at a character boundary.
pub fn tail(log: &str) -> &str {
    if log.len() <= TAIL_BYTES {
        return log;
    }
    let mut start = log.len() - TAIL_BYTES;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    &log[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_append_and_rotate_past_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = FunctionLogs::open(dir.path()).expect("open");
        let chunk = "x".repeat(1 << 20);
        for _ in 0..9 {
            logs.append("f", &chunk);
        }
        logs.append("f", "after\n");
        let rotated = dir.path().join("f.log.1");
        assert_eq!(std::fs::metadata(&rotated).expect("rotated").len(), 9 << 20);
        assert_eq!(
            std::fs::read_to_string(logs.path("f")).expect("log"),
            "after\n"
        );
        logs.remove("f");
        assert!(!rotated.exists() && !logs.path("f").exists());
    }

    #[test]
    fn frames_like_lambda_and_tails_4kb() {
        let report = Report {
            duration: Duration::from_micros(1500),
            memory_size: 128,
            init: None,
        };
        let mut log = String::new();
        frame_into(&mut log, "r1", "$LATEST", b"hello", 5, &report);
        assert!(
            log.starts_with("START RequestId: r1 Version: $LATEST\nhello\nEND RequestId: r1\n")
        );
        assert!(log.contains("REPORT RequestId: r1\tDuration: 1.50 ms\tBilled Duration: 2 ms"));
        // A batch's frames follow each other in one buffer; durations round half up.
        let second = Report {
            duration: Duration::from_nanos(2_004_999),
            memory_size: 128,
            init: Some(Duration::from_nanos(10_005_000)),
        };
        frame_into(&mut log, "r2", "3", b"", 0, &second);
        assert!(log.ends_with(
            "\t\nSTART RequestId: r2 Version: 3\nEND RequestId: r2\nREPORT RequestId: r2\t\
             Duration: 2.00 ms\tBilled Duration: 3 ms\tMemory Size: 128 MB\tInit Duration: 10.01 ms\t\n"
        ));
        let big = "é".repeat(5000);
        let t = tail(&big);
        assert!(t.len() <= TAIL_BYTES && t.len() >= TAIL_BYTES - 1);
    }
}
