//! Health, readiness, metrics and Icecast-compatible status, served on both the
//! listener and the admin port.

use std::sync::Arc;

use crate::http::Response;
use crate::stream::now_micros;

pub mod icecast_admin;
pub mod icestats;

/// What the status pages and metrics need from the server, and no more.
/// The server implements it; nothing here names the server.
pub trait StatusHost: Send + Sync {
    /// Ready to serve (the readiness probe).
    fn is_ready(&self) -> bool;
    /// Every stream in service.
    fn streams(&self) -> Vec<Arc<crate::stream::Stream>>;
    /// The mount in service under `key`.
    fn mount(&self, key: &str) -> Option<Arc<crate::source::Mount>>;
    /// The title on air for a stream.
    fn current_title(&self, stream: &crate::stream::Stream) -> String;
    /// The linked slaves (a master).
    fn slaves(&self) -> Vec<crate::link::master::SlaveInfo>;
    /// How many chunks a slave is behind, by stream.
    fn chunks_behind(
        &self,
        slave: &crate::link::master::SlaveInfo,
    ) -> std::collections::BTreeMap<String, u64>;
    /// When the server started.
    fn started_at(&self) -> std::time::SystemTime;
    /// The listener port (for URLs).
    fn listener_port(&self) -> u16;
    /// `listeners.publicUrl`: where listeners reach this server (or its
    /// slaves), for URLs in the status pages.
    fn public_url(&self) -> Option<String>;
    /// The server's metrics.
    fn metrics(&self) -> &crate::metrics::Metrics;
    /// Listener analytics (HLS sessions).
    fn analytics(&self) -> &crate::analytics::Analytics;
}

/// Answers the routes every port has, or `None` for other paths.
pub fn common_route(server: &dyn StatusHost, path: &str, host: Option<&str>) -> Option<Response> {
    Some(match path {
        "/healthz" => Response::text(200, "OK", "ok"),
        "/readyz" => {
            if server.is_ready() {
                Response::text(200, "OK", "ready")
            } else {
                Response::text(503, "Service Unavailable", "not ready")
            }
        }
        "/metrics" => Response::new(200, "OK")
            .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            .body(metrics_text(server).into_bytes()),
        "/status-json.xsl" => Response::new(200, "OK")
            .header("Content-Type", "application/json")
            .body(icestats::status_json(server, host).into_bytes()),
        _ => return None,
    })
}

/// Refreshes the scrape-time gauges and renders the exposition.
pub fn metrics_text(server: &dyn StatusHost) -> String {
    let now = now_micros();
    for stream in server.streams() {
        // HLS has no connection to count: its sessions active just now.
        let hls = server.analytics().hls_active(stream.key());
        server
            .metrics()
            .listeners
            .with_label_values(&[stream.key(), "hls"])
            .set(i64::try_from(hls).unwrap_or(i64::MAX));
        if let Some(end) = stream.read_buffer().last_end_ts() {
            server
                .metrics()
                .source_lag_seconds
                .with_label_values(&[stream.key()])
                .set((now - end).max(0) as f64 / 1e6);
        }
    }
    let m = server.metrics();
    m.slave_chunks_behind.reset();
    m.slave_listeners.reset();
    m.slave_last_seen_seconds.reset();
    for slave in server.slaves() {
        for (stream, behind) in server.chunks_behind(&slave) {
            m.slave_chunks_behind
                .with_label_values(&[&slave.id, &stream])
                .set(i64::try_from(behind).unwrap_or(i64::MAX));
        }
        for (stream, n) in &slave.stats.listeners {
            m.slave_listeners
                .with_label_values(&[&slave.id, stream])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        m.slave_last_seen_seconds
            .with_label_values(&[&slave.id])
            .set(slave.last_seen.elapsed().as_secs_f64());
    }
    m.render()
}

/// A plain-text index of the streams, for people who open the server in a browser.
pub fn index(server: &dyn StatusHost) -> Response {
    let mut body = String::from("StreamMachine\n\n");
    let on_air: Vec<String> = icestats::sources(server, None)
        .into_iter()
        .map(|s| s.mount)
        .collect();
    for stream in server.streams() {
        // As /status-json.xsl lists it: a slave's stream is on air while its
        // master's audio arrives.
        let on_air = on_air.iter().any(|m| m[1..] == *stream.key());
        let buffered = stream.read_buffer().duration_micros() / 1_000_000;
        body.push_str(&format!(
            "/{}  {}  source {}  {} listeners  {} s buffered\n",
            stream.key(),
            stream.format(),
            if on_air { "connected" } else { "absent" },
            stream.listener_count() + server.analytics().hls_active(stream.key()),
            buffered
        ));
    }
    Response::text(200, "OK", body)
}
