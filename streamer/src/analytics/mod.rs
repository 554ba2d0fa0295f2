//! Listener analytics: who listened to what, for how long, how far behind live.
//!
//! Events are JSON lines (one object per line), written to `analytics.file`
//! when set (any log shipper takes them to Elasticsearch, OpenSearch or Loki)
//! or else logged on the tracing target `streammachine::analytics`:
//!
//! * `session_start`: a listener connected (or an HLS session's first segment);
//! * `listen`: every `intervalSeconds` for long-lived listeners (and at their
//!   end), and per HLS segment: bytes, seconds, audio seconds, seconds behind
//!   live, the wall-clock time of the audio (content time);
//! * `session`: the roll-up when a connection ends, or when an HLS session
//!   (identified by `X-Playback-Session-Id` or `?session=`) has been idle for
//!   `sessionIdleSeconds`.
//!
//! The Prometheus counters `streammachine_listening_seconds_total` (counted by
//! the listeners themselves: connected time, or for HLS the audio of the
//! segments served) and `streammachine_sessions_total` are kept whether or not
//! events are written.

mod elasticsearch;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use streammachine_config::AnalyticsConfig;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::stream::format_time;
use crate::stream::now_micros;
use crate::sync::MutexExt;

/// Events queued for the writer; beyond this they are dropped (and counted),
/// so a slow disk never holds up audio.
const QUEUE: usize = 65_536;

/// An HLS session counts as listening while it fetched a segment this
/// recently (three 10 s segments).
pub const HLS_ACTIVE: Duration = Duration::from_secs(30);

/// A new session id: 128 random bits as 32 hex digits.
pub fn new_session_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut out = String::with_capacity(32);
    for salt in [0x9e37_79b9_7f4a_7c15u64, 0xc2b2_ae3d_27d4_eb4f] {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n ^ salt);
        h.write_i64(now_micros());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// Who is listening (for the events).
#[derive(Debug, Clone)]
pub struct Client {
    /// Peer address.
    pub ip: String,
    /// User-Agent.
    pub ua: Option<String>,
}

/// What one HLS segment request delivered.
#[derive(Debug, Clone, Copy)]
pub struct SegmentServed {
    /// Bytes of the response body.
    pub bytes: u64,
    /// Audio in the segment, µs.
    pub audio_micros: u64,
    /// How far behind live the segment starts, s.
    pub behind_live: f64,
    /// Wall-clock time of its first sample, µs since the epoch.
    pub content_ts: i64,
}

/// One long-lived listener's session state (raw, ICY, pump).
#[derive(Debug)]
pub struct Session {
    id: String,
    stream: String,
    output: &'static str,
    client: Client,
    start_wall: i64,
    started: Instant,
    last_report: Instant,
    reported_bytes: u64,
    reported_audio_micros: u64,
    listens: u64,
}

/// A session as handed to a successor process (times made relative).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SessionState {
    id: String,
    ip: String,
    ua: Option<String>,
    start_wall: i64,
    age_micros: u64,
    since_report_micros: u64,
    reported_bytes: u64,
    reported_audio_micros: u64,
    listens: u64,
}

impl Session {
    /// Its state, to hand over.
    pub fn state(&self) -> SessionState {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        SessionState {
            id: self.id.clone(),
            ip: self.client.ip.clone(),
            ua: self.client.ua.clone(),
            start_wall: self.start_wall,
            age_micros: micros(self.started.elapsed()),
            since_report_micros: micros(self.last_report.elapsed()),
            reported_bytes: self.reported_bytes,
            reported_audio_micros: self.reported_audio_micros,
            listens: self.listens,
        }
    }
}

/// An HLS session, stitched together from segment requests.
#[derive(Debug)]
struct HlsSession {
    stream: String,
    client: Client,
    start_wall: i64,
    last_seen: Instant,
    bytes: u64,
    audio_micros: u64,
    listens: u64,
}

/// The analytics sink.
#[derive(Debug)]
pub struct Analytics {
    tx: Option<mpsc::Sender<String>>,
    interval: Duration,
    idle: Duration,
    hls: Mutex<HashMap<String, HlsSession>>,
    dropped: AtomicU64,
    metrics: Metrics,
}

/// Where events go.
#[derive(Debug)]
enum Sink {
    File(PathBuf),
    Elasticsearch(Box<(streammachine_config::ElasticsearchConfig, Metrics)>),
    Log,
}

