//! The API's changes, journalled: kept in Redis when a store is configured,
//! so a restarted server applies them over its file's config.

use std::sync::OnceLock;

use tokio::sync::watch;

use crate::store::{Change, ChangeSummary, Overlay, Store};

/// The overlay of API changes, written to the store by a background task.
#[derive(Debug, Default)]
pub(super) struct Journal {
    overlay: OnceLock<watch::Sender<Overlay>>,
}

impl Journal {
    /// Keeps the changes in `store` from now on (`overlay` is what it held
    /// at start). Call from within the runtime.
    pub(super) fn use_store(&self, store: Store, overlay: Overlay) {
        let (tx, rx) = watch::channel(overlay);
        if self.overlay.set(tx).is_ok() {
            tokio::spawn(store.run_writer(rx));
        }
    }

    /// The changes held in the store (empty without one).
    pub(super) fn overlay(&self) -> Overlay {
        self.overlay
            .get()
            .map(|tx| tx.borrow().clone())
            .unwrap_or_default()
    }

    /// Records a change made through the API.
    pub(super) fn record(&self, change: Change) {
        tracing::info!(change = ?ChangeSummary(&change), "configuration changed through the API");
        if let Some(tx) = self.overlay.get() {
            tx.send_modify(|o| match change {
                Change::UpsertStream(s) => o.upsert_stream(s),
                Change::DeleteStream(k) => o.delete_stream(&k),
                Change::UpsertMount(m) => o.upsert_mount(m),
                Change::DeleteMount(k) => o.delete_mount(&k),
            });
        }
    }
}
