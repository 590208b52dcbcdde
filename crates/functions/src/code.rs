//! Deployment packages: a zip is checked, unpacked into `<data dir>/functions/code/<sha256>/`
//! (content-addressed: versions sharing code share the folder) and kept beside it as
//! `<sha256>.zip` for GetFunction.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::FunctionsError;

/// Largest deployment package accepted (Lambda: 50 MB zipped for a direct upload).
pub const MAX_ZIP_BYTES: usize = 50 * 1024 * 1024;
/// Largest unpacked size (Lambda: 250 MB).
const MAX_UNPACKED_BYTES: u64 = 250 * 1024 * 1024;
/// Most entries in one package.
const MAX_ENTRIES: usize = 20_000;

/// A package unpacked into the code folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCode {
    /// Hex SHA-256 of the zip: the folder's name.
    pub id: String,
    /// Base64 SHA-256 (Lambda's `CodeSha256`).
    pub sha256: String,
    /// Size of the zip.
    pub size: u64,
}

/// The code folder: packages by hex SHA-256.
#[derive(Debug, Clone)]
pub struct CodeStore {
    root: PathBuf,
}

impl CodeStore {
    /// The code folder under `root` (created if missing).
    pub fn open(root: &Path) -> Result<CodeStore, FunctionsError> {
        std::fs::create_dir_all(root).map_err(|e| FunctionsError::io(root.display(), e))?;
        Ok(CodeStore {
            root: root.to_path_buf(),
        })
    }

    /// Where the files of package `id` are.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Where the zip of package `id` is.
    pub fn zip_path(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.zip"))
    }

    /// Checks and unpacks `zip`; a package already stored is not unpacked again. Bad input
    /// (not a zip, too large, paths leaving the folder) leaves nothing behind.
    pub fn store(&self, zip: &[u8]) -> Result<StoredCode, FunctionsError> {
        if zip.len() > MAX_ZIP_BYTES {
            return Err(FunctionsError::TooLarge(format!(
                "Unzipped size must be smaller than {MAX_UNPACKED_BYTES} bytes and the zip file \
                 at most {MAX_ZIP_BYTES} bytes; this one is {} bytes",
                zip.len()
            )));
        }
        let digest = Sha256::digest(zip);
        let id = fleetcore_api::sigv4::hex(&digest);
        let stored = StoredCode {
            sha256: base64::engine::general_purpose::STANDARD.encode(digest),
            size: zip.len() as u64,
            id: id.clone(),
        };
        let dir = self.dir(&id);
        if dir.is_dir() {
            return Ok(stored);
        }
        let staging = self.root.join(format!(".{id}.{}", uuid::Uuid::new_v4()));
        let result = unpack(zip, &staging).and_then(|()| {
            let zip_path = self.zip_path(&id);
            let tmp = self
                .root
                .join(format!(".{id}.zip.{}", uuid::Uuid::new_v4()));
            std::fs::write(&tmp, zip).map_err(|e| FunctionsError::io(tmp.display(), e))?;
            std::fs::rename(&tmp, &zip_path)
                .map_err(|e| FunctionsError::io(zip_path.display(), e))?;
            match std::fs::rename(&staging, &dir) {
                Ok(()) => Ok(()),
                // Another upload of the same package won the race: same content.
                Err(_) if dir.is_dir() => Ok(()),
                Err(e) => Err(FunctionsError::io(dir.display(), e)),
            }
        });
        if staging.exists() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        result.map(|()| stored)
    }

    /// Removes package `id` (its folder and zip).
    pub fn remove(&self, id: &str) {
        let _ = std::fs::remove_dir_all(self.dir(id));
        let _ = std::fs::remove_file(self.zip_path(id));
    }
}

fn invalid(reason: impl std::fmt::Display) -> FunctionsError {
    FunctionsError::InvalidParameter(format!(
        "Could not unzip uploaded file. Please check your file, then try to upload again. \
         ({reason})"
    ))
}

/// Unpacks `zip` into `dest`, refusing entries that would land outside it and stopping at the
/// size limit (counted on the bytes actually inflated, not on the headers' claims).
fn unpack(zip: &[u8], dest: &Path) -> Result<(), FunctionsError> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).map_err(invalid)?;
    if archive.len() > MAX_ENTRIES {
        return Err(invalid(format!("more than {MAX_ENTRIES} entries")));
    }
    std::fs::create_dir_all(dest).map_err(|e| FunctionsError::io(dest.display(), e))?;
    let mut total: u64 = 0;
    let mut buffer = vec![0u8; 64 * 1024];
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(invalid)?;
        let Some(relative) = entry.enclosed_name() else {
            return Err(invalid(format!(
                "entry {:?} has a path outside the package",
                entry.name()
            )));
        };
        let path = dest.join(relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&path).map_err(|e| FunctionsError::io(path.display(), e))?;
            continue;
        }
        if entry.is_symlink() {
            return Err(invalid(format!(
                "entry {:?} is a symbolic link",
                entry.name()
            )));
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| FunctionsError::io(parent.display(), e))?;
        }
        let mut file =
            std::fs::File::create(&path).map_err(|e| FunctionsError::io(path.display(), e))?;
        loop {
            let n = entry.read(&mut buffer).map_err(invalid)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > MAX_UNPACKED_BYTES {
                return Err(FunctionsError::TooLarge(format!(
                    "Unzipped size must be smaller than {MAX_UNPACKED_BYTES} bytes"
                )));
            }
            file.write_all(&buffer[..n])
                .map_err(|e| FunctionsError::io(path.display(), e))?;
        }
        // Keep the owner's execute bit (a `bootstrap` must be executable), nothing else.
        let executable = entry.unix_mode().is_some_and(|m| m & 0o100 != 0);
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(|e| FunctionsError::io(path.display(), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut out);
            for (name, body) in files {
                w.start_file(*name, zip::write::SimpleFileOptions::default())
                    .expect("start");
                w.write_all(body).expect("write");
            }
            w.finish().expect("finish");
        }
        out.into_inner()
    }

    #[test]
    fn unpacks_once_by_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CodeStore::open(dir.path()).expect("open");
        let zip = zip_of(&[("app.py", b"def h(e, c): return e\n"), ("pkg/x.py", b"")]);
        let code = store.store(&zip).expect("store");
        assert_eq!(code.size, zip.len() as u64);
        assert!(store.dir(&code.id).join("pkg/x.py").is_file());
        assert_eq!(store.store(&zip).expect("again"), code);
    }

    #[test]
    fn refuses_garbage_and_escaping_paths_leaving_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CodeStore::open(dir.path()).expect("open");
        assert!(matches!(
            store.store(b"not a zip"),
            Err(FunctionsError::InvalidParameter(_))
        ));
        let evil = zip_of(&[("../evil.py", b"x")]);
        assert!(store.store(&evil).is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read").collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
