//! Host-call probe: repeats ONE kind of proxy-wasm host call `n` times per request, so that
//! `scripts/probe-host.sh` can measure what a single call back into Envoy costs:
//! (Envoy CPU per request at `n` calls - the same at `none`) / `n`.
//!
//! Plugin configuration (JSON): `{"call": "property_source", "n": 50}`, optionally
//! `"in": "request" | "response" | "log"` (the callback that makes the calls; `request`, the
//! request-headers callback, by default) and, for `"call": "property"`, `"path": ["a", "b"]`.
//! Calls that need something set up first (a metric defined, shared data or filter state written,
//! the header map read) do that once at configure time or once per request before the loop.
//!
//! Every call goes through the SDK's `Result`-returning `proxy_wasm::hostcalls` functions, as the
//! Kavach filters do. The first request of each VM logs (at info level) what the calls returned,
//! so a run can check that the probe measures the call it names.

use std::cell::Cell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{
    Action, BufferType, Bytes, ContextType, LogLevel, MapType, MetricType, Status,
};

/// The kinds of call the probe repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    None,
    Headers,
    HeaderGet,
    HeaderSet,
    HeaderSetMap,
    Property,
    FilterStateSet,
    FilterStateGet,
    Counter,
    Histogram,
    SharedGet,
    SharedCas,
    Clock,
    LogDebug,
}

/// Which callback makes the calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Request,
    Response,
    Log,
}

const FILTER_STATE: &str = "kavach.probe";
const SHARED_KEY: &str = "kavach.probe.shared";
const HEADER_GET: &str = "x-bench";
const HEADER_SET: &str = "x-probe";
/// About the size of a published Kavach decision.
const FILTER_STATE_VALUE: [u8; 300] = [b'd'; 300];
/// About the size of a rate-limit bucket.
const SHARED_VALUE: [u8; 64] = [b's'; 64];
const MAX_N: u64 = 100_000;

struct Probe {
    call: Call,
    name: String,
    n: u32,
    phase: Phase,
    /// The property read by the `property*` kinds.
    path: Vec<String>,
    /// The counter or histogram defined at configure time.
    metric: u32,
}

