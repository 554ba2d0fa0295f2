//! The listener side: raw, ICY and pump audio responses, HLS, playlists.

pub mod auth;
mod control;
pub mod hls;
pub mod icy;
pub mod listener;
mod listening;
pub mod live;
pub mod pages;
pub mod playlist;
pub mod signed;
pub mod start;
pub mod titles;

use std::sync::Arc;

use streammachine_config::ListenersConfig;

use crate::source::SourceInfo;
use crate::status::StatusHost;
use crate::stream::Stream;

/// What the listener side needs from the server, and no more: the streams
/// and their sources, the listener port's settings, whether it drains or
/// parks, where a parked listener goes; and (as [`StatusHost`]) what the
/// status pages on the listener port show. The server implements it;
/// nothing here names the server.
pub trait OutputHost: StatusHost + Send + Sync + 'static {
    /// The stream in service under `key`.
    fn stream(&self, key: &str) -> Option<Arc<Stream>>;
    /// The source on air for a stream, if any.
    fn source_info(&self, stream: &Stream) -> Option<SourceInfo>;
    /// The listener port's settings.
    fn listeners_config(&self) -> &ListenersConfig;
    /// The key of signed listener URLs (`listeners.urlSecret`).
    fn url_secret(&self) -> Option<&streammachine_config::Secret>;
    /// Listener authentication webhooks (streams' `listenerAuth`).
    fn listener_auth(&self) -> &Arc<auth::Authenticator>;
    /// Draining: new audio requests are turned away.
    fn is_draining(&self) -> bool;
    /// Parking connections for a handoff.
    fn is_parking(&self) -> bool;
    /// Keeps a listener parked for the handoff.
    fn park_listener(&self, p: listener::ParkedListener);
}
