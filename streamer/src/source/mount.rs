//! Source mounts: where encoders connect, and which of them is on air.
//!
//! The first source to connect is active; later ones wait in line as standby
//! sources (their audio is parsed, so they are ready, but not used). When the
//! active source leaves, the next in line takes over at its next chunk: listeners
//! hear at most that gap. The line is kept in priority order: an encoder on
//! one of the mount's `inputs` with a higher priority than the one on air
//! takes over at once (the studio overrides the automation), a fallback
//! comes last.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use prometheus::IntGauge;
use streammachine_config::{AudioFormat, FallbackConfig, Secret};

use crate::buffer::{ChunkDraft, Title};
use crate::metrics::Metrics;
use crate::stream::Stream;
use crate::sync::{MutexExt, RwLockExt};

static NEXT_SOURCE_ID: AtomicU64 = AtomicU64::new(1);

/// What a connected source told us about itself.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SourceInfo {
    /// Peer address.
    pub remote: Option<SocketAddr>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `ice-name`.
    pub name: Option<String>,
    /// `ice-description`.
    pub description: Option<String>,
    /// `ice-genre`.
    pub genre: Option<String>,
    /// `ice-url`.
    pub url: Option<String>,
    /// `ice-audio-info`.
    pub audio_info: Option<String>,
    /// `ice-public`.
    pub public: Option<String>,
}

/// A connected source, as the mount and the status pages see it.
#[derive(Debug)]
pub struct SourceEntry {
    /// Unique id (also the stream's "same source" marker).
    pub id: u64,
    /// Its request headers.
    pub info: SourceInfo,
    /// When it connected.
    pub connected_at: SystemTime,
    /// Format key of its audio, once known.
    pub format_key: Mutex<Option<String>>,
    /// Audio bytes accepted from it.
    pub bytes: AtomicU64,
    /// Tells the source's connection to end (admin drop, mount removed).
    pub kick: tokio::sync::Notify,
    /// A fallback (plays only while no live source is connected).
    pub fallback: bool,
    /// Its place in line: higher goes on air first (the mount's own path
    /// is 0, an input's its `priority`).
    pub priority: i32,
    /// The last title this source sent: on air while it is.
    title: Mutex<Option<Arc<Title>>>,
}

#[derive(Debug)]
struct MountInner {
    /// `sources[0]` is on air.
    sources: Vec<Arc<SourceEntry>>,
    title: Option<Arc<Title>>,
    streams: Vec<Arc<Stream>>,
}

/// A source mount.
#[derive(Debug)]
pub struct Mount {
    key: String,
    format: AudioFormat,
    password: std::sync::RwLock<Secret>,
    monitored: std::sync::atomic::AtomicBool,
    closed: std::sync::atomic::AtomicBool,
    inner: Mutex<MountInner>,
    connected: IntGauge,
    source_count: IntGauge,
    /// The fallback in service and the tasks playing it.
    fallback: Mutex<(Option<FallbackConfig>, Vec<tokio::task::AbortHandle>)>,
    /// Audio shared by several streams is kept once, here (a single
    /// stream keeps it in its own buffer's arena).
    arena: crate::buffer::arena::Arena,
    /// More encoder paths into this mount, with their priorities.
    inputs: std::sync::RwLock<Vec<Input>>,
}

/// An encoder path into a mount (`sourceMounts[].inputs`).
#[derive(Debug, Clone)]
pub struct Input {
    /// The path an encoder connects to.
    pub key: String,
    /// Its password.
    pub password: Secret,
    /// Its priority.
    pub priority: i32,
}

impl Mount {
    /// A mount with no source and no stream yet.
    pub fn new(
        key: String,
        format: AudioFormat,
        password: Secret,
        metrics: &Metrics,
    ) -> Arc<Mount> {
        let connected = metrics.source_connected.with_label_values(&[&key]);
        let source_count = metrics.sources.with_label_values(&[&key]);
        connected.set(0);
        source_count.set(0);
        Arc::new(Mount {
            key,
            format,
            password: std::sync::RwLock::new(password),
            monitored: std::sync::atomic::AtomicBool::new(false),
            closed: std::sync::atomic::AtomicBool::new(false),
            inner: Mutex::new(MountInner {
                sources: Vec::new(),
                title: None,
                streams: Vec::new(),
            }),
            connected,
            source_count,
            fallback: Mutex::new((None, Vec::new())),
            arena: crate::buffer::arena::Arena::new(),
            inputs: std::sync::RwLock::new(Vec::new()),
        })
    }

