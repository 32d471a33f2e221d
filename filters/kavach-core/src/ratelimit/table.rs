//! The bucket table: a fixed set of slots in Envoy's shared data, updated with compare-and-swap.
//!
//! Every Envoy worker runs its own VM; shared data (one key/value map per process and VM id,
//! with a CAS token per key) is the only state they share. It has no TTL and never frees a key,
//! so the table is a fixed set of keys `kavach.rl.<rule>.<slot>`, all created when a worker
//! loads the configuration (before it serves requests with it). Memory is therefore fixed by
//! `slots`, whatever the number of clients.
//!
//! - A key (the bytes of [`super::key::KeyBytes`]) is reduced to a 64-bit fingerprint with a keyed
//!   hash (SipHash-2-4) whose seed is random per Envoy process, so clients cannot aim keys at
//!   each other's slots. The fingerprint picks the first slot; up to `probes` slots are tried in
//!   order (linear probing). A slot holding another fingerprint is never shared.
//! - A new key takes the first never-used slot of its probe window; with none left, a slot
//!   whose bucket is full again (it then holds nothing a fresh bucket would not) and idle
//!   longest; with none of those either, the request is refused (`TableFull`): a client under
//!   limit is never handed a fresh bucket because others flooded the table.
//! - Every change is get → compute → set with the CAS token of the get, retried when another
//!   worker got there first; when retries run out the request is refused (`Contention`).
//!   Refusals read without writing.
//! - Two workers inserting the same new key at the same moment into a window without free slots
//!   can (rarely) place it twice; the next request for the key retires the later copy and carries
//!   the tokens it used over to the first, so nothing it admitted is forgotten.
//!
//! Slot record (46 bytes): version, state, config tag, fingerprint, level (i128), updated and
//! full-at times (ns). Records of another rule configuration (a changed limit, period, burst,
//! `slots` or `probes`: the tag differs) are treated as free.

use std::hash::Hasher;
#[allow(deprecated)]
use std::hash::SipHasher;

use super::bucket::{Bucket, Limits, Take};
use crate::host::{Host, SharedDataError};

/// Shared-data key of the per-process hash seed.
pub const SEED_KEY: &str = "kavach.rl.seed";

const VERSION: u8 = 1;
const STATE_EMPTY: u8 = 0;
const STATE_USED: u8 = 1;
const STATE_RETIRED: u8 = 2;
const RECORD_LEN: usize = 46;

/// The keyed-hash seed every worker of this Envoy shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed(pub u64, pub u64);

impl Seed {
    fn from_bytes(b: &[u8]) -> Option<Seed> {
        let k0 = u64::from_le_bytes(b.get(0..8)?.try_into().ok()?);
        let k1 = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
        (b.len() == 16).then_some(Seed(k0, k1))
    }
}

#[allow(deprecated)]
fn siphash(k0: u64, k1: u64, parts: &[&[u8]]) -> u64 {
    let mut h = SipHasher::new_with_keys(k0, k1);
    for p in parts {
        h.write(p);
    }
    h.finish()
}

/// The fingerprint of a key: never 0.
pub fn fingerprint(seed: &Seed, key: &[u8]) -> u64 {
    siphash(seed.0, seed.1, &[key]).max(1)
}

/// A short, stable digest of a rule's configuration (no secret involved).
pub fn config_tag(parts: &[&[u8]]) -> u32 {
    let h = siphash(0x6b61_7661_6368, 0x726c, parts);
    u32::try_from(h >> 32).unwrap_or(0)
}

/// Reads the process's seed, creating it on first use. Envoy configures the plugin on its main
/// thread before any worker, so the first creation has no competitor.
pub fn shared_seed(host: &dyn Host) -> Result<Seed, String> {
    if let (Some(v), _) = host.shared_get(SEED_KEY) {
        return Seed::from_bytes(&v).ok_or_else(|| format!("shared data {SEED_KEY} is malformed"));
    }
    let mut b = [0u8; 16];
    if !host.random(&mut b) {
        return Err("no randomness available for the hash seed".into());
    }
    host.shared_set(SEED_KEY, &b, None)
        .map_err(|e| format!("cannot write shared data {SEED_KEY}: {e:?}"))?;
    match host.shared_get(SEED_KEY) {
        (Some(v), _) => {
            Seed::from_bytes(&v).ok_or_else(|| format!("shared data {SEED_KEY} is malformed"))
        }
        _ => Err(format!("shared data {SEED_KEY} vanished")),
    }
}

