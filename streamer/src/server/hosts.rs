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

impl Server {
    /// This server as the listener side sees it.
    pub fn as_output(self: &Arc<Self>) -> Arc<dyn crate::output::OutputHost> {
        Arc::clone(self) as _
    }

    /// This server as the source side sees it.
    pub fn as_source(self: &Arc<Self>) -> Arc<dyn crate::source::SourceHost> {
        Arc::clone(self) as _
    }
}

/// Serves the admin port on `listener`: its router (built once, holding
/// only the admin side's view of the server) answers every connection.
pub(super) fn serve_admin(
    server: &Arc<Server>,
    listener: Arc<tokio::net::TcpListener>,
) -> tokio::task::JoinHandle<()> {
    let router = crate::admin::router(Arc::clone(server) as _);
    tokio::spawn(super::ports::accept_loop(
        Arc::clone(server),
        listener,
        "admin",
        move |_, sock, peer| crate::admin::handle_connection(router.clone(), sock, peer),
    ))
}

/// A connection on the listener port, handed to the listener side with only
/// the part of the server it needs.
pub(super) async fn listener_connection(server: Arc<Server>, sock: TcpStream, peer: SocketAddr) {
    crate::output::listener::handle_connection(server, sock, peer).await;
}

impl crate::output::OutputHost for Server {
    fn stream(&self, key: &str) -> Option<Arc<crate::stream::Stream>> {
        self.registry.stream(key)
    }
    fn source_info(&self, stream: &crate::stream::Stream) -> Option<crate::source::SourceInfo> {
        self.registry.source_info(stream)
    }
    fn listeners_config(&self) -> &streammachine_config::ListenersConfig {
        &self.config.listeners
    }
    fn url_secret(&self) -> Option<&streammachine_config::Secret> {
        self.url_secret.as_ref()
    }
    fn listener_auth(&self) -> &Arc<crate::output::auth::Authenticator> {
        &self.listener_auth
    }
    fn is_draining(&self) -> bool {
        self.lifecycle.is_draining()
    }
    fn is_parking(&self) -> bool {
        self.lifecycle.is_parking()
    }
    fn park_listener(&self, p: crate::output::listener::ParkedListener) {
        self.lifecycle.park_listener(p)
    }
}

impl crate::source::SourceHost for Server {
    fn sources_config(&self) -> &streammachine_config::SourcesConfig {
        &self.config.sources
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn mount(&self, key: &str) -> Option<Arc<Mount>> {
        self.registry.mount(key)
    }
    fn input_mount(&self, key: &str) -> Option<Arc<Mount>> {
        self.registry.input_mount(key)
    }
    fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.lifecycle.shutdown_signal()
    }
    fn parking_signal(&self) -> watch::Receiver<bool> {
        self.lifecycle.parking_signal()
    }
    fn lockout(&self) -> &crate::lockout::Lockout {
        &self.source_lockout
    }
    fn park_source(&self, p: crate::source::icecast::ParkedSource) {
        self.lifecycle.park_source(p)
    }
}

