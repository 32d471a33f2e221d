//! The per-process series budget of one metric, kept in proxy-wasm shared data.
//!
//! Every Envoy worker runs its own VM, and Envoy never frees a metric once defined, so the
//! budget must count the series of all workers together. Shared data is a per-process key-value
//! store with a compare-and-swap token per key, no expiry, and no way to free a key, so the
//! design uses a bounded set of keys per metric:
//!
//! - `kavach.m.<metric>.count`: how many series were admitted (decimal text). Created at
//!   configure time, then only ever changed by compare-and-swap from `n` to `n + 1` with
//!   `n < max_series`.
//! - `kavach.m.<metric>.<hash>`: one marker per admitted series (hash = first 8 bytes of the
//!   SHA-256 of the series name, in hex), holding the series name. Written only after a
//!   successful increment, so there are never more markers than `max_series`.
//!
//! To admit a series a worker looks for its marker (another worker may have admitted it); if
//! there is none and the count is under budget, it moves the count from `n` to `n + 1` by
//! compare-and-swap (retrying on a lost race, a bounded number of times) and then writes the
//! marker. Why the ceiling holds: a series is used only by a worker that won an increment for
//! it, or that found its marker, which some winner wrote. Increments never pass `max_series`
//! (a compare-and-swap from `n` succeeds only if the count was still `n`), so at most
//! `max_series` distinct series exist, whatever the interleaving. What a race can cost: two
//! workers that see a new combination at the same moment may both spend a unit on it, so the
//! budget can fill a little before `max_series` distinct series exist. Never the other way.
//!
//! Creating a key cannot be compare-and-swapped (a write to a missing key always succeeds), so
//! the count key is created once when the filter is configured, which Envoy does on the main
//! thread before any worker serves a request; at request time a missing count means overflow,
//! never a blind write.

use sha2::{Digest, Sha256};

use crate::host::{Host, SharedDataError};
use crate::text::hex;

/// Compare-and-swap attempts per request before the request goes to the `(other)` series.
pub const MAX_ATTEMPTS: usize = 8;

/// The shared-data operations admission needs (the host's, or a test double's).
pub trait SharedStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedDataError>;
}

impl<H: Host + ?Sized> SharedStore for H {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.shared_get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedDataError> {
        self.shared_set(key, value, cas)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The series may be used; `new` when this call spent a unit of the budget on it.
    Admitted {
        new: bool,
    },
    Overflow(Overflow),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// The budget is spent.
    Full,
    /// Another series holds the marker with the same hash (64-bit: practically never).
    Collision,
    /// Every compare-and-swap attempt lost a race.
    Contended,
    /// The count is missing or unreadable, or the host refused a write.
    Store,
}

/// One metric's view of its budget. Each VM has its own; the truth is in shared data.
#[derive(Debug, Clone)]
pub struct Budget {
    prefix: String,
    count_key: String,
    max_series: u32,
    /// Seen full once: stays full (the count never goes down).
    full: bool,
}

impl Budget {
    pub fn new(metric: &str, max_series: u32) -> Self {
        let prefix = format!("kavach.m.{metric}.");
        Budget {
            count_key: format!("{prefix}count"),
            prefix,
            max_series,
            full: false,
        }
    }

    pub fn count_key(&self) -> &str {
        &self.count_key
    }

    /// Creates the count key when it does not exist yet (configure time). Err when it exists
    /// but does not hold a count.
    pub fn init(&self, store: &(impl SharedStore + ?Sized)) -> Result<u32, String> {
        match store.get(&self.count_key) {
            (Some(v), _) => parse_count(&v).ok_or_else(|| {
                format!(
                    "shared data key {:?} does not hold a series count (another plugin in the same vm_id?)",
                    self.count_key
                )
            }),
            (None, _) => store
                .set(&self.count_key, b"0", None)
                .map(|()| 0)
                .map_err(|e| format!("cannot create shared data key {:?}: {e:?}", self.count_key)),
        }
    }

