//! The Kubernetes custom resources, `streammachine.io/v1alpha1` (DESIGN.md §6).
//!
//! * [`SourceMount`]: where an encoder connects. One SourceMount is one master
//!   Deployment and one slave workload, serving every Stream that names it.
//! * [`Stream`]: what listeners hear, fed by one SourceMount.
//!
//! The doc comments on the fields are the user documentation: they become the
//! CRD schema's descriptions, which `kubectl explain` shows. The CRD YAML is
//! generated from these types (`crdgen`) and committed; a test fails when the
//! committed files drift from the types.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group.
pub const GROUP: &str = "streammachine.io";
/// The API version.
pub const VERSION: &str = "v1alpha1";

/// Condition type: the resource serves what its spec asks for.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: an encoder is connected to the source mount.
pub const CONDITION_SOURCE_CONNECTED: &str = "SourceConnected";
/// Condition type: it works, but not fully (e.g. fewer slaves than asked for).
pub const CONDITION_DEGRADED: &str = "Degraded";

/// Audio format of a source or a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// MPEG audio (MP3).
    #[default]
    Mp3,
    /// AAC in ADTS framing (AAC-LC, HE-AAC).
    Aac,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Mp3 => "mp3",
            Format::Aac => "aac",
        })
    }
}

impl From<Format> for crate::config::AudioFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Mp3 => crate::config::AudioFormat::Mp3,
            Format::Aac => crate::config::AudioFormat::Aac,
        }
    }
}

/// How slave pods are replaced on a rollout (DESIGN.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum Handoff {
    /// Slaves are a Deployment on the pod network. A slave being replaced stops
    /// taking new listeners and keeps serving the ones it has for up to
    /// `drainSeconds`; HLS listeners move to another slave without a glitch.
    #[default]
    Drain,
    /// Slaves are a DaemonSet on the host network. The new pod starts next to the
    /// old one on the same node, and the old one hands every listener connection
    /// over to it: no listener is dropped. Needs pods that may use the host
    /// network and a hostPath directory (Pod Security "privileged").
    Socket,
}

/// A Kubernetes Service type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster only (put an Ingress or Gateway in front).
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Through the cloud's (or MetalLB's) load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// When the kubelet pulls the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ImagePullPolicy {
    /// Pull on every pod start.
    Always,
    /// Pull when the node does not have the image.
    IfNotPresent,
    /// Never pull: the image must be on the node.
    Never,
}

impl ImagePullPolicy {
    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// A key of a Secret in the resource's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_password_key() -> String {
    "password".into()
}

/// Where the source password comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourcePassword {
    /// The Secret key holding the password. Encoders send it with HTTP Basic
    /// authentication; the user name is ignored, as in Icecast.
    pub secret_key_ref: SecretKeySelector,
}

/// A SourceMount: where an encoder connects.
///
/// The encoder connects with the Icecast protocol to port 8001 of the
/// Service `<name>-master`, at the path `/<name>`. The operator runs one master
/// (which takes the source and keeps the rewind buffers) and a group of slaves
/// (which serve listeners on port 8000 of the Service `<name>-slave`) for each
/// SourceMount; every Stream naming this SourceMount is served by them.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "streammachine.io",
    version = "v1alpha1",
    kind = "SourceMount",
    namespaced,
    status = "SourceMountStatus",
    shortname = "smm",
    category = "streammachine",
    derive = "PartialEq",
    doc = "A SourceMount is where an encoder connects (an Icecast mount point). The operator runs a master and a group of slaves for it, serving every Stream that names it.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Source","type":"string","description":"An encoder is connected","jsonPath":".status.conditions[?(@.type==\"SourceConnected\")].status"}"#,
    printcolumn = r#"{"name":"Streams","type":"integer","description":"Streams served","jsonPath":".status.streams"}"#,
    printcolumn = r#"{"name":"Listeners","type":"integer","description":"Listeners on all slaves","jsonPath":".status.listeners"}"#,
    printcolumn = r#"{"name":"Slaves","type":"string","description":"Ready slaves / wanted slaves","jsonPath":".status.slaves"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SourceMountSpec {
    /// What the encoder sends: `mp3` or `aac` (AAC in ADTS framing).
    #[serde(default)]
    pub format: Format,
    /// The source password, from a Secret in this namespace.
    pub password: SourcePassword,
    /// Raise alerts (condition SourceConnected=False, an Event) when no encoder
    /// is connected.
    #[serde(default)]
    pub monitored: bool,
    /// The streamer's container image, for master and slaves. Default: the
    /// image the operator was started with (`--default-image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// When to pull the image. Default: Kubernetes' default for the image's tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// The master: takes the encoder's connection and keeps the rewind buffers.
    #[serde(default)]
    pub master: MasterSpec,
    /// The slaves: serve listeners from replicas of the master's buffers.
    #[serde(default)]
    pub slaves: SlavesSpec,
    /// More encoders for this mount, each at its own path on the master
    /// (`/<name>`) with its own password: one with a higher priority than
    /// the encoder on air takes over at once (the studio overrides the
    /// automation), and the one it replaced resumes when it leaves. The
    /// mount's own path has priority 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputSpec>,
    /// What listeners may do, on every slave: limits, denied addresses, the
    /// key of signed URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listeners: Option<ListenersSpec>,
}

