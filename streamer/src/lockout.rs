//! Failed authentication, per client address (issue 10): after
//! [`FREE_FAILURES`] failures an address must wait before its next attempt
//! is even checked — 1 s, doubling up to [`MAX_WAIT`] — and an attempt that
//! comes sooner is refused unchecked (`429` with `Retry-After`). An address
//! quiet for [`FORGET`] starts afresh; at most [`CAPACITY`] addresses are
//! remembered (the stalest are forgotten first).
//!
//! Hand-written: a rate limiter such as `governor` counts as it checks, and
//! here an attempt must be refused before its password is looked at, while a
//! right password must cost nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::MutexExt;

/// Failures an address may have before it must wait.
pub const FREE_FAILURES: u32 = 10;
/// The longest wait between two attempts of a guessing address.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Quiet time after which an address's failures are forgotten.
pub const FORGET: Duration = Duration::from_secs(600);
/// Addresses remembered at most.
pub const CAPACITY: usize = 10_000;

/// The failures of every address that failed lately.
#[derive(Debug, Default)]
pub struct Lockout {
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    /// Attempts refused unchecked since the last failure (for thin logs;
    /// they do not extend the wait, so a client that retries steadily with
    /// a fixed password gets in once its wait is over).
    refused: u32,
}

impl Failures {
    fn wait(&self) -> Duration {
        match self.count.checked_sub(FREE_FAILURES) {
            None => Duration::ZERO,
            Some(over) => Duration::from_secs(1u64 << over.min(6)).min(MAX_WAIT),
        }
    }
}

impl Lockout {
    /// Whether `ip` may try now; `Err` says how long it must still wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let map = self.failures.locked();
        let Some(f) = map.get(&ip) else {
            return Ok(());
        };
        let ready = f.last + f.wait();
        if now >= ready || now.duration_since(f.last) >= FORGET {
            Ok(())
        } else {
            Err(ready - now)
        }
    }

    /// Records a failure of `ip`; returns its failures so far.
    pub fn failed(&self, ip: IpAddr) -> u32 {
        self.failed_at(ip, Instant::now())
    }

    fn failed_at(&self, ip: IpAddr, now: Instant) -> u32 {
        let mut map = self.failures.locked();
        if map.len() >= CAPACITY && !map.contains_key(&ip) {
            map.retain(|_, f| now.duration_since(f.last) < FORGET);
            if map.len() >= CAPACITY {
                // Still full: forget the stalest tenth.
                let mut lasts: Vec<Instant> = map.values().map(|f| f.last).collect();
                lasts.sort_unstable();
                let cut = lasts[CAPACITY / 10];
                map.retain(|_, f| f.last > cut);
            }
        }
        let f = map.entry(ip).or_insert(Failures {
            count: 0,
            last: now,
            refused: 0,
        });
        if now.duration_since(f.last) >= FORGET {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        f.refused = 0;
        f.count
    }

    /// Records an attempt of `ip` refused unchecked (it must still wait);
    /// returns how many since its last failure.
    pub fn refused(&self, ip: IpAddr) -> u32 {
        let mut map = self.failures.locked();
        map.get_mut(&ip).map_or(0, |f| {
            f.refused = f.refused.saturating_add(1);
            f.refused
        })
    }

    /// `ip` authenticated: its failures are forgotten.
    pub fn succeeded(&self, ip: IpAddr) {
        self.failures.locked().remove(&ip);
    }

    /// Addresses remembered now.
    pub fn len(&self) -> usize {
        self.failures.locked().len()
    }

    /// Whether no address is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether the `n`th failure of an address is logged: the first, then at
/// 2, 4, 8… (so a guesser costs a few log lines, not one per guess).
pub fn worth_logging(n: u32) -> bool {
    n.is_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guesser_waits_longer_and_longer_and_a_right_password_clears_it() {
        let l = Lockout::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = Instant::now();
        for n in 1..=FREE_FAILURES {
            assert!(l.check_at(ip, t0).is_ok(), "attempt {n} is free");
            assert_eq!(l.failed_at(ip, t0), n);
        }
        assert_eq!(l.check_at(ip, t0), Err(Duration::from_secs(1)));
        assert_eq!(l.refused(ip), 1);
        assert_eq!(l.refused(ip), 2);
        assert_eq!(
            l.check_at(ip, t0),
            Err(Duration::from_secs(1)),
            "refusals do not extend the wait"
        );
        assert!(
            l.check_at(other, t0).is_ok(),
            "other addresses are not held"
        );
        let t1 = t0 + Duration::from_secs(1);
        assert!(l.check_at(ip, t1).is_ok());
        l.failed_at(ip, t1);
        assert_eq!(l.check_at(ip, t1), Err(Duration::from_secs(2)));
        let mut t = t1;
        for _ in 0..20 {
            t += MAX_WAIT;
            assert!(l.check_at(ip, t).is_ok());
            l.failed_at(ip, t);
        }
        assert_eq!(l.check_at(ip, t), Err(MAX_WAIT), "capped");
        assert!(l.check_at(ip, t + FORGET).is_ok(), "forgotten when quiet");
        l.succeeded(ip);
        assert!(l.is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let l = Lockout::default();
        let t = Instant::now();
        for i in 0..(CAPACITY as u32 + 500) {
            l.failed_at(
                IpAddr::from(i.to_be_bytes()),
                t + Duration::from_millis(u64::from(i)),
            );
        }
        assert!(l.len() <= CAPACITY, "{}", l.len());
    }

    #[test]
    fn logging_thins_out() {
        let logged: Vec<u32> = (1..=100).filter(|&n| worth_logging(n)).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16, 32, 64]);
    }
}
