//! Private files under the data dir: 0700 directories, and whole-file replacement via a temporary
//! file and a rename so that a crash leaves either the old contents or the new, never half a key.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::IdentityError;

/// Mode for private keys.
pub(crate) const KEY_MODE: u32 = 0o600;
/// Mode for certificates, which are public (their directory is still 0700).
pub(crate) const CERT_MODE: u32 = 0o644;

/// Creates `path` and any missing parents with mode 0700; existing directories are left as
/// they are.
pub(crate) fn create_private_dir(path: &Path) -> Result<(), IdentityError> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(path)
        .map_err(IdentityError::io("creating directory", path))
}

/// Reads `path`, or `None` if it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, IdentityError> {
    match fs::read(path) {
        Ok(contents) => Ok(Some(contents)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IdentityError::io("reading", path)(e)),
    }
}

/// Replaces `path` with `contents`. The temporary file is created with `mode` already set (so a
/// key is never readable by others, even briefly), synced, then renamed over `path`; the
/// directory is synced so the rename itself survives a crash.
pub(crate) fn write_atomically(
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<(), IdentityError> {
    let (dir, file_name) = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => (dir, name.to_string_lossy()),
        _ => {
            return Err(IdentityError::io("writing", path)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "path has no parent directory or file name",
            )));
        }
    };
    let temp = dir.join(format!(".{file_name}.{}.tmp", unique_suffix()));
    let result = write_new(&temp, contents, mode)
        .map_err(IdentityError::io("writing", &temp))
        .and_then(|()| fs::rename(&temp, path).map_err(IdentityError::io("renaming into", path)))
        .and_then(|()| sync_dir(dir));
    if result.is_err() {
        // Best effort: the temp file is useless now, and may hold part of a key.
        let _ = fs::remove_file(&temp);
    }
    result
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), IdentityError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(IdentityError::io("syncing directory", dir))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), IdentityError> {
    Ok(())
}

/// Distinguishes temp files of concurrent writers, in this process and others.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    #[test]
    fn replaces_contents_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        write_atomically(&path, b"first", KEY_MODE).unwrap();
        write_atomically(&path, b"second", KEY_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret.key")]);
        #[cfg(unix)]
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn failed_write_reports_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("x.key");
        let err = write_atomically(&path, b"k", KEY_MODE).unwrap_err();
        assert!(matches!(err, IdentityError::Io { .. }), "{err:?}");
    }

    #[cfg(unix)]
    #[test]
    fn private_dirs_are_0700_including_parents() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("data").join("ca");
        create_private_dir(&nested).unwrap();
        assert_eq!(mode_of(&nested), 0o700);
        assert_eq!(mode_of(&dir.path().join("data")), 0o700);
        // Idempotent.
        create_private_dir(&nested).unwrap();
    }
}