/// Icecast's URL listener authentication of a Stream: the streamer's
/// `listenerAuth` (a type of its own here: a CRD schema may not forbid
/// unknown fields, which the config file does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerAuthSpec {
    /// Called (`POST action=listener_add&server=&port=&client=&mount=&user=
    /// &pass=&ip=&agent=`) before a listener gets audio (an HLS session:
    /// once); it may listen when the answer has `authHeader`.
    pub listener_add: String,
    /// Called (`action=listener_remove&…&duration=`) when it leaves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_remove: Option<String>,
    /// How long a call may take (default 5 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    /// `deny` (default: 503 while the service does not answer) or `allow`.
    #[serde(default)]
    pub when_unreachable: crate::config::WhenUnreachable,
    /// The header (name and value) that lets a listener in (default
    /// `icecast-auth-user: 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_header: Option<String>,
    /// The header giving how many seconds a listener may stay (default
    /// `icecast-auth-timelimit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timelimit_header: Option<String>,
    /// Request headers passed on (as `headerPrefix` + name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Prefix of the forwarded headers' fields (default `ClientHeader.`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_prefix: Option<String>,
}

impl ListenerAuthSpec {
    /// The streamer's config of it, with its defaults where unset.
    pub fn to_config(&self) -> crate::config::ListenerAuthConfig {
        let mut c = crate::config::ListenerAuthConfig::new(self.listener_add.clone());
        c.listener_remove.clone_from(&self.listener_remove);
        if let Some(t) = self.timeout_seconds {
            c.timeout_seconds = t;
        }
        c.when_unreachable = self.when_unreachable;
        if let Some(h) = &self.auth_header {
            c.auth_header.clone_from(h);
        }
        if let Some(h) = &self.timelimit_header {
            c.timelimit_header.clone_from(h);
        }
        c.headers.clone_from(&self.headers);
        if let Some(p) = &self.header_prefix {
            c.header_prefix.clone_from(p);
        }
        c
    }
}

/// Another encoder input of a SourceMount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InputSpec {
    /// The path the encoder connects to (`/<name>`): a DNS label, unique
    /// among this mount's inputs and the Streams' names.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Its source password, from a Secret in this namespace.
    pub password: SourcePassword,
    /// Higher goes on air first (default 1).
    #[serde(default = "crate::config::defaults::input_priority")]
    pub priority: i32,
}

/// Listener settings of a SourceMount's slaves.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenersSpec {
    /// Listeners (connections and HLS sessions) each slave takes at once,
    /// all streams together; the next gets 503 with Retry-After.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_listeners: Option<u32>,
    /// Addresses and networks (`203.0.113.7`, `198.51.100.0/24`) whose
    /// listener requests get 403. (Behind a Service, the address is the
    /// client's only with `externalTrafficPolicy: Local`.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// The key of signed listener URLs (Streams with `signedUrls`), from a
    /// Secret in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_key_ref: Option<SecretKeySelector>,
}

/// The master's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MasterSpec {
    /// CPU and memory of the master container. The rewind buffers live in
    /// memory: a 128 kbit/s stream with 4 hours of rewind needs about 230 MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Seconds between dumps of the rewind buffers (a dump is also written at
    /// shutdown and read back at start).
    #[serde(default = "default_dump_interval")]
    #[schemars(range(min = 10, max = 86400))]
    pub dump_interval_seconds: u32,
    /// A PersistentVolumeClaim (in this namespace) for the dumps, so the rewind
    /// buffers survive the master pod moving to another node. Default: an
    /// emptyDir, which survives container restarts only; the slaves still hold
    /// replicas the master pulls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub dumps_claim_name: Option<String>,
    /// Type of the Service `<name>-master`, where encoders connect (port 8001).
    #[serde(default)]
    pub service_type: ServiceType,
    /// Node labels the master pod must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

