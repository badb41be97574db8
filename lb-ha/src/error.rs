//! The one error type of lb-ha.

use std::path::PathBuf;

/// Everything that can go wrong in lb-ha.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration file has a bad line.
    #[error("{file}:{line}: {key}: {message}")]
    Config {
        /// The file (or a label such as `<string>` when parsed from memory).
        file: PathBuf,
        /// One-based line number.
        line: usize,
        /// The directive or key that was wrong.
        key: String,
        /// What was wrong, naming the bad value.
        message: String,
    },
    /// A configuration is complete syntactically but does not make sense as a whole.
    #[error("invalid ha configuration: {0}")]
    Invalid(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A duration could not be parsed.
    #[error("bad duration {0:?}: expected seconds (`2`, `1.5`) or a unit (`500ms`, `2s`, `1m`)")]
    Duration(String),
    /// A resource failed to start.
    #[error("resource {name} failed to start: {message}")]
    Promote {
        /// The resource name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// A resource failed to stop.
    #[error("resource {name} failed to stop: {message}")]
    Demote {
        /// The resource name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// A resource script could not be found.
    #[error("resource script {0:?} not found in the resource directories or PATH")]
    ScriptNotFound(String),
    /// A network interface does not exist.
    #[error("no network interface named {0:?}")]
    NoInterface(String),
    /// The kernel refused a netlink request.
    #[error("netlink {op} failed: {source}")]
    Netlink {
        /// The operation (`add address 198.18.0.100/24 on eth0`, ...).
        op: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// A beat or sync frame is malformed.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A beat or sync frame failed authentication.
    #[error("authentication failed for message from {0}")]
    Auth(String),
    /// Any other I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The node has shut down.
    #[error("the ha node has shut down")]
    Shutdown,
}

impl Error {
    /// An [`Error::Io`] with a context.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// `Result` with lb-ha's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
