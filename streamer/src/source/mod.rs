//! The source side: the Icecast source port, title updates, and mounts.

pub mod fallback;
pub mod icecast;
pub mod metadata;
pub mod mount;
pub mod proxy;
pub mod upstream;

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub use mount::{Mount, MountError, SourceGuard, SourceInfo};

use std::sync::Arc;

use streammachine_config::SourcesConfig;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// What the source port needs from the server that runs it, and no more:
/// its settings, the metrics, the mounts, the shutdown and parking signals,
/// and where a parked source goes. The server implements it; nothing here
/// names the server, so the dependency points one way (sources on the core).
pub trait SourceHost: Send + Sync + 'static {
    /// The source port's settings.
    fn sources_config(&self) -> &SourcesConfig;
    /// The server's metrics.
    fn metrics(&self) -> &Metrics;
    /// The mount in service under `key`.
    fn mount(&self, key: &str) -> Option<Arc<Mount>>;
    /// The mount that has `key` among its `inputs`.
    fn input_mount(&self, key: &str) -> Option<Arc<Mount>>;
    /// Turns true when the server shuts down.
    fn shutdown_signal(&self) -> watch::Receiver<bool>;
    /// Turns true when the server parks its connections for a handoff.
    fn parking_signal(&self) -> watch::Receiver<bool>;
    /// Keeps a source parked for the handoff.
    fn park_source(&self, p: icecast::ParkedSource);
    /// Failed source logins, per address.
    fn lockout(&self) -> &crate::lockout::Lockout;
}

/// A refused request on the source port: a status, a reason label for the
/// metric, and a message for the encoder's log and ours.
#[derive(Debug)]
pub struct Rejection {
    status: u16,
    reason: &'static str,
    message: String,
    auth: bool,
    retry_after: Option<u64>,
    quiet: bool,
}

impl Rejection {
    /// A rejection with an HTTP status, a metric label and a message.
    pub fn new(status: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Rejection {
            status,
            reason,
            message: message.into(),
            auth: false,
            retry_after: None,
            quiet: false,
        }
    }

    /// Tells the client when to try again (`Retry-After`, seconds).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Counted but not logged (a guesser's repeated failures).
    pub fn quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// Asks for credentials (`WWW-Authenticate`).
    pub fn auth(mut self) -> Self {
        self.auth = true;
        self
    }

    /// The metric label.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Logs it once, counts it, and writes it to the client before closing.
    pub async fn send(self, server: &dyn SourceHost, sock: &mut TcpStream, peer: SocketAddr) {
        if !self.quiet {
            tracing::warn!(%peer, status = self.status, reason = self.reason, "source port: {}", self.message);
        }
        server
            .metrics()
            .source_rejections
            .with_label_values(&[self.reason])
            .inc();
        let mut auth = if self.auth {
            "WWW-Authenticate: Basic realm=\"StreamMachine source\"\r\n".to_string()
        } else {
            String::new()
        };
        if let Some(secs) = self.retry_after {
            auth.push_str(&format!("Retry-After: {secs}\r\n"));
        }
        let body = format!("{}\n", self.message);
        let resp = format!(
            "HTTP/1.0 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.status,
            crate::http::reason(self.status),
            body.len()
        );
        let _ = sock.write_all(resp.as_bytes()).await;
        let _ = sock.shutdown().await;
    }
}
