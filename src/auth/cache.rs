//! The verified-token cache: a fixed table of `ArcSwapOption` slots, two-way set associative,
//! indexed by the token's keyed digest. Reads are lock-free (one `ArcSwap` load and a key
//! compare), writes replace a slot whole, and memory is bounded by construction: the table never
//! grows, and an entry is a digest plus the verdict (no copy of the token). Being lossy is fine
//! here: a miss costs one signature check, never a wrong answer, because an entry is only ever
//! returned for the exact digest it was stored under and every time claim is re-checked by the
//! caller.
//!
//! Why not moka (the crate DESIGN.md names for caches): its per-entry bookkeeping (access and
//! write deques, timer-wheel nodes, frequency sketch) cost ~700 bytes an entry in the load test,
//! 87 MiB RSS for 100,000 tokens against a 64 MiB budget, and ~150 ns a lookup on a 1 µs budget.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::Verdict;

/// What a cache entry says about itself: the digest it is filed under, and when it stops
/// being worth keeping (a full set evicts the entry that ends first).
pub trait Entry {
    /// The token's keyed digest.
    fn key(&self) -> u128;
    /// Unix seconds after which it is useless.
    fn ends(&self) -> f64;
}

impl Entry for Verdict {
    fn key(&self) -> u128 {
        self.key
    }
    fn ends(&self) -> f64 {
        self.exp
    }
}

/// A bounded, lock-free map from token digest to verdict (or any [`Entry`]).
pub struct TokenCache<T = Verdict> {
    slots: Box<[ArcSwapOption<T>]>,
    /// Index mask of the first slot of a two-slot set.
    mask: usize,
}

impl<T: Entry> TokenCache<T> {
    /// A table with room for about `entries` verdicts (rounded up to a power of two, at least 2).
    pub fn new(entries: u64) -> TokenCache<T> {
        let n = (entries.max(2) as usize).next_power_of_two();
        let slots = (0..n).map(|_| ArcSwapOption::empty()).collect::<Vec<_>>().into_boxed_slice();
        TokenCache { slots, mask: (n - 1) & !1 }
    }

    /// The number of slots (the most entries it can hold).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn set(&self, key: u128) -> usize {
        // The digest is uniformly random: its low bits are as good an index as any.
        (key as usize) & self.mask
    }

    /// The entries held now (a scan of every slot: for `/status`, not the hot path).
    pub fn occupied(&self) -> usize {
        self.slots.iter().filter(|s| s.load().is_some()).count()
    }

    /// The verdict stored for `key`, if any.
    pub fn get(&self, key: u128) -> Option<Arc<T>> {
        let i = self.set(key);
        for slot in &self.slots[i..i + 2] {
            let guard = slot.load();
            if let Some(v) = guard.as_ref() {
                if v.key() == key {
                    return Some(Arc::clone(v));
                }
            }
        }
        None
    }

    /// Stores `verdict` under its key: in an empty slot of its set, else over the entry that
    /// expires first.
    pub fn insert(&self, verdict: Arc<T>) {
        let i = self.set(verdict.key());
        let (a, b) = (&self.slots[i], &self.slots[i + 1]);
        let (ga, gb) = (a.load(), b.load());
        // The entry for the same key first: a newer answer replaces the older one, never sits
        // beside it (a lookup would find the older one first).
        let target = match (ga.as_ref(), gb.as_ref()) {
            (Some(x), _) if x.key() == verdict.key() => a,
            (_, Some(y)) if y.key() == verdict.key() => b,
            (None, _) => a,
            (_, None) => b,
            (Some(x), Some(y)) => {
                if x.ends() <= y.ends() {
                    a
                } else {
                    b
                }
            }
        };
        drop((ga, gb));
        target.store(Some(verdict));
    }
}

/// Dropping an `ArcSwap` settles every reader's outstanding claim on it: a walk over every
/// thread's debt slots, once per slot — for a table of 131,072 slots, seconds in a debug build
/// (two thirds of the test suite's CPU went here) and needless work on every reload that replaces
/// a cache. An empty slot holds no `Arc`, so there is nothing to settle: it is forgotten instead
/// (a reader that loaded it holds no reference to keep alive). Occupied slots drop as usual.
impl<T> Drop for TokenCache<T> {
    fn drop(&mut self) {
        for slot in std::mem::take(&mut self.slots).into_vec() {
            if slot.load().is_none() {
                std::mem::forget(slot);
            }
        }
    }
}

#[cfg(test)]
impl<T: Entry> TokenCache<T> {
    /// Empties the first slot of `key`'s set (so the next entry lands in the second).
    fn remove_first_slot_for_test(&self, key: u128) {
        self.slots[self.set(key)].store(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(key: u128, exp: f64) -> Arc<Verdict> {
        Arc::new(Verdict {
            key,
            issuer: crate::keys::IssuerId::at(0),
            generation: 1,
            exp,
            nbf: None,
            iat: None,
            scopes: Box::new([]),
            sub_header: None,
            binding: None,
            claim_values: Box::new([]),
            rule_values: Box::new([]),
            aud: Box::new([]),
        })
    }

    #[test]
    fn finds_only_the_exact_key() {
        let c: TokenCache = TokenCache::new(8);
        c.insert(verdict(5, 10.0));
        assert_eq!(c.get(5).map(|v| v.key), Some(5));
        assert!(c.get(5 + 8).is_none(), "same set, other key");
        assert!(c.get(6).is_none());
    }

    #[test]
    fn a_new_entry_replaces_the_one_with_its_key() {
        let c: TokenCache = TokenCache::new(8);
        c.insert(verdict(1, 100.0));
        c.remove_first_slot_for_test(1);
        c.insert(verdict(1, 100.0));
        c.insert(verdict(1, 200.0));
        assert_eq!(c.get(1).map(|v| v.exp), Some(200.0));
        assert_eq!(c.occupied(), 1);
    }

    #[test]
    fn a_full_set_evicts_the_entry_expiring_first() {
        let c: TokenCache = TokenCache::new(8);
        // 1, 9 and 17 share a set (mask 6 over 8 slots).
        c.insert(verdict(1, 100.0));
        c.insert(verdict(9, 50.0));
        c.insert(verdict(17, 70.0));
        assert!(c.get(1).is_some());
        assert!(c.get(9).is_none(), "the earliest expiry was replaced");
        assert!(c.get(17).is_some());
        assert_eq!(c.capacity(), 8);
    }
}
