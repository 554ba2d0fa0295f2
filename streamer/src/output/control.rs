//! What limits and admins do to listeners: turning the next one away when a
//! listener limit is reached, and moving one to another stream
//! (`/admin/moveclients`).

use std::sync::Arc;

use super::live::Sender;
use super::OutputHost;
use crate::http::{reason, Response};
use crate::stream::{ListenerCount, Stream};

/// How long a listener turned away by a limit is told to wait.
const FULL_RETRY_SECONDS: u32 = 30;

/// Listeners of `stream` now: connections and active HLS sessions, as
/// `/status-json.xsl` counts them.
fn listeners_of(server: &dyn OutputHost, stream: &Stream) -> usize {
    stream.listener_count() + server.analytics().hls_active(stream.key())
}

/// A `503` when a listener limit is reached: the stream's `maxListeners` or
/// the server's `listeners.maxListeners` (raw, ICY and pump connections and
/// HLS sessions together). Connected listeners are not touched; the count is
/// the one `/status-json.xsl` shows (a limit may be passed by the few that
/// connect in the same instant).
pub(super) fn listener_limit(server: &dyn OutputHost, stream: &Stream) -> Option<Response> {
    let (limit, which) = if stream
        .config()
        .max_listeners
        .is_some_and(|max| listeners_of(server, stream) >= max as usize)
    {
        (stream.config().max_listeners, "stream")
    } else {
        let max = server.listeners_config().max_listeners?;
        let all: usize = (server.streams().iter())
            .map(|s| listeners_of(server, s))
            .sum();
        if all < max as usize {
            return None;
        }
        (Some(max), "server")
    };
    server
        .metrics()
        .listeners_refused
        .with_label_values(&[stream.key(), which])
        .inc();
    let msg = match which {
        "stream" => format!(
            "stream {:?} is full ({} listeners, its maxListeners): retry later",
            stream.key(),
            limit.unwrap_or(0)
        ),
        _ => format!(
            "this server is full ({} listeners, listeners.maxListeners): retry later",
            limit.unwrap_or(0)
        ),
    };
    Some(
        Response::text(503, reason(503), msg).header("Retry-After", FULL_RETRY_SECONDS.to_string()),
    )
}

/// [`listener_limit`] for an HLS playlist request: a session already
/// listening goes on; a new one is turned away when a limit is reached.
pub(super) fn hls_limit(
    server: &dyn OutputHost,
    stream: &Stream,
    req: &crate::http::Request,
    peer: Option<std::net::SocketAddr>,
) -> Option<Response> {
    if stream.config().max_listeners.is_none() && server.listeners_config().max_listeners.is_none()
    {
        return None;
    }
    let session = super::hls::session_for(req, peer)?;
    if server.analytics().hls_session_active(&session) {
        return None;
    }
    listener_limit(server, stream)
}

/// Moves a listener to `to` at the wall-clock time of its position (the
/// frame playing then there; live if that is not held); returns the
/// listener gauge it now counts in; `None` (it stays) for a stream of
/// another format, or its own.
pub(super) fn move_to(
    server: &dyn OutputHost,
    sender: &mut Sender,
    count: &mut ListenerCount,
    output: &'static str,
    to: Arc<Stream>,
) -> Option<prometheus::IntGauge> {
    let from = Arc::clone(sender.stream());
    let m = server.metrics();
    if to.format() != from.format() || Arc::ptr_eq(&to, &from) {
        return None;
    }
    let time = from.read_buffer().time_of(sender.pos);
    let (pos, lag) = {
        let b = to.read_buffer();
        let pos = time.map_or(b.live(), |t| b.position_at_time(t));
        (pos, b.bytes_between(pos, b.live()))
    };
    let sent = m.listener_sent_bytes.with_label_values(&[to.key(), output]);
    sender.switch(Arc::clone(&to), pos, lag, sent);
    let info = Arc::clone(count.info());
    *count = to.listener_moved_in(info);
    tracing::info!(from = %from.key(), to = %to.key(), id = count.info().id, "listener moved");
    let gauge = m.listeners.with_label_values(&[to.key(), output]);
    gauge.inc();
    Some(gauge)
}