impl Probe {
    fn parse(text: &[u8]) -> Result<Probe, String> {
        let json: serde_json::Value = if text.iter().all(u8::is_ascii_whitespace) {
            serde_json::Value::Object(serde_json::Map::new())
        } else {
            serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?
        };
        let obj = json
            .as_object()
            .ok_or("configuration must be a JSON object")?;
        for key in obj.keys() {
            if !matches!(key.as_str(), "call" | "n" | "in" | "path") {
                return Err(format!("unknown field {key:?}"));
            }
        }
        let name = match obj.get("call") {
            None => "none",
            Some(v) => v.as_str().ok_or("call: must be a string")?,
        };
        let n = match obj.get("n") {
            None => 0,
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= MAX_N)
                .ok_or(format!("n: must be an integer from 0 to {MAX_N}"))?,
        };
        let phase = match obj.get("in").map(|v| v.as_str()) {
            None | Some(Some("request")) => Phase::Request,
            Some(Some("response")) => Phase::Response,
            Some(Some("log")) => Phase::Log,
            Some(_) => return Err("in: must be \"request\", \"response\" or \"log\"".into()),
        };
        let late = phase != Phase::Request;
        let fixed = |p: &[&str]| p.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        let (call, path) = match name {
            "none" => (Call::None, vec![]),
            "headers" => (Call::Headers, vec![]),
            "header_get" => (Call::HeaderGet, vec![]),
            "header_set" => (Call::HeaderSet, vec![]),
            "header_set_map" => (Call::HeaderSetMap, vec![]),
            "property_source" => (Call::Property, fixed(&["source", "address"])),
            "property_route" => (Call::Property, fixed(&["xds", "route_name"])),
            "property_cluster" => (Call::Property, fixed(&["xds", "cluster_name"])),
            "property_int" if late => (Call::Property, fixed(&["response", "code"])),
            "property_int" => (Call::Property, fixed(&["request", "time"])),
            "property_absent" => (
                Call::Property,
                fixed(&["connection", "uri_san_peer_certificate"]),
            ),
            "property_node" => (Call::Property, fixed(&["xds", "node", "id"])),
            "property" => {
                let path = obj
                    .get("path")
                    .and_then(|v| v.as_array())
                    .map(|a| a.iter().map(|s| s.as_str().map(str::to_string)).collect::<Option<Vec<_>>>())
                    .and_then(|p| p.filter(|p| !p.is_empty()))
                    .ok_or("path: a non-empty array of strings is required with \"call\": \"property\"")?;
                (Call::Property, path)
            }
            "filter_state_set" => (Call::FilterStateSet, vec![]),
            "filter_state_get" => (Call::FilterStateGet, vec![]),
            "counter" => (Call::Counter, vec![]),
            "histogram" => (Call::Histogram, vec![]),
            "shared_get" => (Call::SharedGet, vec![]),
            "shared_cas" => (Call::SharedCas, vec![]),
            "clock" => (Call::Clock, vec![]),
            "log_debug" => (Call::LogDebug, vec![]),
            other => return Err(format!("call: unknown kind {other:?}")),
        };
        if obj.contains_key("path") && name != "property" {
            return Err("path: only with \"call\": \"property\"".into());
        }
        Ok(Probe {
            call,
            name: name.to_string(),
            n: u32::try_from(n).map_err(|_| "n: too large")?,
            phase,
            path,
            metric: 0,
        })
    }

    /// What needs to exist before any request: metrics and the shared-data entry.
    fn set_up(&mut self) -> Result<(), String> {
        let fail = |what: &str, s: Status| format!("{what}: {s:?}");
        match self.call {
            Call::Counter => {
                self.metric = hostcalls::define_metric(MetricType::Counter, "kavach_probe_calls")
                    .map_err(|s| fail("define_metric", s))?;
            }
            Call::Histogram => {
                self.metric =
                    hostcalls::define_metric(MetricType::Histogram, "kavach_probe_values")
                        .map_err(|s| fail("define_metric", s))?;
            }
            Call::SharedGet | Call::SharedCas => {
                hostcalls::set_shared_data(SHARED_KEY, Some(&SHARED_VALUE), None)
                    .map_err(|s| fail("set_shared_data", s))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Makes the `n` calls; returns what they gave back.
    fn run(&self) -> Outcome {
        let mut out = Outcome::default();
        let n = self.n;
        let request = MapType::HttpRequestHeaders;
        match self.call {
            Call::None => {}
            Call::Headers => (0..n).for_each(|_| out.map(hostcalls::get_map_bytes(request))),
            Call::HeaderGet => {
                (0..n).for_each(|_| out.bytes(hostcalls::get_map_value_bytes(request, HEADER_GET)))
            }
            Call::HeaderSet => (0..n).for_each(|_| {
                out.unit(hostcalls::set_map_value_bytes(
                    request,
                    HEADER_SET,
                    Some(b"1"),
                ))
            }),
            Call::HeaderSetMap => match hostcalls::get_map_bytes(request) {
                Ok(headers) => {
                    let pairs: Vec<(&str, &[u8])> = headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_slice()))
                        .collect();
                    (0..n).for_each(|_| out.unit(hostcalls::set_map_bytes(request, pairs.clone())));
                }
                Err(_) => out.err += 1,
            },
            Call::Property => {
                let path: Vec<&str> = self.path.iter().map(String::as_str).collect();
                (0..n).for_each(|_| out.bytes(hostcalls::get_property(path.clone())));
            }
            Call::FilterStateSet => (0..n).for_each(|_| {
                out.unit(hostcalls::set_property(
                    vec![FILTER_STATE],
                    Some(&FILTER_STATE_VALUE),
                ))
            }),
            Call::FilterStateGet => {
                match hostcalls::set_property(vec![FILTER_STATE], Some(&FILTER_STATE_VALUE)) {
                    Ok(()) => {
                        (0..n).for_each(|_| out.bytes(hostcalls::get_property(vec![FILTER_STATE])))
                    }
                    Err(_) => out.err += 1,
                }
            }
            Call::Counter => {
                (0..n).for_each(|_| out.unit(hostcalls::increment_metric(self.metric, 1)))
            }
            Call::Histogram => {
                (0..n).for_each(|_| out.unit(hostcalls::record_metric(self.metric, 7)))
            }
            Call::SharedGet => (0..n).for_each(|_| match hostcalls::get_shared_data(SHARED_KEY) {
                Ok((value, _)) => out.bytes(Ok(value)),
                Err(s) => out.bytes(Err(s)),
            }),
            Call::SharedCas => (0..n).for_each(|_| match hostcalls::get_shared_data(SHARED_KEY) {
                Ok((value, cas)) => {
                    let value = value.unwrap_or_else(|| SHARED_VALUE.to_vec());
                    out.unit(hostcalls::set_shared_data(SHARED_KEY, Some(&value), cas));
                }
                Err(_) => out.err += 1,
            }),
            Call::Clock => (0..n).for_each(|_| match hostcalls::get_current_time() {
                Ok(t) => {
                    out.some += 1;
                    out.last = t
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as usize);
                }
                Err(_) => out.err += 1,
            }),
            Call::LogDebug => (0..n).for_each(|_| {
                out.unit(hostcalls::log(
                    LogLevel::Debug,
                    "kavach-probe: a debug line Envoy drops at its default level",
                ))
            }),
        }
        out
    }
}

