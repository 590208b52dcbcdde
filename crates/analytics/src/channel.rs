//! Channel storage: each channel is a folder of numbered files of raw messages, one
//! `<arrival ms>\t<json>` line each. A file appears whole (written under a temporary name,
//! fsynced, renamed) and a put is answered once its file is durable. One writer task per
//! channel takes every put waiting in its queue into one file (group commit: many puts share
//! one fsync); the queue is bounded and a full queue blocks the caller (BatchPutMessage waits).
//! A put from a stream source also carries its mark (`#mark\t<group>\t<shard>\t<next>`): the
//! writer puts every mark of a file before its messages, so the file itself records, atomically
//! with the messages, how far into the stream it holds ([`ChannelFiles::last_mark`]).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use crate::columns::Message;
use crate::error::AnalyticsError;

/// Puts waiting for one channel's writer.
const QUEUE: usize = 256;

/// One message as a channel keeps it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Arrival time, epoch milliseconds.
    pub arrival_ms: i64,
    /// The message.
    pub message: Message,
}

struct Put {
    marks: Vec<u8>,
    lines: Vec<u8>,
    done: oneshot::Sender<Result<(), String>>,
}

struct Writer {
    queue: mpsc::Sender<Put>,
    last: watch::Receiver<u64>,
}

/// The channels' folders and writers.
pub(crate) struct ChannelFiles {
    root: PathBuf,
    writers: Mutex<HashMap<String, Writer>>,
}

fn file_name(seq: u64) -> String {
    format!("{seq:020}.jsonl")
}

fn seq_of(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// The numbered files of folder `dir`, in order.
pub(crate) fn numbered(dir: &Path) -> Result<Vec<(u64, PathBuf)>, std::io::Error> {
    let mut files = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let path = entry?.path();
                if let Some(seq) = seq_of(&path) {
                    files.push((seq, path));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    files.sort_unstable_by_key(|(s, _)| *s);
    Ok(files)
}

fn write_file(dir: &Path, seq: u64, bytes: &[u8]) -> Result<(), std::io::Error> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{seq:020}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    std::fs::rename(&tmp, dir.join(file_name(seq)))?;
    std::fs::File::open(dir)?.sync_all()
}

/// How far into a stream a channel file holds: the records of `shard` before `next` are in it
/// or in an earlier file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mark {
    /// The consumer group of the channel's source.
    pub group: String,
    /// The stream's shard.
    pub shard: u32,
    /// The position after the last record written.
    pub next: u128,
}

impl Mark {
    /// The mark as the line a channel file holds.
    pub(crate) fn line(&self) -> String {
        format!("#mark\t{}\t{}\t{}\n", self.group, self.shard, self.next)
    }

    fn parse(line: &str) -> Option<Mark> {
        let mut parts = line.strip_prefix("#mark\t")?.split('\t');
        let (group, shard, next) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Mark {
            group: group.to_string(),
            shard: shard.parse().ok()?,
            next: next.parse().ok()?,
        })
    }
}

/// The marks at the head of a channel file.
pub(crate) fn read_marks(path: &Path) -> Result<Vec<Mark>, std::io::Error> {
    use std::io::BufRead;
    let mut marks = Vec::new();
    for line in std::io::BufReader::new(std::fs::File::open(path)?).lines() {
        let line = line?;
        if !line.starts_with('#') {
            break;
        }
        marks.extend(Mark::parse(&line));
    }
    Ok(marks)
}

/// Reads one channel file.
pub(crate) fn read_file(path: &Path) -> Result<Vec<Stored>, AnalyticsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AnalyticsError::io(format!("reading {}", path.display()), e))?;
    Ok(text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (ms, json) = line.split_once('\t')?;
            Some(Stored {
                arrival_ms: ms.parse().ok()?,
                message: serde_json::from_str(json).ok()?,
            })
        })
        .collect())
}

impl ChannelFiles {
    /// Channels under `root` (one folder each).
    pub(crate) fn new(root: PathBuf) -> ChannelFiles {
        ChannelFiles {
            root,
            writers: Mutex::new(HashMap::new()),
        }
    }

    /// The folder of `channel`.
    pub(crate) fn dir(&self, channel: &str) -> PathBuf {
        self.root.join(channel)
    }

    /// Creates `channel`'s folder.
    pub(crate) fn create(&self, channel: &str) -> Result<(), AnalyticsError> {
        std::fs::create_dir_all(self.dir(channel))
            .map_err(|e| AnalyticsError::io(format!("creating channel {channel}"), e))
    }

