//! Why the server could not start or apply a configuration (its own module,
//! so the parts that report these errors need not name the server).

use crate::metrics::MetricsError;

/// Errors starting a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration asks for something this build cannot do.
    #[error("{path}: {message}")]
    Unsupported {
        /// Config path.
        path: String,
        /// What is missing.
        message: String,
    },
    /// A password file could not be read.
    #[error("{path}: cannot read password file {file}: {error}")]
    PasswordFile {
        /// Config path.
        path: String,
        /// The file.
        file: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A mount has no password.
    #[error("{path}: a source password is required (password or passwordFile)")]
    NoPassword {
        /// Config path.
        path: String,
    },
    /// A port could not be bound.
    #[error("cannot listen on {what} {addr}: {error}")]
    Bind {
        /// Which port.
        what: &'static str,
        /// The address.
        addr: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Metrics registry.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The dump directory cannot be created.
    #[error("dumps.dir: cannot create {dir}: {error}")]
    DumpDir {
        /// The directory.
        dir: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The streams and mounts do not form a valid configuration.
    #[error(transparent)]
    Config(streammachine_config::ConfigError),
}

/// An error with its sources, `outer: inner: innermost` (a client library's
/// top-level message often says only "connection failed").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
