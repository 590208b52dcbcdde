//! Channel storage: each channel is a folder of numbered files of raw messages, one
//! `<arrival ms>\t<json>` line each, in the server's data folder or, for `customerManagedS3`,
//! as objects `<keyPrefix><channel>/<seq>.jsonl` of a bucket of the lake (see
//! [`crate::bucket`]). A file appears whole (written under a temporary name, fsynced, renamed;
//! an object is one PUT) and a put is answered once its file is durable. One writer task per
//! channel takes every put waiting in its queue into one file (group commit: many puts share
//! one fsync); the queue is bounded and a full queue blocks the caller (BatchPutMessage waits).
//! A put from a stream source also carries its mark (`#mark\t<group>\t<shard>\t<next>`): the
//! writer puts every mark of a file before its messages, so the file itself records, atomically
//! with the messages, how far into the stream it holds ([`ChannelFiles::last_mark`]).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use crate::bucket::{Buckets, Placed};
use crate::columns::Message;
use crate::error::AnalyticsError;
use crate::model::ChannelRecord;

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

/// The channels' places and writers.
pub(crate) struct ChannelFiles {
    root: PathBuf,
    buckets: Option<Arc<dyn Buckets>>,
    /// The customer-managed channels' buckets, or why one cannot be reached (any other
    /// channel is a folder under `root`).
    placed: Mutex<HashMap<String, Result<Arc<Placed>, String>>>,
    writers: Mutex<HashMap<String, Writer>>,
}

/// Where one channel's files are.
#[derive(Clone)]
pub(crate) enum Place {
    /// A folder of the data folder.
    Folder(PathBuf),
    /// Objects under `<keyPrefix><channel>/` in a bucket of the lake.
    Bucket(Arc<Placed>),
}

impl Place {
    /// The numbers of its files, in order.
    async fn numbers(&self) -> Result<Vec<u64>, AnalyticsError> {
        match self {
            Place::Folder(dir) => {
                let dir = dir.clone();
                let what = format!("listing {}", dir.display());
                let files = tokio::task::spawn_blocking(move || numbered(&dir))
                    .await
                    .map_err(|e| AnalyticsError::Invalid(e.to_string()))?
                    .map_err(|e| AnalyticsError::io(what, e))?;
                Ok(files.into_iter().map(|(seq, _)| seq).collect())
            }
            Place::Bucket(placed) => {
                let mut numbers: Vec<u64> = placed
                    .top()
                    .await?
                    .iter()
                    .filter_map(|(name, _)| seq_of(Path::new(name)))
                    .collect();
                numbers.sort_unstable();
                Ok(numbers)
            }
        }
    }

    /// The text of file `seq`; `None` when it is gone (retention removed it).
    async fn text(&self, seq: u64) -> Result<Option<String>, AnalyticsError> {
        match self {
            Place::Folder(dir) => {
                let path = dir.join(file_name(seq));
                tokio::task::spawn_blocking(move || match std::fs::read_to_string(&path) {
                    Ok(text) => Ok(Some(text)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(AnalyticsError::io(format!("reading {}", path.display()), e)),
                })
                .await
                .map_err(|e| AnalyticsError::Invalid(e.to_string()))?
            }
            Place::Bucket(placed) => Ok(placed
                .get(&file_name(seq))
                .await?
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())),
        }
    }

    /// Writes file `seq`, whole and durable.
    async fn write(&self, seq: u64, bytes: Vec<u8>) -> Result<(), String> {
        match self {
            Place::Folder(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || write_file(&dir, seq, &bytes))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            }
            Place::Bucket(placed) => placed
                .put(&file_name(seq), bytes)
                .await
                .map_err(|e| e.to_string()),
        }
    }
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
#[cfg(test)]
pub(crate) fn read_file(path: &Path) -> Result<Vec<Stored>, AnalyticsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AnalyticsError::io(format!("reading {}", path.display()), e))?;
    Ok(parse(&text))
}

/// The messages of a channel file's text.
fn parse(text: &str) -> Vec<Stored> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (ms, json) = line.split_once('\t')?;
            Some(Stored {
                arrival_ms: ms.parse().ok()?,
                message: serde_json::from_str(json).ok()?,
            })
        })
        .collect()
}

