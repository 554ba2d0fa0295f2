//! Prometheus metrics (DESIGN.md §8). One registry per server, so several
//! servers can live in one process (tests) without sharing counters.

use prometheus::{
    Encoder, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Errors building the metrics registry.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric could not be created or registered (a programming error).
    #[error("metrics registry: {0}")]
    Prometheus(#[from] prometheus::Error),
}

/// Every metric the streamer exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Connected listeners, by stream and output (`raw`, `icy`, `pump`).
    pub listeners: IntGaugeVec,
    /// Listener connections accepted, by stream and output.
    pub listener_connections: IntCounterVec,
    /// Listener disconnections, by stream and reason.
    pub listener_disconnections: IntCounterVec,
    /// Listeners turned away by a listener limit, by stream and limit.
    pub listeners_refused: IntCounterVec,
    /// Listener auth webhook answers, by stream and result.
    pub listener_auth: IntCounterVec,
    /// Analytics events dropped, by reason.
    pub analytics_dropped: IntCounterVec,
    /// Audio and metadata bytes written to listeners, by stream and output.
    pub listener_sent_bytes: IntCounterVec,
    /// 1 while a mount has an active source.
    pub source_connected: IntGaugeVec,
    /// Sources connected to a mount, active and standby.
    pub sources: IntGaugeVec,
    /// Source connections accepted, by mount.
    pub source_connections: IntCounterVec,
    /// Source connections refused, by reason.
    pub source_rejections: IntCounterVec,
    /// Failed logins, by port (`source`, `admin`) and reason.
    pub auth_failures: IntCounterVec,
    /// Connections refused because their port was at its budget, by port.
    pub connections_refused: IntCounterVec,
    /// Bytes received from sources, by mount.
    pub source_received_bytes: IntCounterVec,
    /// Bytes a source sent that were not audio (garbage, truncated frames), by mount.
    pub source_discarded_bytes: IntCounterVec,
    /// Seconds since the newest chunk of a stream ended (how far the source trails).
    pub source_lag_seconds: GaugeVec,
    /// Audio held in a stream's rewind buffer, in seconds.
    pub buffer_seconds: GaugeVec,
    /// Audio bytes held in a stream's rewind buffer.
    pub buffer_bytes: IntGaugeVec,
    /// Bookkeeping bytes of a stream's rewind buffer beyond the audio.
    pub buffer_overhead_bytes: IntGaugeVec,
    /// Metadata (title) updates received, by mount.
    pub title_updates: IntCounterVec,
    /// Listener sessions started, by stream and output (`raw`, `icy`, `pump`, `hls`).
    pub sessions: IntCounterVec,
    /// Seconds listened, by stream and output.
    pub listening_seconds: prometheus::CounterVec,
    /// 1 while a stream's transcoder works, 0 while it fails.
    pub transcoder_up: IntGaugeVec,
    /// Transcoder restarts after a failure, by stream.
    pub transcoder_restarts: IntCounterVec,
    /// Dumps that could not be restored and were set aside, by stream.
    pub dumps_set_aside: IntCounterVec,
    /// Source chunks a transcoder dropped (failing or not keeping up), by stream.
    pub transcoder_dropped_chunks: IntCounterVec,
    /// Source frames a transcoder could not decode and skipped, by stream.
    pub transcoder_decode_errors: IntCounterVec,
    /// Failed attempts to save the API's changes to Redis.
    pub config_store_failures: prometheus::IntCounter,
    /// Slave: 1 while linked to the master.
    pub link_connected: IntGauge,
    /// Slave: chunks received from the master.
    pub link_received_chunks: prometheus::IntCounter,
    /// Master: chunks sent to slaves.
    pub link_sent_chunks: prometheus::IntCounter,
    /// Master: connected slaves.
    pub slaves: IntGauge,
    /// Master: chunks a connected slave is behind, by slave and stream (set at scrape).
    pub slave_chunks_behind: IntGaugeVec,
    /// Master: listeners a connected slave reports, by slave and stream (set at scrape).
    pub slave_listeners: IntGaugeVec,
    /// Master: seconds since a connected slave last said anything, by slave (set at scrape).
    pub slave_last_seen_seconds: prometheus::GaugeVec,
    /// 1 while an alert is raised, by alert and subject.
    pub alert_active: IntGaugeVec,
    /// Always 1; the version in a label.
    pub build_info: IntGaugeVec,
    /// Seconds since the Unix epoch when the process started.
    pub start_time: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let r = &registry;
        let m = Metrics {
            listeners: gauge_vec(
                r,
                "streammachine_listeners",
                "Connected listeners.",
                &["stream", "output"],
            )?,
            listener_connections: counter_vec(
                r,
                "streammachine_listener_connections_total",
                "Listener connections accepted.",
                &["stream", "output"],
            )?,
            listener_disconnections: counter_vec(
                r,
                "streammachine_listener_disconnections_total",
                "Listener disconnections by reason.",
                &["stream", "reason"],
            )?,
            listeners_refused: counter_vec(
                r,
                "streammachine_listeners_refused_total",
                "Listener requests refused: 503 because a listener limit was reached (limit: stream = the stream's maxListeners, server = listeners.maxListeners), or 403 for an address in listeners.deny (limit: denied).",
                &["stream", "limit"],
            )?,
            analytics_dropped: counter_vec(
                r,
                "streammachine_analytics_dropped_total",
                "Analytics events dropped, by reason: queue_full (the writer could not keep up: a slow disk or an unreachable Elasticsearch), refused (Elasticsearch refused them for good, e.g. a mapping conflict), given_up (not taken after 8 tries).",
                &["reason"],
            )?,
            listener_auth: counter_vec(
                r,
                "streammachine_listener_auth_total",
                "Listeners (HLS: sessions) checked with the stream's listenerAuth webhook, by result: allowed, denied (401), unreachable_allowed or unreachable_denied (503: no answer, a timeout or a 5xx, by whenUnreachable).",
                &["stream", "result"],
            )?,
            listener_sent_bytes: counter_vec(
                r,
                "streammachine_listener_sent_bytes_total",
                "Bytes written to listeners (HLS: the segments served).",
                &["stream", "output"],
            )?,
            source_connected: gauge_vec(
                r,
                "streammachine_source_connected",
                "1 while the mount has an active source.",
                &["mount"],
            )?,
            sources: gauge_vec(
                r,
                "streammachine_sources",
                "Sources connected to the mount, active and standby.",
                &["mount"],
            )?,
            source_connections: counter_vec(
                r,
                "streammachine_source_connections_total",
                "Source connections accepted.",
                &["mount"],
            )?,
            connections_refused: counter_vec(
                r,
                "streammachine_connections_refused_total",
                "Connections answered 503 because their port held its limit (listeners.maxConnections, sources.maxConnections, admin.maxConnections).",
                &["port"],
            )?,
            auth_failures: counter_vec(
                r,
                "streammachine_auth_failures_total",
                "Failed logins, by port (source, admin) and reason (no_credentials, bad_password, wrong_token, locked: refused unchecked while the address must wait).",
                &["port", "reason"],
            )?,
            source_rejections: counter_vec(
                r,
                "streammachine_source_rejections_total",
                "Source connections refused, by reason.",
                &["reason"],
            )?,
            source_received_bytes: counter_vec(
                r,
                "streammachine_source_received_bytes_total",
                "Bytes received from sources.",
                &["mount"],
            )?,
            source_discarded_bytes: counter_vec(
                r,
                "streammachine_source_discarded_bytes_total",
                "Source bytes that were not audio frames.",
                &["mount"],
            )?,
            source_lag_seconds: {
                let g = GaugeVec::new(
                    Opts::new(
                        "streammachine_source_lag_seconds",
                        "Seconds since the newest audio of the stream ended.",
                    ),
                    &["stream"],
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            buffer_seconds: {
                let g = GaugeVec::new(
                    Opts::new(
                        "streammachine_buffer_seconds",
                        "Audio held in the rewind buffer.",
                    ),
                    &["stream"],
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            buffer_bytes: gauge_vec(
                r,
                "streammachine_buffer_bytes",
                "Audio bytes held in the rewind buffer.",
                &["stream"],
            )?,
            buffer_overhead_bytes: gauge_vec(
                r,
                "streammachine_buffer_overhead_bytes",
                "Rewind buffer bookkeeping bytes beyond the audio.",
                &["stream"],
            )?,
            title_updates: counter_vec(
                r,
                "streammachine_title_updates_total",
                "Title updates received.",
                &["mount"],
            )?,
            sessions: counter_vec(
                r,
                "streammachine_sessions_total",
                "Listener sessions started.",
                &["stream", "output"],
            )?,
            transcoder_up: gauge_vec(
                r,
                "streammachine_transcoder_up",
                "1 while the stream's transcoder works, 0 while it fails.",
                &["stream"],
            )?,
            transcoder_restarts: counter_vec(
                r,
                "streammachine_transcoder_restarts_total",
                "Transcoder restarts after a failure.",
                &["stream"],
            )?,
            dumps_set_aside: counter_vec(
                r,
                "streammachine_dumps_set_aside_total",
                "Dumps that could not be restored, kept as <stream>.dump.corrupt-<time> instead of being overwritten.",
                &["stream"],
            )?,
            transcoder_dropped_chunks: counter_vec(
                r,
                "streammachine_transcoder_dropped_chunks_total",
                "Source chunks a transcoder dropped (failing or not keeping up).",
                &["stream"],
            )?,
            transcoder_decode_errors: counter_vec(
                r,
                "streammachine_transcoder_decode_errors_total",
                "Source frames a transcoder could not decode and skipped.",
                &["stream"],
            )?,
            listening_seconds: {
                let c = prometheus::CounterVec::new(
                    Opts::new("streammachine_listening_seconds_total", "Seconds listened."),
                    &["stream", "output"],
                )?;
                r.register(Box::new(c.clone()))?;
                c
            },
            config_store_failures: {
                let c = prometheus::IntCounter::new(
                    "streammachine_config_store_failures_total",
                    "Failed attempts to save the API's changes to Redis (while saving fails, API changes are refused with 503).",
                )?;
                r.register(Box::new(c.clone()))?;
                c
            },
            link_connected: {
                let g = IntGauge::new(
                    "streammachine_link_connected",
                    "Slave: 1 while linked to the master.",
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            link_received_chunks: {
                let c = prometheus::IntCounter::new(
                    "streammachine_link_received_chunks_total",
                    "Slave: chunks received from the master.",
                )?;
                r.register(Box::new(c.clone()))?;
                c
            },
            link_sent_chunks: {
                let c = prometheus::IntCounter::new(
                    "streammachine_link_sent_chunks_total",
                    "Master: chunks sent to slaves.",
                )?;
                r.register(Box::new(c.clone()))?;
                c
            },
            slaves: {
                let g = IntGauge::new("streammachine_slaves", "Master: connected slaves.")?;
                r.register(Box::new(g.clone()))?;
                g
            },
            slave_chunks_behind: gauge_vec(
                r,
                "streammachine_slave_chunks_behind",
                "Master: chunks a connected slave is behind the master's buffer.",
                &["slave", "stream"],
            )?,
            slave_listeners: gauge_vec(
                r,
                "streammachine_slave_listeners",
                "Master: listeners a connected slave reports.",
                &["slave", "stream"],
            )?,
            slave_last_seen_seconds: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "streammachine_slave_last_seen_seconds",
                        "Master: seconds since a connected slave last sent anything.",
                    ),
                    &["slave"],
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            alert_active: gauge_vec(
                r,
                "streammachine_alert_active",
                "1 while the alert is raised.",
                &["alert", "subject"],
            )?,
            build_info: gauge_vec(
                r,
                "streammachine_build_info",
                "Build information.",
                &["version"],
            )?,
            start_time: {
                let g = IntGauge::new(
                    "streammachine_start_time_seconds",
                    "Start time of the process since the Unix epoch.",
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            registry,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(m)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(8 * 1024);
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut out).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, MetricsError> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

/// The sum of a counter's series whose `label` is `value` (all of them
/// with `None`), without creating a series as `with_label_values` would.
pub fn counter_sum(c: &IntCounterVec, filter: Option<(&str, &str)>) -> u64 {
    use prometheus::core::Collector as _;
    let mut sum = 0f64;
    for family in c.collect() {
        for m in family.get_metric() {
            let keep = filter.is_none_or(|(label, value)| {
                m.get_label()
                    .iter()
                    .any(|l| l.get_name() == label && l.get_value() == value)
            });
            if keep {
                sum += m.get_counter().get_value();
            }
        }
    }
    sum as u64
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, MetricsError> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}