fn default_dump_interval() -> u32 {
    300
}

impl Default for MasterSpec {
    fn default() -> Self {
        MasterSpec {
            resources: None,
            dump_interval_seconds: default_dump_interval(),
            dumps_claim_name: None,
            service_type: ServiceType::ClusterIP,
            node_selector: BTreeMap::new(),
        }
    }
}

/// The slaves' settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlavesSpec {
    /// Number of slave pods (handoff `Drain`). With handoff `Socket` the slaves
    /// are a DaemonSet: one per node that matches `nodeSelector`.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
    /// How slave pods are replaced on a rollout: `Drain` (default) or `Socket`.
    #[serde(default)]
    pub handoff: Handoff,
    /// Seconds a slave being replaced keeps serving its listeners (`Drain`), or
    /// has to hand them over (`Socket`). The pod's
    /// terminationGracePeriodSeconds is this plus 10.
    #[serde(default = "default_drain_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub drain_seconds: u32,
    /// CPU and memory of each slave container. A slave holds a replica of
    /// every rewind buffer, like the master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The Service `<name>-slave`, where listeners connect (port 8000).
    #[serde(default)]
    pub service: ListenerServiceSpec,
    /// Node labels the slave pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

fn default_replicas() -> i32 {
    2
}

fn default_drain_seconds() -> u32 {
    300
}

impl Default for SlavesSpec {
    fn default() -> Self {
        SlavesSpec {
            replicas: default_replicas(),
            handoff: Handoff::Drain,
            drain_seconds: default_drain_seconds(),
            resources: None,
            service: ListenerServiceSpec::default(),
            node_selector: BTreeMap::new(),
        }
    }
}

/// The listeners' Service.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerServiceSpec {
    /// `ClusterIP` (default), `NodePort` or `LoadBalancer`.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Annotations for the Service (e.g. a cloud load balancer's settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What the operator observed of a SourceMount.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceMountStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `SourceConnected` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Number of Streams served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<i32>,
    /// Listeners on all slaves, all streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listeners: Option<i64>,
    /// Ready slaves / wanted slaves, e.g. `2/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slaves: Option<String>,
    /// Where encoders connect, e.g. `icecast://main-master.radio.svc:8001/main`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_url: Option<String>,
}

/// A Stream: what listeners hear.
///
/// Listeners get `/<name>` (and `/<name>.m3u8` with HLS) on port 8000 of the
/// Service `<sourceMount>-slave`.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "streammachine.io",
    version = "v1alpha1",
    kind = "Stream",
    namespaced,
    status = "StreamStatus",
    shortname = "sms",
    category = "streammachine",
    derive = "PartialEq",
    doc = "A Stream is what listeners hear: a rewind buffer fed by a SourceMount, served as Icecast/Shoutcast audio and, optionally, HLS.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Source","type":"string","description":"An encoder is connected to the source mount","jsonPath":".status.conditions[?(@.type==\"SourceConnected\")].status"}"#,
    printcolumn = r#"{"name":"Listeners","type":"integer","description":"Listeners on all slaves","jsonPath":".status.listeners"}"#,
    printcolumn = r#"{"name":"Buffered","type":"integer","description":"Seconds of audio in the rewind buffer","jsonPath":".status.bufferedSeconds"}"#,
    printcolumn = r#"{"name":"Mount","type":"string","priority":1,"jsonPath":".spec.sourceMount"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.burstSeconds <= self.rewindSeconds").message("burstSeconds must not exceed rewindSeconds"))]