impl ChannelFiles {
    /// Channels under `root` (one folder each), and in the lake's `buckets` if the server has
    /// them.
    pub(crate) fn new(root: PathBuf, buckets: Option<Arc<dyn Buckets>>) -> ChannelFiles {
        ChannelFiles {
            root,
            buckets,
            placed: Mutex::new(HashMap::new()),
            writers: Mutex::new(HashMap::new()),
        }
    }

    /// The folder of service-managed channel `channel`.
    pub(crate) fn dir(&self, channel: &str) -> PathBuf {
        self.root.join(channel)
    }

    /// Where `channel`'s files are.
    pub(crate) fn place(&self, channel: &str) -> Result<Place, AnalyticsError> {
        match self.placed.lock().get(channel) {
            Some(Ok(placed)) => Ok(Place::Bucket(Arc::clone(placed))),
            Some(Err(why)) => Err(AnalyticsError::Invalid(format!("channel {channel}: {why}"))),
            None => Ok(Place::Folder(self.dir(channel))),
        }
    }

    /// Opens an existing channel: a customer-managed one is read and written in its bucket
    /// (if the bucket cannot be reached, every use of the channel says why).
    pub(crate) fn open(&self, record: &ChannelRecord) {
        if let Some(s3) = record.customer_s3() {
            let placed = Placed::new(self.buckets.as_ref(), s3, &record.name)
                .map(Arc::new)
                .map_err(|e| e.to_string());
            self.placed.lock().insert(record.name.clone(), placed);
        }
    }

    /// Makes the place of a new channel: its folder, or checks that its bucket is there and
    /// takes writes (a bucket that cannot be used is refused now, not at the first put).
    pub(crate) async fn create(&self, record: &ChannelRecord) -> Result<(), AnalyticsError> {
        let channel = &record.name;
        match record.customer_s3() {
            None => {
                self.placed.lock().remove(channel);
                std::fs::create_dir_all(self.dir(channel))
                    .map_err(|e| AnalyticsError::io(format!("creating channel {channel}"), e))
            }
            Some(s3) => {
                let placed = Placed::prepare("channel", self.buckets.as_ref(), s3, channel).await?;
                self.placed
                    .lock()
                    .insert(channel.clone(), Ok(Arc::new(placed)));
                Ok(())
            }
        }
    }

