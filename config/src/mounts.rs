//! Source mounts: where encoders connect, their inputs and fallback.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{defaults, AudioFormat, Secret};

/// Where an encoder connects (an Icecast mount point).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceMountConfig {
    /// Mount name: the encoder connects to `/<key>`.
    pub key: String,
    /// What the encoder sends: `mp3` (default) or `aac` (ADTS).
    #[serde(default)]
    pub format: AudioFormat,
    /// Source password (HTTP Basic; the user name is ignored, as in Icecast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// File holding the source password (e.g. a mounted Secret); read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Raise an alert when this mount has no source.
    #[serde(default)]
    pub monitored: bool,
    /// What plays while no encoder is connected: it yields as soon as one
    /// connects and comes back when the last one leaves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackConfig>,
    /// More encoders for this mount, each on its own path and password, with
    /// a priority: one with a higher priority than the source on air takes
    /// over at once (the studio overrides the automation, Icecast's
    /// `fallback-override`), and the one it replaced goes back on air when
    /// it leaves. Encoders on the mount's own path have priority 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<SourceInputConfig>,
}

/// Another encoder input of a source mount (see [`SourceMountConfig::inputs`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceInputConfig {
    /// The path the encoder connects to: `/<key>`.
    pub key: String,
    /// Its source password (default: the mount's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A file holding its password (a mounted Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Higher goes on air first (default 1: above the mount's own path).
    #[serde(default = "defaults::input_priority")]
    pub priority: i32,
}

/// A mount's fallback source: a file or a stream to pull (one of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FallbackConfig {
    /// A file in the mount's format, looped in real time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// An Icecast/Shoutcast/HTTP stream (`http://host:port/mount` or
    /// `https://…`) pulled with its titles; with no encoder ever connected,
    /// the mount is a relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// For an `https://` url: a PEM file of certificates to trust besides the
    /// public roots (a private CA, or the upstream's self-signed certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}
