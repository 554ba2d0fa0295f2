//! Health, readiness, metrics and Icecast-compatible status, served on both the
//! listener and the admin port.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use streammachine_config::AudioFormat;
use time::OffsetDateTime;

use crate::http::Response;
use crate::stream::now_micros;

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
        "/status-json.xsl" => Response::json(&icestats(server, host)),
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

fn http_date(t: SystemTime) -> (String, String) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dt = OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let rfc822 = dt
        .format(time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] +0000"
        ))
        .unwrap_or_default();
    let iso = dt
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]+0000"
        ))
        .unwrap_or_default();
    (rfc822, iso)
}

/// `/status-json.xsl` in Icecast 2.4's shape, so existing dashboards and
/// players read it unchanged. Like Icecast, a mount without a source is not
/// listed, `source` is an object when there is one and an array when there
/// are several, and each entry ends with `"dummy": null`.
pub fn icestats(server: &dyn StatusHost, host: Option<&str>) -> Value {
    let host_name = host
        .map(|h| h.rsplit_once(':').map_or(h, |(n, _)| n).to_string())
        .unwrap_or_else(|| "localhost".into());
    let base = match host {
        Some(h) if !h.is_empty() && !h.contains(['\r', '\n', '/']) => format!("http://{h}"),
        _ => format!("http://localhost:{}", server.listener_port()),
    };
    let (start, start_iso) = http_date(server.started_at());
    let mut sources = Vec::new();
    for stream in server.streams() {
        let Some(mount) = server.mount(stream.config().mount_key()) else {
            continue;
        };
        let Some(active) = mount.sources().into_iter().next() else {
            continue;
        };
        let cfg = stream.config();
        let info = &active.info;
        let (stream_start, stream_start_iso) = http_date(active.connected_at);
        let key = stream.format_key().unwrap_or_default();
        let parts: Vec<&str> = key.split('-').collect();
        let bitrate = match stream.format() {
            AudioFormat::Mp3 => parts.get(2).and_then(|b| b.parse::<u32>().ok()),
            AudioFormat::Aac => None,
        };
        let mut entry = serde_json::Map::new();
        if let Some(ai) = &info.audio_info {
            entry.insert("audio_info".into(), json!(ai));
        }
        if let Some(b) = bitrate {
            entry.insert("bitrate".into(), json!(b));
        }
        if let Some(ch) = parts.get(3) {
            let channels = match stream.format() {
                AudioFormat::Mp3 => Some(if *ch == "m" { 1 } else { 2 }),
                AudioFormat::Aac => ch.parse::<u32>().ok(),
            };
            if let Some(c) = channels {
                entry.insert("channels".into(), json!(c));
            }
        }
        if let Some(g) = cfg.genre.clone().or_else(|| info.genre.clone()) {
            entry.insert("genre".into(), json!(g));
        }
        entry.insert("listener_peak".into(), json!(stream.listener_peak()));
        // Connections and HLS sessions active just now alike.
        let hls = server.analytics().hls_active(stream.key());
        entry.insert("listeners".into(), json!(stream.listener_count() + hls));
        entry.insert(
            "listenurl".into(),
            json!(format!("{base}/{}", stream.key())),
        );
        if let Some(rate) = parts.get(1).and_then(|r| r.parse::<u32>().ok()) {
            entry.insert("samplerate".into(), json!(rate));
        }
        if let Some(d) = cfg.description.clone().or_else(|| info.description.clone()) {
            entry.insert("server_description".into(), json!(d));
        }
        entry.insert(
            "server_name".into(),
            json!(cfg
                .name
                .clone()
                .or_else(|| info.name.clone())
                .unwrap_or_else(|| stream.key().to_string())),
        );
        entry.insert(
            "server_type".into(),
            json!(match stream.format() {
                AudioFormat::Mp3 => "audio/mpeg",
                AudioFormat::Aac => "audio/aac",
            }),
        );
        if let Some(u) = cfg.url.clone().or_else(|| info.url.clone()) {
            entry.insert("server_url".into(), json!(u));
        }
        entry.insert("stream_start".into(), json!(stream_start));
        entry.insert("stream_start_iso8601".into(), json!(stream_start_iso));
        entry.insert("title".into(), json!(server.current_title(&stream)));
        entry.insert("dummy".into(), Value::Null);
        sources.push(Value::Object(entry));
    }
    let mut stats = serde_json::Map::new();
    stats.insert("admin".into(), json!("icemaster@localhost"));
    stats.insert("host".into(), json!(host_name));
    stats.insert("location".into(), json!("Earth"));
    stats.insert(
        "server_id".into(),
        json!(format!("StreamMachine {}", env!("CARGO_PKG_VERSION"))),
    );
    stats.insert("server_start".into(), json!(start));
    stats.insert("server_start_iso8601".into(), json!(start_iso));
    match sources.len() {
        0 => {}
        1 => {
            stats.insert("source".into(), sources.remove(0));
        }
        _ => {
            stats.insert("source".into(), Value::Array(sources));
        }
    }
    json!({ "icestats": Value::Object(stats) })
}

/// A plain-text index of the streams, for people who open the server in a browser.
pub fn index(server: &dyn StatusHost) -> Response {
    let mut body = String::from("StreamMachine\n\n");
    for stream in server.streams() {
        let mount = server.mount(stream.config().mount_key());
        let on_air = mount.as_ref().is_some_and(|m| m.active_source().is_some());
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
