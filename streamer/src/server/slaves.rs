//! Master: the slaves linked now, by slot, with what each last reported.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use prometheus::IntGauge;

use crate::link::master::SlaveInfo;
use crate::sync::MutexExt;

/// The linked slaves; their number is the `slaves` gauge.
#[derive(Debug)]
pub(super) struct Slaves {
    linked: Mutex<BTreeMap<u64, SlaveInfo>>,
    next: AtomicU64,
    gauge: IntGauge,
}

impl Slaves {
    /// No slave yet; `gauge` counts them.
    pub(super) fn new(gauge: IntGauge) -> Slaves {
        Slaves {
            linked: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(1),
            gauge,
        }
    }

    /// A slave linked; returns its slot.
    pub(super) fn connected(&self, info: SlaveInfo) -> u64 {
        let slot = self.next.fetch_add(1, Ordering::Relaxed);
        let mut linked = self.linked.locked();
        linked.insert(slot, info);
        self.gauge.set(i64::try_from(linked.len()).unwrap_or(0));
        slot
    }

    /// A slave reported (or just said it is alive).
    pub(super) fn report(&self, slot: u64, stats: Option<crate::link::frame::Stats>) {
        if let Some(s) = self.linked.locked().get_mut(&slot) {
            s.last_seen = std::time::Instant::now();
            if let Some(st) = stats {
                s.stats = st;
            }
        }
    }

    /// A slave left.
    pub(super) fn disconnected(&self, slot: u64) {
        let mut linked = self.linked.locked();
        linked.remove(&slot);
        self.gauge.set(i64::try_from(linked.len()).unwrap_or(0));
    }

    /// The linked slaves.
    pub(super) fn list(&self) -> Vec<SlaveInfo> {
        self.linked.locked().values().cloned().collect()
    }
}