    /// Removes `channel`'s folder and stops its writer.
    pub(crate) fn remove(&self, channel: &str) -> Result<(), AnalyticsError> {
        self.writers.lock().remove(channel);
        match std::fs::remove_dir_all(self.dir(channel)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(AnalyticsError::io(format!("removing channel {channel}"), e))
            }
            _ => Ok(()),
        }
    }

    /// The numbered files of `channel` after `seq`, at most `limit`.
    pub(crate) fn after(
        &self,
        channel: &str,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, PathBuf)>, AnalyticsError> {
        let files = numbered(&self.dir(channel))
            .map_err(|e| AnalyticsError::io(format!("listing channel {channel}"), e))?;
        Ok(files
            .into_iter()
            .filter(|(s, _)| *s > seq)
            .take(limit)
            .collect())
    }

    /// The number of the last file of `channel` (0 when empty).
    pub(crate) fn last(&self, channel: &str) -> Result<u64, AnalyticsError> {
        Ok(numbered(&self.dir(channel))
            .map_err(|e| AnalyticsError::io(format!("listing channel {channel}"), e))?
            .last()
            .map_or(0, |(s, _)| *s))
    }

    /// Watches the last durable file number of `channel`.
    pub(crate) fn watch(&self, channel: &str) -> Result<watch::Receiver<u64>, AnalyticsError> {
        Ok(self.writer(channel)?.1)
    }

    fn writer(
        &self,
        channel: &str,
    ) -> Result<(mpsc::Sender<Put>, watch::Receiver<u64>), AnalyticsError> {
        let mut writers = self.writers.lock();
        if let Some(w) = writers.get(channel)
            && !w.queue.is_closed()
        {
            return Ok((w.queue.clone(), w.last.clone()));
        }
        let dir = self.dir(channel);
        let last = self.last(channel)?;
        let (queue, receiver) = mpsc::channel(QUEUE);
        let (notify, watcher) = watch::channel(last);
        tokio::spawn(write_loop(dir, last, receiver, notify));
        writers.insert(
            channel.to_string(),
            Writer {
                queue: queue.clone(),
                last: watcher.clone(),
            },
        );
        Ok((queue, watcher))
    }

    /// The newest mark of consumer group `group` in `channel` (files newest first; only their
    /// heads are read).
    pub(crate) fn last_mark(
        &self,
        channel: &str,
        group: &str,
    ) -> Result<Option<Mark>, AnalyticsError> {
        let files = numbered(&self.dir(channel))
            .map_err(|e| AnalyticsError::io(format!("listing channel {channel}"), e))?;
        for (_, path) in files.iter().rev() {
            let marks = match read_marks(path) {
                Ok(marks) => marks,
                // Retention removed it meanwhile: it held no newer mark than the files after it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(AnalyticsError::io(format!("reading {}", path.display()), e)),
            };
            if let Some(mark) = marks.into_iter().rev().find(|m| m.group == group) {
                return Ok(Some(mark));
            }
        }
        Ok(None)
    }

    /// Appends `messages` to `channel`, durably, with `mark` in the same file if given.
    pub(crate) async fn append(
        &self,
        channel: &str,
        arrival_ms: i64,
        messages: &[Message],
        mark: Option<&Mark>,
    ) -> Result<(), AnalyticsError> {
        let mut lines = Vec::with_capacity(messages.len() * 64);
        for message in messages {
            let _ = write!(lines, "{arrival_ms}\t");
            serde_json::to_writer(&mut lines, message)
                .map_err(|e| AnalyticsError::Invalid(e.to_string()))?;
            lines.push(b'\n');
        }
        let (queue, _) = self.writer(channel)?;
        let (done, answer) = oneshot::channel();
        let stopped = || AnalyticsError::Invalid(format!("channel {channel} was deleted"));
        queue
            .send(Put {
                marks: mark.map(Mark::line).unwrap_or_default().into_bytes(),
                lines,
                done,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(|e| {
            AnalyticsError::io(
                format!("writing channel {channel}"),
                std::io::Error::other(e),
            )
        })
    }
}

/// One channel's writer: every waiting put into one file, one fsync, then all answered.
async fn write_loop(
    dir: PathBuf,
    mut last: u64,
    mut queue: mpsc::Receiver<Put>,
    notify: watch::Sender<u64>,
) {
    let dir = Arc::new(dir);
    while let Some(first) = queue.recv().await {
        let mut puts = vec![first];
        while let Ok(more) = queue.try_recv() {
            puts.push(more);
        }
        let mut bytes = Vec::new();
        for put in &puts {
            bytes.extend_from_slice(&put.marks);
        }
        for put in &puts {
            bytes.extend_from_slice(&put.lines);
        }
        let seq = last + 1;
        let target = Arc::clone(&dir);
        let written = tokio::task::spawn_blocking(move || write_file(&target, seq, &bytes))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        if written.is_ok() {
            last = seq;
            notify.send_replace(last);
        }
        for put in puts {
            let _ = put.done.send(written.clone());
        }
    }
}
