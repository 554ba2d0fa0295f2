//! The Elasticsearch/OpenSearch sink of listener analytics
//! (`analytics.elasticsearch`).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Secret;

/// Where analytics events go with the `_bulk` API, into daily indices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// The cluster's base URL (`https://es.example:9200`); `/_bulk` is
    /// appended.
    pub url: String,
    /// Events go to `<indexPrefix>-YYYY.MM.DD` (UTC, the day they are sent;
    /// default `streammachine`).
    #[serde(default = "default_prefix")]
    pub index_prefix: String,
    /// Events per `_bulk` request at most (default 500).
    #[serde(default = "default_batch")]
    pub batch_size: u32,
    /// A batch goes out at the latest this long after its first event
    /// (default 5 s).
    #[serde(default = "default_flush")]
    pub flush_seconds: f64,
    /// HTTP Basic user, if the cluster wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Its password (prefer `passwordFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A file holding the password (a mounted Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

fn default_prefix() -> String {
    "streammachine".into()
}
fn default_batch() -> u32 {
    500
}
fn default_flush() -> f64 {
    5.0
}

impl ElasticsearchConfig {
    /// Checks what the schema cannot; `Err((field, why))`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let rest = (self.url.strip_prefix("http://")).or_else(|| self.url.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty()) {
            return Err(("url", "must be an http:// or https:// URL".into()));
        }
        if self
            .url
            .split("://")
            .nth(1)
            .is_some_and(|r| r.split('/').next().unwrap_or("").contains('@'))
        {
            return Err((
                "url",
                "put credentials in username and passwordFile, not in the URL".into(),
            ));
        }
        let prefix_ok = !self.index_prefix.is_empty()
            && (self.index_prefix.bytes())
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
            && !self.index_prefix.starts_with(['-', '_', '.']);
        if !prefix_ok {
            return Err((
                "indexPrefix",
                "lower-case letters, digits, '-', '_' and '.', not first".into(),
            ));
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(("batchSize", "must be between 1 and 10000".into()));
        }
        if !(0.1..=300.0).contains(&self.flush_seconds) {
            return Err(("flushSeconds", "must be between 0.1 and 300".into()));
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err(("password", "give password or passwordFile, not both".into()));
        }
        Ok(())
    }
}