    /// Stops `channel`'s writer and removes its folder; a customer-managed channel's objects
    /// stay in the customer's bucket.
    pub(crate) fn remove(&self, channel: &str) -> Result<(), AnalyticsError> {
        self.writers.lock().remove(channel);
        if self.placed.lock().remove(channel).is_some() {
            return Ok(());
        }
        match std::fs::remove_dir_all(self.dir(channel)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(AnalyticsError::io(format!("removing channel {channel}"), e))
            }
            _ => Ok(()),
        }
    }

    /// The numbers of `channel`'s files after `seq`, at most `limit`.
    pub(crate) async fn after(
        &self,
        channel: &str,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<u64>, AnalyticsError> {
        let numbers = self.place(channel)?.numbers().await?;
        Ok(numbers
            .into_iter()
            .filter(|s| *s > seq)
            .take(limit)
            .collect())
    }

    /// The object key prefix of `channel`'s files, as StartPipelineReprocessing's
    /// `channelMessages.s3Paths` name them: `<keyPrefix><channel>/` in the customer's bucket,
    /// or for a service-managed channel `channels/<channel>/` (its folder under the data
    /// folder's `analytics/`).
    pub(crate) fn key_prefix(&self, channel: &str) -> Result<String, AnalyticsError> {
        Ok(match self.place(channel)? {
            Place::Folder(_) => format!("channels/{channel}/"),
            Place::Bucket(placed) => placed.prefix.clone(),
        })
    }

    /// The numbers of the files of `channel` whose object keys are `keys` (see
    /// [`ChannelFiles::key_prefix`]), ascending and without repeats; the error names the
    /// first key that is not one of its files.
    pub(crate) async fn files_of_keys(
        &self,
        channel: &str,
        keys: &[String],
    ) -> Result<Vec<u64>, AnalyticsError> {
        let prefix = self.key_prefix(channel)?;
        let stored: HashSet<u64> = self.place(channel)?.numbers().await?.into_iter().collect();
        let mut files = Vec::with_capacity(keys.len());
        for key in keys {
            let seq = key
                .strip_prefix(prefix.as_str())
                .and_then(|name| seq_of(Path::new(name)).filter(|seq| file_name(*seq) == name));
            match seq {
                Some(seq) if stored.contains(&seq) => files.push(seq),
                Some(_) => {
                    return Err(AnalyticsError::Invalid(format!(
                        "channelMessages.s3Paths: `{key}` is not stored in channel {channel} (no such object, or retention removed it)"
                    )));
                }
                None => {
                    return Err(AnalyticsError::Invalid(format!(
                        "channelMessages.s3Paths: `{key}` is not a message object of channel {channel}: its keys are {prefix}<20-digit number>.jsonl"
                    )));
                }
            }
        }
        files.sort_unstable();
        files.dedup();
        Ok(files)
    }

    /// The number of the last file of `channel` (0 when empty).
    pub(crate) async fn last(&self, channel: &str) -> Result<u64, AnalyticsError> {
        Ok(self
            .place(channel)?
            .numbers()
            .await?
            .last()
            .copied()
            .unwrap_or(0))
    }

    /// The messages of `channel`'s file `seq` (none when retention removed it).
    pub(crate) async fn read(
        &self,
        channel: &str,
        seq: u64,
    ) -> Result<Vec<Stored>, AnalyticsError> {
        let text = self.place(channel)?.text(seq).await?.unwrap_or_default();
        tokio::task::spawn_blocking(move || parse(&text))
            .await
            .map_err(|e| AnalyticsError::Invalid(e.to_string()))
    }

    /// The bytes `channel`'s files hold.
    pub(crate) async fn size(&self, channel: &str) -> Result<u64, AnalyticsError> {
        match self.place(channel)? {
            Place::Folder(dir) => Ok(std::fs::read_dir(dir).map_or(0, |entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })),
            Place::Bucket(placed) => Ok(placed
                .top()
                .await?
                .iter()
                .filter(|(name, _)| seq_of(Path::new(name)).is_some())
                .map(|(_, size)| size)
                .sum()),
        }
    }

    /// Watches the last durable file number of `channel`.
    pub(crate) async fn watch(
        &self,
        channel: &str,
    ) -> Result<watch::Receiver<u64>, AnalyticsError> {
        Ok(self.writer(channel).await?.1)
    }

    async fn writer(
        &self,
        channel: &str,
    ) -> Result<(mpsc::Sender<Put>, watch::Receiver<u64>), AnalyticsError> {
        if let Some(w) = self.writers.lock().get(channel)
            && !w.queue.is_closed()
        {
            return Ok((w.queue.clone(), w.last.clone()));
        }
        let place = self.place(channel)?;
        let last = place.numbers().await?.last().copied().unwrap_or(0);
        let mut writers = self.writers.lock();
        // Another caller may have started it meanwhile.
        if let Some(w) = writers.get(channel)
            && !w.queue.is_closed()
        {
            return Ok((w.queue.clone(), w.last.clone()));
        }
        let (queue, receiver) = mpsc::channel(QUEUE);
        let (notify, watcher) = watch::channel(last);
        tokio::spawn(write_loop(place, last, receiver, notify));
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
    /// marks are parsed).
    pub(crate) async fn last_mark(
        &self,
        channel: &str,
        group: &str,
    ) -> Result<Option<Mark>, AnalyticsError> {
        let place = self.place(channel)?;
        for seq in place.numbers().await?.into_iter().rev() {
            // Retention removed it meanwhile: it held no newer mark than the files after it.
            let Some(text) = place.text(seq).await? else {
                continue;
            };
            let marks = text.lines().take_while(|l| l.starts_with('#'));
            if let Some(mark) = marks
                .filter_map(Mark::parse)
                .filter(|m| m.group == group)
                .last()
            {
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
        let (queue, _) = self.writer(channel).await?;
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

/// One channel's writer: every waiting put into one file, one fsync (or PUT), then all answered.
async fn write_loop(
    place: Place,
    mut last: u64,
    mut queue: mpsc::Receiver<Put>,
    notify: watch::Sender<u64>,
) {
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
        let written = place.write(seq, bytes).await;
        if written.is_ok() {
            last = seq;
            notify.send_replace(last);
        }
        for put in puts {
            let _ = put.done.send(written.clone());
        }
    }
}
