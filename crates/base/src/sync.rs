//! The one lock-poisoning policy: every `std::sync::Mutex` in jwtgate guards plain data (a
//! report, a URL, a counter map) that stays consistent between statements, so a lock poisoned by
//! a panicking holder is taken over, never turned into a second panic or a silently skipped
//! update.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, taking over a poisoned lock.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
