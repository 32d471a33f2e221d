//! Token-bucket arithmetic, exact in integers.
//!
//! A bucket holds up to `limit + burst` tokens and gains `limit` tokens per `period`. A request
//! costing `cost` tokens passes when the bucket holds at least `cost` tokens, and takes them.
//!
//! The level is kept in units of `1 / period_ns` of a token, so a bucket gains exactly `limit`
//! units per nanosecond: refill, take and wait times are integer operations with no rounding
//! drift (60 s / 7 requests is not a whole number of nanoseconds, but 7 units per nanosecond
//! is). The level is signed: a bucket can owe tokens after two copies of it were merged
//! ([`super::table`]); a bucket in debt passes nothing until it has refilled.

/// How fast a bucket refills and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Tokens added per period (the sustained rate), at least 1.
    pub limit: u64,
    /// Length of the period in seconds, at least 1.
    pub period_s: u64,
    /// Tokens the bucket holds above `limit` (a fresh bucket passes `limit + burst` at once).
    pub burst: u64,
}

const NANOS_PER_SEC: i128 = 1_000_000_000;

impl Limits {
    /// Level units per token.
    fn unit(&self) -> i128 {
        i128::from(self.period_s) * NANOS_PER_SEC
    }

    /// Tokens a full bucket holds.
    pub fn capacity(&self) -> u64 {
        self.limit.saturating_add(self.burst)
    }

    /// Level of a full bucket.
    pub fn full_level(&self) -> i128 {
        i128::from(self.capacity()) * self.unit()
    }

    /// Level units gained per nanosecond.
    fn rate(&self) -> i128 {
        i128::from(self.limit.max(1))
    }

    /// Nanoseconds until a bucket at `level` reaches `target`, rounded up; 0 when it is there.
    fn nanos_until(&self, level: i128, target: i128) -> u64 {
        if level >= target {
            return 0;
        }
        let missing = target - level;
        let rate = self.rate();
        let nanos = (missing + rate - 1) / rate;
        u64::try_from(nanos).unwrap_or(u64::MAX)
    }
}

/// The state of one bucket: its level at `updated_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub level: i128,
    /// Host clock (nanoseconds since the Unix epoch) the level refers to.
    pub updated_ns: u64,
}

/// What taking tokens from a bucket gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// The request passes; the bucket after taking its cost.
    Admitted(Bucket),
    /// The request does not pass; the bucket (refilled, unchanged otherwise) and how long until
    /// it would, in nanoseconds.
    Limited { bucket: Bucket, wait_ns: u64 },
}

impl Bucket {
    /// A bucket nobody used yet: full.
    pub fn fresh(limits: &Limits, now_ns: u64) -> Self {
        Bucket {
            level: limits.full_level(),
            updated_ns: now_ns,
        }
    }

    /// The bucket at `now_ns`: refilled for the time passed, never above full. A clock that went
    /// backwards (another worker wrote with a later reading, or the host clock was set back)
    /// refills nothing and keeps the later time, so no token is ever gained twice.
    pub fn refilled(self, limits: &Limits, now_ns: u64) -> Self {
        if now_ns <= self.updated_ns {
            return self;
        }
        let elapsed = i128::from(now_ns - self.updated_ns);
        let full = limits.full_level();
        let level = if self.level >= full {
            self.level
        } else {
            self.level
                .saturating_add(elapsed.saturating_mul(limits.rate()))
                .min(full)
        };
        Bucket {
            level,
            updated_ns: now_ns,
        }
    }

    /// Takes `cost` tokens at `now_ns` if the bucket has them.
    pub fn take(self, limits: &Limits, now_ns: u64, cost: u64) -> Take {
        let b = self.refilled(limits, now_ns);
        let need = i128::from(cost) * limits.unit();
        if b.level >= need {
            Take::Admitted(Bucket {
                level: b.level - need,
                updated_ns: b.updated_ns,
            })
        } else {
            Take::Limited {
                bucket: b,
                wait_ns: limits.nanos_until(b.level, need),
            }
        }
    }

    /// Gives `cost` tokens back (a request another rule refused), never above full.
    pub fn give_back(self, limits: &Limits, now_ns: u64, cost: u64) -> Self {
        let b = self.refilled(limits, now_ns);
        Bucket {
            level: b
                .level
                .saturating_add(i128::from(cost) * limits.unit())
                .min(limits.full_level()),
            updated_ns: b.updated_ns,
        }
    }

    /// Whole tokens in the bucket (0 when it is in debt).
    pub fn tokens(&self, limits: &Limits) -> u64 {
        u64::try_from(self.level.max(0) / limits.unit()).unwrap_or(u64::MAX)
    }

    /// Nanoseconds from `updated_ns` until the bucket is full again.
    pub fn nanos_until_full(&self, limits: &Limits) -> u64 {
        limits.nanos_until(self.level, limits.full_level())
    }

    /// Host time at which the bucket is full again (it is then the same as a fresh one).
    pub fn full_at_ns(&self, limits: &Limits) -> u64 {
        self.updated_ns
            .saturating_add(self.nanos_until_full(limits))
    }
}

