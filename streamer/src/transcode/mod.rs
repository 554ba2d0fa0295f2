//! In-process transcoding (DESIGN.md §1): a stream whose format or bitrate
//! differs from its source mount's is decoded (Symphonia), resampled when
//! needed (rubato) and encoded (LAME for MP3, FDK AAC for AAC-LC/HE-AAC).
//!
//! Each transcoded stream has its own worker thread, so encoding never runs on
//! the threads that serve listeners, and a transcoder that fails (a panic
//! included) is restarted with backoff while every other stream goes on.

pub mod decode;
pub mod encode;
pub mod pipeline;
pub mod resample;

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};
use streammachine_config::TranscodeConfig;

use crate::buffer::{ChunkDraft, Title};
use crate::metrics::Metrics;
use crate::stream::{Stream, Transform};
pub use crate::stream::{TranscoderState, TranscoderStatus};
use crate::sync::MutexExt;
pub use pipeline::{Output, Pipeline};

/// Errors of the transcoder.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum TranscodeError {
    /// The input is something the decoder cannot take.
    #[error("unsupported input: {0}")]
    Unsupported(String),
    /// The decoder could not be created.
    #[error("decoder: {0}")]
    Decoder(String),
    /// Audio did not decode.
    #[error("decode: {0}")]
    Decode(String),
    /// The resampler failed.
    #[error("resampler: {0}")]
    Resampler(String),
    /// The encoder refused its settings or failed.
    #[error("encoder: {0}")]
    Encoder(String),
    /// The worker thread could not be started.
    #[error("transcoder thread: {0}")]
    Thread(String),
}

/// Source chunks a transcoder may have queued (about a minute of audio):
/// beyond that it is not keeping up, and chunks are dropped, never waited for.
const QUEUE: usize = 64;
/// First wait before restarting a failed transcoder; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Work for a transcoder.
#[derive(Debug)]
enum Job {
    Audio {
        source_id: u64,
        draft: ChunkDraft,
        title: Option<Arc<Title>>,
        arrival: i64,
    },
    End {
        source_id: u64,
    },
}

#[derive(Debug)]
struct Shared {
    key: String,
    /// Set when the handle is dropped (stream closed, or a new transcoder
    /// replaced this one): the worker must not push anything more.
    stopped: std::sync::atomic::AtomicBool,
    status: Mutex<TranscoderStatus>,
    up: IntGauge,
    restarts: IntCounter,
    dropped: IntCounter,
    decode_errors: IntCounter,
}

impl Shared {
    fn status(&self) -> std::sync::MutexGuard<'_, TranscoderStatus> {
        self.status.locked()
    }

    fn dropped(&self, n: u64) {
        if n > 0 {
            self.dropped.inc_by(n);
            self.status().dropped_chunks += n;
        }
    }
}

/// A stream's transcoder: a handle to its worker thread. Dropping it stops
/// the worker once the queued work is done.
#[derive(Debug)]
pub struct Transcoder {
    tx: SyncSender<Job>,
    shared: Arc<Shared>,
}

impl Transcoder {
    /// Starts a transcoder feeding `stream`.
    pub fn start(
        stream: &Arc<Stream>,
        config: TranscodeConfig,
        metrics: &Metrics,
    ) -> Result<Transcoder, TranscodeError> {
        let key = stream.key().to_string();
        let labels = [key.as_str()];
        let shared = Arc::new(Shared {
            status: Mutex::new(TranscoderStatus::default()),
            up: metrics.transcoder_up.with_label_values(&labels),
            restarts: metrics.transcoder_restarts.with_label_values(&labels),
            dropped: metrics.transcoder_dropped_chunks.with_label_values(&labels),
            decode_errors: metrics.transcoder_decode_errors.with_label_values(&labels),
            stopped: std::sync::atomic::AtomicBool::new(false),
            key,
        });
        shared.up.set(1);
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let worker = Worker {
            rx,
            stream: Arc::downgrade(stream),
            pipeline: Pipeline::new(config),
            shared: Arc::clone(&shared),
        };
        std::thread::Builder::new()
            .name(format!("transcode {}", stream.key()))
            .spawn(move || worker.run())
            .map_err(|e| TranscodeError::Thread(e.to_string()))?;
        Ok(Transcoder { tx, shared })
    }