#[serde(rename_all = "camelCase")]
pub struct StreamSpec {
    /// Name of the SourceMount (in this namespace) that feeds this stream.
    #[schemars(length(min = 1, max = 253))]
    pub source_mount: String,
    /// Output format, `mp3` or `aac`. Default: the source mount's format. A
    /// format other than the source's is a transcode and needs `bitrate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// Output bitrate in kbit/s. Setting it transcodes the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 8, max = 320))]
    pub bitrate: Option<u32>,
    /// AAC transcodes only: `lc` (AAC-LC, the default), `he` (HE-AAC, better
    /// at 32–64 kbit/s) or `heV2` (HE-AAC v2, stereo, better at 24–48 kbit/s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<crate::config::AacProfile>,
    /// Seconds of audio kept for rewind and late joiners (1 second to 7 days).
    #[serde(default = "crate::config::defaults::rewind_seconds")]
    #[schemars(range(min = 1, max = 604800))]
    pub rewind_seconds: u32,
    /// Seconds of audio sent at once to a new listener, so playback starts
    /// without waiting. At most `rewindSeconds`.
    #[serde(default = "crate::config::defaults::burst_seconds")]
    #[schemars(range(min = 0, max = 604800))]
    pub burst_seconds: u32,
    /// Bytes of audio between ICY metadata blocks (titles in the stream) for
    /// players that ask for them.
    #[serde(default = "crate::config::defaults::icy_meta_interval")]
    #[schemars(range(min = 256, max = 1048576))]
    pub icy_meta_interval: u32,
    /// Bytes a listener may fall behind before it is disconnected. Default:
    /// the streamer's (2 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 16384))]
    pub max_buffer_bytes: Option<u64>,
    /// Listeners (raw, ICY and pump connections) each slave (or the
    /// standalone server) takes for this stream at once; the next gets 503
    /// with Retry-After. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_listeners: Option<u32>,
    /// Icecast's URL listener authentication: `listener_add` /
    /// `listener_remove` webhooks that let each listener in (or not), on
    /// raw, ICY, pump and HLS alike. Credentials for the webhook go in its
    /// URL (`https://user:pass@…`), which the streamer never logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_auth: Option<ListenerAuthSpec>,
    /// Listeners need a signed, expiring URL (`?expires=<unix s>&sig=<hex
    /// HMAC-SHA256 of "<stream>:<expires>">`) made with the SourceMount's
    /// `listeners.urlSecretKeyRef`, on raw, ICY, pump and HLS alike.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub signed_urls: bool,
    /// HLS settings. Every stream serves HLS at `/<name>.m3u8` from the same
    /// buffer; absent: 10 s segments and no group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls: Option<HlsSpec>,
    /// Title while the source sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Station name (`icy-name`). Default: the encoder's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Station description (`icy-description`). Default: the encoder's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Genre (`icy-genre`). Default: the encoder's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genre: Option<String>,
    /// Station web site (`icy-url`). Default: the encoder's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// HLS output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HlsSpec {
    /// Target segment length in seconds (1 to 60).
    #[serde(default = "crate::config::defaults::hls_segment_seconds")]
    #[schemars(range(min = 1, max = 60))]
    pub segment_seconds: u32,
    /// Stream group: streams of one group are the variants of the multivariant
    /// playlist `/sg/<group>.m3u8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub group: Option<String>,
}

impl Default for HlsSpec {
    fn default() -> Self {
        HlsSpec {
            segment_seconds: crate::config::defaults::hls_segment_seconds(),
            group: None,
        }
    }
}

impl StreamSpec {
    /// A spec with every optional setting at its default.
    pub fn new(source_mount: impl Into<String>) -> Self {
        StreamSpec {
            source_mount: source_mount.into(),
            format: None,
            bitrate: None,
            profile: None,
            rewind_seconds: crate::config::defaults::rewind_seconds(),
            burst_seconds: crate::config::defaults::burst_seconds(),
            icy_meta_interval: crate::config::defaults::icy_meta_interval(),
            max_buffer_bytes: None,
            max_listeners: None,
            listener_auth: None,
            signed_urls: false,
            hls: None,
            title: None,
            name: None,
            description: None,
            genre: None,
            url: None,
        }
    }
}

/// What the operator observed of a Stream.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `SourceConnected` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Listeners on all slaves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listeners: Option<i64>,
    /// Seconds of audio in the master's rewind buffer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffered_seconds: Option<i64>,
    /// Where listeners connect, inside the cluster: the Icecast URL and the
    /// HLS playlist URL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listener_urls: Vec<String>,
    /// The SourceMount whose master carries this Stream (the last one seen):
    /// when `spec.sourceMount` changes, the operator reconciles this one too,
    /// so the old master drops the Stream at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_mount: Option<String>,
}

/// A generated CRD file: its name and YAML text.
#[derive(Debug, Clone)]
pub struct CrdFile {
    /// File name, e.g. `sourcemounts.streammachine.io.yaml`.
    pub name: String,
    /// The CRD as YAML.
    pub yaml: String,
}

