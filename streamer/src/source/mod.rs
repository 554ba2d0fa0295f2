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

use crate::server::Server;

/// A refused request on the source port: a status, a reason label for the
/// metric, and a message for the encoder's log and ours.
#[derive(Debug)]
pub struct Rejection {
    status: u16,
    reason: &'static str,
    message: String,
    auth: bool,
}

impl Rejection {
    /// A rejection with an HTTP status, a metric label and a message.
    pub fn new(status: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Rejection {
            status,
            reason,
            message: message.into(),
            auth: false,
        }
    }

    /// Asks for credentials (`WWW-Authenticate`).
    pub fn auth(mut self) -> Self {
        self.auth = true;
        self
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
    pub async fn send(self, server: &Server, sock: &mut TcpStream, peer: SocketAddr) {
        tracing::warn!(%peer, status = self.status, reason = self.reason, "source port: {}", self.message);
        server
            .metrics()
            .source_rejections
            .with_label_values(&[self.reason])
            .inc();
        let auth = if self.auth {
            "WWW-Authenticate: Basic realm=\"StreamMachine source\"\r\n"
        } else {
            ""
        };
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
