//! A real full disk: the embedded backend on a tiny tmpfs. Puts that do not fit fail with
//! `StreamError::Storage`, nothing half-written is served, and once there is room again appends
//! go on and everything acknowledged survives a reopen.
//!
//! Mounting needs root (as the test machines and CI run); elsewhere the test says it was skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use fleetcore_stream::{
    EmbeddedConfig, EmbeddedStreams, NewRecord, Position, ShardId, Stream, StreamError, StreamMode,
    StreamSpec,
};

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(SmallDisk { path, _dir: dir })
    }

    fn grow(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("remount");
        assert!(status.success(), "remount failed");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn record(n: usize) -> NewRecord {
    NewRecord {
        partition_key: "k".into(),
        explicit_hash_key: None,
        data: Bytes::from(format!("{n}:{}", "z".repeat(16 * 1024))),
    }
}

async fn read_all(streams: &EmbeddedStreams) -> Vec<Bytes> {
    let mut from = Position(0);
    let mut out = Vec::new();
    loop {
        let batch = streams
            .read("s", ShardId(0), from, 1000)
            .await
            .expect("read");
        if batch.records.is_empty() {
            return out;
        }
        from = batch.next;
        out.extend(batch.records.into_iter().map(|r| r.data));
    }
}

async fn open(path: &Path) -> EmbeddedStreams {
    EmbeddedStreams::open(path.join("streams"), EmbeddedConfig::default())
        .await
        .expect("open")
}

#[tokio::test]
async fn a_full_disk_fails_puts_cleanly_and_appends_resume_when_there_is_room() {
    let Some(disk) = SmallDisk::mount("512k") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let streams = open(&disk.path).await;
    streams
        .create_stream(StreamSpec {
            name: "s".into(),
            mode: StreamMode::Provisioned,
            shard_count: 1,
            retention_hours: 24,
        })
        .await
        .expect("create");
    let mut acked = Vec::new();
    let mut failure = None;
    for n in 0..100 {
        match streams
            .put_records("s", vec![record(n), record(n + 1000)])
            .await
        {
            Ok(_) => acked.extend([record(n).data, record(n + 1000).data]),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    assert!(
        matches!(failure, Some(StreamError::Storage(_))),
        "a put on the full disk fails with Storage: {failure:?}"
    );
    assert!(!acked.is_empty());
    assert_eq!(
        read_all(&streams).await,
        acked,
        "only acknowledged records are served"
    );
    // The same put again: refused again (the log stays as it was), or accepted if the failed
    // put's rollback freed enough room (the commit journal is overwritten in place from its
    // start after a failure, so it needs no new room); either way, what is served is exactly
    // what was acknowledged.
    match streams
        .put_records("s", vec![record(5000), record(6000)])
        .await
    {
        Ok(_) => acked.extend([record(5000).data, record(6000).data]),
        Err(error) => assert!(matches!(error, StreamError::Storage(_)), "{error:?}"),
    }
    assert_eq!(read_all(&streams).await, acked);
    disk.grow("4m");
    streams
        .put_records("s", vec![record(9999)])
        .await
        .expect("a put once there is room");
    acked.push(record(9999).data);
    assert_eq!(read_all(&streams).await, acked);
    drop(streams);
    let streams = open(&disk.path).await;
    assert_eq!(read_all(&streams).await, acked, "the log reopens intact");
}