/// Whole seconds for a wait in nanoseconds, rounded up (what `retry-after` and `t=` carry).
pub fn seconds_ceil(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;
    const T0: u64 = 1_764_115_030 * SEC;

    fn limits(limit: u64, period_s: u64, burst: u64) -> Limits {
        Limits {
            limit,
            period_s,
            burst,
        }
    }

    fn admitted(t: Take) -> Bucket {
        match t {
            Take::Admitted(b) => b,
            Take::Limited { .. } => panic!("expected admitted, got {t:?}"),
        }
    }

    fn limited(t: Take) -> u64 {
        match t {
            Take::Limited { wait_ns, .. } => wait_ns,
            Take::Admitted(_) => panic!("expected limited, got {t:?}"),
        }
    }

    /// Takes until refused at a fixed time; returns how many passed.
    fn drain(l: &Limits, mut b: Bucket, now: u64, cost: u64) -> (u64, Bucket) {
        let mut n = 0;
        while let Take::Admitted(next) = b.take(l, now, cost) {
            b = next;
            n += 1;
            assert!(n < 1_000_000, "bucket never empties");
        }
        (n, b)
    }

    #[test]
    fn a_fresh_bucket_passes_limit_plus_burst_then_nothing() {
        let l = limits(7, 60, 3);
        let (n, b) = drain(&l, Bucket::fresh(&l, T0), T0, 1);
        assert_eq!(n, 10);
        assert_eq!(b.tokens(&l), 0);
        let l = limits(7, 60, 0);
        assert_eq!(drain(&l, Bucket::fresh(&l, T0), T0, 1).0, 7);
    }

    #[test]
    fn refill_is_exact_for_periods_that_do_not_divide() {
        // 7 per 60 s: one token every 8.571428571... s.
        let l = limits(7, 60, 0);
        let (_, empty) = drain(&l, Bucket::fresh(&l, T0), T0, 1);
        // One nanosecond short of a token: still refused, and told to wait exactly that long.
        let almost = T0 + 60 * SEC / 7;
        assert_eq!(limited(empty.take(&l, almost, 1)), 1);
        let b = admitted(empty.take(&l, almost + 1, 1));
        assert_eq!(b.tokens(&l), 0);
        // After a whole period exactly 7 tokens came back, not 6 and not 8.
        let (n, _) = drain(&l, empty, T0 + 60 * SEC, 1);
        assert_eq!(n, 7);
    }

    #[test]
    fn refill_never_goes_above_capacity() {
        let l = limits(10, 1, 5);
        let b = admitted(Bucket::fresh(&l, T0).take(&l, T0, 1));
        let later = b.refilled(&l, T0 + 3600 * SEC);
        assert_eq!(later.level, l.full_level());
        assert_eq!(drain(&l, later, T0 + 3600 * SEC, 1).0, 15);
    }

    #[test]
    fn cost_takes_several_tokens_and_waits_for_all_of_them() {
        let l = limits(10, 10, 0); // one token per second
        let b = Bucket::fresh(&l, T0);
        let (n, b) = drain(&l, b, T0, 3);
        assert_eq!(n, 3, "10 tokens pay for three requests of 3");
        assert_eq!(b.tokens(&l), 1);
        assert_eq!(limited(b.take(&l, T0, 3)), 2 * SEC);
        assert!(matches!(b.take(&l, T0, 1), Take::Admitted(_)));
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing_and_keeps_the_later_time() {
        let l = limits(1, 1, 0);
        let b = admitted(Bucket::fresh(&l, T0).take(&l, T0, 1));
        let earlier = T0 - 10 * SEC;
        let wait = limited(b.take(&l, earlier, 1));
        assert_eq!(
            wait, SEC,
            "wait counts from the later time the bucket knows"
        );
        assert_eq!(b.refilled(&l, earlier), b);
        // Going forward again refills only from the later time.
        assert!(matches!(b.take(&l, T0 + SEC - 1, 1), Take::Limited { .. }));
        assert!(matches!(b.take(&l, T0 + SEC, 1), Take::Admitted(_)));
    }

    #[test]
    fn a_bucket_in_debt_waits_until_it_is_repaid() {
        let l = limits(2, 2, 0); // one token per second
        let b = Bucket {
            level: -l.full_level(),
            updated_ns: T0,
        };
        assert_eq!(b.tokens(&l), 0);
        assert_eq!(limited(b.take(&l, T0, 1)), 3 * SEC);
        assert!(matches!(b.take(&l, T0 + 3 * SEC, 1), Take::Admitted(_)));
    }

    #[test]
    fn giving_back_restores_tokens_but_not_above_full() {
        let l = limits(3, 60, 0);
        let b = admitted(Bucket::fresh(&l, T0).take(&l, T0, 2));
        assert_eq!(b.tokens(&l), 1);
        assert_eq!(b.give_back(&l, T0, 2).tokens(&l), 3);
        assert_eq!(b.give_back(&l, T0, 5).level, l.full_level());
    }

    #[test]
    fn full_time_and_remaining_are_reported_in_whole_units() {
        let l = limits(2, 60, 0); // one token per 30 s
        let b = admitted(Bucket::fresh(&l, T0).take(&l, T0, 1));
        assert_eq!(b.nanos_until_full(&l), 30 * SEC);
        assert_eq!(b.full_at_ns(&l), T0 + 30 * SEC);
        assert_eq!(Bucket::fresh(&l, T0).full_at_ns(&l), T0);
        assert_eq!(seconds_ceil(30 * SEC), 30);
        assert_eq!(seconds_ceil(30 * SEC + 1), 31);
        assert_eq!(seconds_ceil(1), 1);
        assert_eq!(seconds_ceil(0), 0);
    }

    #[test]
    fn extreme_limits_do_not_overflow() {
        let l = limits(1_000_000_000, 86_400, 1_000_000_000);
        let b = Bucket::fresh(&l, 0);
        let b = admitted(b.take(&l, 0, 2_000_000_000));
        assert_eq!(b.tokens(&l), 0);
        assert_eq!(b.refilled(&l, u64::MAX).level, l.full_level());
        let l = limits(1, 86_400, 0);
        let b = admitted(Bucket::fresh(&l, 0).take(&l, 0, 1));
        assert_eq!(b.nanos_until_full(&l), 86_400 * SEC);
    }
}
