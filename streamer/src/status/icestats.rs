//! What Icecast 2.4 reports about each mount it serves, computed once per
//! request from our streams, and rendered as `/status-json.xsl` (JSON) and
//! as the admin interface's `/admin/stats` and `/admin/listmounts` (XML).
//!
//! An Icecast "source" is what a listener tunes to: here a stream. It is
//! listed while it has audio on air: on a standalone server or a master, while
//! its mount has a source; on a slave (whose sources are the master's), while
//! audio keeps arriving over the link.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use streammachine_config::AudioFormat;
use time::OffsetDateTime;

use super::StatusHost;
use crate::stream::{now_micros, Stream};

/// Icecast's defaults for what an encoder did not say.
const NO_GENRE: &str = "various";
const NO_NAME: &str = "Unspecified name";
const NO_DESCRIPTION: &str = "Unspecified description";

/// One source (stream on air), as Icecast reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFacts {
    /// `/<stream>`.
    pub mount: String,
    /// `ice-audio-info`, or ours for a transcoded stream.
    pub audio_info: Option<String>,
    /// kbit/s, when known.
    pub bitrate: Option<u32>,
    /// Channels, when known.
    pub channels: Option<u32>,
    /// Sample rate, Hz, when known.
    pub samplerate: Option<u32>,
    pub genre: String,
    pub listener_peak: usize,
    /// Connections and HLS sessions active just now.
    pub listeners: usize,
    pub listenurl: String,
    /// `ice-public` (0 when not said).
    pub public: u32,
    pub server_description: String,
    pub server_name: String,
    pub server_type: &'static str,
    pub server_url: Option<String>,
    /// The encoder's address (none on a slave).
    pub source_ip: Option<String>,
    /// When the source on air connected (a slave: since its audio has run
    /// without a break).
    pub stream_start: SystemTime,
    /// The title on air; empty when none (then not reported, as Icecast).
    pub title: String,
    /// The encoder's `User-Agent`.
    pub user_agent: Option<String>,
    /// Bytes of audio taken in and sent to listeners.
    pub total_bytes_read: u64,
    pub total_bytes_sent: u64,
}

/// The base of listener URLs: `listeners.publicUrl` when set; else the
/// host the client asked for, as it asked (a proxy's name, or this
/// listener port), but with the listener port when it asked another port
/// of ours (the admin port).
fn listen_base(server: &dyn StatusHost, host: Option<&str>) -> String {
    if let Some(u) = server.public_url() {
        return u.trim_end_matches('/').to_string();
    }
    let name = host_name(host);
    let asked = host.filter(|h| !h.is_empty() && !h.contains(['\r', '\n', '/']));
    let port = server.listener_port();
    match asked {
        Some(h) if h == name || port == 0 || h.ends_with(&format!(":{port}")) => {
            format!("http://{h}")
        }
        _ if port != 0 => format!("http://{name}:{port}"),
        _ => format!("http://{name}"),
    }
}

