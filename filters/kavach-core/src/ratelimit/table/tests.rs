use std::cell::{Cell, RefCell};

use super::*;
use crate::host::HostLayer;
use crate::testing::MockHost;

const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_764_115_030 * SEC;
const TAG: u32 = 7;

fn limits(limit: u64, period_s: u64) -> Limits {
    Limits {
        limit,
        period_s,
        burst: 0,
    }
}

fn table(host: &dyn Host, slots: u32, probes: u32) -> Table {
    let t = Table::new("r", slots, probes, 8, TAG);
    assert_eq!(t.create_slots(host).unwrap(), slots);
    t
}

fn admitted(o: Outcome) -> Bucket {
    match o {
        Outcome::Admitted(b) => b,
        other => panic!("expected admitted, got {other:?}"),
    }
}

/// The fingerprint of slot `slot`'s `n`-th colliding key in a table of `slots`.
fn fp_at(slot: u64, n: u64, slots: u64) -> u64 {
    slot + n * slots
}

fn count_admitted(t: &Table, host: &dyn Host, fp: u64, l: &Limits, now: u64, tries: u32) -> u32 {
    (0..tries)
        .filter(|_| matches!(t.take(host, fp, l, 1, now), Outcome::Admitted(_)))
        .count() as u32
}

/// A second worker, as seen by this one: runs queued actions on the shared data right before
/// this worker's next write, and can make the host fail.
type Action = Box<dyn FnOnce(&MockHost)>;

struct Racing {
    inner: MockHost,
    before_set: RefCell<Vec<Action>>,
    fail_sets: Cell<bool>,
}

impl Racing {
    fn new() -> Self {
        Racing {
            inner: MockHost::new(),
            before_set: RefCell::new(Vec::new()),
            fail_sets: Cell::new(false),
        }
    }

    fn before_next_sets(&self, n: usize, f: impl Fn(&MockHost) + Clone + 'static) {
        for _ in 0..n {
            let f = f.clone();
            self.before_set.borrow_mut().push(Box::new(move |h| f(h)));
        }
    }
}