    /// The shared-data key of a series' marker.
    pub fn marker_key(&self, series: &str) -> String {
        let digest = Sha256::digest(series.as_bytes());
        format!("{}{}", self.prefix, hex(&digest[..8]))
    }

    /// Decides whether `series` may have a series of its own.
    pub fn admit(&mut self, store: &(impl SharedStore + ?Sized), series: &str) -> Admission {
        let marker = self.marker_key(series);
        for _ in 0..MAX_ATTEMPTS {
            match store.get(&marker).0 {
                Some(v) if v == series.as_bytes() => return Admission::Admitted { new: false },
                Some(_) => return Admission::Overflow(Overflow::Collision),
                None => {}
            }
            if self.full {
                return Admission::Overflow(Overflow::Full);
            }
            let (value, cas) = store.get(&self.count_key);
            let (Some(n), Some(cas)) = (value.as_deref().and_then(parse_count), cas) else {
                return Admission::Overflow(Overflow::Store);
            };
            if n >= self.max_series {
                self.full = true;
                return Admission::Overflow(Overflow::Full);
            }
            // A token of 0 would mean "no check" to the host: never send one.
            if cas == 0 {
                return Admission::Overflow(Overflow::Store);
            }
            match store.set(&self.count_key, (n + 1).to_string().as_bytes(), Some(cas)) {
                Ok(()) => {
                    // Best effort: without the marker, other workers cannot find the series
                    // and may spend more budget on it, but never more than the budget.
                    let _ = store.set(&marker, series.as_bytes(), None);
                    return Admission::Admitted { new: true };
                }
                Err(SharedDataError::CasMismatch) => continue,
                Err(SharedDataError::Failed) => return Admission::Overflow(Overflow::Store),
            }
        }
        Admission::Overflow(Overflow::Contended)
    }
}

fn parse_count(v: &[u8]) -> Option<u32> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::{HashMap, HashSet};

    type Hook = Box<dyn FnMut(&Store, &str)>;

    /// Shared data with Envoy's semantics: a write to a missing key always succeeds, a token
    /// of None or 0 is not checked, tokens are never 0. `before_set` runs before every write,
    /// so a test can slip another worker's writes in between a read and a compare-and-swap.
    #[derive(Default)]
    struct Store {
        map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        next: Cell<u32>,
        before_set: RefCell<Option<Hook>>,
        writes: Cell<usize>,
    }

    impl Store {
        fn value(&self, key: &str) -> Option<String> {
            self.map
                .borrow()
                .get(key)
                .map(|(v, _)| String::from_utf8_lossy(v).into_owned())
        }

        fn keys_with_prefix(&self, prefix: &str) -> usize {
            self.map
                .borrow()
                .keys()
                .filter(|k| k.starts_with(prefix))
                .count()
        }
    }

    impl SharedStore for Store {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
            match self.map.borrow().get(key) {
                Some((v, c)) => (Some(v.clone()), Some(*c)),
                None => (None, None),
            }
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedDataError> {
            let hook = self.before_set.borrow_mut().take();
            if let Some(mut h) = hook {
                h(self, key);
                *self.before_set.borrow_mut() = Some(h);
            }
            self.writes.set(self.writes.get() + 1);
            let mut map = self.map.borrow_mut();
            if let (Some((_, current)), Some(c)) = (map.get(key), cas) {
                if c != 0 && c != *current {
                    return Err(SharedDataError::CasMismatch);
                }
            }
            self.next.set(self.next.get() + 1);
            map.insert(key.to_string(), (value.to_vec(), self.next.get()));
            Ok(())
        }
    }

    fn ready(max: u32) -> (Store, Budget) {
        let store = Store::default();
        let budget = Budget::new("m", max);
        assert_eq!(budget.init(&store), Ok(0));
        (store, budget)
    }

    const ADMITTED: Admission = Admission::Admitted { new: true };
    const KNOWN: Admission = Admission::Admitted { new: false };
    const FULL: Admission = Admission::Overflow(Overflow::Full);