    /// Makes `fallback` the mount's fallback, live: a changed one replaces the
    /// old (whose source leaves the mount), an unchanged one keeps playing.
    /// Needs a Tokio runtime to start one.
    pub fn set_fallback(self: &Arc<Self>, fallback: Option<FallbackConfig>) {
        let mut current = self.fallback.locked();
        if current.0 == fallback {
            return;
        }
        for task in current.1.drain(..) {
            task.abort();
        }
        if current.0.is_some() {
            tracing::info!(mount = %self.key, "fallback changed");
        }
        current.0 = fallback.clone();
        let (Some(f), Ok(rt)) = (fallback, tokio::runtime::Handle::try_current()) else {
            return;
        };
        if let Some(file) = f.file {
            let task = rt.spawn(crate::source::fallback::play_file(Arc::clone(self), file));
            current.1.push(task.abort_handle());
        }
        if let Some(url) = f.url {
            let task = rt.spawn(crate::source::proxy::pull(
                Arc::clone(self),
                url,
                f.ca_file,
                true,
            ));
            current.1.push(task.abort_handle());
        }
    }

    fn lock(&self) -> MutexGuard<'_, MountInner> {
        self.inner.locked()
    }

    /// The mount's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The format encoders must send.
    pub fn format(&self) -> AudioFormat {
        self.format
    }

    /// Checks a source password in time independent of where it differs.
    pub fn password_matches(&self, given: &str) -> bool {
        let password = self.password.read_locked();
        constant_time_eq(password.0.as_bytes(), given.as_bytes())
    }

    /// Changes the source password (live; connected sources stay).
    pub fn set_password(&self, password: Secret) {
        *self.password.write_locked() = password;
    }

    /// Whether a missing source raises an alert.
    pub fn monitored(&self) -> bool {
        self.monitored.load(Ordering::Relaxed)
    }

    /// Sets whether a missing source raises an alert.
    pub fn set_monitored(&self, monitored: bool) {
        self.monitored.store(monitored, Ordering::Relaxed);
    }

    /// Stops feeding a stream.
    pub fn detach_stream(&self, key: &str) {
        self.lock().streams.retain(|s| s.key() != key);
    }

    /// Puts source `id` on air (manual failover); the previous active source
    /// goes to the front of the line.
    pub fn promote(&self, id: u64) -> Result<(), MountError> {
        let mut inner = self.lock();
        let i = inner
            .sources
            .iter()
            .position(|s| s.id == id)
            .ok_or(MountError::NoSuchSource(id))?;
        if i == 0 {
            return Err(MountError::AlreadyActive(id));
        }
        let entry = inner.sources.remove(i);
        inner.sources.insert(0, entry);
        Self::on_air_changed(&mut inner);
        tracing::warn!(mount = %self.key, source = id, "source promoted");
        Ok(())
    }

    /// Disconnects source `id`.
    pub fn drop_source(&self, id: u64) -> Result<(), MountError> {
        let inner = self.lock();
        let s = inner
            .sources
            .iter()
            .find(|s| s.id == id)
            .ok_or(MountError::NoSuchSource(id))?;
        s.kick.notify_one();
        Ok(())
    }

    /// Makes `id` (an adopted source, after a handoff) continue the streams'
    /// timelines without a discontinuity.
    pub fn continue_with(&self, id: u64) {
        // A transcoded stream's encoder starts afresh: a new timeline piece.
        for s in self
            .lock()
            .streams
            .iter()
            .filter(|s| s.config().transcode.is_none())
        {
            s.continue_source(id);
        }
    }

    /// True once the mount was removed (its fallback stops).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Disconnects every source (the mount is being removed).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        for task in self.fallback.locked().1.drain(..) {
            task.abort();
        }
        for s in &self.lock().sources {
            s.kick.notify_one();
        }
    }

    /// Attaches a stream that this mount feeds.
    pub fn attach_stream(&self, stream: Arc<Stream>) {
        self.lock().streams.push(stream);
    }

    /// The streams this mount feeds.
    pub fn streams(&self) -> Vec<Arc<Stream>> {
        self.lock().streams.clone()
    }

    /// Makes `inputs` the mount's encoder paths besides its own.
    pub fn set_inputs(&self, inputs: Vec<Input>) {
        *self.inputs.write_locked() = inputs;
    }

    /// Whether `key` is one of this mount's inputs.
    pub fn has_input(&self, key: &str) -> bool {
        self.inputs.read_locked().iter().any(|i| i.key == key)
    }

    /// The priority of input `key` if `given` is its password.
    pub fn input_password_matches(&self, key: &str, given: &str) -> Option<i32> {
        let inputs = self.inputs.read_locked();
        let input = inputs.iter().find(|i| i.key == key)?;
        constant_time_eq(input.password.0.as_bytes(), given.as_bytes()).then_some(input.priority)
    }

    /// Adds a connected source: on air if the mount had none, else in line.
    /// Dropping the returned guard removes it (and promotes the next).
    pub fn add_source(self: &Arc<Self>, info: SourceInfo) -> SourceGuard {
        self.add_source_ranked(info, false, 0)
    }

    /// Adds a source; a live one goes before any fallback (so it takes over
    /// from a fallback at once), a fallback goes last.
    pub fn add_source_as(self: &Arc<Self>, info: SourceInfo, fallback: bool) -> SourceGuard {
        self.add_source_ranked(info, fallback, 0)
    }

    /// Adds a source at its place in line: after the live sources of its
    /// `priority` or higher, before the rest (a fallback: last). Placed
    /// first, it is on air at once.
    pub fn add_source_ranked(
        self: &Arc<Self>,
        info: SourceInfo,
        fallback: bool,
        priority: i32,
    ) -> SourceGuard {
        let entry = Arc::new(SourceEntry {
            id: NEXT_SOURCE_ID.fetch_add(1, Ordering::Relaxed),
            info,
            connected_at: SystemTime::now(),
            format_key: Mutex::new(None),
            bytes: AtomicU64::new(0),
            kick: tokio::sync::Notify::new(),
            fallback,
            priority,
            title: Mutex::new(None),
        });
        let mut inner = self.lock();
        let at = if fallback {
            inner.sources.len()
        } else {
            inner
                .sources
                .iter()
                .position(|s| s.fallback || s.priority < priority)
                .unwrap_or(inner.sources.len())
        };
        let replaced = match inner.sources.first() {
            Some(old) if at == 0 => Some(Arc::clone(old)),
            _ => None,
        };
        inner.sources.insert(at, Arc::clone(&entry));
        if let Some(old) = replaced {
            // At once: its first chunk continues the timeline where the
            // replaced source's last one ended (the replaced source's partial
            // chunk is not used), so nothing of the new source is lost.
            if old.fallback {
                tracing::info!(mount = %self.key, source = entry.id, "a live source takes over from the fallback");
            } else {
                tracing::info!(mount = %self.key, source = entry.id, priority, replaced = old.id,
                    replaced_priority = old.priority,
                    "a source takes over (higher priority); the one it replaced waits");
            }
            // A transcoder flushes the replaced source's last audio.
            for s in &inner.streams {
                s.source_ended(old.id);
            }
            Self::on_air_changed(&mut inner);
        }
        self.update_gauges(&inner);
        SourceGuard {
            mount: Arc::clone(self),
            entry,
        }
    }

    fn remove_source(&self, id: u64) {
        let mut inner = self.lock();
        let was_active = inner.sources.first().is_some_and(|s| s.id == id);
        inner.sources.retain(|s| s.id != id);
        self.update_gauges(&inner);
        if was_active {
            for s in &inner.streams {
                s.source_ended(id);
            }
            Self::on_air_changed(&mut inner);
            match inner.sources.first() {
                Some(next) => {
                    tracing::warn!(mount = %self.key, source = next.id, "active source left; next source takes over")
                }
                None => {
                    tracing::warn!(mount = %self.key, "active source left; no source remaining")
                }
            }
        }
    }

    fn update_gauges(&self, inner: &MountInner) {
        self.connected.set(i64::from(!inner.sources.is_empty()));
        self.source_count
            .set(i64::try_from(inner.sources.len()).unwrap_or(i64::MAX));
    }

    /// Whether a live (not fallback) source is connected.
    pub fn has_live_source(&self) -> bool {
        self.lock().sources.iter().any(|s| !s.fallback)
    }

    /// Id of the source on air.
    pub fn active_source(&self) -> Option<u64> {
        self.lock().sources.first().map(|s| s.id)
    }

    /// Snapshot of the connected sources, the active one first.
    pub fn sources(&self) -> Vec<Arc<SourceEntry>> {
        self.lock().sources.clone()
    }

    /// Sets the title that goes with audio from now on (the API's; it is
    /// also the title of the source on air).
    pub fn set_title(&self, text: &str) {
        let mut inner = self.lock();
        let title = Title::new(text);
        if let Some(active) = inner.sources.first() {
            *active.title.locked() = Some(Arc::clone(&title));
        }
        inner.title = Some(title);
    }

    /// Sets source `id`'s title; it goes on air only while that source is on
    /// air (a waiting encoder's titles wait with it). Returns whether it did.
    pub fn set_source_title(&self, id: u64, text: &str) -> bool {
        let mut inner = self.lock();
        let title = Title::new(text);
        let Some(at) = inner.sources.iter().position(|s| s.id == id) else {
            return false;
        };
        *inner.sources[at].title.locked() = Some(Arc::clone(&title));
        if at == 0 {
            inner.title = Some(title);
        }
        at == 0
    }

    /// The source a request from `ip` speaks for: the one on air if it
    /// connected from there, else the first waiting one that did.
    pub fn source_from(&self, ip: std::net::IpAddr) -> Option<u64> {
        let inner = self.lock();
        let from = |s: &&Arc<SourceEntry>| s.info.remote.is_some_and(|r| r.ip() == ip);
        inner.sources.iter().find(from).map(|s| s.id)
    }

    /// A new source is on air: the title is its last one (none yet: the
    /// stream's configured title), never the previous source's.
    fn on_air_changed(inner: &mut MountInner) {
        if let Some(active) = inner.sources.first() {
            inner.title = active.title.locked().clone();
        }
    }

    /// The mount's title, if a source or the API has set one.
    pub fn title(&self) -> Option<String> {
        self.lock().title.as_ref().map(|t| t.text().to_string())
    }

    /// Audio from source `id`: goes to every stream if that source is on air,
    /// else it is dropped. Returns whether it was used.
    pub fn push(&self, id: u64, mut draft: ChunkDraft, format_key: &str) -> bool {
        let inner = self.lock();
        if inner.sources.first().is_none_or(|s| s.id != id) {
            return false;
        }
        if inner.streams.len() > 1 {
            // Stored once for all of them (each buffer keeps what is stored).
            draft.data = self.arena.store(std::mem::take(&mut draft.data));
        }
        for stream in &inner.streams {
            stream.feed(id, draft.clone(), inner.title.clone(), format_key);
        }
        true
    }
}

