//! The API's changes, journalled: kept in Redis when a store is configured,
//! so a restarted server applies them over its file's config.
//!
//! A change is acknowledged only once Redis has it. Changes go one at a
//! time ([`Journal::begin`]): the API checks a change, stores it, and only
//! then puts it in force. When Redis does not confirm in time the change is
//! not made and the caller answers 503; the journal moves on to a newer
//! revision without it, so a save that Redis executes late (it was paused
//! with the command waiting in its socket) is overwritten by, or refused
//! after, the one that undoes it ([`crate::store::Store::save`] compares
//! revisions).
//!
//! What is left: a kill -9 in the moment between Redis executing such a late
//! save and the undoing one leaves a change that was answered 503 in Redis.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::{watch, Mutex, MutexGuard};

use crate::store::{Change, ChangeSummary, Overlay, Store};

/// How long a change waits for Redis before it is refused.
pub const STORE_WAIT: Duration = Duration::from_secs(8);

/// How long one save may take before the writer tries again.
const ATTEMPT: Duration = Duration::from_secs(3);

/// Pause between failed saves (a new change is tried at once).
const RETRY: Duration = Duration::from_secs(2);

/// A change the store did not take.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Redis did not confirm in time.
    #[error("the change was not made: the config store did not save it within {secs} s ({reason}); retry when redis answers")]
    NotStored {
        /// The wait.
        secs: u64,
        /// The last save's failure, if one was seen.
        reason: String,
    },
}

/// What the writer has saved.
#[derive(Debug, Clone, Default)]
struct Saved {
    revision: u64,
    error: Option<String>,
}

/// The background writer's ends.
#[derive(Debug)]
struct Writer {
    wanted: watch::Sender<Overlay>,
    saved: watch::Receiver<Saved>,
}

/// The overlay of API changes and the writer that keeps it in Redis.
#[derive(Debug, Default)]
pub struct Journal {
    /// The changes in force; held while a change is made.
    overlay: Mutex<Overlay>,
    writer: OnceLock<Writer>,
}

impl Journal {
    /// Keeps the changes in `store` from now on (`overlay` is what it held
    /// at start), counting failed saves in `failures`. Call from within the
    /// runtime, before the first change.
    pub fn use_store(&self, store: Store, overlay: Overlay, failures: prometheus::IntCounter) {
        let (wanted, rx) = watch::channel(overlay.clone());
        let (saved_tx, saved) = watch::channel(Saved {
            revision: overlay.revision,
            error: None,
        });
        if self.writer.set(Writer { wanted, saved }).is_ok() {
            if let Ok(mut o) = self.overlay.try_lock() {
                *o = overlay;
            }
            tokio::spawn(run_writer(store, rx, saved_tx, failures));
        }
    }

    /// Waits for the changes before this one to be done; nothing else
    /// changes the streams and mounts while the guard is held.
    pub async fn begin(&self) -> ChangeGuard<'_> {
        ChangeGuard {
            overlay: self.overlay.lock().await,
            writer: self.writer.get(),
        }
    }
}

/// One change at a time: see [`Journal::begin`].
#[derive(Debug)]
pub struct ChangeGuard<'a> {
    overlay: MutexGuard<'a, Overlay>,
    writer: Option<&'a Writer>,
}

impl ChangeGuard<'_> {
    /// The API's changes in force (empty without a store).
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// Stores `change` and waits until Redis has it (at once without a
    /// store). On `Err` the change is not in the overlay and must not be
    /// made.
    pub async fn store(&mut self, change: Change) -> Result<(), JournalError> {
        tracing::info!(change = ?ChangeSummary(&change), "configuration change through the API");
        let mut next = self.overlay.clone();
        match change {
            Change::UpsertStream(s) => next.upsert_stream(s),
            Change::DeleteStream(k) => next.delete_stream(&k),
            Change::UpsertMount(m) => next.upsert_mount(m),
            Change::DeleteMount(k) => next.delete_mount(&k),
        }
        self.store_overlay(next).await
    }

    /// Makes `overlay` the one in force once Redis has it: see
    /// [`ChangeGuard::store`]. Also undoes a stored change (pass the
    /// overlay from before it).
    pub async fn store_overlay(&mut self, mut next: Overlay) -> Result<(), JournalError> {
        let Some(writer) = self.writer else {
            // No store: changes last until a restart (documented), a
            // reload of the config file included.
            *self.overlay = next;
            return Ok(());
        };
        next.revision = self.overlay.revision + 1;
        writer.wanted.send_replace(next.clone());
        let mut saved = writer.saved.clone();
        let revision = next.revision;
        let outcome =
            tokio::time::timeout(STORE_WAIT, saved.wait_for(|s| s.revision >= revision)).await;
        if let Ok(Ok(_)) = outcome {
            *self.overlay = next;
            return Ok(());
        }
        // Not confirmed: go on without it, under a newer revision so that a
        // late save of `next` cannot stay.
        self.overlay.revision = revision + 1;
        writer.wanted.send_replace(self.overlay.clone());
        let reason = writer
            .saved
            .borrow()
            .error
            .clone()
            .unwrap_or_else(|| "no answer".into());
        tracing::error!(%reason, "configuration change refused: redis did not save it in time");
        Err(JournalError::NotStored {
            secs: STORE_WAIT.as_secs(),
            reason,
        })
    }
}

/// Saves every new overlay sent on `wanted`, the latest winning; while Redis
/// fails it retries every [`RETRY`] (and at once on a new overlay), logging
/// the failure once and counting every attempt that failed.
async fn run_writer(
    store: Store,
    mut wanted: watch::Receiver<Overlay>,
    saved: watch::Sender<Saved>,
    failures: prometheus::IntCounter,
) {
    let mut failing = false;
    while wanted.changed().await.is_ok() {
        loop {
            let overlay = wanted.borrow_and_update().clone();
            let result = match tokio::time::timeout(ATTEMPT, store.save(&overlay)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {} s", ATTEMPT.as_secs())),
            };
            match result {
                Ok(()) => {
                    if failing {
                        tracing::info!("configuration saved to redis again");
                        failing = false;
                    }
                    saved.send_replace(Saved {
                        revision: overlay.revision,
                        error: None,
                    });
                    break;
                }
                Err(error) => {
                    failures.inc();
                    if !failing {
                        tracing::error!(%error, "cannot save the configuration to redis; retrying");
                        failing = true;
                    }
                    saved.send_modify(|s| s.error = Some(error));
                    tokio::select! {
                        () = tokio::time::sleep(RETRY) => {}
                        r = wanted.changed() => if r.is_err() { return },
                    }
                }
            }
        }
    }
}