/// What the table decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Passed; the bucket after taking the cost.
    Admitted(Bucket),
    /// Refused by the bucket; how long until the cost would be there.
    Limited { bucket: Bucket, wait_ns: u64 },
    /// No slot for a new key: every slot of its window holds a bucket that is not full.
    TableFull,
    /// Every CAS attempt lost to another worker.
    Contention,
    /// The host failed a shared-data call (or a slot is missing).
    StoreError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Never used: ends every probe sequence (keys are only ever placed at or before it).
    Empty,
    /// Retired, unreadable or of another configuration: free, but later slots may be in use.
    Free,
    Used {
        fp: u64,
        bucket: Bucket,
        full_at: u64,
    },
}

fn encode_used(tag: u32, fp: u64, bucket: &Bucket, full_at: u64) -> [u8; RECORD_LEN] {
    let mut r = [0u8; RECORD_LEN];
    r[0] = VERSION;
    r[1] = STATE_USED;
    r[2..6].copy_from_slice(&tag.to_le_bytes());
    r[6..14].copy_from_slice(&fp.to_le_bytes());
    r[14..30].copy_from_slice(&bucket.level.to_le_bytes());
    r[30..38].copy_from_slice(&bucket.updated_ns.to_le_bytes());
    r[38..46].copy_from_slice(&full_at.to_le_bytes());
    r
}

fn decode(v: &[u8], tag: u32) -> Slot {
    match (v.first(), v.get(1)) {
        (Some(&VERSION), Some(&STATE_EMPTY)) => return Slot::Empty,
        (Some(&VERSION), Some(&STATE_USED)) if v.len() == RECORD_LEN => {}
        _ => return Slot::Free,
    }
    let u64_at = |i: usize| {
        v.get(i..i + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let t = v
        .get(2..6)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes);
    let level = v
        .get(14..30)
        .and_then(|s| s.try_into().ok())
        .map(i128::from_le_bytes);
    match (t, u64_at(6), level, u64_at(30), u64_at(38)) {
        (Some(t), Some(fp), Some(level), Some(updated_ns), Some(full_at)) if t == tag => {
            Slot::Used {
                fp,
                bucket: Bucket { level, updated_ns },
                full_at,
            }
        }
        _ => Slot::Free,
    }
}

struct Hit {
    idx: u32,
    cas: u32,
    bucket: Bucket,
}

#[derive(Default)]
struct Scan {
    /// Slots holding the fingerprint, in probe order (more than one only after a rare race).
    hits: Vec<Hit>,
    /// Where a new key would go: (rank, last use, slot, cas); lower is better.
    candidate: Option<(u8, u64, u32, u32)>,
}

impl Scan {
    fn offer(&mut self, rank: u8, last_use: u64, idx: u32, cas: u32) {
        let better = match self.candidate {
            None => true,
            Some((r, u, _, _)) => rank < r || (rank == r && last_use < u),
        };
        if better {
            self.candidate = Some((rank, last_use, idx, cas));
        }
    }
}

/// One rule's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    prefix: String,
    slots: u32,
    probes: u32,
    retries: u32,
    tag: u32,
}

impl Table {
    /// `slots` ≥ 1, `probes` in 1..=slots, `retries` ≥ 1 (checked by the configuration).
    pub fn new(rule: &str, slots: u32, probes: u32, retries: u32, tag: u32) -> Self {
        Table {
            prefix: format!("kavach.rl.{rule}."),
            slots: slots.max(1),
            probes: probes.clamp(1, slots.max(1)),
            retries: retries.max(1),
            tag,
        }
    }

    pub fn slot_key(&self, idx: u32) -> String {
        format!("{}{idx}", self.prefix)
    }

    /// Creates every slot that does not exist yet; returns how many it created. Runs when a
    /// worker loads the configuration, before it serves requests with it. (A set of a missing
    /// key ignores the CAS token, so creating slots while requests use them could overwrite a
    /// bucket: that is why no slot is ever created on the request path.)
    pub fn create_slots(&self, host: &dyn Host) -> Result<u32, String> {
        let empty = [VERSION, STATE_EMPTY];
        let mut created = 0;
        for idx in 0..self.slots {
            let key = self.slot_key(idx);
            if let (None, None) = host.shared_get(&key) {
                host.shared_set(&key, &empty, None)
                    .map_err(|e| format!("cannot create shared data {key}: {e:?}"))?;
                created += 1;
            }
        }
        Ok(created)
    }

