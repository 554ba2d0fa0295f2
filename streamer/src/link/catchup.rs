//! When a slave's replica has caught up with its master.
//!
//! A slave that reports ready before it holds the master's buffer takes
//! listeners (a Service endpoint, or a rolling update that deletes the pod it
//! replaces) whose positions it cannot serve yet. The master sends what is
//! missing at memory speed, then live chunks, so a replica has caught up once
//! every stream's newest audio is close to the wall clock, or once no chunk
//! has arrived for a moment (a stream without a source: there is nothing more
//! to get). Latched: a slave whose master goes away later keeps serving its
//! buffer and stays ready.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A stream whose newest audio ends this close to now is live.
const LIVE_EDGE: Duration = Duration::from_secs(15);
/// No chunk for this long after the config or the last chunk: nothing more to get.
const QUIET: Duration = Duration::from_secs(2);

/// The replica's catch-up state (see the module doc).
#[derive(Debug)]
pub struct CatchUp {
    origin: Instant,
    /// Milliseconds after `origin` of the last config or chunk from the master.
    last_activity_ms: AtomicU64,
    caught_up: AtomicBool,
}

impl Default for CatchUp {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            caught_up: AtomicBool::new(false),
        }
    }
}

impl CatchUp {
    /// A config or a chunk arrived from the master.
    pub fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    /// True once [`CatchUp::check`] said so (latched).
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Relaxed)
    }

    /// True once caught up: every stream's newest audio (`newest_end`, unix
    /// microseconds, `None` without audio) ends within [`LIVE_EDGE`] of
    /// `now_micros`, or the master has been quiet for [`QUIET`].
    pub fn check(
        &self,
        newest_end: impl IntoIterator<Item = Option<i64>>,
        now_micros: i64,
    ) -> bool {
        if self.is_caught_up() {
            return true;
        }
        let edge = now_micros - LIVE_EDGE.as_micros() as i64;
        let live = newest_end.into_iter().all(|e| e.is_some_and(|e| e >= edge));
        let since = self.origin.elapsed().saturating_sub(Duration::from_millis(
            self.last_activity_ms.load(Ordering::Relaxed),
        ));
        let done = live || since >= QUIET;
        if done {
            self.caught_up.store(true, Ordering::Relaxed);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_far_behind_live_is_not_caught_up_until_it_reaches_the_edge() {
        let c = CatchUp::default();
        c.touch();
        let now = 10_000_000_000;
        assert!(!c.check([Some(now - 3_600_000_000)], now));
        assert!(!c.check([Some(now - 1_000_000), None], now));
        assert!(c.check([Some(now - 1_000_000), Some(now - 2_000_000)], now));
        // Latched.
        assert!(c.check([Some(0)], now));
    }

    #[test]
    fn a_quiet_master_means_nothing_more_to_get() {
        let c = CatchUp {
            origin: Instant::now() - Duration::from_secs(10),
            last_activity_ms: AtomicU64::new(7_000),
            caught_up: AtomicBool::new(false),
        };
        assert!(c.check([None], 10_000_000_000));
        let busy = CatchUp::default();
        busy.touch();
        assert!(!busy.check([None], 10_000_000_000));
    }
}