    #[test]
    fn series_are_admitted_until_the_budget_is_spent() {
        let (store, mut b) = ready(3);
        assert_eq!(b.admit(&store, "m.k.a"), ADMITTED);
        assert_eq!(b.admit(&store, "m.k.a"), KNOWN);
        assert_eq!(b.admit(&store, "m.k.b"), ADMITTED);
        assert_eq!(b.admit(&store, "m.k.c"), ADMITTED);
        assert_eq!(b.admit(&store, "m.k.d"), FULL);
        assert_eq!(
            b.admit(&store, "m.k.b"),
            KNOWN,
            "admitted series stay usable"
        );
        assert_eq!(store.value("kavach.m.m.count").as_deref(), Some("3"));
        assert_eq!(
            store.keys_with_prefix("kavach.m.m."),
            4,
            "count + 3 markers"
        );
        for i in 0..1000 {
            assert_eq!(b.admit(&store, &format!("m.k.x{i}")), FULL);
        }
        assert_eq!(
            store.keys_with_prefix("kavach.m.m."),
            4,
            "overflow adds no keys"
        );
    }

    #[test]
    fn workers_share_one_budget() {
        let (store, mut w1) = ready(3);
        let mut w2 = Budget::new("m", 3);
        assert_eq!(w2.init(&store), Ok(0), "the second VM finds the count");
        assert_eq!(w1.admit(&store, "a"), ADMITTED);
        assert_eq!(w1.admit(&store, "b"), ADMITTED);
        assert_eq!(w2.admit(&store, "a"), KNOWN, "found the marker of w1");
        assert_eq!(w2.admit(&store, "c"), ADMITTED);
        assert_eq!(w1.admit(&store, "d"), FULL);
        assert_eq!(w1.admit(&store, "c"), KNOWN);
        assert_eq!(w2.init(&store), Ok(3), "a reconfigured VM keeps the count");
    }

    #[test]
    fn a_lost_race_is_retried_and_never_passes_the_budget() {
        // Before each of this worker's writes, another worker admits a new series of its own.
        let (store, mut b) = ready(5);
        let mut other = Budget::new("m", 5);
        let n = Cell::new(0);
        *store.before_set.borrow_mut() = Some(Box::new(move |s: &Store, key: &str| {
            if key.ends_with(".count") {
                n.set(n.get() + 1);
                let _ = other.admit(s, &format!("other{}", n.get()));
            }
        }));
        let mut mine = 0;
        for i in 0..10 {
            if b.admit(&store, &format!("mine{i}")) == ADMITTED {
                mine += 1;
            }
        }
        *store.before_set.borrow_mut() = None;
        assert_eq!(store.value("kavach.m.m.count").as_deref(), Some("5"));
        let markers = store.keys_with_prefix("kavach.m.m.") - 1;
        assert_eq!(markers, 5);
        assert!(mine <= 5);
    }

    #[test]
    fn racing_first_sightings_cost_budget_not_correctness() {
        // Two workers see the same new series at once: both pass the marker check before
        // either writes it. Both spend a unit; there is still one series.
        let (store, mut w1) = ready(2);
        let mut w2 = Budget::new("m", 2);
        let fired = Cell::new(false);
        *store.before_set.borrow_mut() = Some(Box::new(move |s: &Store, key: &str| {
            if key.ends_with(".count") && !fired.replace(true) {
                assert_eq!(w2.admit(s, "same"), ADMITTED);
            }
        }));
        assert_eq!(
            w1.admit(&store, "same"),
            KNOWN,
            "retry found the marker of w2"
        );
        *store.before_set.borrow_mut() = None;
        assert_eq!(store.value("kavach.m.m.count").as_deref(), Some("1"));

        // The real interleaving: w2's increment lands between w1's count read and its
        // marker write.
        let (store, mut w1) = ready(2);
        let mut w2 = Budget::new("m", 2);
        let fired = Cell::new(false);
        *store.before_set.borrow_mut() = Some(Box::new(move |s: &Store, key: &str| {
            if !key.ends_with(".count") && !fired.replace(true) {
                assert_eq!(w2.admit(s, "same"), ADMITTED);
            }
        }));
        assert_eq!(w1.admit(&store, "same"), ADMITTED);
        *store.before_set.borrow_mut() = None;
        assert_eq!(store.value("kavach.m.m.count").as_deref(), Some("2"));
        assert_eq!(
            w1.admit(&store, "another"),
            FULL,
            "budget spent, ceiling held"
        );
    }