/// The host part of a `Host` header ("localhost" without one).
pub fn host_name(host: Option<&str>) -> String {
    host.filter(|h| !h.is_empty() && !h.contains(['\r', '\n', '/']))
        .map(|h| {
            // `[::1]:8000`, `name:8000`, `name`.
            match h.rsplit_once(':') {
                Some((n, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !n.ends_with(':') => n,
                _ => h,
            }
        })
        .unwrap_or("localhost")
        .to_string()
}

/// Every stream on air, in key order.
pub fn sources(server: &dyn StatusHost, host: Option<&str>) -> Vec<SourceFacts> {
    let base = listen_base(server, host);
    let mut out: Vec<SourceFacts> = server
        .streams()
        .iter()
        .filter_map(|s| facts(server, s, &base))
        .collect();
    out.sort_by(|a, b| a.mount.cmp(&b.mount));
    out
}

fn facts(server: &dyn StatusHost, stream: &Arc<Stream>, base: &str) -> Option<SourceFacts> {
    let cfg = stream.config();
    let mount = server.mount(cfg.mount_key());
    let active = mount.as_ref().and_then(|m| m.sources().into_iter().next());
    let (info, stream_start, title) = match (&mount, &active) {
        (Some(_), Some(a)) => (
            Some(a.info.clone()),
            a.connected_at,
            server.current_title(stream),
        ),
        (Some(_), None) => return None,
        // A slave: on air while audio arrives; since the current timeline
        // piece began (an encoder change or a gap starts a new one).
        (None, _) => {
            let b = stream.read_buffer();
            if b.is_empty() || b.edge_closed(now_micros()) {
                return None;
            }
            let start = (0..b.len())
                .rev()
                .filter_map(|i| b.at(i))
                .find(|c| c.discontinuity)
                .or_else(|| b.first())
                .map_or(0, |c| c.ts_micros);
            let title = b
                .at(b.len().saturating_sub(1))
                .map(|c| c.title.text().to_string())
                .unwrap_or_default();
            let at = UNIX_EPOCH + Duration::from_micros(u64::try_from(start).unwrap_or(0));
            (None, at, title)
        }
    };
    let key = stream.format_key().unwrap_or_default();
    let parts: Vec<&str> = key.split('-').collect();
    let transcode = cfg.transcode.as_ref();
    let bitrate = match (transcode, stream.format()) {
        (Some(t), _) => Some(t.bitrate),
        (None, AudioFormat::Mp3) => parts.get(2).and_then(|b| b.parse::<u32>().ok()),
        (None, AudioFormat::Aac) => None,
    };
    let channels = parts.get(3).and_then(|ch| match stream.format() {
        AudioFormat::Mp3 => Some(if *ch == "m" { 1 } else { 2 }),
        AudioFormat::Aac => ch.parse::<u32>().ok(),
    });
    let samplerate = parts.get(1).and_then(|r| r.parse::<u32>().ok());
    // A transcoded stream's audio is ours, not the encoder's.
    let audio_info = match transcode {
        Some(t) => {
            let mut v = vec![format!("ice-bitrate={}", t.bitrate)];
            if let Some(c) = channels {
                v.push(format!("ice-channels={c}"));
            }
            if let Some(r) = samplerate {
                v.push(format!("ice-samplerate={r}"));
            }
            Some(v.join(";"))
        }
        None => info.as_ref().and_then(|i| i.audio_info.clone()),
    };
    let from_info = |f: fn(&crate::source::SourceInfo) -> Option<String>| info.as_ref().and_then(f);
    let public = from_info(|i| i.public.clone())
        .and_then(|p| p.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let sent = crate::metrics::counter_sum(
        &server.metrics().listener_sent_bytes,
        Some(("stream", stream.key())),
    );
    Some(SourceFacts {
        mount: format!("/{}", stream.key()),
        audio_info,
        bitrate,
        channels,
        samplerate,
        genre: cfg
            .genre
            .clone()
            .or_else(|| from_info(|i| i.genre.clone()))
            .unwrap_or_else(|| NO_GENRE.into()),
        listener_peak: stream.listener_peak(),
        listeners: stream.listener_count() + server.analytics().hls_active(stream.key()),
        listenurl: format!("{base}/{}", stream.key()),
        public,
        server_description: cfg
            .description
            .clone()
            .or_else(|| from_info(|i| i.description.clone()))
            .unwrap_or_else(|| NO_DESCRIPTION.into()),
        server_name: cfg
            .name
            .clone()
            .or_else(|| from_info(|i| i.name.clone()))
            .unwrap_or_else(|| NO_NAME.into()),
        server_type: match stream.format() {
            AudioFormat::Mp3 => "audio/mpeg",
            AudioFormat::Aac => "audio/aac",
        },
        server_url: cfg.url.clone().or_else(|| from_info(|i| i.url.clone())),
        source_ip: info
            .as_ref()
            .and_then(|i| i.remote)
            .map(|r| r.ip().to_string()),
        stream_start,
        title,
        user_agent: from_info(|i| i.user_agent.clone()),
        total_bytes_read: stream.byte_end(),
        total_bytes_sent: sent,
    })
}

/// `Sun, 06 Dec 2026 03:40:04 +0000` and `2026-12-06T03:40:04+0000`, as Icecast writes them.
pub fn http_date(t: SystemTime) -> (String, String) {
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

/// A JSON object with its keys in the order given (Icecast's order:
/// alphabetical, `dummy` last), which a `serde_json::Map` would sort.
fn ordered(fields: &[(&str, Value)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}:{}", Value::from(*k), v);
    }
    out.push('}');
    out
}

/// The status-json fields of one source, in Icecast's order.
fn json_fields(s: &SourceFacts) -> Vec<(&'static str, Value)> {
    let (start, start_iso) = http_date(s.stream_start);
    let mut f: Vec<(&str, Value)> = Vec::new();
    if let Some(a) = &s.audio_info {
        f.push(("audio_info", json!(a)));
    }
    if let Some(b) = s.bitrate {
        f.push(("bitrate", json!(b)));
    }
    if let Some(c) = s.channels {
        f.push(("channels", json!(c)));
    }
    f.push(("genre", json!(s.genre)));
    f.push(("listener_peak", json!(s.listener_peak)));
    f.push(("listeners", json!(s.listeners)));
    f.push(("listenurl", json!(s.listenurl)));
    if let Some(r) = s.samplerate {
        f.push(("samplerate", json!(r)));
    }
    f.push(("server_description", json!(s.server_description)));
    f.push(("server_name", json!(s.server_name)));
    f.push(("server_type", json!(s.server_type)));
    if let Some(u) = &s.server_url {
        f.push(("server_url", json!(u)));
    }
    f.push(("stream_start", json!(start)));
    f.push(("stream_start_iso8601", json!(start_iso)));
    if !s.title.is_empty() {
        f.push(("title", json!(s.title)));
    }
    f.push(("dummy", Value::Null));
    f
}

/// `/status-json.xsl` in Icecast 2.4's shape and order, so dashboards and
/// players read it unchanged: a stream without audio on air is not listed,
/// `source` is an object for one and an array for several, each ends with
/// `"dummy": null`, and `title` is left out when there is none.
pub fn status_json(server: &dyn StatusHost, host: Option<&str>) -> String {
    let (start, start_iso) = http_date(server.started_at());
    let sources: Vec<String> = sources(server, host)
        .iter()
        .map(|s| ordered(&json_fields(s)))
        .collect();
    let mut top = ordered(&[
        ("admin", json!("icemaster@localhost")),
        ("host", json!(host_name(host))),
        ("location", json!("Earth")),
        (
            "server_id",
            json!(format!("StreamMachine {}", env!("CARGO_PKG_VERSION"))),
        ),
        ("server_start", json!(start)),
        ("server_start_iso8601", json!(start_iso)),
    ]);
    match sources.len() {
        0 => {}
        1 => {
            top.pop();
            let _ = write!(top, ",\"source\":{}}}", sources[0]);
        }
        _ => {
            top.pop();
            let _ = write!(top, ",\"source\":[{}]}}", sources.join(","));
        }
    }
    format!("{{\"icestats\":{top}}}")
}
