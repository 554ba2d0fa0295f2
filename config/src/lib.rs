//! The streamer's configuration file (DESIGN.md §3).
//!
//! One YAML (or JSON, which is YAML) document. Every key is camelCase; an
//! unknown key is an error that names the key's path, because a typo that is
//! silently ignored (`rewindSecs: 60`) is a radio station that loses its rewind.
//! Defaults give a working standalone server.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

mod elasticsearch;
mod email;
mod listener_auth;
mod mounts;
mod validate;

pub use elasticsearch::ElasticsearchConfig;
pub use email::{EmailConfig, SmtpTls};
pub use listener_auth::{ListenerAuthConfig, WhenUnreachable};
pub use mounts::{FallbackConfig, SourceInputConfig, SourceMountConfig};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default listener port.
pub const DEFAULT_LISTENER_PORT: u16 = 8000;
/// Default Icecast source port.
pub const DEFAULT_SOURCE_PORT: u16 = 8001;
/// Default admin/metrics port.
pub const DEFAULT_ADMIN_PORT: u16 = 8002;

/// Stream keys that cannot be used because listener routes of that name exist.
pub const RESERVED_STREAM_KEYS: &[&str] = &[
    "healthz",
    "readyz",
    "metrics",
    "status-json.xsl",
    "sg",
    "api",
    "admin",
    "index.html",
    "crossdomain.xml",
];

/// Errors from loading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The document is not valid YAML/JSON or does not fit the schema.
    #[error("{path}: {message}")]
    Parse {
        /// Where in the document, e.g. `streams[0].rewindSeconds`.
        path: String,
        /// What is wrong there.
        message: String,
    },
    /// The document parsed, but a value is not allowed.
    #[error("{path}: {message}")]
    Invalid {
        /// Where in the document.
        path: String,
        /// What is wrong there.
        message: String,
    },
}

impl ConfigError {
    fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// What this process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Everything in one process: sources, buffers and listeners.
    #[default]
    Standalone,
    /// Takes sources, keeps the buffers, feeds slaves.
    Master,
    /// Serves listeners from a replica of the master's buffers.
    Slave,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Standalone => "standalone",
            Mode::Master => "master",
            Mode::Slave => "slave",
        })
    }
}

/// Audio format of a source or a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AudioFormat {
    /// MPEG audio (MPEG 1/2/2.5, Layer I–III; in practice MP3).
    #[default]
    Mp3,
    /// AAC in ADTS framing (AAC-LC, HE-AAC).
    Aac,
}

impl fmt::Display for AudioFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AudioFormat::Mp3 => "mp3",
            AudioFormat::Aac => "aac",
        })
    }
}

/// A secret string: never shown by `Debug`, so it cannot end up in a log line.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// What a redacted secret shows.
    pub const REDACTED: &'static str = "***";
}

/// A URL with any `user:password@` replaced by `***@`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}@{}", Secret::REDACTED, &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// The whole configuration document.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// `standalone` (default), `master` or `slave`.
    pub mode: Mode,
    /// The listener HTTP port (standalone and slave).
    pub listeners: ListenersConfig,
    /// The Icecast source port (standalone and master).
    pub sources: SourcesConfig,
    /// The admin port: `/metrics`, `/healthz`, status; the slave link on a master.
    pub admin: AdminConfig,
    /// Master↔slave link authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkConfig>,
    /// Slave mode: where the master is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<MasterConfig>,
    /// Dynamic configuration store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
    /// Rewind buffer dumps: written periodically and at shutdown, restored at start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dumps: Option<DumpsConfig>,
    /// Listener analytics events (JSON lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analytics: Option<AnalyticsConfig>,
    /// Alert delays and where notifications go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts: Option<AlertsConfig>,
    /// Where encoders connect. A stream without `sourceMount` is its own mount.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_mounts: Vec<SourceMountConfig>,
    /// What listeners hear.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<StreamConfig>,
}

