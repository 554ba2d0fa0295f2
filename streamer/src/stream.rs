//! A stream: one rewind buffer, the wait list its listeners sleep on, and its counters.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::task::Waker;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{Gauge, IntGauge};
use streammachine_config::{AudioFormat, StreamConfig};

use crate::buffer::{ChunkDraft, RewindBuffer, Title};
use crate::metrics::Metrics;
use crate::sync::{MutexExt, RwLockExt};

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Formats µs since the epoch as RFC 3339 (the times of the API, analytics
/// and alerts).
pub fn format_time(micros: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// The HLS segment length of a stream.
pub fn segment_seconds(config: &StreamConfig) -> u32 {
    config
        .hls
        .as_ref()
        .map_or(crate::buffer::rewind::DEFAULT_SEGMENT_SECONDS, |h| {
            h.segment_seconds
        })
}

/// No source yet (source ids start at 1): the next chunk starts a new
/// timeline piece.
const NO_SOURCE: u64 = 0;

/// One stream and its buffer.
#[derive(Debug)]
pub struct Stream {
    key: String,
    config: RwLock<Arc<StreamConfig>>,
    format: AudioFormat,
    buffer: RwLock<RewindBuffer>,
    closed: std::sync::atomic::AtomicBool,
    byte_end: AtomicU64,
    audio_end: AtomicU64,
    first_seq: AtomicU64,
    last_source: AtomicU64,
    default_title: RwLock<Arc<Title>>,
    waiters: Mutex<Waiters>,
    epoch: AtomicU64,
    listeners: AtomicUsize,
    listener_peak: AtomicUsize,
    roster: crate::roster::Roster,
    format_key: RwLock<Option<String>>,
    buffer_seconds: Gauge,
    buffer_bytes: IntGauge,
    buffer_overhead: IntGauge,
    /// Set when this stream is transcoded from its mount's audio.
    transcoder: Mutex<Option<Box<dyn Transform>>>,
    /// While a restarted master waits for its slaves: new audio, not yet
    /// numbered (see [`Stream::hold`]).
    held: Mutex<Option<Vec<Held>>>,
    /// Bumped whenever the buffer is emptied or replaced (clear, import,
    /// handoff): a master then makes its slaves start over from its buffer.
    generation: AtomicU64,
}

/// Audio held back while a restarted master re-syncs, with its arrival time.
#[derive(Debug)]
struct Held {
    source_id: u64,
    draft: ChunkDraft,
    title: Arc<Title>,
    arrived_micros: i64,
}

/// The most chunks held for one stream (the grace is at most 300 s of ~1 s
/// chunks; a source bursting faster loses its oldest held audio, logged).
const MAX_HELD: usize = 400;

impl Stream {
    /// A stream with an empty buffer, fed by a mount of `format`.
    pub fn new(config: StreamConfig, format: AudioFormat, metrics: &Metrics) -> Arc<Stream> {
        let key = config.key.clone();
        Arc::new(Stream {
            buffer: RwLock::new({
                // Sequence numbers must never repeat, also across restarts
                // without a dump: start from the clock in centiseconds (chunks
                // are ~1 s, so numbering stays far below it).
                let first_seq = u64::try_from(now_micros() / 10_000).unwrap_or(0);
                let mut b = RewindBuffer::new(config.rewind_seconds, first_seq);
                b.set_segment_seconds(segment_seconds(&config));
                b
            }),
            default_title: RwLock::new(Title::new(config.title.clone().unwrap_or_default())),
            waiters: Mutex::new(Waiters::default()),
            epoch: AtomicU64::new(0),
            key: key.clone(),
            config: RwLock::new(Arc::new(config)),
            format,
            closed: std::sync::atomic::AtomicBool::new(false),
            byte_end: AtomicU64::new(0),
            audio_end: AtomicU64::new(0),
            first_seq: AtomicU64::new(0),
            last_source: AtomicU64::new(NO_SOURCE),
            listeners: AtomicUsize::new(0),
            listener_peak: AtomicUsize::new(0),
            roster: crate::roster::Roster::default(),
            format_key: RwLock::new(None),
            buffer_seconds: metrics.buffer_seconds.with_label_values(&[&key]),
            buffer_bytes: metrics.buffer_bytes.with_label_values(&[&key]),
            buffer_overhead: metrics.buffer_overhead_bytes.with_label_values(&[&key]),
            transcoder: Mutex::new(None),
            held: Mutex::new(None),
            generation: AtomicU64::new(0),
        })
    }

    /// Holds new audio back instead of appending it: a restarted master does
    /// this until its slaves have told it what they hold, so the audio it
    /// numbers continues theirs. [`Stream::release`] appends what was held,
    /// with the times it arrived.
    pub fn hold(&self) {
        let mut held = self.lock_held();
        if held.is_none() {
            *held = Some(Vec::new());
        }
    }

    /// Stops holding; appends the held audio in order. Returns how many chunks.
    pub fn release(&self) -> usize {
        let mut held = self.lock_held();
        let Some(queue) = held.take() else {
            return 0;
        };
        let n = queue.len();
        // Appended under the hold lock, so no newer audio can overtake it.
        for h in queue {
            self.append_at(h.source_id, h.draft, h.title, h.arrived_micros);
        }
        n
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, Option<Vec<Held>>> {
        self.held.locked()
    }

    /// The stream's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Its configuration (a snapshot: it can change while the stream runs).
    pub fn config(&self) -> Arc<StreamConfig> {
        Arc::clone(&self.config.read_locked())
    }

    /// Applies a changed configuration live: rewind length, burst, ICY
    /// interval and the slow-listener limit for new listeners, the default
    /// title and the ICY headers. The key and the mount are not changed here.
    pub fn set_config(&self, config: StreamConfig) {
        if config.rewind_seconds != self.config().rewind_seconds {
            self.write_buffer()
                .set_rewind_seconds(config.rewind_seconds);
        }
        *self.default_title.write_locked() = Title::new(config.title.clone().unwrap_or_default());
        *self.config.write_locked() = Arc::new(config);
    }

    fn default_title(&self) -> Arc<Title> {
        Arc::clone(&self.default_title.read_locked())
    }

    /// The audio format listeners get.
    pub fn format(&self) -> AudioFormat {
        self.format
    }

    /// The format key of the newest audio (e.g. `mp3-44100-128-s`).
    pub fn format_key(&self) -> Option<String> {
        self.format_key.read_locked().clone()
    }

    /// Records the format key of the source feeding the stream.
    /// Returns whether it replaced another key.
    pub fn set_format_key(&self, key: &str) -> bool {
        let mut k = self.format_key.write_locked();
        if k.as_deref() == Some(key) {
            return false;
        }
        k.replace(key.to_string()).is_some()
    }

    /// Appends audio from source `source_id` with the mount's title (or the
    /// stream's configured one while the mount has none), and wakes listeners.
    pub fn push(&self, source_id: u64, draft: ChunkDraft, title: Option<Arc<Title>>) {
        self.push_at(source_id, draft, title, now_micros());
    }

    /// [`push`](Self::push) for audio that arrived at `now_micros` (a
    /// transcoder's output is stamped with its source audio's arrival).
    pub fn push_at(
        &self,
        source_id: u64,
        draft: ChunkDraft,
        title: Option<Arc<Title>>,
        now_micros: i64,
    ) {
        let title = title.unwrap_or_else(|| self.default_title());
        let mut held = self.lock_held();
        if let Some(queue) = held.as_mut() {
            if queue.len() >= MAX_HELD {
                queue.remove(0);
                tracing::warn!(stream = %self.key, "holding more audio than a resync grace allows: dropping the oldest held chunk");
            }
            queue.push(Held {
                source_id,
                draft,
                title,
                arrived_micros: now_micros,
            });
            return;
        }
        self.append_at(source_id, draft, title, now_micros);
    }

    fn append_at(&self, source_id: u64, draft: ChunkDraft, title: Arc<Title>, now_micros: i64) {
        let continuous = self.last_source.swap(source_id, Ordering::Relaxed) == source_id;
        self.after_change(|b| {
            b.append(draft, title, now_micros, continuous);
        });
    }

    /// Audio from the mount's source on air: appended as is, or handed to the
    /// stream's transcoder.
    pub fn feed(
        &self,
        source_id: u64,
        draft: ChunkDraft,
        title: Option<Arc<Title>>,
        format_key: &str,
    ) {
        if let Some(t) = self.lock_transcoder().as_ref() {
            t.feed(source_id, draft, title);
            return;
        }
        if self.set_format_key(format_key) {
            // Another format (a source's sample rate or channels changed):
            // a new timeline piece, which HLS marks as a discontinuity.
            self.last_source.store(NO_SOURCE, Ordering::Relaxed);
        }
        self.push(source_id, draft, title);
    }

    /// The source on air left the mount (a transcoder flushes its last audio).
    pub fn source_ended(&self, source_id: u64) {
        if let Some(t) = self.lock_transcoder().as_ref() {
            t.source_ended(source_id);
        }
    }

    /// Makes this stream transcoded (or not, with `None`). Replacing a
    /// transcoder stops the old one.
    pub fn set_transcoder(&self, transcoder: Option<Box<dyn Transform>>) {
        *self.lock_transcoder() = transcoder;
    }

    /// The transcoder's status, when the stream is transcoded here.
    pub fn transcoder_status(&self) -> Option<TranscoderStatus> {
        self.lock_transcoder().as_ref().map(|t| t.status())
    }

    fn lock_transcoder(&self) -> std::sync::MutexGuard<'_, Option<Box<dyn Transform>>> {
        self.transcoder.locked()
    }

    /// The next chunk from source `id` continues the timeline (handoff).
    pub fn continue_source(&self, id: u64) {
        self.last_source.store(id, Ordering::Relaxed);
    }

    /// The wake-up epoch: it changes after every append (and on close). A
    /// listener reads it before looking at the buffer and passes it to
    /// [`Stream::wait`], so no append can slip between the look and the wait.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Registers `waker` to be woken at the next append, unless the epoch moved
    /// past `seen` already (then the caller looks again; returns false).
    /// `registered` remembers the epoch the waker was last added at, so a
    /// listener polled twice in one epoch is listed once.
    pub fn wait(&self, waker: &Waker, seen: u64, registered: &mut u64) -> bool {
        let mut w = self.lock_waiters();
        if self.epoch.load(Ordering::Acquire) != seen {
            return false;
        }
        if *registered != seen {
            w.wakers.push(waker.clone());
            *registered = seen;
        }
        true
    }

    /// Takes a finished listener off the wait list (so its task's memory is
    /// freed now, not at the next append, which may be far off without a source).
    pub fn unwait(&self, waker: &Waker, registered: u64) {
        if registered == self.epoch() {
            self.lock_waiters().wakers.retain(|w| !w.will_wake(waker));
        }
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.locked()
    }

    fn wake_listeners(&self) {
        let mut batch = {
            let mut w = self.lock_waiters();
            self.epoch.fetch_add(1, Ordering::AcqRel);
            let spare = std::mem::take(&mut w.spare);
            std::mem::replace(&mut w.wakers, spare)
        };
        for waker in batch.drain(..) {
            waker.wake();
        }
        let mut w = self.lock_waiters();
        if w.spare.capacity() < batch.capacity() {
            w.spare = batch;
        }
    }

    /// True once [`Stream::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Appends a replica chunk from the master (numbers and times kept).
    pub fn push_replica(&self, chunk: crate::buffer::Chunk) {
        self.after_change(|b| {
            b.append_replica(chunk);
        });
    }

    /// Empties the buffer and continues at `next_seq` (the master said so).
    pub fn reset_to(&self, next_seq: u64) {
        self.after_change(|b| b.reset_to(next_seq));
    }

    /// Runs `f` on the buffer, then refreshes the lock-free copies, the gauges,
    /// and wakes listeners.
    fn after_change(&self, f: impl FnOnce(&mut RewindBuffer)) {
        let (first, bytes, overhead, micros, end) = {
            let mut b = self.write_buffer();
            f(&mut b);
            if let Some(c) = b.last() {
                self.audio_end
                    .store(c.audio_end_micros(), Ordering::Release);
            }
            (
                b.first_seq(),
                b.bytes(),
                b.overhead_bytes(),
                b.duration_micros(),
                b.byte_end(),
            )
        };
        self.byte_end.store(end, Ordering::Release);
        self.first_seq.store(first, Ordering::Release);
        self.buffer_seconds.set(micros as f64 / 1e6);
        self.buffer_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.buffer_overhead
            .set(i64::try_from(overhead).unwrap_or(i64::MAX));
        self.wake_listeners();
    }

    /// Puts restored chunks (from a dump) into the buffer, if it is empty.
    pub fn restore(&self, chunks: Vec<crate::buffer::Chunk>, format_key: Option<&str>) {
        if let Some(k) = format_key {
            self.set_format_key(k);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.after_change(|b| b.restore(chunks));
    }

    /// Empties the buffer (numbering continues); listeners behind move on.
    pub fn clear_buffer(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.after_change(RewindBuffer::clear);
    }

    /// Changes whenever the buffer was emptied or replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Read access to the buffer. Hold it briefly: appends wait for it.
    pub fn read_buffer(&self) -> RwLockReadGuard<'_, RewindBuffer> {
        self.buffer.read_locked()
    }

    /// Puts audio where this stream's buffer keeps it (for a dump being
    /// read: its chunks are then appended without another copy).
    pub fn audio_keeper(&self) -> impl FnMut(Vec<u8>) -> bytes::Bytes {
        let arena = std::sync::Arc::clone(self.read_buffer().arena());
        move |v| arena.store(bytes::Bytes::from(v))
    }

    fn write_buffer(&self) -> std::sync::RwLockWriteGuard<'_, RewindBuffer> {
        self.buffer.write_locked()
    }

    /// Wakes every listener (so each looks at the server's state: a handoff).
    pub fn wake_all(&self) {
        self.wake_listeners();
    }

    /// Ends every listener of this stream (shutdown, or the stream removed).
    pub fn close(&self) {
        self.set_transcoder(None);
        self.closed.store(true, Ordering::Release);
        self.wake_listeners();
    }

    /// The live edge on the audio clock (µs), without taking the buffer lock.
    pub fn audio_end(&self) -> u64 {
        self.audio_end.load(Ordering::Acquire)
    }

    /// The live edge as a stream byte offset, without taking the buffer lock.
    pub fn byte_end(&self) -> u64 {
        self.byte_end.load(Ordering::Acquire)
    }

    /// Sequence number of the oldest chunk held, without taking the buffer lock.
    pub fn first_seq(&self) -> u64 {
        self.first_seq.load(Ordering::Acquire)
    }

    /// Counts a listener in and puts it on the roster; the returned guard
    /// counts it out and takes it off when dropped.
    pub fn listener_joined(self: &Arc<Self>, who: crate::roster::Who) -> ListenerCount {
        let n = self.listeners.fetch_add(1, Ordering::Relaxed) + 1;
        self.listener_peak.fetch_max(n, Ordering::Relaxed);
        let info = self.roster.join(who);
        ListenerCount(Arc::clone(self), info)
    }

    /// The listeners connected now (raw, ICY, pump), oldest first.
    pub fn listener_list(&self) -> Vec<Arc<crate::roster::ListenerInfo>> {
        self.roster.list()
    }

    /// Asks every listener (raw, ICY; not pumps) to move to `to` at the same
    /// wall-clock position, at its next chunk boundary; how many were asked.
    pub fn move_listeners(&self, to: &Stream) -> usize {
        let n = self.roster.move_all(to.key());
        if n > 0 {
            self.wake_listeners();
        }
        n
    }

    /// Counts in a listener that moved here from another stream, with its id.
    pub fn listener_moved_in(
        self: &Arc<Self>,
        info: Arc<crate::roster::ListenerInfo>,
    ) -> ListenerCount {
        let n = self.listeners.fetch_add(1, Ordering::Relaxed) + 1;
        self.listener_peak.fetch_max(n, Ordering::Relaxed);
        self.roster.insert(Arc::clone(&info));
        ListenerCount(Arc::clone(self), info)
    }

    /// Disconnects listener `id` (at its next write, at once when waiting);
    /// `false` if it is not connected to this stream.
    pub fn kick_listener(&self, id: u64) -> bool {
        let found = self.roster.kick(id);
        if found {
            self.wake_listeners();
        }
        found
    }

    /// Listeners connected now.
    pub fn listener_count(&self) -> usize {
        self.listeners.load(Ordering::Relaxed)
    }

    /// Most listeners connected at once since start.
    pub fn listener_peak(&self) -> usize {
        self.listener_peak.load(Ordering::Relaxed)
    }

    /// The configured title (used while the mount has none).
    pub fn default_title_text(&self) -> String {
        self.default_title().text().to_string()
    }
}

/// Listeners waiting for the next append. Two vectors swap roles so waking
/// thousands of listeners every second allocates nothing.
#[derive(Debug, Default)]
struct Waiters {
    wakers: Vec<Waker>,
    spare: Vec<Waker>,
}

/// Keeps a stream's listener count while alive.
#[derive(Debug)]
pub struct ListenerCount(Arc<Stream>, Arc<crate::roster::ListenerInfo>);

impl ListenerCount {
    /// Whether an admin asked for this listener to be disconnected.
    pub fn is_kicked(&self) -> bool {
        self.1.is_kicked()
    }

    /// Its roster entry.
    pub fn info(&self) -> &Arc<crate::roster::ListenerInfo> {
        &self.1
    }
}

impl Drop for ListenerCount {
    fn drop(&mut self) {
        self.0.listeners.fetch_sub(1, Ordering::Relaxed);
        self.0.roster.leave(self.1.id);
    }
}

/// What a stream hands its mount's audio to instead of appending it as is:
/// a transcoder (the `transcode` module), which pushes its own output back with
/// [`Stream::push_at`]. The core names the seam so it never depends on the
/// transcoder.
pub trait Transform: Send + std::fmt::Debug {
    /// Audio from source `source_id`, to transform.
    fn feed(&self, source_id: u64, draft: ChunkDraft, title: Option<Arc<Title>>);
    /// Source `source_id` left the mount: flush what is pending.
    fn source_ended(&self, source_id: u64);
    /// How the transform is doing, for the status API and alerts.
    fn status(&self) -> TranscoderStatus;
}

/// Whether a transcoder works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TranscoderState {
    /// No audio yet.
    #[default]
    Idle,
    /// Transcoding.
    Running,
    /// Its last attempt failed; it restarts after a backoff.
    Failing,
}

/// A transcoder's status, for the status API and alerts.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TranscoderStatus {
    /// Whether it works.
    pub state: TranscoderState,
    /// Restarts after failures, since the stream was created.
    pub restarts: u64,
    /// The last failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Source chunks dropped because the transcoder was failing or behind.
    pub dropped_chunks: u64,
    /// Source frames that did not decode and were skipped.
    pub decode_errors: u64,
    /// Format key of the transcoded output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Since when it fails (seconds since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<u64>,
}