impl crate::link::master::MasterHost for Server {
    fn effective_config(&self) -> streammachine_config::Config {
        Server::effective_config(self)
    }
    fn mode(&self) -> streammachine_config::Mode {
        self.config.mode
    }
    fn link_secret(&self) -> Option<&streammachine_config::Secret> {
        self.link_secret.as_ref()
    }
    fn stream(&self, key: &str) -> Option<Arc<crate::stream::Stream>> {
        self.registry.stream(key)
    }
    fn streams(&self) -> Vec<Arc<crate::stream::Stream>> {
        self.registry.streams()
    }
    fn config_epoch(&self) -> u64 {
        self.registry.epoch()
    }
    fn config_changed(&self) -> &tokio::sync::Notify {
        self.registry.changed()
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn slave_connected(&self, info: crate::link::master::SlaveInfo) -> u64 {
        self.slaves.connected(info)
    }
    fn slave_stats(&self, slot: u64, stats: Option<crate::link::frame::Stats>) {
        self.slaves.report(slot, stats)
    }
    fn slave_disconnected(&self, slot: u64) {
        self.slaves.disconnected(slot)
    }
    fn release_resync_hold(&self, why: &str) {
        Server::release_resync_hold(self, why)
    }
}

impl crate::link::slave::SlaveHost for Server {
    fn link_secret(&self) -> Option<&streammachine_config::Secret> {
        self.link_secret.as_ref()
    }
    fn stream(&self, key: &str) -> Option<Arc<crate::stream::Stream>> {
        self.registry.stream(key)
    }
    fn streams(&self) -> Vec<Arc<crate::stream::Stream>> {
        self.registry.streams()
    }
    fn apply_replica(&self, config: crate::link::frame::LinkConfig) {
        Server::apply_replica(self, config)
    }
    fn replica_activity(&self) {
        self.catch_up.touch()
    }
    fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.lifecycle.shutdown_signal()
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

impl crate::alerts::AlertsHost for Server {
    fn mode(&self) -> streammachine_config::Mode {
        self.config.mode
    }
    fn mounts(&self) -> Vec<Arc<Mount>> {
        self.registry.mounts()
    }
    fn mount(&self, key: &str) -> Option<Arc<Mount>> {
        self.registry.mount(key)
    }
    fn streams(&self) -> Vec<Arc<crate::stream::Stream>> {
        self.registry.streams()
    }
    fn slaves(&self) -> Vec<crate::link::master::SlaveInfo> {
        self.slaves.list()
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.lifecycle.shutdown_signal()
    }
}

impl crate::status::StatusHost for Server {
    fn is_ready(&self) -> bool {
        Server::is_ready(self)
    }
    fn streams(&self) -> Vec<Arc<crate::stream::Stream>> {
        self.registry.streams()
    }
    fn mount(&self, key: &str) -> Option<Arc<Mount>> {
        self.registry.mount(key)
    }
    fn current_title(&self, stream: &crate::stream::Stream) -> String {
        self.registry.current_title(stream)
    }
    fn slaves(&self) -> Vec<crate::link::master::SlaveInfo> {
        self.slaves.list()
    }
    fn chunks_behind(
        &self,
        slave: &crate::link::master::SlaveInfo,
    ) -> std::collections::BTreeMap<String, u64> {
        crate::link::master::chunks_behind(self, slave)
    }
    fn started_at(&self) -> std::time::SystemTime {
        self.started_at
    }
    fn listener_port(&self) -> u16 {
        self.listener_port
            .load(std::sync::atomic::Ordering::Relaxed)
    }
    fn public_url(&self) -> Option<String> {
        self.config.listeners.public_url.clone()
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn analytics(&self) -> &crate::analytics::Analytics {
        &self.analytics
    }
}

impl crate::api::ApiHost for Server {
    fn stream(&self, key: &str) -> Option<Arc<crate::stream::Stream>> {
        self.registry.stream(key)
    }
    fn mounts(&self) -> Vec<Arc<Mount>> {
        self.registry.mounts()
    }
    fn apply(
        &self,
        mounts: Vec<streammachine_config::SourceMountConfig>,
        streams: Vec<streammachine_config::StreamConfig>,
    ) -> Result<crate::store::Applied, crate::error::ServerError> {
        Server::apply(self, mounts, streams)
    }
    fn check(
        &self,
        mounts: Vec<streammachine_config::SourceMountConfig>,
        streams: Vec<streammachine_config::StreamConfig>,
    ) -> Result<(), crate::error::ServerError> {
        Server::check(self, mounts, streams)
    }
    fn journal(&self) -> &crate::journal::Journal {
        &self.journal
    }
    fn effective_config(&self) -> streammachine_config::Config {
        Server::effective_config(self)
    }
    fn admin_token(&self) -> Option<&streammachine_config::Secret> {
        self.admin_token.as_ref()
    }
    fn mode(&self) -> streammachine_config::Mode {
        self.config.mode
    }
    fn admin_lockout(&self) -> &crate::lockout::Lockout {
        &self.admin_lockout
    }
}

impl crate::handoff::HandoffHost for Server {
    fn mode(&self) -> streammachine_config::Mode {
        self.config.mode
    }
    fn effective_config(&self) -> streammachine_config::Config {
        Server::effective_config(self)
    }
    fn apply(
        &self,
        mounts: Vec<streammachine_config::SourceMountConfig>,
        streams: Vec<streammachine_config::StreamConfig>,
    ) -> Result<crate::store::Applied, crate::error::ServerError> {
        Server::apply(self, mounts, streams)
    }
    fn stream(&self, key: &str) -> Option<Arc<crate::stream::Stream>> {
        self.registry.stream(key)
    }
    fn streams(&self) -> Vec<Arc<crate::stream::Stream>> {
        self.registry.streams()
    }
    fn mount(&self, key: &str) -> Option<Arc<Mount>> {
        self.registry.mount(key)
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn analytics(&self) -> &crate::analytics::Analytics {
        &self.analytics
    }
    fn is_ready(&self) -> bool {
        Server::is_ready(self)
    }
    fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.lifecycle.shutdown_signal()
    }
    fn release_resync_hold(&self, why: &str) {
        Server::release_resync_hold(self, why)
    }
    fn set_accepting(&self, on: bool) {
        self.lifecycle.set_accepting(on)
    }
    fn begin_parking(&self) {
        Server::begin_parking(self)
    }
    fn end_parking(&self) {
        self.lifecycle.set_parking(false)
    }
    fn expected_parked(&self) -> (usize, usize) {
        Server::expected_parked(self)
    }
    fn parked_counts(&self) -> (usize, usize) {
        self.lifecycle.parked_counts()
    }
    fn take_parked(&self) -> crate::handoff::Parked {
        self.lifecycle.take_parked()
    }
    fn resume_parked(self: Arc<Self>, parked: crate::handoff::Parked) {
        Server::resume_parked(&self, parked)
    }
    fn listening_sockets(&self) -> Vec<(&'static str, Arc<tokio::net::TcpListener>)> {
        self.lifecycle.listening_sockets()
    }
    fn adopt_listening(self: Arc<Self>, kind: &str, l: tokio::net::TcpListener) {
        Server::adopt_listening(&self, kind, l)
    }
    fn mark_handed_off(&self) {
        self.lifecycle.mark_handed_off()
    }
    fn handoff_settled(&self) {
        self.lifecycle.handoff_settled()
    }
    fn drain(
        &self,
        max: std::time::Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = usize> + Send + '_>> {
        Box::pin(Server::drain(self, max))
    }
    fn handoff_offer(&self) -> Option<(u64, u64)> {
        self.lifecycle.handoff_offer()
    }
    fn set_handoff_offer(&self, id: Option<(u64, u64)>) {
        self.lifecycle.set_handoff_offer(id)
    }
    fn source_host(self: Arc<Self>) -> Arc<dyn crate::source::SourceHost> {
        self
    }
    fn output_host(self: Arc<Self>) -> Arc<dyn crate::output::OutputHost> {
        self
    }
}
