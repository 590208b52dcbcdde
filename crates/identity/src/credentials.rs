//! The admin credentials of the control plane: one access key pair, kept in the data dir in the
//! AWS shared-credentials format (profile `fleetcore`) so the aws CLI and boto3 can use the file
//! as it is (`AWS_SHARED_CREDENTIALS_FILE=<data>/credentials AWS_PROFILE=fleetcore`).

use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

use crate::IdentityError;
use crate::pki::files::{KEY_MODE, create_private_dir, read_if_exists, write_atomically};

/// The profile name written to the credentials file.
pub const PROFILE: &str = "fleetcore";

/// An access key pair for signing control-plane requests (AWS Signature V4).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminCredentials {
    /// The access key id, e.g. `FCKI...`.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for AdminCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Where the credentials came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialsSource {
    /// Read from the existing file.
    Loaded,
    /// Generated at random and written to the file.
    Created,
    /// Given by the operator (environment or config) and written to the file.
    Configured,
}

/// Path of the credentials file in `data_dir`.
pub fn credentials_path(data_dir: &Path) -> PathBuf {
    data_dir.join("credentials")
}

impl AdminCredentials {
    /// Returns the configured pair when given (and writes it to the file so local tools find
    /// it), else the pair in the file, else a new random pair written to the file (mode 0600).
    pub fn load_or_create(
        data_dir: &Path,
        configured: Option<AdminCredentials>,
    ) -> Result<(AdminCredentials, CredentialsSource), IdentityError> {
        create_private_dir(data_dir)?;
        let path = credentials_path(data_dir);
        if let Some(c) = configured {
            write_atomically(&path, c.to_file().as_bytes(), KEY_MODE)?;
            return Ok((c, CredentialsSource::Configured));
        }
        if let Some(bytes) = read_if_exists(&path)? {
            let text = String::from_utf8_lossy(&bytes);
            return AdminCredentials::parse(&text)
                .map(|c| (c, CredentialsSource::Loaded))
                .ok_or(IdentityError::InvalidCredentialsFile { path });
        }
        let c = AdminCredentials::generate()?;
        write_atomically(&path, c.to_file().as_bytes(), KEY_MODE)?;
        Ok((c, CredentialsSource::Created))
    }

    /// A random pair: a 20-character id starting `FCKI` and a 40-character secret.
    pub fn generate() -> Result<AdminCredentials, IdentityError> {
        const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const SECRET_ALPHABET: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let rng = SystemRandom::new();
        let pick = |alphabet: &[u8], n: usize| -> Result<String, IdentityError> {
            let mut bytes = vec![0u8; n];
            rng.fill(&mut bytes).map_err(|_| IdentityError::Random)?;
            Ok(bytes
                .iter()
                .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
                .collect())
        };
        Ok(AdminCredentials {
            access_key_id: format!("FCKI{}", pick(ID_ALPHABET, 16)?),
            secret_access_key: pick(SECRET_ALPHABET, 40)?,
        })
    }

    /// The file contents: one `[fleetcore]` profile.
    pub fn to_file(&self) -> String {
        format!(
            "[{PROFILE}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            self.access_key_id, self.secret_access_key
        )
    }

    /// Reads the `fleetcore` profile of a shared-credentials file.
    pub fn parse(text: &str) -> Option<AdminCredentials> {
        AdminCredentials::parse_profile(text, PROFILE)
    }

    /// Reads profile `profile` of a shared-credentials file (as the aws CLI reads
    /// `~/.aws/credentials`).
    pub fn parse_profile(text: &str, profile: &str) -> Option<AdminCredentials> {
        let mut in_profile = false;
        let (mut id, mut secret) = (None, None);
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                in_profile = name.trim() == profile;
                continue;
            }
            if !in_profile {
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                match key.trim() {
                    "aws_access_key_id" => id = Some(value.trim().to_string()),
                    "aws_secret_access_key" => secret = Some(value.trim().to_string()),
                    _ => {}
                }
            }
        }
        Some(AdminCredentials {
            access_key_id: id.filter(|s| !s.is_empty())?,
            secret_access_key: secret.filter(|s| !s.is_empty())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_then_loads_the_same_pair_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, source) = AdminCredentials::load_or_create(dir.path(), None).expect("create");
        assert_eq!(source, CredentialsSource::Created);
        assert!(first.access_key_id.starts_with("FCKI") && first.access_key_id.len() == 20);
        assert_eq!(first.secret_access_key.len(), 40);
        let mode = std::fs::metadata(credentials_path(dir.path()))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, source) = AdminCredentials::load_or_create(dir.path(), None).expect("load");
        assert_eq!(source, CredentialsSource::Loaded);
        assert_eq!(again, first);
    }

    #[test]
    fn configured_pair_wins_and_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        AdminCredentials::load_or_create(dir.path(), None).expect("create");
        let mine = AdminCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "secret".into(),
        };
        let (c, source) =
            AdminCredentials::load_or_create(dir.path(), Some(mine.clone())).expect("configured");
        assert_eq!((c, source), (mine.clone(), CredentialsSource::Configured));
        let text = std::fs::read_to_string(credentials_path(dir.path())).expect("read");
        assert_eq!(AdminCredentials::parse(&text), Some(mine));
    }

    #[test]
    fn parse_reads_only_the_fleetcore_profile() {
        let text = "[default]\naws_access_key_id = X\naws_secret_access_key = Y\n[fleetcore]\naws_access_key_id=A\naws_secret_access_key= B \n";
        let c = AdminCredentials::parse(text).expect("parse");
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("A", "B")
        );
        assert_eq!(
            AdminCredentials::parse("[default]\naws_access_key_id = X\n"),
            None
        );
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(credentials_path(dir.path()), "garbage").expect("write");
        assert!(AdminCredentials::load_or_create(dir.path(), None).is_err());
    }
}