/// The listener port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ListenersConfig {
    /// Address to bind (default `0.0.0.0`).
    pub address: String,
    /// Port (default 8000; 0 picks a free port).
    pub port: u16,
    /// The listen socket's accept backlog. Large, because a reconnect storm after a
    /// network blip is exactly when a small one (Icecast's is 5) turns listeners away.
    pub backlog: u32,
    /// Kernel send buffer per listener socket (`SO_SNDBUF`), default 128 KiB:
    /// it bounds kernel memory per listener and lets a client that stops
    /// reading be noticed (`maxBufferBytes`) instead of hiding in megabytes of
    /// autotuned buffer. 0 leaves it to the kernel.
    pub send_buffer_bytes: u32,
    /// `Access-Control-Allow-Origin` for web players; `*` by default.
    pub cors_origin: String,
    /// Public base URL for playlists (`.pls`, `.m3u`); default: from the request's Host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Connections the port holds at once (audio listeners and short
    /// requests); the next gets `503` with `Retry-After`. Default: what the
    /// open-file limit leaves after the other ports' budgets and a reserve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Listeners of all streams together (raw, ICY and pump connections);
    /// the next gets `503` with `Retry-After`. Default: no limit (but each
    /// stream's `maxListeners` and `maxConnections`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_listeners: Option<u32>,
    /// Addresses and networks (`203.0.113.7`, `198.51.100.0/24`,
    /// `2001:db8::/32`) whose requests on the listener port get `403`:
    /// Icecast's ban list. Connected listeners are not touched.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// The key of signed listener URLs (HMAC-SHA256; see streams'
    /// `signedUrls`), or `urlSecretFile`, or `STREAMMACHINE_URL_SECRET`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_secret: Option<Secret>,
    /// A file holding [`ListenersConfig::url_secret`] (a mounted Secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_secret_file: Option<PathBuf>,
}

impl ListenersConfig {
    /// Whether `ip` is in [`ListenersConfig::deny`] (entries that do not
    /// parse are refused by validation, and never match).
    pub fn denies(&self, ip: std::net::IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.deny.iter().any(|d| match parse_net(d) {
            Some(net) => net.contains(&ip),
            None => false,
        })
    }
}

/// An address or network: `a.b.c.d`, `a.b.c.d/n`, IPv6 likewise.
pub fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

impl Default for ListenersConfig {
    fn default() -> Self {
        ListenersConfig {
            address: "0.0.0.0".into(),
            port: DEFAULT_LISTENER_PORT,
            backlog: 4096,
            send_buffer_bytes: 128 * 1024,
            cors_origin: "*".into(),
            public_url: None,
            max_connections: None,
            max_listeners: None,
            deny: Vec::new(),
            url_secret: None,
            url_secret_file: None,
        }
    }
}

/// The Icecast source port and its timeouts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// Address to bind (default `0.0.0.0`).
    pub address: String,
    /// Port (default 8001; 0 picks a free port).
    pub port: u16,
    /// Seconds a client has to send its complete request head.
    pub header_timeout_seconds: f64,
    /// Seconds a source has, after being accepted, to send its first valid frame.
    pub first_frame_timeout_seconds: f64,
    /// Seconds without any data after which a source is considered dead.
    pub data_timeout_seconds: f64,
    /// Connections the port holds at once (encoders, waiting ones included,
    /// and metadata updates); the next gets `503`. Default 64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        SourcesConfig {
            address: "0.0.0.0".into(),
            port: DEFAULT_SOURCE_PORT,
            header_timeout_seconds: 5.0,
            first_frame_timeout_seconds: 10.0,
            data_timeout_seconds: 10.0,
            max_connections: None,
        }
    }
}

/// The admin port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address to bind (default `0.0.0.0`).
    pub address: String,
    /// Port (default 8002; 0 picks a free port).
    pub port: u16,
    /// Bearer token for the admin API (`Authorization: Bearer …`); or
    /// `tokenFile`, or the environment variable `STREAMMACHINE_ADMIN_TOKEN`.
    /// Without one the API answers 401 to everything (metrics and health
    /// stay open).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// File holding the admin token (a mounted Secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Connections the port holds at once (API calls, probes, scrapes, slave
    /// links); the next gets `503`. Default 64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: "0.0.0.0".into(),
            port: DEFAULT_ADMIN_PORT,
            token: None,
            token_file: None,
            max_connections: None,
        }
    }
}

