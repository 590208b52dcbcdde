//! The errors of loading, planning and applying a stack.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::api::ApiError;

/// A place in the configuration: file and 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The `.tf` (or `.tfvars`) file.
    pub file: Arc<PathBuf>,
    /// The 1-based line.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Why a stack could not be loaded, planned, applied or destroyed.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The configuration is wrong at a place in a file.
    #[error("{at}: {message}")]
    Config {
        /// Where.
        at: Location,
        /// What is wrong, naming the construct.
        message: String,
    },
    /// A problem that belongs to no single line (no .tf files, a bad -var).
    #[error("{0}")]
    Input(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The state file is not one this program wrote.
    #[error("state file {path}: {message}")]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The server refused or failed an operation on a resource.
    #[error("{address}: {source}")]
    Api {
        /// The resource address, e.g. `aws_kinesis_stream.raw`.
        address: String,
        /// The server's answer.
        source: ApiError,
    },
}

impl StackError {
    /// A configuration error at `at`.
    pub fn config(at: &Location, message: impl Into<String>) -> StackError {
        StackError::Config {
            at: at.clone(),
            message: message.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StackError {
        StackError::Io {
            path: path.into(),
            source,
        }
    }
}
