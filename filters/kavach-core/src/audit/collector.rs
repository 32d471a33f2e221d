//! Batching records to an HTTP collector without ever holding up traffic.
//!
//! Records wait in a bounded queue (a full queue drops the newest record and counts it). On each
//! tick at most one batch is in flight; a failed batch (non-2xx, timeout, reset, no cluster) is
//! retried with exponential backoff up to `max_attempts`, then dropped and counted. Nothing here
//! runs on the request path except [`Collector::push`], which is O(1).

use std::collections::VecDeque;
use std::time::Duration;

use super::config::CollectorConfig;

/// Counts of what happened, for the filter's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub sent: u64,
    pub failed_attempts: u64,
    pub dropped: u64,
}

/// A request the collector wants the host to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

#[derive(Debug)]
struct Batch {
    records: Vec<String>,
    attempt: u32,
}

#[derive(Debug)]
pub struct Collector {
    cfg: CollectorConfig,
    queue: VecDeque<String>,
    in_flight: Option<(u32, Batch)>,
    retry: Option<(Batch, u64)>,
    counts: Counts,
}

impl Collector {
    pub fn new(cfg: CollectorConfig) -> Self {
        Collector {
            cfg,
            queue: VecDeque::new(),
            in_flight: None,
            retry: None,
            counts: Counts::default(),
        }
    }

    pub fn flush_interval_ms(&self) -> u64 {
        self.cfg.flush_interval_ms
    }

    /// Queues a record; false (and counted as dropped) when the queue is full.
    pub fn push(&mut self, record: String) -> bool {
        if self.queue.len() >= self.cfg.queue_max_records {
            self.counts.dropped += 1;
            return false;
        }
        self.queue.push_back(record);
        true
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Takes and resets the counts accumulated since the last call.
    pub fn take_counts(&mut self) -> Counts {
        std::mem::take(&mut self.counts)
    }

    /// The next batch to send at `now_ms`, if any is due and none is in flight. The caller must
    /// report the outcome with [`Collector::sent`] or [`Collector::failed`].
    pub fn next(&mut self, now_ms: u64) -> Option<Send> {
        if self.in_flight.is_some() {
            return None;
        }
        let batch = match self.retry.take() {
            Some((batch, due)) if due <= now_ms => batch,
            Some(waiting) => {
                self.retry = Some(waiting);
                return None;
            }
            None => {
                if self.queue.is_empty() {
                    return None;
                }
                let n = self.queue.len().min(self.cfg.batch_max_records);
                Batch {
                    records: self.queue.drain(..n).collect(),
                    attempt: 0,
                }
            }
        };
        let mut body = Vec::new();
        for r in &batch.records {
            body.extend_from_slice(r.as_bytes());
            body.push(b'\n');
        }
        // Token 0 marks "dispatch pending"; the caller replaces it via `dispatched`.
        self.in_flight = Some((0, batch));
        Some(Send {
            cluster: self.cfg.cluster.clone(),
            path: self.cfg.path.clone(),
            authority: self.cfg.authority.clone(),
            body,
            timeout: Duration::from_millis(self.cfg.timeout_ms),
        })
    }

    /// The host accepted the call and gave it `token`.
    pub fn dispatched(&mut self, token: u32) {
        if let Some((t, _)) = self.in_flight.as_mut() {
            *t = token;
        }
    }

    /// Whether `token` is the batch in flight.
    pub fn owns(&self, token: u32) -> bool {
        matches!(self.in_flight, Some((t, _)) if t == token)
    }

    /// The batch in flight was accepted by the collector.
    pub fn sent(&mut self) {
        if let Some((_, batch)) = self.in_flight.take() {
            self.counts.sent += batch.records.len() as u64;
        }
    }

    /// The batch in flight failed at `now_ms`: retry later or drop it.
    pub fn failed(&mut self, now_ms: u64) {
        let Some((_, mut batch)) = self.in_flight.take() else {
            return;
        };
        self.counts.failed_attempts += 1;
        batch.attempt += 1;
        if batch.attempt >= self.cfg.max_attempts {
            self.counts.dropped += batch.records.len() as u64;
            return;
        }
        let shift = batch.attempt.saturating_sub(1).min(20);
        let backoff = self
            .cfg
            .backoff_base_ms
            .saturating_mul(1u64 << shift)
            .min(self.cfg.backoff_max_ms);
        self.retry = Some((batch, now_ms.saturating_add(backoff)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CollectorConfig {
        CollectorConfig {
            cluster: "collector".into(),
            path: "/v1".into(),
            authority: "c".into(),
            flush_interval_ms: 100,
            batch_max_records: 2,
            queue_max_records: 3,
            timeout_ms: 50,
            max_attempts: 3,
            backoff_base_ms: 100,
            backoff_max_ms: 150,
        }
    }

    #[test]
    fn batches_are_bounded_and_newline_delimited() {
        let mut c = Collector::new(cfg());
        for r in ["a", "b", "c"] {
            assert!(c.push(r.into()));
        }
        let s = c.next(0).unwrap();
        assert_eq!(s.body, b"a\nb\n");
        assert_eq!(c.next(0), None, "one batch in flight at a time");
        c.dispatched(7);
        assert!(c.owns(7));
        c.sent();
        assert_eq!(c.next(0).unwrap().body, b"c\n");
        c.sent();
        assert_eq!(c.take_counts().sent, 3);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let mut c = Collector::new(cfg());
        for r in ["a", "b", "c"] {
            c.push(r.into());
        }
        assert!(!c.push("d".into()));
        assert_eq!(c.queued(), 3);
        assert_eq!(c.take_counts().dropped, 1);
    }

    #[test]
    fn failures_back_off_then_drop() {
        let mut c = Collector::new(cfg());
        c.push("a".into());
        c.next(0).unwrap();
        c.failed(1000);
        assert_eq!(c.next(1050), None, "backing off");
        assert!(c.next(1100).is_some(), "first retry after base backoff");
        c.failed(2000);
        assert_eq!(c.next(2149), None);
        assert!(
            c.next(2150).is_some(),
            "second retry after min(200, max 150)"
        );
        c.failed(3000);
        assert_eq!(c.next(100_000), None, "dropped after max_attempts");
        let counts = c.take_counts();
        assert_eq!(counts.failed_attempts, 3);
        assert_eq!(counts.dropped, 1);
        assert_eq!(counts.sent, 0);
    }

    #[test]
    fn new_records_queue_while_a_batch_retries() {
        let mut c = Collector::new(cfg());
        c.push("a".into());
        c.next(0).unwrap();
        c.failed(0);
        c.push("b".into());
        let retry = c.next(100).unwrap();
        assert_eq!(retry.body, b"a\n", "the retried batch goes first");
        c.sent();
        assert_eq!(c.next(100).unwrap().body, b"b\n");
    }
}
