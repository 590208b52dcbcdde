//! The key that signs every message the service sends (the envelope's `Signature`), and the
//! certificate subscribers verify it with (served at `SigningCertURL`). SNS signs with RSA;
//! this server signs with ECDSA P-256 over SHA-256 (`SignatureVersion` 2): verifiers that
//! hand the certificate's public key to a generic verify call (OpenSSL's `openssl_verify`,
//! Python's `cryptography`) accept it, verifiers hard-wired to RSA do not.

use std::path::Path;

use base64::Engine;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SigningKey};

/// The signing key and its self-signed certificate.
pub struct Signer {
    key: KeyPair,
    certificate_pem: String,
}

/// Why the signing key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// Reading or writing its files failed.
    #[error("SNS signing key {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The key or certificate could not be parsed or made.
    #[error("SNS signing key: {0}")]
    Key(#[from] rcgen::Error),
}

impl Signer {
    /// Loads `dir/signing.key` and `dir/signing.pem`, or creates them (key mode 0600).
    pub fn load_or_create(dir: &Path) -> Result<Signer, SignerError> {
        let key_path = dir.join("signing.key");
        let cert_path = dir.join("signing.pem");
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| SignerError::Io { path, source }
        };
        if key_path.exists() && cert_path.exists() {
            let key =
                KeyPair::from_pem(&std::fs::read_to_string(&key_path).map_err(io(&key_path))?)?;
            let certificate_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            return Ok(Signer {
                key,
                certificate_pem,
            });
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["sns.fleetcore.local".to_string()])?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "fleetcore SNS message signing");
        params.distinguished_name = name;
        let certificate_pem = params.self_signed(&key)?.pem();
        write_private(&key_path, key.serialize_pem().as_bytes()).map_err(io(&key_path))?;
        std::fs::write(&cert_path, &certificate_pem).map_err(io(&cert_path))?;
        Ok(Signer {
            key,
            certificate_pem,
        })
    }

    /// The certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The base64 signature of `text` (ECDSA P-256, SHA-256, DER); empty if signing failed.
    pub fn sign(&self, text: &str) -> String {
        match self.key.sign(text.as_bytes()) {
            Ok(signature) => base64::engine::general_purpose::STANDARD.encode(signature),
            Err(error) => {
                tracing::error!(%error, "signing an SNS message failed");
                String::new()
            }
        }
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_survives_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let first = Signer::load_or_create(dir.path()).expect("create");
        let second = Signer::load_or_create(dir.path()).expect("load");
        assert_eq!(first.certificate_pem(), second.certificate_pem());
        assert!(!first.sign("text").is_empty());
        let mode = std::fs::metadata(dir.path().join("signing.key"))
            .expect("key")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}