/// Compares secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// Errors of mount operations.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MountError {
    /// No connected source with that id.
    #[error("no source {0} on this mount")]
    NoSuchSource(u64),
    /// Promote of the source already on air.
    #[error("source {0} is already on air")]
    AlreadyActive(u64),
}

/// A source's membership in its mount; dropping it removes the source.
#[derive(Debug)]
pub struct SourceGuard {
    mount: Arc<Mount>,
    entry: Arc<SourceEntry>,
}

impl SourceGuard {
    /// The source's id.
    pub fn id(&self) -> u64 {
        self.entry.id
    }

    /// The source's shared entry.
    pub fn entry(&self) -> &Arc<SourceEntry> {
        &self.entry
    }

    /// The mount.
    pub fn mount(&self) -> &Arc<Mount> {
        &self.mount
    }
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        self.mount.remove_source(self.entry.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use streammachine_config::StreamConfig;

    fn draft(byte: u8) -> ChunkDraft {
        ChunkDraft {
            data: Bytes::from(vec![byte; 400]),
            frames: vec![0].into_boxed_slice(),
            samples_per_frame: 1152,
            sample_rate: 44_100,
        }
    }

    #[test]
    fn first_source_is_active_and_the_next_takes_over() {
        let metrics = Metrics::new().unwrap();
        let mount = Mount::new("m".into(), AudioFormat::Mp3, Secret("pw".into()), &metrics);
        let stream = Stream::new(StreamConfig::new("s"), AudioFormat::Mp3, &metrics);
        mount.attach_stream(Arc::clone(&stream));
        let a = mount.add_source(SourceInfo::default());
        let b = mount.add_source(SourceInfo::default());
        assert_eq!(mount.active_source(), Some(a.id()));
        assert!(mount.push(a.id(), draft(1), "k"));
        assert!(!mount.push(b.id(), draft(2), "k"));
        drop(a);
        assert_eq!(mount.active_source(), Some(b.id()));
        assert!(mount.push(b.id(), draft(3), "k"));
        let buf = stream.read_buffer();
        assert_eq!(buf.len(), 2);
        assert_eq!(buf.get(buf.first_seq()).unwrap().data()[0], 1);
        assert_eq!(buf.get(buf.first_seq() + 1).unwrap().data()[0], 3);
        assert!(
            buf.get(buf.first_seq() + 1).unwrap().discontinuity,
            "a new source starts a new timeline piece"
        );
        drop(buf);
        assert_eq!(metrics.sources.with_label_values(&["m"]).get(), 1);
        drop(b);
        assert_eq!(mount.active_source(), None);
        assert_eq!(metrics.source_connected.with_label_values(&["m"]).get(), 0);
    }

    #[test]
    fn a_higher_priority_source_takes_over_at_once_and_hands_back() {
        let metrics = Metrics::new().unwrap();
        let mount = Mount::new("m".into(), AudioFormat::Mp3, Secret("pw".into()), &metrics);
        let stream = Stream::new(StreamConfig::new("s"), AudioFormat::Mp3, &metrics);
        mount.attach_stream(Arc::clone(&stream));
        let auto = mount.add_source(SourceInfo::default());
        assert!(mount.push(auto.id(), draft(1), "k"));
        let studio = mount.add_source_ranked(SourceInfo::default(), false, 10);
        assert_eq!(mount.active_source(), Some(studio.id()), "on air at once");
        assert!(!mount.push(auto.id(), draft(2), "k"), "waits now");
        assert!(mount.push(studio.id(), draft(3), "k"));
        // An equal-priority encoder waits behind the studio.
        let other = mount.add_source_ranked(SourceInfo::default(), false, 10);
        assert_eq!(mount.active_source(), Some(studio.id()));
        drop(other);
        drop(studio);
        assert_eq!(mount.active_source(), Some(auto.id()), "back on air");
        assert!(mount.push(auto.id(), draft(5), "k"));
        // A lower priority waits behind the one on air.
        let low = mount.add_source_ranked(SourceInfo::default(), false, -1);
        assert!(mount.push(auto.id(), draft(6), "k"));
        assert!(!mount.push(low.id(), draft(9), "k"));
        drop(low);
        assert!(mount.push(auto.id(), draft(7), "k"));
        let buf = stream.read_buffer();
        let seq = buf.first_seq();
        let got: Vec<(u8, bool)> = (0..buf.len() as u64)
            .map(|i| {
                let c = buf.get(seq + i).unwrap();
                (c.data()[0], c.discontinuity)
            })
            .collect();
        assert_eq!(
            got,
            [(1, false), (3, true), (5, true), (6, false), (7, false)],
            "each change of source is a new timeline piece (HLS discontinuity)"
        );
    }

    #[test]
    fn promote_and_drop() {
        let metrics = Metrics::new().unwrap();
        let mount = Mount::new("m".into(), AudioFormat::Mp3, Secret("pw".into()), &metrics);
        let a = mount.add_source(SourceInfo::default());
        let b = mount.add_source(SourceInfo::default());
        assert_eq!(
            mount.promote(a.id()),
            Err(MountError::AlreadyActive(a.id()))
        );
        assert_eq!(mount.promote(999), Err(MountError::NoSuchSource(999)));
        mount.promote(b.id()).unwrap();
        assert_eq!(mount.active_source(), Some(b.id()));
        assert_eq!(mount.sources()[1].id, a.id());
        assert_eq!(mount.drop_source(999), Err(MountError::NoSuchSource(999)));
        mount.drop_source(a.id()).unwrap();
        mount.set_password(Secret("new".into()));
        assert!(mount.password_matches("new"));
    }

    #[test]
    fn passwords_compare_exactly() {
        let metrics = Metrics::new().unwrap();
        let mount = Mount::new(
            "m".into(),
            AudioFormat::Mp3,
            Secret("hackme".into()),
            &metrics,
        );
        assert!(mount.password_matches("hackme"));
        assert!(!mount.password_matches("hackm"));
        assert!(!mount.password_matches("hackmee"));
        assert!(!mount.password_matches(""));
    }

    #[test]
    fn titles_travel_with_the_chunks() {
        let metrics = Metrics::new().unwrap();
        let mut cfg = StreamConfig::new("s");
        cfg.title = Some("Station".into());
        let mount = Mount::new("m".into(), AudioFormat::Mp3, Secret("pw".into()), &metrics);
        let stream = Stream::new(cfg, AudioFormat::Mp3, &metrics);
        mount.attach_stream(Arc::clone(&stream));
        let a = mount.add_source(SourceInfo::default());
        mount.push(a.id(), draft(1), "k");
        mount.set_title("Song A");
        mount.push(a.id(), draft(2), "k");
        let buf = stream.read_buffer();
        let first = buf.first_seq();
        assert!(
            first > 170_000_000_000,
            "numbering starts from the clock, so it never repeats after a restart"
        );
        assert_eq!(buf.get(first).unwrap().title.text(), "Station");
        assert_eq!(buf.get(first + 1).unwrap().title.text(), "Song A");
    }
}