/// Master↔slave link authentication.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LinkConfig {
    /// File holding the shared secret (a mounted Kubernetes Secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// The shared secret itself (prefer `secretFile` or `STREAMMACHINE_LINK_SECRET`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// Master only: after a start that was not a handoff, new source audio is
    /// held (not numbered) until a slave has linked and any audio it holds
    /// beyond the master's has been pulled back, or for this many seconds
    /// (default 10, 0 = never hold, at most 300). Without it, an encoder that
    /// reconnects to a restarted master before its slaves do would start a
    /// numbering the slaves cannot follow, and they would drop their buffers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resync_grace_seconds: Option<u32>,
}

impl LinkConfig {
    /// Default for [`LinkConfig::resync_grace_seconds`].
    pub const DEFAULT_RESYNC_GRACE_SECONDS: u32 = 10;

    /// How long a restarted master holds new audio for its slaves.
    pub fn resync_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(
            self.resync_grace_seconds
                .unwrap_or(Self::DEFAULT_RESYNC_GRACE_SECONDS),
        ))
    }
}

/// Slave mode: the master to follow.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MasterConfig {
    /// The master's admin port URL, e.g. `http://master:8002`.
    pub url: String,
}

/// Redis config store: streams and mounts created, changed or removed through
/// the admin API are kept there and survive restarts. The file's streams and
/// mounts are the base; the API's changes stored in Redis win for the keys they
/// touched (a stream removed through the API stays removed); file entries the
/// API never touched follow the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RedisConfig {
    /// e.g. `redis://localhost:6379/0` (the path selects the database).
    pub url: String,
    /// Key prefix; the API's changes are stored at `<prefix>:config`.
    pub prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            prefix: "streammachine".into(),
        }
    }
}

/// Rewind buffer dumps, so a restart keeps hours of audio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DumpsConfig {
    /// Directory of the dump files (`<stream>.dump`), e.g. a persistent volume.
    pub dir: PathBuf,
    /// Seconds between periodic dumps (default 300). A dump is also written at shutdown.
    #[serde(default = "default_dump_interval")]
    pub interval_seconds: u32,
}

fn default_dump_interval() -> u32 {
    300
}

/// Listener analytics: session starts, periodic listens and session roll-ups as JSON lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// File the events are appended to; without one (and without
    /// `elasticsearch`) they are logged on the tracing target
    /// `streammachine::analytics`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Elasticsearch/OpenSearch instead: batched `_bulk` requests into daily
    /// indices, retried with backoff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elasticsearch: Option<ElasticsearchConfig>,
    /// Seconds between `listen` events of a connected listener (default 30).
    pub interval_seconds: u32,
    /// An HLS session without a segment request for this long is rolled up (default 300).
    pub session_idle_seconds: u32,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            file: None,
            elasticsearch: None,
            interval_seconds: 30,
            session_idle_seconds: 300,
        }
    }
}

/// Alerts: hysteresis and delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// A condition must hold this long before the alert is raised (default 30).
    pub raise_seconds: f64,
    /// It must be gone this long before the alert clears (default 30).
    pub clear_seconds: f64,
    /// `buffer_stalled`: a connected source with no new audio for this long (default 30).
    pub stall_seconds: f64,
    /// A generic JSON webhook (POST).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookConfig>,
    /// PagerDuty Events API v2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pagerduty: Option<PagerDutyConfig>,
    /// Email over SMTP: one message per raise and per clear.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            raise_seconds: 30.0,
            clear_seconds: 30.0,
            stall_seconds: 30.0,
            webhook: None,
            pagerduty: None,
            email: None,
        }
    }
}

/// A webhook receiving `{alert, subject, active, summary, time, source}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL (http or https).
    pub url: String,
}

/// PagerDuty Events API v2: a trigger when an alert is raised, a resolve
/// when it clears, with the dedup key `streammachine/<alert>/<subject>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// The integration's routing key (prefer `routingKeyFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<Secret>,
    /// File holding the routing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key_file: Option<PathBuf>,
    /// The events endpoint.
    #[serde(default = "default_pagerduty_url")]
    pub url: String,
}

fn default_pagerduty_url() -> String {
    "https://events.pagerduty.com/v2/enqueue".into()
}