    #[test]
    fn many_interleaved_workers_never_exceed_the_budget() {
        // Eight workers take turns; each write of each worker is preceded by a step of the
        // next one, over a stream of mostly new series.
        let (store, _) = ready(50);
        let workers: RefCell<Vec<Budget>> =
            RefCell::new((0..8).map(|_| Budget::new("m", 50)).collect());
        let admitted = RefCell::new(HashSet::new());
        for i in 0..2000usize {
            let w = i % 8;
            let series = format!("s{}", (i * 7919) % 400);
            let mut budget = workers.borrow()[w].clone();
            let interleave = Cell::new(0usize);
            let others = workers.borrow().clone();
            *store.before_set.borrow_mut() = Some(Box::new(move |s: &Store, _key: &str| {
                let k = interleave.get();
                interleave.set(k + 1);
                if k < 2 {
                    let mut o = others[(w + 1 + k) % 8].clone();
                    let _ = o.admit(s, &format!("s{}", (i * 31 + k) % 400));
                }
            }));
            if let Admission::Admitted { .. } = budget.admit(&store, &series) {
                admitted.borrow_mut().insert(series);
            }
            *store.before_set.borrow_mut() = None;
            workers.borrow_mut()[w] = budget;
        }
        let count: u32 = store.value("kavach.m.m.count").unwrap().parse().unwrap();
        assert_eq!(count, 50);
        assert!(store.keys_with_prefix("kavach.m.m.") - 1 <= 50);
        assert!(admitted.borrow().len() <= 50, "{}", admitted.borrow().len());
    }

    #[test]
    fn endless_contention_gives_up_into_overflow() {
        let (store, mut b) = ready(5);
        store.writes.set(0);
        *store.before_set.borrow_mut() = Some(Box::new(|s: &Store, key: &str| {
            if key.ends_with(".count") {
                // Someone else touches the count every time: the token is always stale.
                let (v, _) = s.get(key);
                s.map.borrow_mut().insert(
                    key.into(),
                    (v.unwrap_or_default(), 10_000 + s.writes.get() as u32),
                );
            }
        }));
        assert_eq!(
            b.admit(&store, "x"),
            Admission::Overflow(Overflow::Contended)
        );
        assert_eq!(store.writes.get(), MAX_ATTEMPTS);
    }

    #[test]
    fn a_missing_or_garbled_count_is_overflow_never_a_blind_write() {
        let store = Store::default();
        let mut b = Budget::new("m", 5);
        assert_eq!(b.admit(&store, "x"), Admission::Overflow(Overflow::Store));
        assert_eq!(store.writes.get(), 0);
        store
            .map
            .borrow_mut()
            .insert("kavach.m.m.count".into(), (b"many".to_vec(), 1));
        assert_eq!(b.admit(&store, "x"), Admission::Overflow(Overflow::Store));
        assert!(b
            .init(&store)
            .unwrap_err()
            .contains("does not hold a series count"));
    }

    #[test]
    fn a_hash_collision_is_overflow() {
        let (store, mut b) = ready(5);
        let key = b.marker_key("mine");
        store
            .map
            .borrow_mut()
            .insert(key, (b"someone else".to_vec(), 1));
        assert_eq!(
            b.admit(&store, "mine"),
            Admission::Overflow(Overflow::Collision)
        );
        assert_eq!(b.marker_key("mine").len(), "kavach.m.m.".len() + 16);
    }
}