impl Analytics {
    /// The sink for `config` (`None`: counters only, no events).
    pub fn new(
        config: Option<&AnalyticsConfig>,
        metrics: &Metrics,
    ) -> (Analytics, Option<(mpsc::Receiver<String>, PathBufOrLog)>) {
        let (tx, rx) = match config {
            Some(_) => {
                let (tx, rx) = mpsc::channel(QUEUE);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let a = Analytics {
            tx,
            interval: Duration::from_secs(u64::from(config.map_or(30, |c| c.interval_seconds))),
            idle: Duration::from_secs(u64::from(config.map_or(300, |c| c.session_idle_seconds))),
            hls: Mutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
            metrics: metrics.clone(),
        };
        let sink = config.map(|c| match (&c.file, &c.elasticsearch) {
            (Some(f), _) => PathBufOrLog(Sink::File(f.clone())),
            (None, Some(es)) => {
                PathBufOrLog(Sink::Elasticsearch(Box::new((es.clone(), metrics.clone()))))
            }
            (None, None) => PathBufOrLog(Sink::Log),
        });
        (a, rx.zip(sink))
    }

    /// True when events are written.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    fn emit(&self, event: Value) {
        if let Some(tx) = &self.tx {
            if tx.try_send(event.to_string()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .analytics_dropped
                    .with_label_values(&["queue_full"])
                    .inc();
            }
        }
    }

    /// A session handed over by a predecessor: it goes on (no new
    /// `session_start`, not counted again). None when events are off here.
    pub fn resume(
        &self,
        stream: &str,
        output: &'static str,
        state: SessionState,
    ) -> Option<Box<Session>> {
        if !self.enabled() {
            return None;
        }
        let now = Instant::now();
        let ago = |micros: u64| {
            now.checked_sub(Duration::from_micros(micros))
                .unwrap_or(now)
        };
        Some(Box::new(Session {
            id: state.id,
            stream: stream.to_string(),
            output,
            client: Client {
                ip: state.ip,
                ua: state.ua,
            },
            start_wall: state.start_wall,
            started: ago(state.age_micros),
            last_report: ago(state.since_report_micros),
            reported_bytes: state.reported_bytes,
            reported_audio_micros: state.reported_audio_micros,
            listens: state.listens,
        }))
    }

    /// A long-lived listener connected; returns its session (None when
    /// analytics are off, so a listener costs nothing more then).
    pub fn start(
        &self,
        stream: &str,
        output: &'static str,
        client: Client,
    ) -> Option<Box<Session>> {
        self.metrics
            .sessions
            .with_label_values(&[stream, output])
            .inc();
        if !self.enabled() {
            return None;
        }
        let now = Instant::now();
        let s = Session {
            id: new_session_id(),
            stream: stream.to_string(),
            output,
            client,
            start_wall: now_micros(),
            started: now,
            last_report: now,
            reported_bytes: 0,
            reported_audio_micros: 0,
            listens: 0,
        };
        self.emit(json!({
            "type": "session_start",
            "time": format_time(s.start_wall),
            "session": s.id,
            "stream": s.stream,
            "output": s.output,
            "client": {"ip": s.client.ip, "ua": s.client.ua},
        }));
        Some(Box::new(s))
    }

    /// Emits a `listen` event if the interval has passed (or `force`):
    /// `bytes` and `audio_micros` are the listener's totals so far.
    pub fn listen(
        &self,
        s: &mut Session,
        bytes: u64,
        audio_micros: u64,
        position: Option<(f64, i64)>,
        force: bool,
    ) {
        let now = Instant::now();
        let elapsed = now - s.last_report;
        if !force && elapsed < self.interval {
            return;
        }
        let audio = audio_micros.saturating_sub(s.reported_audio_micros);
        if self.enabled() && (bytes > s.reported_bytes || force) {
            let mut e = json!({
                "type": "listen",
                "time": format_time(now_micros()),
                "session": s.id,
                "stream": s.stream,
                "output": s.output,
                "bytes": bytes - s.reported_bytes,
                "seconds": elapsed.as_secs_f64(),
                "audioSeconds": audio as f64 / 1e6,
            });
            if let Some((behind, content)) = position {
                e["behindLiveSeconds"] = json!(behind);
                e["contentTime"] = json!(format_time(content));
            }
            self.emit(e);
            s.listens += 1;
        }
        s.last_report = now;
        s.reported_bytes = bytes;
        s.reported_audio_micros = audio_micros;
    }

    /// A long-lived listener left: last `listen`, then the `session` roll-up.
    pub fn end(
        &self,
        mut s: Box<Session>,
        bytes: u64,
        audio_micros: u64,
        position: Option<(f64, i64)>,
        reason: &str,
    ) {
        self.listen(&mut s, bytes, audio_micros, position, true);
        self.emit(json!({
            "type": "session",
            "session": s.id,
            "stream": s.stream,
            "output": s.output,
            "start": format_time(s.start_wall),
            "end": format_time(now_micros()),
            "durationSeconds": s.started.elapsed().as_secs_f64(),
            "bytes": bytes,
            "audioSeconds": audio_micros as f64 / 1e6,
            "listens": s.listens,
            "endReason": reason,
            "client": {"ip": s.client.ip, "ua": s.client.ua},
        }));
    }

    /// An HLS segment was served to `session`.
    pub fn hls_segment(&self, session: &str, stream: &str, client: Client, seg: SegmentServed) {
        let SegmentServed {
            bytes,
            audio_micros,
            behind_live,
            content_ts,
        } = seg;
        let seconds = audio_micros as f64 / 1e6;
        self.metrics
            .listening_seconds
            .with_label_values(&[stream, "hls"])
            .inc_by(seconds);
        let mut map = self.hls.locked();
        let now = Instant::now();
        let new = !map.contains_key(session);
        if new {
            self.metrics
                .sessions
                .with_label_values(&[stream, "hls"])
                .inc();
            self.emit(json!({
                "type": "session_start",
                "time": format_time(now_micros()),
                "session": session,
                "stream": stream,
                "output": "hls",
                "client": {"ip": client.ip, "ua": client.ua},
            }));
        }
        let s = map
            .entry(session.to_string())
            .or_insert_with(|| HlsSession {
                stream: stream.to_string(),
                client,
                start_wall: now_micros(),
                last_seen: now,
                bytes: 0,
                audio_micros: 0,
                listens: 0,
            });
        s.last_seen = now;
        s.bytes += bytes;
        s.audio_micros += audio_micros;
        s.listens += 1;
        drop(map);
        self.emit(json!({
            "type": "listen",
            "time": format_time(now_micros()),
            "session": session,
            "stream": stream,
            "output": "hls",
            "bytes": bytes,
            "seconds": seconds,
            "audioSeconds": seconds,
            "behindLiveSeconds": behind_live,
            "contentTime": format_time(content_ts),
        }));
    }

    /// HLS sessions of `stream` that fetched a segment within the last
    /// [`HLS_ACTIVE`]: the HLS listeners now.
    pub fn hls_active(&self, stream: &str) -> usize {
        self.hls
            .locked()
            .values()
            .filter(|s| s.stream == stream && s.last_seen.elapsed() < HLS_ACTIVE)
            .count()
    }

    /// Whether HLS session `id` fetched a segment within [`HLS_ACTIVE`].
    pub fn hls_session_active(&self, id: &str) -> bool {
        self.hls
            .locked()
            .get(id)
            .is_some_and(|s| s.last_seen.elapsed() < HLS_ACTIVE)
    }

    /// Rolls up HLS sessions idle for longer than `sessionIdleSeconds`.
    pub fn sweep(&self) {
        let mut map = self.hls.locked();
        let idle = self.idle;
        let done: Vec<String> = map
            .iter()
            .filter(|(_, s)| s.last_seen.elapsed() >= idle)
            .map(|(k, _)| k.clone())
            .collect();
        for id in done {
            if let Some(s) = map.remove(&id) {
                let end =
                    now_micros() - i64::try_from(s.last_seen.elapsed().as_micros()).unwrap_or(0);
                self.emit(json!({
                    "type": "session",
                    "session": id,
                    "stream": s.stream,
                    "output": "hls",
                    "start": format_time(s.start_wall),
                    "end": format_time(end),
                    "durationSeconds": (end - s.start_wall).max(0) as f64 / 1e6,
                    "bytes": s.bytes,
                    "audioSeconds": s.audio_micros as f64 / 1e6,
                    "listens": s.listens,
                    "endReason": "idle",
                    "client": {"ip": s.client.ip, "ua": s.client.ua},
                }));
            }
        }
    }

    /// How long an HLS session may fetch nothing before it has ended
    /// (`sessionIdleSeconds`).
    pub fn session_idle(&self) -> Duration {
        self.idle
    }

    /// Events dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Where the writer puts events.
#[derive(Debug)]
pub struct PathBufOrLog(Sink);

/// Writes queued events as JSON lines until the queue closes.
pub async fn run_writer(mut rx: mpsc::Receiver<String>, sink: PathBufOrLog) {
    match sink.0 {
        Sink::Elasticsearch(es) => {
            let (cfg, metrics) = *es;
            elasticsearch::run(rx, cfg, metrics).await
        }
        Sink::Log => {
            while let Some(line) = rx.recv().await {
                tracing::info!(target: "streammachine::analytics", "{line}");
            }
        }
        Sink::File(path) => {
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await;
            let mut file = match file {
                Ok(f) => tokio::io::BufWriter::new(f),
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot open the analytics file; events are dropped");
                    while rx.recv().await.is_some() {}
                    return;
                }
            };
            let mut failing = false;
            while let Some(line) = rx.recv().await {
                let mut r = file.write_all(line.as_bytes()).await;
                if r.is_ok() {
                    r = file.write_all(b"\n").await;
                }
                // Flush when the queue is drained, so events reach the disk promptly.
                if r.is_ok() && rx.is_empty() {
                    r = file.flush().await;
                }
                match (r, failing) {
                    (Err(e), false) => {
                        tracing::error!(file = %path.display(), error = %e, "cannot write analytics events");
                        failing = true;
                    }
                    (Ok(()), true) => failing = false,
                    _ => {}
                }
            }
            let _ = file.flush().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_unique_hex() {
        let a = new_session_id();
        let b = new_session_id();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
