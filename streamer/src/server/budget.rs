//! Connection budgets, one per port (issue 10): each port holds at most so
//! many connections and answers the next at once with `503` and the reason,
//! so the process never reaches its open-file limit, where every port —
//! the admin port's `/healthz`, the liveness probe, included — would hang.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use streammachine_config::Config;

/// File descriptors kept out of every budget: dump files, Redis, the link's
/// outgoing connection, handoff and control sockets, the log.
pub(super) const RESERVE: u64 = 256;
/// The source port's default budget (encoders, waiting ones included).
pub(super) const SOURCES: u32 = 64;
/// The admin port's default budget.
pub(super) const ADMIN: u32 = 64;

/// One port's budget: connections open now against a cap.
#[derive(Debug, Clone)]
pub(super) struct Budget {
    open: Arc<AtomicUsize>,
    refused: Arc<AtomicU64>,
    cap: usize,
}

/// A connection counted against its port's budget until dropped.
#[derive(Debug)]
pub(super) struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Budget {
    /// A budget of `cap` connections.
    pub(super) fn new(cap: usize) -> Budget {
        Budget {
            open: Arc::new(AtomicUsize::new(0)),
            refused: Arc::new(AtomicU64::new(0)),
            cap,
        }
    }

    /// The cap.
    pub(super) fn cap(&self) -> usize {
        self.cap
    }

    /// A ticket, unless `open` plus `outside` (connections that outlived
    /// their ticket, such as audio listeners) reach the cap. `Err` counts
    /// the refusal and returns how many so far.
    pub(super) fn take(&self, outside: usize) -> Result<Ticket, u64> {
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        if open + outside >= self.cap {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refused.fetch_add(1, Ordering::Relaxed) + 1);
        }
        Ok(Ticket(Arc::clone(&self.open)))
    }
}

/// The three ports' budgets.
#[derive(Debug)]
pub(super) struct Budgets {
    pub(super) listeners: Budget,
    pub(super) sources: Budget,
    pub(super) admin: Budget,
}

impl Budgets {
    /// From the config, the listener port taking what the open-file limit
    /// `nofile` leaves when none is set.
    pub(super) fn new(config: &Config, nofile: u64) -> Budgets {
        let sources = config.sources.max_connections.unwrap_or(SOURCES);
        let admin = config.admin.max_connections.unwrap_or(ADMIN);
        let listeners = config.listeners.max_connections.map_or_else(
            || {
                let left = nofile.saturating_sub(RESERVE + u64::from(sources) + u64::from(admin));
                usize::try_from(left.max(16)).unwrap_or(usize::MAX)
            },
            |n| n as usize,
        );
        Budgets {
            listeners: Budget::new(listeners),
            sources: Budget::new(sources as usize),
            admin: Budget::new(admin as usize),
        }
    }
}

/// The soft open-file limit now (the command line raises it to the hard one).
pub(super) fn nofile() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_port_gets_what_the_file_limit_leaves() {
        let c = Config::default();
        let b = Budgets::new(&c, 20_000);
        assert_eq!(b.sources.cap(), 64);
        assert_eq!(b.admin.cap(), 64);
        assert_eq!(b.listeners.cap(), 20_000 - 256 - 128);
        assert_eq!(Budgets::new(&c, 100).listeners.cap(), 16, "never none");
    }

    #[test]
    fn tickets_count_until_dropped_and_outside_load_counts_too() {
        let b = Budget::new(2);
        let t1 = b.take(0).unwrap();
        assert_eq!(b.take(1).unwrap_err(), 1, "one open, one outside: full");
        let t2 = b.take(0).unwrap();
        assert!(b.take(0).is_err());
        drop(t1);
        drop(t2);
        assert!(b.take(0).is_ok());
    }
}
