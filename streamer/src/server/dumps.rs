//! The rewind buffers' dumps on disk (and, on a slave, the master's last
//! config beside them): restored at start, saved periodically and at exit.

use std::path::PathBuf;
use std::sync::Arc;

use crate::link::frame::LinkConfig;
use crate::stream::Stream;

/// Slave: the master's last config, next to the dumps.
const REPLICA_CONFIG_FILE: &str = "replica-config.json";

/// The dump directory (none: dumps are off).
#[derive(Debug)]
pub(super) struct Dumps {
    dir: Option<PathBuf>,
    set_aside: prometheus::IntCounterVec,
    /// The directory's lock (`.lock`, an exclusive `flock`), once held:
    /// only its holder writes dumps, so two processes (a predecessor and a
    /// successor that could not take over) never write one dump.
    lock: std::sync::Mutex<Option<std::fs::File>>,
    /// Whether "not writing" was logged since the lock was last held.
    told: std::sync::atomic::AtomicBool,
}

/// The lock file in the dump directory.
const LOCK_FILE: &str = ".lock";

impl Dumps {
    /// Dumps in `dir`, created if missing; `None`: no dumps.
    /// `set_aside` counts dumps that could not be restored.
    pub(super) fn new(
        dir: Option<PathBuf>,
        set_aside: prometheus::IntCounterVec,
    ) -> Result<Dumps, crate::error::ServerError> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir).map_err(|error| crate::error::ServerError::DumpDir {
                dir: dir.display().to_string(),
                error,
            })?;
        }
        let dumps = Dumps {
            dir,
            set_aside,
            lock: std::sync::Mutex::new(None),
            told: std::sync::atomic::AtomicBool::new(false),
        };
        dumps.holds_lock();
        Ok(dumps)
    }

    /// Whether this process holds the dump directory (taking it if free).
    fn holds_lock(&self) -> bool {
        use crate::sync::MutexExt;
        let Some(dir) = &self.dir else {
            return false;
        };
        let mut lock = self.lock.locked();
        if lock.is_some() {
            return true;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE));
        match file.map(|f| f.try_lock().map(|()| f)) {
            Ok(Ok(f)) => {
                *lock = Some(f);
                self.told.store(false, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Ok(Err(_)) => {
                if !self.told.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(dir = %dir.display(), "another process holds the dump directory (a predecessor still running?): not writing dumps until it is free");
                }
                false
            }
            Err(e) => {
                if !self.told.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot lock the dump directory: not writing dumps");
                }
                false
            }
        }
    }

    /// Restores a stream's dump, if dumps are configured. A missing dump is
    /// normal (a new stream); a bad one is reported and skipped.
    pub(super) fn restore(&self, stream: &Stream) {
        let Some(dir) = &self.dir else {
            return;
        };
        let started = std::time::Instant::now();
        match crate::persist::rewind::restore_stream(stream, dir) {
            Ok(None) => tracing::info!(stream = %stream.key(), "no dump to restore"),
            Ok(Some(n)) => {
                let secs = stream.read_buffer().duration_micros() as f64 / 1e6;
                tracing::info!(stream = %stream.key(), chunks = n, seconds = secs, took_ms = started.elapsed().as_millis() as u64, "rewind buffer restored from its dump");
            }
            Err(e) => {
                // Set it aside: the next save would overwrite the only copy
                // of that audio with an empty buffer.
                let path = crate::persist::rewind::dump_path(dir, stream.key());
                let stamp =
                    crate::stream::format_time(crate::stream::now_micros()).replace(':', "");
                let kept = path.with_file_name(format!("{}.dump.corrupt-{stamp}", stream.key()));
                self.set_aside.with_label_values(&[stream.key()]).inc();
                match std::fs::rename(&path, &kept) {
                    Ok(()) => {
                        tracing::error!(stream = %stream.key(), error = %e, kept = %kept.display(), "dump not restored, kept aside; starting with an empty buffer")
                    }
                    Err(re) => {
                        tracing::error!(stream = %stream.key(), error = %e, rename_error = %re, "dump not restored and not set aside; starting with an empty buffer")
                    }
                }
            }
        }
    }

    /// Writes every stream's dump now, off the runtime's workers.
    pub(super) async fn save_all(&self, streams: Vec<Arc<Stream>>) {
        let Some(dir) = &self.dir else {
            return;
        };
        if !self.holds_lock() {
            return;
        }
        for stream in streams {
            let dir = dir.clone();
            let s = Arc::clone(&stream);
            let started = std::time::Instant::now();
            let r =
                tokio::task::spawn_blocking(move || crate::persist::rewind::save_stream(&s, &dir))
                    .await;
            match r {
                Ok(Ok(stats)) => {
                    tracing::info!(stream = %stream.key(), chunks = stats.chunks, bytes = stats.dump_bytes, took_ms = started.elapsed().as_millis() as u64, "rewind buffer dumped")
                }
                Ok(Err(e)) => {
                    tracing::error!(stream = %stream.key(), error = %e, "rewind dump failed")
                }
                Err(e) => {
                    tracing::error!(stream = %stream.key(), error = %e, "rewind dump task failed")
                }
            }
        }
    }

    /// Slave: the master's config saved with the dumps, if any and readable.
    pub(super) fn replica_config(&self) -> Option<LinkConfig> {
        let path = self.dir.as_ref()?.join(REPLICA_CONFIG_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "saved master config not readable; waiting for the master");
                return None;
            }
        };
        match serde_json::from_slice(&text) {
            Ok(c) => {
                tracing::info!(file = %path.display(), "serving the master's last config until it answers");
                Some(c)
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "saved master config is corrupt; waiting for the master");
                None
            }
        }
    }

    /// Slave: keeps the master's config with the dumps (write, then rename).
    pub(super) fn save_replica_config(&self, config: &LinkConfig) {
        let Some(dir) = &self.dir else {
            return;
        };
        let path = dir.join(REPLICA_CONFIG_FILE);
        let tmp = dir.join(format!(".{REPLICA_CONFIG_FILE}.tmp"));
        let written = serde_json::to_vec(config)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "cannot save the master's config");
        }
    }
}
