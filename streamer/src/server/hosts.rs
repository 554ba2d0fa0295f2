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

/// A connection on the admin port, handed to the admin side with only the
/// part of the server it needs.
pub(super) async fn admin_connection(server: Arc<Server>, sock: TcpStream, peer: SocketAddr) {
    crate::admin::handle_connection(server, sock, peer).await;
}

/// A connection on the listener port, handed to the listener side with only
/// the part of the server it needs.
pub(super) async fn listener_connection(server: Arc<Server>, sock: TcpStream, peer: SocketAddr) {
    crate::output::listener::handle_connection(server, sock, peer).await;
}

impl crate::output::OutputHost for Server {
    fn stream(&self, key: &str) -> Option<Arc<crate::stream::Stream>> {
        Server::stream(self, key)
    }
    fn source_info(&self, stream: &crate::stream::Stream) -> Option<crate::source::SourceInfo> {
        Server::source_info(self, stream)
    }
    fn listeners_config(&self) -> &streammachine_config::ListenersConfig {
        &self.config.listeners
    }
    fn is_draining(&self) -> bool {
        Server::is_draining(self)
    }
    fn is_parking(&self) -> bool {
        Server::is_parking(self)
    }
    fn park_listener(&self, p: crate::output::listener::ParkedListener) {
        Server::park_listener(self, p)
    }
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

impl crate::link::master::MasterHost for Server {
    fn effective_config(&self) -> streammachine_config::Config {
        Server::effective_config(self)
    }
    fn mode(&self) -> streammachine_config::Mode {
        self.config.mode
    }
    fn link_secret(&self) -> Option<&streammachine_config::Secret> {
        Server::link_secret(self)
    }
    fn stream(&self, key: &str) -> Option<Arc<crate::stream::Stream>> {
        Server::stream(self, key)
    }
    fn streams(&self) -> Vec<Arc<crate::stream::Stream>> {
        Server::streams(self)
    }
    fn config_epoch(&self) -> u64 {
        Server::config_epoch(self)
    }
    fn config_changed(&self) -> &tokio::sync::Notify {
        &self.config_notify
    }
    fn metrics(&self) -> &Metrics {
        Server::metrics(self)
    }
    fn slave_connected(&self, info: crate::link::master::SlaveInfo) -> u64 {
        Server::slave_connected(self, info)
    }
    fn slave_stats(&self, slot: u64, stats: Option<crate::link::frame::Stats>) {
        Server::slave_stats(self, slot, stats)
    }
    fn slave_disconnected(&self, slot: u64) {
        Server::slave_disconnected(self, slot)
    }
    fn release_resync_hold(&self, why: &str) {
        Server::release_resync_hold(self, why)
    }
}

impl crate::link::slave::SlaveHost for Server {
    fn link_secret(&self) -> Option<&streammachine_config::Secret> {
        Server::link_secret(self)
    }
    fn stream(&self, key: &str) -> Option<Arc<crate::stream::Stream>> {
        Server::stream(self, key)
    }
    fn streams(&self) -> Vec<Arc<crate::stream::Stream>> {
        Server::streams(self)
    }
    fn apply_replica(&self, config: crate::link::frame::LinkConfig) {
        Server::apply_replica(self, config)
    }
    fn replica_activity(&self) {
        Server::replica_activity(self)
    }
    fn shutdown_signal(&self) -> watch::Receiver<bool> {
        Server::shutdown_signal(self)
    }
    fn metrics(&self) -> &Metrics {
        Server::metrics(self)
    }
}

impl crate::alerts::AlertsHost for Server {
    fn mode(&self) -> streammachine_config::Mode {
        self.config.mode
    }
    fn mounts(&self) -> Vec<Arc<Mount>> {
        Server::mounts(self)
    }
    fn mount(&self, key: &str) -> Option<Arc<Mount>> {
        Server::mount(self, key)
    }
    fn streams(&self) -> Vec<Arc<crate::stream::Stream>> {
        Server::streams(self)
    }
    fn slaves(&self) -> Vec<crate::link::master::SlaveInfo> {
        Server::slaves(self)
    }
    fn metrics(&self) -> &Metrics {
        Server::metrics(self)
    }
    fn shutdown_signal(&self) -> watch::Receiver<bool> {
        Server::shutdown_signal(self)
    }
}

impl crate::status::StatusHost for Server {
    fn is_ready(&self) -> bool {
        Server::is_ready(self)
    }
    fn streams(&self) -> Vec<Arc<crate::stream::Stream>> {
        Server::streams(self)
    }
    fn mount(&self, key: &str) -> Option<Arc<Mount>> {
        Server::mount(self, key)
    }
    fn current_title(&self, stream: &crate::stream::Stream) -> String {
        Server::current_title(self, stream)
    }
    fn slaves(&self) -> Vec<crate::link::master::SlaveInfo> {
        Server::slaves(self)
    }
    fn chunks_behind(
        &self,
        slave: &crate::link::master::SlaveInfo,
    ) -> std::collections::BTreeMap<String, u64> {
        crate::link::master::chunks_behind(self, slave)
    }
    fn started_at(&self) -> std::time::SystemTime {
        Server::started_at(self)
    }
    fn listener_port(&self) -> u16 {
        Server::listener_port(self)
    }
    fn metrics(&self) -> &Metrics {
        Server::metrics(self)
    }
    fn analytics(&self) -> &crate::analytics::Analytics {
        Server::analytics(self)
    }
}

impl crate::api::ApiHost for Server {
    fn stream(&self, key: &str) -> Option<Arc<crate::stream::Stream>> {
        Server::stream(self, key)
    }
    fn mounts(&self) -> Vec<Arc<Mount>> {
        Server::mounts(self)
    }
    fn apply(
        &self,
        mounts: Vec<streammachine_config::SourceMountConfig>,
        streams: Vec<streammachine_config::StreamConfig>,
    ) -> Result<crate::store::Applied, crate::error::ServerError> {
        Server::apply(self, mounts, streams)
    }
    fn record(&self, change: crate::store::Change) {
        Server::record(self, change)
    }
    fn effective_config(&self) -> streammachine_config::Config {
        Server::effective_config(self)
    }
    fn admin_token(&self) -> Option<&streammachine_config::Secret> {
        Server::admin_token(self)
    }
    fn mode(&self) -> streammachine_config::Mode {
        self.config.mode
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
        Server::stream(self, key)
    }
    fn streams(&self) -> Vec<Arc<crate::stream::Stream>> {
        Server::streams(self)
    }
    fn mount(&self, key: &str) -> Option<Arc<Mount>> {
        Server::mount(self, key)
    }
    fn metrics(&self) -> &Metrics {
        Server::metrics(self)
    }
    fn analytics(&self) -> &crate::analytics::Analytics {
        Server::analytics(self)
    }
    fn is_ready(&self) -> bool {
        Server::is_ready(self)
    }
    fn shutdown_signal(&self) -> watch::Receiver<bool> {
        Server::shutdown_signal(self)
    }
    fn release_resync_hold(&self, why: &str) {
        Server::release_resync_hold(self, why)
    }
    fn set_accepting(&self, on: bool) {
        Server::set_accepting(self, on)
    }
    fn begin_parking(&self) {
        Server::begin_parking(self)
    }
    fn end_parking(&self) {
        Server::end_parking(self)
    }
    fn expected_parked(&self) -> (usize, usize) {
        Server::expected_parked(self)
    }
    fn parked_counts(&self) -> (usize, usize) {
        Server::parked_counts(self)
    }
    fn take_parked(&self) -> crate::handoff::Parked {
        Server::take_parked(self)
    }
    fn resume_parked(self: Arc<Self>, parked: crate::handoff::Parked) {
        Server::resume_parked(&self, parked)
    }
    fn listening_sockets(&self) -> Vec<(&'static str, Arc<tokio::net::TcpListener>)> {
        Server::listening_sockets(self)
    }
    fn adopt_listening(self: Arc<Self>, kind: &str, l: tokio::net::TcpListener) {
        Server::adopt_listening(&self, kind, l)
    }
    fn mark_handed_off(&self) {
        Server::mark_handed_off(self)
    }
    fn handoff_settled(&self) {
        Server::handoff_settled(self)
    }
    fn drain(
        &self,
        max: std::time::Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = usize> + Send + '_>> {
        Box::pin(Server::drain(self, max))
    }
    fn handoff_offer(&self) -> Option<(u64, u64)> {
        Server::handoff_offer(self)
    }
    fn set_handoff_offer(&self, id: Option<(u64, u64)>) {
        Server::set_handoff_offer(self, id)
    }
    fn source_host(self: Arc<Self>) -> Arc<dyn crate::source::SourceHost> {
        self
    }
    fn output_host(self: Arc<Self>) -> Arc<dyn crate::output::OutputHost> {
        self
    }
}