/// The CRDs, as applied to a cluster.
///
/// The schemas of the Kubernetes types embedded here (`resources`) come with
/// their Go documentation; the 2 KB essay on Quantity's serialization is
/// replaced by what a user needs to know in `kubectl explain`.
pub fn crds() -> Result<Vec<CustomResourceDefinition>, serde_json::Error> {
    [SourceMount::crd(), Stream::crd()]
        .into_iter()
        .map(|crd| {
            let mut v = serde_json::to_value(&crd)?;
            shorten_quantity_docs(&mut v);
            kubernetes_int_formats(&mut v);
            serde_json::from_value(v)
        })
        .collect()
}

fn shorten_quantity_docs(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            if o.get("description")
                .and_then(|d| d.as_str())
                .is_some_and(|d| d.starts_with("Quantity is a fixed-point"))
            {
                o.insert(
                    "description".into(),
                    "A quantity, as a string: `100m` or `1` (CPU), `256Mi` or `2Gi` (memory)."
                        .into(),
                );
            }
            o.values_mut().for_each(shorten_quantity_docs);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(shorten_quantity_docs),
        _ => {}
    }
}

/// schemars names unsigned integers `uint32`/`uint64`, formats the API server
/// does not know (it warns on every apply); it knows `int32` and `int64`. An
/// unsigned field becomes `int32` when its maximum fits, else `int64`, with
/// `minimum: 0` kept or added.
fn kubernetes_int_formats(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            let unsigned = o
                .get("format")
                .and_then(|f| f.as_str())
                .is_some_and(|f| f.starts_with("uint"));
            if unsigned {
                let fits = o
                    .get("maximum")
                    .and_then(serde_json::Value::as_f64)
                    .is_some_and(|m| m <= f64::from(i32::MAX));
                o.insert("format".into(), if fits { "int32" } else { "int64" }.into());
                o.entry("minimum").or_insert(0.0.into());
            }
            o.values_mut().for_each(kubernetes_int_formats);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(kubernetes_int_formats),
        _ => {}
    }
}

/// Why the CRD files could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// Post-processing the schema failed.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// Rendering YAML failed.
    #[error("{0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// The CRDs as the YAML files `crdgen` writes.
