//! Locks that survive a panic: the one place that decides what a poisoned
//! lock means here.
//!
//! A lock is poisoned when a thread panicked while holding it. The data it
//! guards (registries, counters, parked connections) is left as the panicking
//! code left it, which every user here tolerates; refusing it instead would
//! turn one failed request into a failure of every listener. So the guard is
//! taken as it is.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`MutexExt::locked`]: a `Mutex`'s guard, poisoned or not.
pub trait MutexExt<T: ?Sized> {
    /// The guard.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> MutexExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`RwLockExt::read_locked`], [`RwLockExt::write_locked`]: an `RwLock`'s
/// guards, poisoned or not.
pub trait RwLockExt<T: ?Sized> {
    /// A read guard.
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    /// A write guard.
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }
    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_gives_its_data() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*m.locked(), 1);
        let r = RwLock::new(2);
        *r.write_locked() += 1;
        assert_eq!(*r.read_locked(), 3);
    }
}