    fn scan(&self, host: &dyn Host, fp: u64, now_ns: u64) -> Option<Scan> {
        let start = u32::try_from(fp % u64::from(self.slots)).unwrap_or(0);
        let mut scan = Scan::default();
        for i in 0..self.probes {
            let idx = u32::try_from((u64::from(start) + u64::from(i)) % u64::from(self.slots))
                .unwrap_or(0);
            let slot = match host.shared_get(&self.slot_key(idx)) {
                (Some(v), Some(cas)) => (decode(&v, self.tag), cas),
                (None, Some(cas)) => (Slot::Free, cas),
                (_, None) => return None,
            };
            match slot {
                (Slot::Empty, cas) => {
                    scan.offer(0, 0, idx, cas);
                    break;
                }
                (Slot::Free, cas) => scan.offer(1, 0, idx, cas),
                (Slot::Used { fp: f, bucket, .. }, cas) if f == fp => {
                    scan.hits.push(Hit { idx, cas, bucket })
                }
                (
                    Slot::Used {
                        bucket, full_at, ..
                    },
                    cas,
                ) if full_at <= now_ns => scan.offer(2, bucket.updated_ns, idx, cas),
                (Slot::Used { .. }, _) => {}
            }
        }
        Some(scan)
    }

    fn write(
        &self,
        host: &dyn Host,
        idx: u32,
        cas: u32,
        fp: u64,
        bucket: &Bucket,
        limits: &Limits,
    ) -> Result<(), SharedDataError> {
        let rec = encode_used(self.tag, fp, bucket, bucket.full_at_ns(limits));
        host.shared_set(&self.slot_key(idx), &rec, Some(cas))
    }

    /// Retires a second copy of a key; returns the tokens (level units) it had used, or 0 when
    /// another worker changed it first.
    fn retire(&self, host: &dyn Host, hit: &Hit, limits: &Limits, now_ns: u64) -> i128 {
        let retired = [VERSION, STATE_RETIRED];
        match host.shared_set(&self.slot_key(hit.idx), &retired, Some(hit.cas)) {
            Ok(()) => (limits.full_level() - hit.bucket.refilled(limits, now_ns).level).max(0),
            Err(_) => 0,
        }
    }

    /// Takes `cost` tokens from the bucket of fingerprint `fp`.
    pub fn take(
        &self,
        host: &dyn Host,
        fp: u64,
        limits: &Limits,
        cost: u64,
        now_ns: u64,
    ) -> Outcome {
        // Tokens used by retired copies of this key, still to be charged to it.
        let mut debt: i128 = 0;
        for _ in 0..self.retries {
            let Some(scan) = self.scan(host, fp, now_ns) else {
                return Outcome::StoreError;
            };
            let (idx, cas, current) = match scan.hits.split_first() {
                Some((first, copies)) => {
                    for copy in copies {
                        debt += self.retire(host, copy, limits, now_ns);
                    }
                    (first.idx, first.cas, first.bucket)
                }
                None => match scan.candidate {
                    Some((_, _, idx, cas)) => (idx, cas, Bucket::fresh(limits, now_ns)),
                    None => return Outcome::TableFull,
                },
            };
            let mut b = current.refilled(limits, now_ns);
            b.level -= debt;
            let (after, outcome) = match b.take(limits, now_ns, cost) {
                Take::Admitted(after) => (after, Outcome::Admitted(after)),
                Take::Limited { bucket, wait_ns } => {
                    if debt == 0 {
                        // A refusal changes nothing: no write, no contention.
                        return Outcome::Limited { bucket, wait_ns };
                    }
                    (bucket, Outcome::Limited { bucket, wait_ns })
                }
            };
            match self.write(host, idx, cas, fp, &after, limits) {
                Ok(()) => return outcome,
                Err(SharedDataError::CasMismatch) => continue,
                Err(SharedDataError::Failed) => return Outcome::StoreError,
            }
        }
        Outcome::Contention
    }

    /// Returns `cost` tokens to the bucket of `fp` (the request was refused by another rule).
    /// False when every attempt lost to another worker or the host failed.
    pub fn give_back(
        &self,
        host: &dyn Host,
        fp: u64,
        limits: &Limits,
        cost: u64,
        now_ns: u64,
    ) -> bool {
        for _ in 0..self.retries {
            let Some(scan) = self.scan(host, fp, now_ns) else {
                return false;
            };
            let Some(hit) = scan.hits.first() else {
                // Gone: it was full again and reused, so there is nothing to return.
                return true;
            };
            let after = hit.bucket.give_back(limits, now_ns, cost);
            match self.write(host, hit.idx, hit.cas, fp, &after, limits) {
                Ok(()) => return true,
                Err(SharedDataError::CasMismatch) => continue,
                Err(SharedDataError::Failed) => return false,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests;