/// HLS output settings (served once HLS is implemented).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HlsConfig {
    /// Target segment length in seconds.
    pub segment_seconds: u32,
    /// Stream group for the multivariant playlist `/sg/<group>.m3u8`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            segment_seconds: defaults::hls_segment_seconds(),
            group: None,
        }
    }
}

/// A transcoded output: the stream differs from its source mount. The server
/// decodes the mount's audio and encodes this stream from it, in-process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TranscodeConfig {
    /// Output format.
    pub format: AudioFormat,
    /// Output bitrate in kbit/s (constant bitrate). MP3: one of 8, 16, 24, 32,
    /// 40, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320; AAC: 8–320.
    pub bitrate: u32,
    /// AAC only: the profile (default `lc`). `he` (HE-AAC, SBR) and `heV2`
    /// (HE-AAC v2, SBR + parametric stereo, stereo only) sound better at low bitrates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<AacProfile>,
    /// Output sample rate in Hz; default: the first source's (later sources are
    /// resampled to it, so the stream's format never changes mid-buffer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    /// Output channels, 1 or 2; default: the first source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
}

impl TranscodeConfig {
    /// A transcode to `format` at `bitrate` kbit/s, everything else default.
    pub fn new(format: AudioFormat, bitrate: u32) -> Self {
        TranscodeConfig {
            format,
            bitrate,
            profile: None,
            sample_rate: None,
            channels: None,
        }
    }

    /// Checks the settings an encoder will accept; errors name the field.
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        match self.format {
            AudioFormat::Mp3 => {
                if !MP3_BITRATES.contains(&self.bitrate) {
                    return Err(ConfigError::invalid(
                        format!("{path}.bitrate"),
                        format!(
                            "{} is not an MP3 bitrate (one of {MP3_BITRATES:?})",
                            self.bitrate
                        ),
                    ));
                }
                if self.profile.is_some() {
                    return Err(ConfigError::invalid(
                        format!("{path}.profile"),
                        "only for format aac",
                    ));
                }
                if self.sample_rate.is_some_and(|r| r > 48_000) {
                    return Err(ConfigError::invalid(
                        format!("{path}.sampleRate"),
                        "MP3 goes up to 48000 Hz",
                    ));
                }
            }
            AudioFormat::Aac => {
                if !(8..=320).contains(&self.bitrate) {
                    return Err(ConfigError::invalid(
                        format!("{path}.bitrate"),
                        "AAC bitrate must be between 8 and 320 kbit/s",
                    ));
                }
                if self.profile == Some(AacProfile::HeV2) && self.channels == Some(1) {
                    return Err(ConfigError::invalid(
                        format!("{path}.channels"),
                        "HE-AAC v2 (parametric stereo) needs stereo output",
                    ));
                }
            }
        }
        if let Some(r) = self.sample_rate {
            if !TRANSCODE_SAMPLE_RATES.contains(&r) {
                return Err(ConfigError::invalid(
                    format!("{path}.sampleRate"),
                    format!("{r} is not a supported sample rate ({TRANSCODE_SAMPLE_RATES:?})"),
                ));
            }
        }
        if let Some(c) = self.channels {
            if !(1..=2).contains(&c) {
                return Err(ConfigError::invalid(
                    format!("{path}.channels"),
                    "must be 1 or 2",
                ));
            }
        }
        Ok(())
    }
}

/// Bitrates (kbit/s) an MP3 transcode can use.
pub const MP3_BITRATES: [u32; 16] = [
    8, 16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
];

/// Sample rates (Hz) a transcode can produce (MP3 takes those up to 48000).
pub const TRANSCODE_SAMPLE_RATES: [u32; 12] = [
    8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000, 64_000, 88_200, 96_000,
];

/// The AAC profile of a transcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AacProfile {
    /// AAC-LC (`mp4a.40.2`).
    #[default]
    Lc,
    /// HE-AAC v1, AAC-LC + SBR (`mp4a.40.5`).
    He,
    /// HE-AAC v2, + parametric stereo (`mp4a.40.29`); stereo output only.
    HeV2,
}