pub fn crd_files() -> Result<Vec<CrdFile>, CrdError> {
    let mut files = Vec::new();
    for crd in crds()? {
        let name = format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default());
        let yaml = format!(
            "# Generated by crdgen from crds/src/v1alpha1.rs: do not edit.\n{}",
            serde_yaml::to_string(&crd)?
        );
        files.push(CrdFile { name, yaml });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn schema_of(crd: &CustomResourceDefinition) -> Value {
        let v = serde_json::to_value(crd).unwrap();
        v["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    /// What the API server refuses in a structural schema (found on a real
    /// cluster): an object with both `properties` and `additionalProperties`
    /// (from a `deny_unknown_fields` type).
    #[test]
    fn the_schemas_are_structural() {
        fn walk(v: &Value, path: &str, bad: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if m.contains_key("properties") && m.contains_key("additionalProperties") {
                        bad.push(path.to_string());
                    }
                    for (k, v) in m {
                        walk(v, &format!("{path}.{k}"), bad);
                    }
                }
                Value::Array(a) => {
                    for (i, v) in a.iter().enumerate() {
                        walk(v, &format!("{path}[{i}]"), bad);
                    }
                }
                _ => {}
            }
        }
        let mut bad = Vec::new();
        for crd in crds().unwrap() {
            walk(
                &serde_json::to_value(&crd).unwrap(),
                &crd.metadata.name.clone().unwrap_or_default(),
                &mut bad,
            );
        }
        assert!(
            bad.is_empty(),
            "properties with additionalProperties at {bad:?}"
        );
    }

    /// The `Stream` spec is the streamer's `StreamConfig` as a Kubernetes
    /// user writes it: every setting of one is in the other, under the same
    /// name and default, but for the differences listed here (each with its
    /// reason). A setting added to one alone fails this test.
    #[test]
    fn the_stream_spec_follows_the_streamers_stream_config() {
        let props = |schema: schemars::schema::RootSchema| -> BTreeMap<String, Value> {
            let v = serde_json::to_value(schema).unwrap();
            serde_json::from_value(v["properties"].clone()).unwrap()
        };
        let config = props(schemars::schema_for!(crate::config::StreamConfig));
        let spec = props(schemars::schema_for!(StreamSpec));
        // Config only: the key is the resource's name; passwords belong to
        // the SourceMount (a Secret); `transcode` is spelled out as
        // format/bitrate/profile.
        let config_only = ["key", "password", "passwordFile", "transcode"];
        // Spec only: the transcode's settings (`format` is the config's own
        // mount format there, the output format here).
        let spec_only = ["bitrate", "profile"];
        for name in config.keys() {
            assert!(
                spec.contains_key(name) || config_only.contains(&name.as_str()),
                "StreamConfig.{name} is missing from the Stream CRD's spec"
            );
        }
        for name in spec.keys() {
            assert!(
                config.contains_key(name) || spec_only.contains(&name.as_str()),
                "the Stream CRD's spec.{name} is not a StreamConfig setting"
            );
        }
        for (name, c) in &config {
            if let (Some(d), Some(s)) = (c.get("default"), spec.get(name)) {
                let theirs = s.get("default");
                // An optional spec field means "the streamer's default".
                assert!(
                    theirs.is_none_or(|t| t == d),
                    "{name}: default {d} in StreamConfig, {theirs:?} in the CRD"
                );
            }
        }
        let hls = StreamSpec::new("m");
        let cfg = crate::config::StreamConfig::new("k");
        assert_eq!(
            (hls.rewind_seconds, hls.burst_seconds, hls.icy_meta_interval),
            (cfg.rewind_seconds, cfg.burst_seconds, cfg.icy_meta_interval)
        );
        assert_eq!(
            HlsSpec::default().segment_seconds,
            crate::config::HlsConfig::default().segment_seconds
        );
    }

    #[test]
    fn names_scope_and_subresources() {
        let crd = SourceMount::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("sourcemounts.streammachine.io")
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["smm".into()]));
        let v = &crd.spec.versions[0];
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let crd = Stream::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("streams.streammachine.io")
        );
        assert_eq!(crd.spec.names.short_names, Some(vec!["sms".into()]));
        let cols: Vec<String> = crd.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .filter(|c| c.priority.unwrap_or(0) == 0)
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(cols, ["Ready", "Source", "Listeners", "Buffered", "Age"]);
    }

    #[test]
    fn schema_carries_defaults_ranges_and_enums() {
        let s = schema_of(&Stream::crd());
        let spec = &s["properties"]["spec"];
        assert_eq!(spec["required"], json!(["sourceMount"]));
        let rewind = &spec["properties"]["rewindSeconds"];
        assert_eq!(rewind["default"], 14400);
        assert_eq!(rewind["minimum"], 1.0);
        assert_eq!(rewind["maximum"], 604800.0);
        assert_eq!(spec["properties"]["bitrate"]["minimum"], 8.0);
        assert_eq!(spec["properties"]["bitrate"]["maximum"], 320.0);
        assert_eq!(spec["properties"]["format"]["enum"], json!(["mp3", "aac"]));
        assert!(spec["x-kubernetes-validations"]
            .to_string()
            .contains("burstSeconds"));
        let m = schema_of(&SourceMount::crd());
        let spec = &m["properties"]["spec"];
        let slaves = &spec["properties"]["slaves"]["properties"];
        assert_eq!(slaves["handoff"]["enum"], json!(["Drain", "Socket"]));
        assert_eq!(slaves["handoff"]["default"], "Drain");
        assert_eq!(
            slaves["service"]["properties"]["type"]["enum"],
            json!(["ClusterIP", "NodePort", "LoadBalancer"])
        );
        assert_eq!(slaves["replicas"]["minimum"], 1.0);
        assert!(slaves["resources"]["properties"]["limits"].is_object());
        let files = crd_files().unwrap();
        assert!(files[0].yaml.contains("A quantity, as a string"));
        assert!(!files[0].yaml.contains("Quantity is a fixed-point"));
        assert_eq!(
            spec["properties"]["password"]["properties"]["secretKeyRef"]["required"],
            json!(["name"])
        );
        let conds = &m["properties"]["status"]["properties"]["conditions"]["items"];
        assert_eq!(
            conds["required"],
            json!(["lastTransitionTime", "message", "reason", "status", "type"])
        );
    }

    #[test]
    fn spec_defaults_fill_in() {
        let s: StreamSpec = serde_json::from_value(json!({"sourceMount": "main"})).unwrap();
        assert_eq!(s, StreamSpec::new("main"));
        let m: SourceMountSpec =
            serde_json::from_value(json!({"password": {"secretKeyRef": {"name": "pw"}}})).unwrap();
        assert_eq!(m.password.secret_key_ref.key, "password");
        assert_eq!(m.slaves, SlavesSpec::default());
        assert_eq!(m.master, MasterSpec::default());
    }
}
