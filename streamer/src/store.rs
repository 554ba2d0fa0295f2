//! The Redis config store: the admin API's changes to streams and mounts,
//! kept so they survive a restart.
//!
//! Precedence (the original ignored the file whenever Redis was empty): the
//! file's streams and mounts are the base; the *overlay* stored in Redis holds
//! what the API created or changed (whole entries, which win over the file's
//! entry of the same key) and what it removed (which stays removed, even if
//! the file still has it). Entries the API never touched follow the file.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use streammachine_config::{SourceMountConfig, StreamConfig};

/// A change made through the admin API, recorded in the config store.
#[derive(Debug, Clone)]
pub enum Change {
    /// A stream created or changed (its whole configuration).
    UpsertStream(StreamConfig),
    /// A stream removed.
    DeleteStream(String),
    /// A mount created or changed.
    UpsertMount(SourceMountConfig),
    /// A mount removed.
    DeleteMount(String),
}

/// A change for the log: what and which key, never a password.
pub(crate) struct ChangeSummary<'a>(pub(crate) &'a Change);

impl std::fmt::Debug for ChangeSummary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Change::UpsertStream(s) => write!(f, "stream {} set", s.key),
            Change::DeleteStream(k) => write!(f, "stream {k} removed"),
            Change::UpsertMount(m) => write!(f, "mount {} set", m.key),
            Change::DeleteMount(k) => write!(f, "mount {k} removed"),
        }
    }
}

/// What the server's apply changed.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// Streams created.
    pub created: Vec<String>,
    /// Streams whose settings changed in place.
    pub updated: Vec<String>,
    /// Streams removed (their listeners disconnected).
    pub removed: Vec<String>,
}

/// Errors talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Connecting or a command failed.
    #[error("redis at {url}: {error}")]
    Redis {
        /// The URL (without a password).
        url: String,
        /// What failed.
        error: redis::RedisError,
    },
    /// The stored document is not ours or is damaged.
    #[error("redis key {key}: not a StreamMachine config overlay: {error}")]
    Document {
        /// The key.
        key: String,
        /// The parse error.
        error: serde_json::Error,
    },
    /// Redis holds a newer revision than this server's: another server
    /// writes the same key.
    #[error("redis key {key} holds revision {stored}, newer than this server's {ours}: does another server use the same redis prefix?")]
    Newer {
        /// The key.
        key: String,
        /// The revision stored.
        stored: u64,
        /// The revision this server tried to save.
        ours: u64,
    },
    /// No answer in time.
    #[error("redis at {url}: no answer within {secs} s")]
    Timeout {
        /// The URL.
        url: String,
        /// The limit.
        secs: u64,
    },
}

/// The API's changes, as stored in Redis (JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Overlay {
    /// Document version.
    #[serde(default)]
    pub version: u32,
    /// Counts the saves: a write carrying an older revision than the one
    /// stored is refused, so a write Redis executes late (it was paused
    /// with the command in its socket) cannot bring back what was undone.
    #[serde(default)]
    pub revision: u64,
    /// Streams created or changed through the API, by key.
    #[serde(default)]
    pub streams: BTreeMap<String, StreamConfig>,
    /// Mounts created or changed through the API, by key.
    #[serde(default)]
    pub source_mounts: BTreeMap<String, SourceMountConfig>,
    /// Streams removed through the API.
    #[serde(default)]
    pub deleted_streams: BTreeSet<String>,
    /// Mounts removed through the API.
    #[serde(default)]
    pub deleted_source_mounts: BTreeSet<String>,
}

impl Overlay {
    /// The file's entries with the overlay applied (file order, then new ones).
    pub fn merge(
        &self,
        mounts: Vec<SourceMountConfig>,
        streams: Vec<StreamConfig>,
    ) -> (Vec<SourceMountConfig>, Vec<StreamConfig>) {
        fn apply<T: Clone>(
            file: Vec<T>,
            key: impl Fn(&T) -> &str,
            changed: &BTreeMap<String, T>,
            deleted: &BTreeSet<String>,
        ) -> Vec<T> {
            let mut out: Vec<T> = file
                .into_iter()
                .filter(|e| !deleted.contains(key(e)))
                .map(|e| changed.get(key(&e)).cloned().unwrap_or(e))
                .collect();
            for (k, v) in changed {
                if !out.iter().any(|e| key(e) == k) {
                    out.push(v.clone());
                }
            }
            out
        }
        (
            apply(
                mounts,
                |m| m.key.as_str(),
                &self.source_mounts,
                &self.deleted_source_mounts,
            ),
            apply(
                streams,
                |s| s.key.as_str(),
                &self.streams,
                &self.deleted_streams,
            ),
        )
    }

    /// Records a stream created or changed.
    pub fn upsert_stream(&mut self, s: StreamConfig) {
        self.deleted_streams.remove(&s.key);
        self.streams.insert(s.key.clone(), s);
    }

    /// Records a stream removed.
    pub fn delete_stream(&mut self, key: &str) {
        self.streams.remove(key);
        self.deleted_streams.insert(key.to_string());
    }

    /// Records a mount created or changed.
    pub fn upsert_mount(&mut self, m: SourceMountConfig) {
        self.deleted_source_mounts.remove(&m.key);
        self.source_mounts.insert(m.key.clone(), m);
    }

