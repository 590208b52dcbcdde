//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong creating, loading or using the data dir's PKI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A file or directory under the data dir could not be read, written or created.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done, e.g. "writing".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A CA file exists but holds no usable certificate or key. The CA is never replaced
    /// automatically, since that would invalidate every certificate it issued.
    #[error("{} does not hold a valid {expected}", path.display())]
    InvalidCaFile {
        /// The file concerned.
        path: PathBuf,
        /// What the file should hold, e.g. "PEM certificate".
        expected: &'static str,
    },
    /// The CA certificate exists but its private key does not. Replacing the CA would
    /// invalidate every certificate it issued, so the operator has to decide.
    #[error(
        "CA certificate {} exists but its private key {} is missing: restore the key, or remove \
         the certificate to create a new CA (which invalidates every issued certificate)",
        certificate.display(),
        key.display()
    )]
    CaKeyMissing {
        /// The CA certificate file.
        certificate: PathBuf,
        /// The missing key file.
        key: PathBuf,
    },
    /// The CA private key does not belong to the CA certificate.
    #[error("CA key {} does not match CA certificate {}", key.display(), certificate.display())]
    CaKeyMismatch {
        /// The CA certificate file.
        certificate: PathBuf,
        /// The CA key file.
        key: PathBuf,
    },
    /// No server names were given for the server certificate.
    #[error("at least one server name is required for the server certificate")]
    NoServerNames,
    /// A server name is neither a valid DNS name nor an IP address.
    #[error("invalid server name {name:?}: expected a DNS name or an IP address")]
    InvalidServerName {
        /// The rejected name.
        name: String,
    },
    /// A client certificate's common name is unusable.
    #[error("invalid common name {name:?}: {reason}")]
    InvalidCommonName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A requested certificate validity is zero or runs past the representable date range.
    #[error("invalid certificate validity of {days} days")]
    InvalidValidity {
        /// The requested validity.
        days: u32,
    },
    /// Bytes given as a DER certificate are not one.
    #[error("invalid certificate: {reason}")]
    InvalidCertificate {
        /// What the parser objected to.
        reason: String,
    },
    /// rcgen failed to generate a key or sign a certificate.
    #[error("certificate generation failed")]
    Generation(#[from] rcgen::Error),
    /// rustls rejected the certificate, key or protocol configuration.
    #[error("TLS configuration failed")]
    Tls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("client certificate verifier could not be built")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// The system random number generator failed.
    #[error("system random number generator failed")]
    Random,
    /// The credentials file exists but has no `fleetcore` profile with both keys.
    #[error(
        "{path} has no [fleetcore] profile with aws_access_key_id and aws_secret_access_key; fix or delete it"
    )]
    InvalidCredentialsFile {
        /// The file.
        path: std::path::PathBuf,
    },
}

impl IdentityError {
    /// An `Io` error for `path`, as a closure for `map_err`.
    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}