/// What listeners hear: one rewind buffer and its outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamConfig {
    /// Stream name: listeners get `/<key>`.
    pub key: String,
    /// The source mount feeding it. Omitted: the stream is its own mount, with
    /// `format` and `password` given here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_mount: Option<String>,
    /// Own mount only: what the encoder sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AudioFormat>,
    /// Own mount only: source password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Own mount only: file holding the source password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Seconds of audio kept for rewind (default 14400 = 4 h).
    #[serde(default = "defaults::rewind_seconds")]
    pub rewind_seconds: u32,
    /// Seconds sent at once when a listener connects, so players start at once (default 10).
    #[serde(default = "defaults::burst_seconds")]
    pub burst_seconds: u32,
    /// ICY metadata interval in audio bytes (default 16000).
    #[serde(default = "defaults::icy_meta_interval")]
    pub icy_meta_interval: u32,
    /// A listener whose unsent backlog grows beyond this many bytes is disconnected,
    /// so a client that stops reading never holds anything up (default 2 MiB).
    #[serde(default = "defaults::max_buffer_bytes")]
    pub max_buffer_bytes: u64,
    /// Listeners (raw, ICY and pump connections) the stream takes at once;
    /// the next gets `503` with `Retry-After`, connected ones are not
    /// touched. Default: no limit (but `listeners.maxListeners`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_listeners: Option<u32>,
    /// Listeners need a signed, expiring URL (`?expires=<unix s>&sig=<hex
    /// HMAC-SHA256 of "<stream>:<expires>" with listeners.urlSecret>`), on
    /// raw, ICY, pump and HLS (playlists and segments) alike: for paywalls
    /// and apps.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub signed_urls: bool,
    /// Icecast's URL listener authentication: webhooks that let each
    /// listener in (or not) and hear when they leave, on raw, ICY, pump and
    /// HLS alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_auth: Option<Box<ListenerAuthConfig>>,
    /// Title until a source or the admin API sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `icy-name`; default: the source's `ice-name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `icy-description`; default: the source's `ice-description`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `icy-genre`; default: the source's `ice-genre`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genre: Option<String>,
    /// `icy-url`; default: the source's `ice-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// HLS output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls: Option<HlsConfig>,
    /// Transcode the source into another format or bitrate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcode: Option<TranscodeConfig>,
}

/// A stream's defaults, one place for the config file and the `Stream`
/// custom resource (whose spec takes them from here).
pub mod defaults {
    /// Seconds of audio kept for rewind: 4 h.
    pub fn rewind_seconds() -> u32 {
        14_400
    }
    /// Seconds sent at once to a new listener.
    pub fn burst_seconds() -> u32 {
        10
    }
    /// Audio bytes between ICY metadata blocks.
    pub fn icy_meta_interval() -> u32 {
        16_000
    }
    /// A listener's unsent backlog before it is disconnected: 2 MiB.
    pub fn max_buffer_bytes() -> u64 {
        2 * 1024 * 1024
    }
    /// HLS target segment length in seconds.
    pub fn hls_segment_seconds() -> u32 {
        10
    }
    /// A source mount input's priority: above the mount's own path (0).
    pub fn input_priority() -> i32 {
        1
    }
}

impl Config {
    /// This configuration with every secret shown as `***`: tokens, passwords,
    /// the link secret, PagerDuty's routing key, and credentials in URLs
    /// (Redis, relays). For printing (`--check-config`).
    pub fn redacted(&self) -> Config {
        let hide = |s: &mut Option<Secret>| {
            if let Some(s) = s {
                s.0 = Secret::REDACTED.into();
            }
        };
        let mut c = self.clone();
        hide(&mut c.admin.token);
        hide(&mut c.listeners.url_secret);
        if let Some(l) = &mut c.link {
            hide(&mut l.secret);
        }
        if let Some(p) = c.alerts.as_mut().and_then(|a| a.pagerduty.as_mut()) {
            hide(&mut p.routing_key);
        }
        if let Some(e) = c.alerts.as_mut().and_then(|a| a.email.as_mut()) {
            hide(&mut e.password);
        }
        if let Some(e) = c.analytics.as_mut().and_then(|a| a.elasticsearch.as_mut()) {
            hide(&mut e.password);
        }
        if let Some(r) = &mut c.redis {
            r.url = redact_url(&r.url);
        }
        if let Some(m) = &mut c.master {
            m.url = redact_url(&m.url);
        }
        for m in &mut c.source_mounts {
            hide(&mut m.password);
            for i in &mut m.inputs {
                hide(&mut i.password);
            }
            if let Some(u) = m.fallback.as_mut().and_then(|f| f.url.as_mut()) {
                *u = redact_url(u);
            }
        }
        for s in &mut c.streams {
            hide(&mut s.password);
            if let Some(a) = &mut s.listener_auth {
                a.redact();
            }
        }
        c
    }
}