    /// Records a mount removed.
    pub fn delete_mount(&mut self, key: &str) {
        self.source_mounts.remove(key);
        self.deleted_source_mounts.insert(key.to_string());
    }
}

/// The URL without credentials, for messages.
fn safe_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Where the overlay lives.
#[derive(Debug, Clone)]
pub struct Store {
    url: String,
    key: String,
}

const TIMEOUT: Duration = Duration::from_secs(5);

impl Store {
    /// A store at `url` with the key `<prefix>:config`.
    pub fn new(url: &str, prefix: &str) -> Self {
        Store {
            url: url.to_string(),
            key: format!("{prefix}:config"),
        }
    }

    fn err(&self, error: redis::RedisError) -> StoreError {
        StoreError::Redis {
            url: safe_url(&self.url),
            error,
        }
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        let client = redis::Client::open(self.url.as_str()).map_err(|e| self.err(e))?;
        match tokio::time::timeout(TIMEOUT, client.get_multiplexed_async_connection()).await {
            Ok(r) => r.map_err(|e| self.err(e)),
            Err(_) => Err(StoreError::Timeout {
                url: safe_url(&self.url),
                secs: TIMEOUT.as_secs(),
            }),
        }
    }

    /// Reads the overlay (empty when the key does not exist).
    pub async fn load(&self) -> Result<Overlay, StoreError> {
        let mut con = self.connection().await?;
        let text: Option<String> = redis::cmd("GET")
            .arg(&self.key)
            .query_async(&mut con)
            .await
            .map_err(|e| self.err(e))?;
        match text {
            None => Ok(Overlay::default()),
            Some(t) => serde_json::from_str(&t).map_err(|error| StoreError::Document {
                key: self.key.clone(),
                error,
            }),
        }
    }

    /// Writes the overlay unless Redis holds a newer revision of it (the
    /// same revision counts as saved: an earlier attempt got there).
    pub async fn save(&self, overlay: &Overlay) -> Result<(), StoreError> {
        let mut doc = overlay.clone();
        doc.version = 1;
        let text = serde_json::to_string(&doc).map_err(|error| StoreError::Document {
            key: self.key.clone(),
            error,
        })?;
        let timeout = || StoreError::Timeout {
            url: safe_url(&self.url),
            secs: TIMEOUT.as_secs(),
        };
        let mut con = self.connection().await?;
        let stored: u64 = tokio::time::timeout(
            TIMEOUT,
            redis::cmd("EVAL")
                .arg(SAVE_IF_NEWER)
                .arg(1)
                .arg(&self.key)
                .arg(text)
                .arg(doc.revision)
                .query_async(&mut con),
        )
        .await
        .map_err(|_| timeout())?
        .map_err(|e| self.err(e))?;
        if stored > doc.revision {
            return Err(StoreError::Newer {
                key: self.key.clone(),
                stored,
                ours: doc.revision,
            });
        }
        Ok(())
    }
}

/// Sets KEYS[1] to ARGV[1] unless the document there has a revision above
/// ARGV[2]; returns the revision stored before (0 for none). A script, so
/// the compare and the set are one step for Redis.
const SAVE_IF_NEWER: &str = r"
local cur = redis.call('GET', KEYS[1])
local rev = 0
if cur then
  local ok, doc = pcall(cjson.decode, cur)
  if ok and type(doc) == 'table' and tonumber(doc.revision) then rev = tonumber(doc.revision) end
end
if rev > tonumber(ARGV[2]) then return rev end
redis.call('SET', KEYS[1], ARGV[1])
return rev
";

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(key: &str, rewind: u32) -> StreamConfig {
        let mut s = StreamConfig::new(key);
        s.rewind_seconds = rewind;
        s
    }

    #[test]
    fn the_overlay_wins_for_what_it_touched_and_the_file_for_the_rest() {
        let file = vec![stream("a", 100), stream("b", 100), stream("c", 100)];
        let mut o = Overlay::default();
        o.upsert_stream(stream("b", 600));
        o.delete_stream("c");
        o.upsert_stream(stream("d", 60));
        let (_, merged) = o.merge(Vec::new(), file);
        let got: Vec<(&str, u32)> = merged
            .iter()
            .map(|s| (s.key.as_str(), s.rewind_seconds))
            .collect();
        assert_eq!(got, vec![("a", 100), ("b", 600), ("d", 60)]);
        // Re-creating a removed stream brings it back.
        o.upsert_stream(stream("c", 5));
        assert!(!o.deleted_streams.contains("c"));
        // An empty overlay is the file (the original ignored the file then).
        let (_, merged) = Overlay::default().merge(Vec::new(), vec![stream("a", 1)]);
        assert_eq!(merged.len(), 1);
    }

    #[test]
    fn urls_in_messages_hide_passwords() {
        assert_eq!(
            safe_url("redis://:s3cret@host:6379/1"),
            "redis://***@host:6379/1"
        );
        assert_eq!(safe_url("redis://host"), "redis://host");
    }

    #[test]
    fn the_document_round_trips() {
        let mut o = Overlay::default();
        o.upsert_stream(stream("x", 7));
        o.delete_mount("m");
        let text = serde_json::to_string(&o).unwrap();
        assert!(text.contains("\"deletedSourceMounts\":[\"m\"]"));
        let back: Overlay = serde_json::from_str(&text).unwrap();
        assert_eq!(back, o);
    }
}
