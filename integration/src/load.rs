//! Many requests from many client threads, one connection per request (the raw client's way),
//! counted by outcome. For tests that need volume (cardinality, memory), never for timing.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;

use crate::client::Request;

/// What came back.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Responses by status code.
    pub statuses: BTreeMap<u16, usize>,
    /// Requests that got no response (the first few errors are in `error_samples`).
    pub errors: usize,
    pub error_samples: Vec<String>,
}

impl LoadReport {
    /// Requests that got a response.
    pub fn answered(&self) -> usize {
        self.statuses.values().sum()
    }
}

/// Sends `total` requests (`make(i)` for i in 0..total) to `addr` from `threads` threads.
/// A request whose connection could not be opened is retried (Envoy never saw it); any other
/// failure is counted in `errors`.
pub fn run<F>(addr: SocketAddr, total: usize, threads: usize, make: F) -> LoadReport
where
    F: Fn(usize) -> Request + Sync,
{
    let next = AtomicUsize::new(0);
    let report = Mutex::new(LoadReport::default());
    thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                let mut local = LoadReport::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let request = make(i);
                    let mut attempts = 0;
                    let outcome = loop {
                        attempts += 1;
                        match request.send(addr) {
                            Err(e)
                                if attempts < 5
                                    && matches!(
                                        e.kind(),
                                        ErrorKind::AddrNotAvailable | ErrorKind::ConnectionRefused
                                    ) =>
                            {
                                thread::sleep(std::time::Duration::from_millis(20));
                            }
                            other => break other,
                        }
                    };
                    match outcome {
                        Ok(resp) => *local.statuses.entry(resp.status).or_default() += 1,
                        Err(e) => {
                            local.errors += 1;
                            if local.error_samples.len() < 5 {
                                local.error_samples.push(format!("request {i}: {e}"));
                            }
                        }
                    }
                }
                if let Ok(mut r) = report.lock() {
                    for (status, n) in local.statuses {
                        *r.statuses.entry(status).or_default() += n;
                    }
                    r.errors += local.errors;
                    let room = 5usize.saturating_sub(r.error_samples.len());
                    r.error_samples
                        .extend(local.error_samples.into_iter().take(room));
                }
            });
        }
    });
    report.into_inner().unwrap_or_default()
}
