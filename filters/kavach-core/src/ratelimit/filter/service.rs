//! The global rules' call to the rate-limit service (RLS v3) and what its answer, or its
//! failure, decides.

use super::*;

/// A global rule that applies to the request, waiting for the service's verdict.
pub(super) struct GlobalHit {
    pub(super) rule: usize,
    pub(super) tier: usize,
    pub(super) limits: Limits,
    /// The local bucket key, for `failure_mode: local`.
    pub(super) key: KeyBytes,
    pub(super) descriptor: Descriptor,
}

pub(super) struct Pending {
    pub(super) token: u32,
    pub(super) hits: Vec<GlobalHit>,
    pub(super) progress: Progress,
}

/// Why the rate-limit service gave no usable verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ServiceFailure {
    /// The call could not start (no such cluster in Envoy).
    NotStarted,
    /// gRPC status of the failed call (4: deadline exceeded, 14: unavailable...).
    Status(u32),
    /// An answer that is not a readable `RateLimitResponse` or says neither OK nor OVER_LIMIT.
    BadAnswer,
}

impl ServiceFailure {
    pub(super) fn as_string(self) -> String {
        match self {
            ServiceFailure::NotStarted => "not_started".into(),
            ServiceFailure::Status(4) => "timeout".into(),
            ServiceFailure::Status(14) => "unavailable".into(),
            ServiceFailure::Status(n) => format!("grpc_status_{n}"),
            ServiceFailure::BadAnswer => "bad_answer".into(),
        }
    }
}

/// The limits to report for a descriptor: the service's own when it says them.
pub(super) fn reported_limits(status: Option<&RlsStatus>, fallback: Limits) -> Limits {
    match status.and_then(|s| s.current_limit.as_ref()) {
        Some(l) if l.requests_per_unit > 0 && l.unit_s > 0 => Limits {
            limit: u64::from(l.requests_per_unit),
            period_s: l.unit_s,
            burst: 0,
        },
        _ => fallback,
    }
}

/// The verdict of the `n`th descriptor; without a status of its own, the overall code decides.
pub(super) fn global_verdict(
    r: &RlsResponse,
    n: usize,
    fallback: Limits,
) -> Result<Admit, Refusal> {
    let status = r.statuses.get(n);
    let limits = reported_limits(status, fallback);
    let over = match status {
        Some(s) => s.code == Code::OverLimit,
        None => r.overall == Code::OverLimit,
    };
    let remaining = status.map_or(0, |s| u64::from(s.remaining));
    let reset_s = status.and_then(|s| s.reset_s).unwrap_or(limits.period_s);
    if over {
        Err(Refusal::Limited {
            remaining,
            wait_ns: reset_s.saturating_mul(1_000_000_000),
        })
    } else {
        Ok(Admit::Global {
            limits,
            remaining,
            reset_s,
        })
    }
}

impl RateLimitStream {
    /// Asks the rate-limit service about the global rules that apply; the request waits for
    /// the answer (or decides at once when the call cannot start).
    pub(super) fn call_service(
        &mut self,
        host: &dyn Host,
        hits: Vec<GlobalHit>,
        p: Progress,
    ) -> Flow {
        let Some(service) = self.cfg().service.as_ref() else {
            return self.resolve(host, hits, p, Err(ServiceFailure::NotStarted));
        };
        let message = encode_request(&service.domain, hits.iter().map(|h| &h.descriptor));
        let timeout = Duration::from_millis(service.timeout_ms);
        match host.grpc_call(&service.cluster, SERVICE, METHOD, &message, timeout) {
            Some(token) => {
                self.pending = Some(Pending {
                    token,
                    hits,
                    progress: p,
                });
                Flow::Stop
            }
            None => self.resolve(host, hits, p, Err(ServiceFailure::NotStarted)),
        }
    }

    /// The service's answer to this stream's call (another token is not ours: ignored).
    pub(super) fn answer(&mut self, host: &dyn Host, token: u32, status: u32, size: usize) -> Flow {
        let Some(pending) = self.pending.take() else {
            return Flow::Stop;
        };
        if pending.token != token {
            self.pending = Some(pending);
            return Flow::Stop;
        }
        let answer = if status != 0 {
            Err(ServiceFailure::Status(status))
        } else if size > MAX_RESPONSE_BYTES {
            Err(ServiceFailure::BadAnswer)
        } else {
            host.grpc_response(size)
                .ok_or(ServiceFailure::BadAnswer)
                .and_then(|b| decode_response(&b).map_err(|_| ServiceFailure::BadAnswer))
        };
        self.resolve(host, pending.hits, pending.progress, answer)
    }
    /// The service's answer (or its failure) for the global rules, then the request's outcome.
    pub(super) fn resolve(
        &mut self,
        host: &dyn Host,
        hits: Vec<GlobalHit>,
        mut p: Progress,
        answer: Result<RlsResponse, ServiceFailure>,
    ) -> Flow {
        let answer = answer.and_then(|r| match r.overall {
            Code::Ok | Code::OverLimit => Ok(r),
            Code::Unknown => Err(ServiceFailure::BadAnswer),
        });
        match answer {
            Ok(r) => {
                p.service = Some(
                    match r.overall {
                        Code::OverLimit => "over_limit",
                        _ => "ok",
                    }
                    .into(),
                );
                for (n, hit) in hits.iter().enumerate() {
                    let verdict = global_verdict(&r, n, hit.limits);
                    let limits = match &verdict {
                        Ok(Admit::Global { limits, .. }) => *limits,
                        _ => reported_limits(r.statuses.get(n), hit.limits),
                    };
                    if let Some(flow) =
                        self.settle(host, &mut p, (hit.rule, hit.tier, limits), verdict)
                    {
                        return flow;
                    }
                }
            }
            Err(failure) => {
                let what = failure.as_string();
                let message = format!("ratelimit: rate-limit service gave no verdict ({what})");
                if self.shared.warned.replace(true) {
                    host.log(LogLevel::Debug, &message);
                } else {
                    host.log(LogLevel::Warn, &format!("{message}; failures are counted in kavach_ratelimit_service_errors_total"));
                }
                p.service = Some(what);
                p.now = unix_nanos(host.now());
                let mode = self.cfg().service.as_ref().map(|s| s.failure_mode);
                for hit in &hits {
                    let m = self
                        .shared
                        .metrics
                        .get(hit.rule)
                        .copied()
                        .unwrap_or_default();
                    m.service_errors.bump(host);
                    let verdict = match mode {
                        Some(FailureMode::Allow) => continue,
                        Some(FailureMode::Local) => {
                            self.take_local(host, hit.rule, &hit.limits, &hit.key, p.now)
                        }
                        Some(FailureMode::Deny) | None => Err(Refusal::ServiceUnavailable),
                    };
                    if let Some(flow) =
                        self.settle(host, &mut p, (hit.rule, hit.tier, hit.limits), verdict)
                    {
                        return flow;
                    }
                }
            }
        }
        self.finish(host, p)
    }
}