impl HostLayer for Racing {
    fn inner(&self) -> &dyn Host {
        &self.inner
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedDataError> {
        let next = self.before_set.borrow_mut().pop();
        if let Some(f) = next {
            f(&self.inner);
        }
        if self.fail_sets.get() {
            return Err(SharedDataError::Failed);
        }
        self.inner.shared_set(key, value, cas)
    }
}

#[test]
fn a_new_key_gets_exactly_its_capacity() {
    let host = MockHost::new();
    let t = table(&host, 64, 8);
    let l = limits(5, 60);
    assert_eq!(count_admitted(&t, &host, 42, &l, T0, 20), 5);
    match t.take(&host, 42, &l, 1, T0) {
        Outcome::Limited { wait_ns, .. } => assert_eq!(wait_ns, 12 * SEC),
        other => panic!("{other:?}"),
    }
}

#[test]
fn colliding_keys_get_separate_slots_and_are_never_merged() {
    let host = MockHost::new();
    let t = table(&host, 64, 4);
    let l = limits(2, 60);
    let (a, b) = (fp_at(10, 0, 64), fp_at(10, 1, 64));
    assert_eq!(count_admitted(&t, &host, a, &l, T0, 5), 2);
    // Same first slot, different fingerprint: a bucket of its own in the next slot.
    assert_eq!(count_admitted(&t, &host, b, &l, T0, 5), 2);
    assert!(matches!(
        decode(&host.shared_get("kavach.rl.r.10").0.unwrap(), TAG),
        Slot::Used { fp, .. } if fp == a
    ));
    assert!(matches!(
        decode(&host.shared_get("kavach.rl.r.11").0.unwrap(), TAG),
        Slot::Used { fp, .. } if fp == b
    ));
}

#[test]
fn probing_wraps_around_the_end_of_the_table() {
    let host = MockHost::new();
    let t = table(&host, 64, 3);
    let l = limits(1, 60);
    for n in 0..3 {
        admitted(t.take(&host, fp_at(63, n, 64), &l, 1, T0));
    }
    for (slot, n) in [(63, 0), (0, 1), (1, 2)] {
        assert!(matches!(
            decode(&host.shared_get(&format!("kavach.rl.r.{slot}")).0.unwrap(), TAG),
            Slot::Used { fp, .. } if fp == fp_at(63, n, 64)
        ));
    }
}

#[test]
fn a_full_window_of_busy_buckets_refuses_new_keys_and_keeps_throttled_ones() {
    let host = MockHost::new();
    let t = table(&host, 64, 4);
    let l = limits(1, 3600);
    for n in 0..4 {
        admitted(t.take(&host, fp_at(0, n, 64), &l, 1, T0));
    }
    // A fifth key finds no free slot and no full bucket to replace: refused, not fresh.
    assert_eq!(
        t.take(&host, fp_at(0, 4, 64), &l, 1, T0),
        Outcome::TableFull
    );
    // The throttled keys are still throttled: their buckets were not given away.
    for n in 0..4 {
        assert!(matches!(
            t.take(&host, fp_at(0, n, 64), &l, 1, T0 + SEC),
            Outcome::Limited { .. }
        ));
    }
    // Keys of another window are unaffected.
    admitted(t.take(&host, fp_at(20, 0, 64), &l, 1, T0));
}

#[test]
fn eviction_takes_the_full_bucket_idle_longest_and_nothing_else() {
    let host = MockHost::new();
    let t = table(&host, 64, 3);
    let l = limits(1, 10); // one token per 10 s
    admitted(t.take(&host, fp_at(5, 0, 64), &l, 1, T0)); // full again at T0+10
    admitted(t.take(&host, fp_at(5, 1, 64), &l, 1, T0 + 2 * SEC)); // full at T0+12
    admitted(t.take(&host, fp_at(5, 2, 64), &l, 1, T0 + 4 * SEC)); // full at T0+14
                                                                   // At T0+11 only the first is full again: a new key replaces it.
    let newcomer = fp_at(5, 3, 64);
    admitted(t.take(&host, newcomer, &l, 1, T0 + 11 * SEC));
    assert!(matches!(
        decode(&host.shared_get("kavach.rl.r.5").0.unwrap(), TAG),
        Slot::Used { fp, .. } if fp == newcomer
    ));
    // The other two kept their (still partial) buckets.
    assert!(matches!(
        t.take(&host, fp_at(5, 1, 64), &l, 1, T0 + 11 * SEC),
        Outcome::Limited { .. }
    ));
    // Later, two are full (slots 6 and 7, used at +2 and +4): the one idle longest goes.
    let another = fp_at(5, 4, 64);
    admitted(t.take(&host, another, &l, 1, T0 + 20 * SEC));
    assert!(matches!(
        decode(&host.shared_get("kavach.rl.r.6").0.unwrap(), TAG),
        Slot::Used { fp, .. } if fp == another
    ));
    assert!(matches!(
        decode(&host.shared_get("kavach.rl.r.7").0.unwrap(), TAG),
        Slot::Used { fp, .. } if fp == fp_at(5, 2, 64)
    ));
}

#[test]
fn a_bucket_is_replaced_only_once_it_is_full_again() {
    // A full bucket holds what a fresh one would: replacing it takes nothing from its key.
    let host = MockHost::new();
    let t = table(&host, 64, 1);
    let l = limits(3, 30);
    let (a, b) = (fp_at(9, 0, 64), fp_at(9, 1, 64));
    assert_eq!(count_admitted(&t, &host, a, &l, T0, 5), 3);
    assert_eq!(t.take(&host, b, &l, 1, T0 + 29 * SEC), Outcome::TableFull);
    admitted(t.take(&host, b, &l, 1, T0 + 30 * SEC));
    assert_eq!(count_admitted(&t, &host, a, &l, T0 + 30 * SEC, 5), 0);
}

#[test]
fn losing_a_race_retries_and_the_total_stays_exact() {
    let host = Racing::new();
    let t = table(&host, 64, 8);
    let l = limits(10, 3600);
    let other_admitted = std::rc::Rc::new(Cell::new(0u32));
    let seen = other_admitted.clone();
    let other = t.clone();
    // Before each of this worker's next 5 writes, another worker takes a token first.
    host.before_next_sets(5, move |h: &MockHost| {
        if let Outcome::Admitted(_) = other.take(h, 77, &l, 1, T0) {
            seen.set(seen.get() + 1);
        }
    });
    let mine = count_admitted(&t, &host, 77, &l, T0, 30);
    assert!(mine > 0 && other_admitted.get() > 0);
    assert_eq!(mine + other_admitted.get(), 10);
}

#[test]
fn when_every_attempt_loses_the_request_is_refused() {
    let host = Racing::new();
    let t = Table::new("r", 64, 8, 3, TAG);
    t.create_slots(&host).unwrap();
    let l = limits(10, 3600);
    let other = t.clone();
    host.before_next_sets(3, move |h: &MockHost| {
        let _ = other.take(h, 77, &l, 1, T0);
    });
    assert_eq!(t.take(&host, 77, &l, 1, T0), Outcome::Contention);
    // The other worker's three takes all landed.
    assert_eq!(count_admitted(&t, &host, 77, &l, T0, 20), 7);
}

#[test]
fn host_failures_and_missing_slots_are_store_errors() {
    let host = Racing::new();
    let t = table(&host, 64, 8);
    let l = limits(10, 3600);
    host.fail_sets.set(true);
    assert_eq!(t.take(&host, 1, &l, 1, T0), Outcome::StoreError);
    let bare = MockHost::new();
    assert_eq!(
        Table::new("r", 64, 8, 8, TAG).take(&bare, 1, &l, 1, T0),
        Outcome::StoreError
    );
}

#[test]
fn a_second_copy_of_a_key_is_retired_and_its_use_carried_over() {
    let host = MockHost::new();
    let t = table(&host, 64, 4);
    let l = limits(10, 3600);
    let fp = fp_at(3, 0, 64);
    // As after a race: the key in slot 3 (used 2) and again in slot 4 (used 3).
    let mut b = Bucket::fresh(&l, T0);
    b.level -= 2 * 3600 * SEC as i128;
    host.shared_set(
        "kavach.rl.r.3",
        &encode_used(TAG, fp, &b, b.full_at_ns(&l)),
        None,
    )
    .unwrap();
    let mut c = Bucket::fresh(&l, T0);
    c.level -= 3 * 3600 * SEC as i128;
    host.shared_set(
        "kavach.rl.r.4",
        &encode_used(TAG, fp, &c, c.full_at_ns(&l)),
        None,
    )
    .unwrap();
    let after = admitted(t.take(&host, fp, &l, 1, T0));
    assert_eq!(after.tokens(&l), 4, "10 - 2 - 3 - 1");
    assert_eq!(
        decode(&host.shared_get("kavach.rl.r.4").0.unwrap(), TAG),
        Slot::Free
    );
    assert_eq!(count_admitted(&t, &host, fp, &l, T0, 10), 4);
}

#[test]
fn records_of_another_configuration_are_free() {
    let host = MockHost::new();
    let l = limits(1, 3600);
    let old = Table::new("r", 64, 1, 8, 1);
    old.create_slots(&host).unwrap();
    admitted(old.take(&host, fp_at(4, 0, 64), &l, 1, T0));
    let new = Table::new("r", 64, 1, 8, 2);
    assert_eq!(new.create_slots(&host).unwrap(), 0);
    // The old bucket is not full, but it belongs to a replaced configuration.
    admitted(new.take(&host, fp_at(4, 1, 64), &l, 1, T0));
    // And garbage in a slot is never trusted, never fatal.
    host.shared_set("kavach.rl.r.8", b"\x09garbage", None)
        .unwrap();
    admitted(new.take(&host, fp_at(8, 0, 64), &l, 1, T0));
}

#[test]
fn creating_slots_is_idempotent_and_never_overwrites_a_bucket() {
    let host = MockHost::new();
    let t = table(&host, 64, 8);
    let l = limits(2, 3600);
    admitted(t.take(&host, 12, &l, 1, T0));
    assert_eq!(t.create_slots(&host).unwrap(), 0);
    assert_eq!(count_admitted(&t, &host, 12, &l, T0, 5), 1);
}

#[test]
fn memory_is_the_table_whatever_the_number_of_keys() {
    let host = MockHost::new();
    let t = table(&host, 256, 8);
    let l = limits(1, 1);
    let mut full = 0;
    for k in 0..20_000u64 {
        let fp = fingerprint(&Seed(1, 2), &k.to_le_bytes());
        // Time advances: older buckets become full and are reused.
        if t.take(&host, fp, &l, 1, T0 + k * SEC / 1000) == Outcome::TableFull {
            full += 1;
        }
    }
    assert_eq!(host.shared.entries.borrow().len(), 256);
    assert!(
        full > 0,
        "with 1000 new keys a second for 256 slots, windows fill up"
    );
    assert!(full < 20_000);
}

#[test]
fn giving_back_restores_the_bucket() {
    let host = MockHost::new();
    let t = table(&host, 64, 8);
    let l = limits(2, 3600);
    admitted(t.take(&host, 9, &l, 1, T0));
    admitted(t.take(&host, 9, &l, 1, T0));
    assert!(t.give_back(&host, 9, &l, 1, T0));
    admitted(t.take(&host, 9, &l, 1, T0));
    assert!(matches!(
        t.take(&host, 9, &l, 1, T0),
        Outcome::Limited { .. }
    ));
    // Nothing to give back to: fine.
    assert!(t.give_back(&host, 10, &l, 1, T0));
}

#[test]
fn the_seed_is_made_once_and_then_shared() {
    let host = MockHost::new();
    let a = shared_seed(&host).unwrap();
    let b = shared_seed(&host).unwrap();
    assert_eq!(a, b);
    assert_ne!(fingerprint(&a, b"k1"), fingerprint(&a, b"k2"));
    assert_ne!(
        fingerprint(&a, b"k1"),
        fingerprint(&Seed(a.0 ^ 1, a.1), b"k1")
    );
    host.shared_set(SEED_KEY, b"short", None).unwrap();
    assert_eq!(
        shared_seed(&host).unwrap_err(),
        "shared data kavach.rl.seed is malformed"
    );
}

#[test]
fn config_tags_differ_for_different_configurations() {
    assert_eq!(config_tag(&[b"a", b"1"]), config_tag(&[b"a", b"1"]));
    assert_ne!(config_tag(&[b"a", b"1"]), config_tag(&[b"a", b"2"]));
}