/// What the calls of one request gave back: `some` answered with a value (or succeeded), `none`
/// answered with nothing, `err` failed; `last` is the size of the last value (pairs for a header
/// map, seconds for the clock).
#[derive(Default)]
struct Outcome {
    some: u32,
    none: u32,
    err: u32,
    last: usize,
}

impl Outcome {
    fn bytes(&mut self, r: Result<Option<Bytes>, Status>) {
        match r {
            Ok(Some(b)) => {
                self.some += 1;
                self.last = b.len();
            }
            Ok(None) => self.none += 1,
            Err(_) => self.err += 1,
        }
    }

    fn unit(&mut self, r: Result<(), Status>) {
        match r {
            Ok(()) => self.some += 1,
            Err(_) => self.err += 1,
        }
    }

    fn map(&mut self, r: Result<Vec<(String, Bytes)>, Status>) {
        match r {
            Ok(pairs) => {
                self.some += 1;
                self.last = pairs.len();
            }
            Err(_) => self.err += 1,
        }
    }
}

thread_local! {
    static REPORTED: Cell<bool> = const { Cell::new(false) };
}

/// Makes the calls if this is the configured callback; the first time in a VM, logs the outcome.
fn probe_in(probe: &Probe, phase: Phase) {
    if probe.phase != phase {
        return;
    }
    let out = probe.run();
    if !REPORTED.with(|r| r.replace(true)) {
        let _ = hostcalls::log(
            LogLevel::Info,
            &format!(
                "kavach-probe: call={} n={} in={:?} path={:?}: value={} nothing={} failed={} last={}",
                probe.name, probe.n, probe.phase, probe.path, out.some, out.none, out.err, out.last
            ),
        );
    }
}

struct Root {
    probe: Rc<Probe>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let text = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
            Ok(b) => b.unwrap_or_default(),
            Err(s) => {
                let _ = hostcalls::log(
                    LogLevel::Error,
                    &format!("kavach-probe: no configuration: {s:?}"),
                );
                return false;
            }
        };
        match Probe::parse(&text).and_then(|mut p| p.set_up().map(|()| p)) {
            Ok(p) => {
                self.probe = Rc::new(p);
                true
            }
            Err(e) => {
                let _ = hostcalls::log(
                    LogLevel::Error,
                    &format!("kavach-probe: invalid configuration: {e}"),
                );
                false
            }
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            probe: Rc::clone(&self.probe),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    probe: Rc<Probe>,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        probe_in(&self.probe, Phase::Request);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        probe_in(&self.probe, Phase::Response);
        Action::Continue
    }

    fn on_log(&mut self) {
        probe_in(&self.probe, Phase::Log);
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| {
        Box::new(Root {
            probe: Rc::new(Probe {
                call: Call::None,
                name: "none".to_string(),
                n: 0,
                phase: Phase::Request,
                path: vec![],
                metric: 0,
            }),
        })
    });
}}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kinds_and_phases() {
        let p = Probe::parse(br#"{"call": "property_source", "n": 20}"#).unwrap();
        assert_eq!((p.call, p.n, p.phase), (Call::Property, 20, Phase::Request));
        assert_eq!(p.path, ["source", "address"]);
        let p = Probe::parse(br#"{"call": "property_int", "n": 20, "in": "log"}"#).unwrap();
        assert_eq!(
            (p.phase, p.path.clone()),
            (Phase::Log, vec!["response".to_string(), "code".to_string()])
        );
        let p =
            Probe::parse(br#"{"call": "property", "n": 1, "path": ["request", "id"]}"#).unwrap();
        assert_eq!(p.path, ["request", "id"]);
        let p = Probe::parse(b"").unwrap();
        assert_eq!((p.call, p.n), (Call::None, 0));
    }

    #[test]
    fn refuses_bad_configurations() {
        for bad in [
            &br#"{"call": "nope"}"#[..],
            br#"{"call": "clock", "n": -1}"#,
            br#"{"call": "clock", "n": 1000000}"#,
            br#"{"call": "clock", "in": "body"}"#,
            br#"{"call": "clock", "path": ["a"]}"#,
            br#"{"call": "property"}"#,
            br#"{"call": "clock", "count": 3}"#,
            b"[1]",
            b"{",
        ] {
            assert!(
                Probe::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
