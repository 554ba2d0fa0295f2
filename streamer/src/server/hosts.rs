//! The server as each part sees it: the narrow host traits the parts define
//! (what they need from the server), implemented here, so the parts never
//! name the server and the arrows point one way.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::watch;

use super::Server;
use crate::metrics::Metrics;
use crate::source::Mount;

/// A connection on the source port, handed to the source side with only the
/// part of the server it needs.
pub(super) async fn source_connection(server: Arc<Server>, sock: TcpStream, peer: SocketAddr) {
    crate::source::icecast::handle_connection(server, sock, peer).await;
}

impl crate::source::SourceHost for Server {
    fn sources_config(&self) -> &streammachine_config::SourcesConfig {
        &self.config.sources
    }
    fn metrics(&self) -> &Metrics {
        Server::metrics(self)
    }
    fn mount(&self, key: &str) -> Option<Arc<Mount>> {
        Server::mount(self, key)
    }
    fn shutdown_signal(&self) -> watch::Receiver<bool> {
        Server::shutdown_signal(self)
    }
    fn parking_signal(&self) -> watch::Receiver<bool> {
        Server::parking_signal(self)
    }
    fn park_source(&self, p: crate::source::icecast::ParkedSource) {
        Server::park_source(self, p)
    }
}