impl StreamConfig {
    /// A stream with every optional setting at its default.
    pub fn new(key: impl Into<String>) -> Self {
        StreamConfig {
            key: key.into(),
            source_mount: None,
            format: None,
            password: None,
            password_file: None,
            rewind_seconds: defaults::rewind_seconds(),
            burst_seconds: defaults::burst_seconds(),
            icy_meta_interval: defaults::icy_meta_interval(),
            max_buffer_bytes: defaults::max_buffer_bytes(),
            max_listeners: None,
            signed_urls: false,
            listener_auth: None,
            title: None,
            name: None,
            description: None,
            genre: None,
            url: None,
            hls: None,
            transcode: None,
        }
    }

    /// The key of the mount feeding this stream (its own key when it is its own mount).
    pub fn mount_key(&self) -> &str {
        self.source_mount.as_deref().unwrap_or(&self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_lists_match_addresses_and_networks() {
        let c = Config::from_yaml_str(
            "listeners: { deny: [203.0.113.7, 198.51.100.0/24, \"2001:db8::/32\"] }\nstreams: [{key: a, password: p}]\n",
        )
        .unwrap();
        let l = &c.listeners;
        for (ip, denied) in [
            ("203.0.113.7", true),
            ("203.0.113.8", false),
            ("198.51.100.200", true),
            ("198.51.101.1", false),
            ("2001:db8::1", true),
            ("::ffff:198.51.100.9", true),
            ("127.0.0.1", false),
        ] {
            assert_eq!(l.denies(ip.parse().unwrap()), denied, "{ip}");
        }
        let bad = Config::from_yaml_str(
            "listeners: { deny: [10.0.0.0/33] }\nstreams: [{key: a, password: p}]\n",
        )
        .unwrap()
        .validate();
        assert!(
            matches!(bad, Err(ConfigError::Invalid { ref path, .. }) if path == "listeners.deny[0]"),
            "{bad:?}"
        );
    }

    #[test]
    fn redacted_hides_every_secret() {
        let c = Config::from_yaml_str(
            r#"
admin: { token: admintok }
link: { secret: linksecret }
redis: { url: "redis://user:redispass@host:6379/0" }
alerts: { pagerduty: { routingKey: pdkey } }
sourceMounts:
  - { key: m, password: mountpass, fallback: { url: "http://u:relaypass@up:8000/x" } }
streams:
  - { key: s, password: streampass }
  - { key: t, sourceMount: m }
"#,
        )
        .unwrap();
        let text = c.redacted().to_yaml_string().unwrap();
        for secret in [
            "admintok",
            "linksecret",
            "redispass",
            "pdkey",
            "mountpass",
            "relaypass",
            "streampass",
        ] {
            assert!(!text.contains(secret), "{secret} shown:\n{text}");
        }
        assert!(text.contains("redis://***@host:6379/0"), "{text}");
        assert_eq!(redact_url("http://host/a@b"), "http://host/a@b");
    }

    #[test]
    fn empty_document_is_a_default_standalone() {
        let c = Config::from_yaml_str("{}").unwrap();
        assert_eq!(c.mode, Mode::Standalone);
        assert_eq!(c.listeners.port, 8000);
        assert_eq!(c.sources.port, 8001);
        assert_eq!(c.admin.port, 8002);
        c.validate().unwrap();
    }

    #[test]
    fn design_example_parses() {
        let text = r#"
mode: standalone
listeners: { port: 8000 }
sources:   { port: 8001 }
admin:     { port: 8002 }
link:      { secretFile: /run/secrets/link }
master:    { url: "http://master:8002" }
sourceMounts:
  - key: studio
    format: mp3
    password: hackme
streams:
  - key: test
    sourceMount: studio
    rewindSeconds: 14400
    burstSeconds: 10
    icyMetaInterval: 16000
    hls: { segmentSeconds: 10, group: main }
    transcode: { format: aac, bitrate: 64 }
"#;
        let c = Config::from_yaml_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.streams[0].mount_key(), "studio");
        assert_eq!(c.source_mounts[0].password, Some(Secret("hackme".into())));
        assert_eq!(
            c.streams[0].hls.as_ref().unwrap().group.as_deref(),
            Some("main")
        );
        // Round trip: what the operator renders, the streamer reads back unchanged.
        let again = Config::from_yaml_str(&c.to_yaml_string().unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn unknown_key_names_its_path() {
        let err = Config::from_yaml_str("streams:\n  - key: a\n    rewindSecs: 60\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("streams[0].rewindSecs: unknown field `rewindSecs`"),
            "{msg}"
        );
        let err = Config::from_yaml_str("listeners: { prot: 1 }").unwrap_err();
        assert!(
            err.to_string().starts_with("listeners.prot: unknown field"),
            "{err}"
        );
        let err = Config::from_yaml_str("bogus: 1").unwrap_err();
        assert!(err.to_string().starts_with("bogus: unknown field"), "{err}");
    }

    #[test]
    fn wrong_type_names_its_path() {
        let err = Config::from_yaml_str("listeners: { port: eighty }").unwrap_err();
        assert!(
            err.to_string().starts_with("listeners.port: invalid type"),
            "{err}"
        );
        let err = Config::from_yaml_str("streams: [{key: a, format: ogg}]").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("streams[0].format: unknown variant `ogg`"),
            "{err}"
        );
    }

    #[test]
    fn json_is_accepted() {
        let c = Config::from_yaml_str(r#"{"streams":[{"key":"x","format":"aac","password":"p"}]}"#)
            .unwrap();
        c.validate().unwrap();
        let mounts = c.effective_mounts();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].key, "x");
        assert_eq!(mounts[0].format, AudioFormat::Aac);
    }

    fn invalid(text: &str) -> String {
        let c = Config::from_yaml_str(text).unwrap();
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn validation_errors_name_the_field() {
        assert!(invalid("streams: [{key: a, sourceMount: nope}]")
            .starts_with("streams[0].sourceMount: no source mount named \"nope\""));
        assert!(invalid("streams: [{key: a}, {key: a}]").starts_with("streams[1].key: duplicate"));
        assert!(invalid("streams: [{key: 'a/b'}]")
            .starts_with("streams[0].key: \"a/b\" is not a valid key"));
        assert!(invalid("streams: [{key: metrics}]")
            .starts_with("streams[0].key: \"metrics\" is reserved"));
        assert!(invalid("streams: [{key: a, rewindSeconds: 0}]")
            .starts_with("streams[0].rewindSeconds"));
        assert!(
            invalid("streams: [{key: a, rewindSeconds: 5, burstSeconds: 10}]")
                .starts_with("streams[0].burstSeconds")
        );
        assert!(invalid("streams: [{key: a, icyMetaInterval: 1}]")
            .starts_with("streams[0].icyMetaInterval"));
        assert!(invalid(
            "sourceMounts: [{key: m}]\nstreams: [{key: a, sourceMount: m, format: aac}]"
        )
        .starts_with("streams[0].format: not allowed with sourceMount"));
        assert!(
            invalid("sourceMounts: [{key: a}]\nstreams: [{key: a}]").starts_with("streams[0].key")
        );
        assert!(invalid("listeners: {port: 9000}\nadmin: {port: 9000}")
            .starts_with("admin.port: port 9000"));
        assert!(invalid("mode: slave").starts_with("master.url"));
        let e = invalid(
            "sourceMounts: [{key: m, password: p, fallback: {url: 'http://u:secret@up/x'}}]",
        );
        assert!(
            e.starts_with("sourceMounts[0].fallback.url: credentials"),
            "{e}"
        );
        assert!(
            !e.contains("secret"),
            "the error must not repeat the credentials: {e}"
        );
        assert!(
            invalid("sources: {dataTimeoutSeconds: 0}").starts_with("sources.dataTimeoutSeconds")
        );
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let c = Config::from_yaml_str("streams: [{key: a, password: topsecret}]").unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
    }
}