    fn send(&self, job: Job) {
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let first = self.shared.status().dropped_chunks == 0;
                self.shared.dropped(1);
                if first {
                    tracing::warn!(stream = %self.shared.key, "transcoder is not keeping up; source audio dropped");
                }
            }
            // The worker is gone only if it panicked outside the guarded part.
            Err(TrySendError::Disconnected(_)) => self.shared.dropped(1),
        }
    }
}

impl Transform for Transcoder {
    /// Its status now.
    fn status(&self) -> TranscoderStatus {
        self.shared.status().clone()
    }

    /// Queues a source chunk; never waits (a full queue drops the chunk).
    fn feed(&self, source_id: u64, draft: ChunkDraft, title: Option<Arc<Title>>) {
        let job = Job::Audio {
            source_id,
            draft,
            title,
            arrival: crate::stream::now_micros(),
        };
        self.send(job);
    }

    /// Source `source_id` left: its last audio is flushed out.
    fn source_ended(&self, source_id: u64) {
        self.send(Job::End { source_id });
    }
}

impl Drop for Transcoder {
    fn drop(&mut self) {
        self.shared
            .stopped
            .store(true, std::sync::atomic::Ordering::Release);
        self.shared.up.set(0);
    }
}

struct Worker {
    rx: mpsc::Receiver<Job>,
    stream: Weak<Stream>,
    pipeline: Pipeline,
    shared: Arc<Shared>,
}

impl Worker {
    fn run(mut self) {
        let mut backoff = crate::retry::Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        while let Ok(job) = self.rx.recv() {
            let pipeline = &mut self.pipeline;
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| match job {
                Job::Audio {
                    source_id,
                    draft,
                    title,
                    arrival,
                } => pipeline.feed(source_id, &draft, title, arrival),
                Job::End { source_id } => pipeline.end(source_id),
            }));
            let errors = self.pipeline.decode_errors();
            let new_errors = errors.saturating_sub(self.shared.status().decode_errors);
            if new_errors > 0 {
                self.shared.decode_errors.inc_by(new_errors);
                self.shared.status().decode_errors = errors;
            }
            let failure = match result {
                Ok(Ok(outputs)) => {
                    // A replaced transcoder's leftovers must not interleave
                    // with its successor's output.
                    if self
                        .shared
                        .stopped
                        .load(std::sync::atomic::Ordering::Acquire)
                    {
                        return;
                    }
                    let Some(stream) = self.stream.upgrade() else {
                        return;
                    };
                    if !outputs.is_empty() {
                        self.running(outputs.last().map(|o| o.format_key.clone()));
                        backoff.reset();
                    }
                    for o in outputs {
                        stream.set_format_key(&o.format_key);
                        stream.push_at(o.source_id, o.draft, o.title, o.now_micros);
                    }
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(panic) => panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .map_or_else(|| "panicked".to_string(), |m| format!("panicked: {m}")),
            };
            let wait = backoff.next_delay();
            self.failed(failure, wait);
            // Wait out the backoff; what the source sends meanwhile is stale.
            let until = Instant::now() + wait;
            loop {
                match self
                    .rx
                    .recv_timeout(until.saturating_duration_since(Instant::now()))
                {
                    Ok(_) => self.shared.dropped(1),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            self.pipeline.reset();
            self.shared.restarts.inc();
            self.shared.status().restarts += 1;
        }
    }

    fn running(&self, output: Option<String>) {
        let mut st = self.shared.status();
        if st.state == TranscoderState::Failing {
            tracing::info!(stream = %self.shared.key, "transcoder recovered");
        }
        st.state = TranscoderState::Running;
        st.failing_since = None;
        if output.is_some() {
            st.output = output;
        }
        self.shared.up.set(1);
    }

    fn failed(&self, error: String, backoff: Duration) {
        let mut st = self.shared.status();
        // Logged once per failure streak, and again only if the error changes.
        if st.state != TranscoderState::Failing || st.last_error.as_deref() != Some(&error) {
            tracing::error!(stream = %self.shared.key, error = %error, retry_in_s = backoff.as_secs(), "transcoder failed; restarting with backoff");
        }
        if st.state != TranscoderState::Failing {
            st.failing_since = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs());
        }
        st.state = TranscoderState::Failing;
        st.last_error = Some(error);
        self.shared.up.set(0);
    }
}
