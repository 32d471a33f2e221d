"""Kavach benchmark: Envoy with each filter variant, measured as ratios to a baseline of the same
round. Driven by scripts/bench.sh; see docs/bench.md for what is measured and how.

Every variant is the same Envoy (1 worker, pinned to one core) answering a direct response, with
a different HTTP filter chain in front of the router. wrk (pinned to the other core) measures
throughput; h2load at a fixed rate below saturation gives the latency distribution; Envoy's CPU
time comes from /proc, so the load generator's share is excluded.
"""

import argparse
import csv
import datetime
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIST = ROOT / "dist"
TICK = os.sysconf("SC_CLK_TCK")

WASM = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}

# Realistic configurations, one per Kavach filter (the same JSON as each module's plugin config).
PCI_POLICY = {
    "policy_version": "bench-2026-11-26",
    "trust_domain": "bank.local",
    "rules": [
        {"name": f"svc-{i}", "principals": [f"spiffe://bank.local/ns/team{i}/sa/api"],
         "methods": ["GET", "POST"], "paths": [f"/v1/team{i}/**"]}
        for i in range(20)
    ] + [
        {"name": "cards-read", "methods": ["GET"], "paths": ["/v1/cards/*"],
         "headers": [{"name": "x-tenant", "regex": "^[a-z]+$"}]},
    ],
}
CONFIGS = {
    "audit": {"utc_offset": "+05:30", "return_audit_id": True, "query": "redact_values"},
    "pci_authz": PCI_POLICY,
    "residency": {"policy_version": "bench-2026-11-26", "classes": [
        {"name": "public", "allowed_regions": ["*"]},
        {"name": "pii", "allowed_regions": ["in-west", "in-south"], "action": "deny"},
        {"name": "payment", "allowed_regions": ["in-west", "in-south"], "action": "deny"}],
        "routes": {"payments": {"min_class": "payment"}}},
    # A limit the benchmark never reaches: every request pays for the bucket update.
    "ratelimit": {"response_headers": {"ietf": True, "on_allowed": True},
                  "rules": [{"name": "per-client", "key": ["client_address"], "limit": 1000000000,
                             "period_s": 1, "slots": 65536}]},
    "metrics": {"max_total_series": 1500, "metrics": [
        {"name": "kavach_requests_total", "type": "counter", "max_series": 1000,
         "labels": [{"source": "route"}, {"source": "method"}, {"source": "status_class"},
                    {"source": "path"}]},
        {"name": "kavach_request_duration_ms", "type": "histogram", "value": "duration_ms",
         "max_series": 200, "labels": [{"source": "route"}, {"source": "status_class"}]}]},
}
MODULE = {"audit": "kavach-audit", "pci_authz": "kavach-pci-authz", "residency": "kavach-residency",
          "ratelimit": "kavach-ratelimit", "metrics": "kavach-metrics"}
CHAIN_ORDER = ["audit", "residency", "pci_authz", "ratelimit", "metrics"]

REQUEST_HEADERS = {"x-tenant": "acme", "x-bench": "1", "user-agent": "kavach-bench"}
PATH = "/v1/cards/4242"


def wasm_filter(name, module_file, config):
    return {"name": name, "typed_config": {"@type": WASM, "config": {
        "name": name, "root_id": name, "failure_policy": "FAIL_RELOAD",
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": json.dumps(config)},
        "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                      "code": {"local": {"filename": str(module_file)}}}}}}


def kavach(filter_name):
    return wasm_filter(f"kavach.{filter_name}", DIST / f"{MODULE[filter_name]}.wasm", CONFIGS[filter_name])


def available_filters():
    return [f for f in CHAIN_ORDER if f in CONFIGS and (DIST / f"{MODULE[f]}.wasm").exists()]


def native(name, type_url, config):
    return {"name": name, "typed_config": {"@type": type_url, **config}}


class Chain(list):
    """A variant's HTTP filters, with the JSON format of a file access log the variant adds to the
    HTTP connection manager (None: no access log beyond the one the audit filter needs), and
    optionally its own route (instead of the direct response) and static clusters."""

    def __init__(self, filters, access_log_format=None, route=None, clusters=()):
        super().__init__(filters)
        self.access_log_format = access_log_format
        self.route = route
        self.clusters = list(clusters)


# What a native or Lua setup would log per request to stand in for Kavach's audit record.
AUDIT_LOG_FORMAT = {
    "start_time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "audit_id": "%REQ(X-AUDIT-ID)%",
    "audit_timestamp": "%REQ(X-AUDIT-TIMESTAMP)%",
    "audit_source": "%REQ(X-AUDIT-SOURCE)%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "response_code": "%RESPONSE_CODE%",
    "duration_ms": "%DURATION%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "peer_uri_san": "%DOWNSTREAM_PEER_URI_SAN%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "route_name": "%ROUTE_NAME%",
}

# The Lua equivalent of native-chain's three filters in one script: RBAC's policy (path prefix and
# principal), a per-client-address request count in a table reset every second as a crude rate
# limit, and the three audit headers.
LUA_CHAIN = """
local RULES = {}
for i = 0, 19 do
  RULES[#RULES + 1] = {"/v1/team" .. i .. "/", "spiffe://bank.local/ns/team" .. i .. "/sa/api"}
end
RULES[#RULES + 1] = {"/v1/cards/", nil}
local LIMIT = 1000000000
local window, counts = 0, {}

local function principal(h)
  local ssl = h:streamInfo():downstreamSslConnection()
  if ssl == nil then return false end
  local sans = ssl:uriSanPeerCertificate()
  return sans and sans[1] or false
end

function envoy_on_request(h)
  local headers = h:headers()
  local path = headers:get(":path") or ""
  local allowed, who = false, nil
  for _, rule in ipairs(RULES) do
    local prefix = rule[1]
    if path:sub(1, #prefix) == prefix then
      if rule[2] == nil then allowed = true break end
      if who == nil then who = principal(h) end
      if who == rule[2] then allowed = true break end
    end
  end
  if not allowed then
    h:respond({[":status"] = "403"}, "RBAC: access denied")
    return
  end
  local source = h:streamInfo():downstreamRemoteAddress()
  local client = source:match("^(.*):%d+$") or source
  local ms = h:timestamp()
  local second = math.floor(ms / 1000)
  if second ~= window then window, counts = second, {} end
  local n = (counts[client] or 0) + 1
  counts[client] = n
  if n > LIMIT then
    h:respond({[":status"] = "429"}, "local_rate_limited")
    return
  end
  headers:replace("x-audit-id", headers:get("x-request-id") or "")
  headers:replace("x-audit-timestamp", os.date("!%Y-%m-%dT%H:%M:%S", second) .. string.format(".%03dZ", ms % 1000))
  headers:replace("x-audit-source", source)
end
"""


def variants(noop_wasm):
    chain = available_filters()
    v = {
        "baseline": [],
        "wasm-floor": [wasm_filter("bench.noop", noop_wasm, {})],
    }
    for f in chain:
        v[f"kavach-{f}"] = [kavach(f)]
    v["chain-modules"] = [kavach(f) for f in chain]
    v["chain-bundle"] = [wasm_filter("kavach.bundle", DIST / "kavach-bundle.wasm",
                                     {"chain": [{"filter": f, "config": CONFIGS[f]} for f in chain]})]
    opt = os.environ.get("KAVACH_BENCH_OPT_BUNDLE")
    if opt and pathlib.Path(opt).exists():
        # The same bundle after `wasm-opt -O3`: does the post-link optimiser buy speed or size?
        v["chain-bundle-wasm-opt"] = [wasm_filter("kavach.bundle", opt,
                                                  {"chain": [{"filter": f, "config": CONFIGS[f]} for f in chain]})]
    before = os.environ.get("KAVACH_BENCH_BEFORE")
    if before and pathlib.Path(before).is_dir():
        # Modules of another build (e.g. the previous commit's target/wasm32-wasip1/release),
        # measured in the same run as `<variant>@before`: a before/after that the noise between
        # runs cannot blur.
        old = pathlib.Path(before)
        for f in chain:
            wasm = old / f"{MODULE[f].replace('-', '_')}.wasm"
            if wasm.exists():
                v[f"kavach-{f}@before"] = [wasm_filter(f"kavach.{f}", wasm, CONFIGS[f])]
        if (old / "kavach_bundle.wasm").exists():
            v["chain-bundle@before"] = [wasm_filter("kavach.bundle", old / "kavach_bundle.wasm",
                                                    {"chain": [{"filter": f, "config": CONFIGS[f]} for f in chain]})]
    rbac = native("envoy.filters.http.rbac",
                  "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                  {"rules": {"action": "ALLOW", "policies": {
                      f"p{i}": {"permissions": [{"url_path": {"path": {"prefix": f"/v1/team{i}/"}}}],
                                "principals": [{"authenticated": {"principal_name": {
                                    "exact": f"spiffe://bank.local/ns/team{i}/sa/api"}}}]}
                      for i in range(20)} | {"cards": {
                          "permissions": [{"url_path": {"path": {"prefix": "/v1/cards/"}}}],
                          "principals": [{"any": True}]}}}})
    local_ratelimit = native("envoy.filters.http.local_ratelimit",
                             "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                             {"stat_prefix": "bench",
                              "token_bucket": {"max_tokens": 100000000, "tokens_per_fill": 100000000,
                                               "fill_interval": "1s"},
                              "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
                              "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}})
    v["native-rbac"] = [rbac]
    v["native-local-ratelimit"] = [local_ratelimit]
    v["native-header-mutation"] = [native("envoy.filters.http.header_mutation",
                                          "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                                          {"mutations": {"request_mutations": [{"append": {
                                              "header": {"key": "x-noop", "value": "1"},
                                              "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}]}})]
    v["lua"] = [native("envoy.filters.http.lua",
                       "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                       {"default_source_code": {"inline_string":
                           "function envoy_on_request(h)\n"
                           "  local seen = h:headers():get('x-bench')\n"
                           "  h:headers():replace('x-noop', seen and '1' or '0')\nend\n"}})]
    # The closest native setup to Kavach's controls: RBAC, a local rate limit, audit headers and a
    # JSON access log of every request; then the same in one Lua filter with the same access log.
    audit_headers = native("envoy.filters.http.header_mutation",
                           "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                           {"mutations": {"request_mutations": [
                               {"append": {"header": {"key": key, "value": value},
                                           "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}
                               for key, value in (("x-audit-id", "%REQ(x-request-id)%"),
                                                  ("x-audit-timestamp", "%START_TIME%"),
                                                  ("x-audit-source", "%DOWNSTREAM_REMOTE_ADDRESS%"))]}})
    v["native-chain"] = Chain([rbac, local_ratelimit, audit_headers], AUDIT_LOG_FORMAT)
    v["lua-chain"] = Chain([native("envoy.filters.http.lua",
                                   "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                                   {"default_source_code": {"inline_string": LUA_CHAIN}})], AUDIT_LOG_FORMAT)
    return v


DIRECT_RESPONSE = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}


def bootstrap(http_filters, admin_port, port, access_log, log_format=None, route=None, clusters=()):
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": "bench",
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
               route or DIRECT_RESPONSE]}]},
           "http_filters": http_filters + [ROUTER]}
    if access_log:
        hcm["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": access_log,
            "log_format": log_format or {"text_format_source": {
                "inline_string": "%FILTER_STATE(wasm.kavach.audit.record:PLAIN)%\n"}}}}]
    return {"node": {"id": "bench", "cluster": "bench", "metadata": {"region": "in-west"}},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
            "static_resources": {"clusters": list(clusters), "listeners": [{"name": "bench", "address": {
                "socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}]}}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Envoy:
    def __init__(self, envoy_bin, filters, workers, core, tmp, log_level="error"):
        self.admin, self.port = free_port(), free_port()
        self.dir = pathlib.Path(tempfile.mkdtemp(dir=tmp))
        log = self.dir / "audit.log"
        cfg = self.dir / "envoy.json"
        uses_audit = any("kavach.audit" in json.dumps(f) or "kavach.bundle" in f["name"] for f in filters)
        json_format = getattr(filters, "access_log_format", None)
        self.access_log = log if uses_audit or json_format else None
        cfg.write_text(json.dumps(bootstrap(list(filters), self.admin, self.port,
                                            str(log) if self.access_log else None,
                                            {"json_format": json_format} if json_format else None,
                                            getattr(filters, "route", None), getattr(filters, "clusters", ()))))
        cmd = ["taskset", "-c", core, envoy_bin, "-c", str(cfg), "--concurrency", str(workers),
               "--disable-hot-restart", "-l", log_level]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.dir / "envoy.log", "w"))
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited: {(self.dir / 'envoy.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.02)
        self.startup_s = time.monotonic() - t0

    def cpu_ticks(self):
        fields = pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    def rss_kib(self):
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def envoy_version(envoy_bin):
    out = subprocess.run([envoy_bin, "--version"], capture_output=True, text=True).stdout.strip()
    return out.split("version: ")[-1]


def cpu_model():
    return next((l.split(":", 1)[1].strip() for l in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                 if l.startswith("model name")), "unknown CPU")


def header_args(flag):
    args = []
    for k, v in REQUEST_HEADERS.items():
        args += [flag, f"{k}: {v}"]
    return args


def wrk(port, seconds, core, conns, script=None):
    cmd = ["taskset", "-c", core, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency"]
    cmd += header_args("-H")
    if script:
        cmd += ["-s", str(script)]
    cmd.append(f"http://127.0.0.1:{port}{PATH}")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return requests, int(non2xx.group(1)) if non2xx else 0


def latency(port, rate, seconds, core, tmp):
    """p50/p99 in microseconds at a fixed offered load (h2load --rps over HTTP/1.1), and the number
    of requests h2load logged."""
    clients = 4
    log = pathlib.Path(tmp) / f"h2load-{port}.log"
    n = rate * seconds
    cmd = ["taskset", "-c", core, "h2load", "--h1", "-c", str(clients), "-m", "1",
           "--rps", str(rate // clients), "-n", str(n), "--log-file", str(log)]
    cmd += header_args("-H")
    cmd.append(f"http://127.0.0.1:{port}{PATH}")
    subprocess.run(cmd, capture_output=True, text=True, check=True)
    times = sorted(int(line.split()[2]) for line in log.read_text().splitlines() if line.strip())
    log.unlink()
    if not times:
        return None, None, 0
    return times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))], len(times)


WRK_UNIQUE = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", string.format("{path}", counter), {{["{header}"] = string.format("{value}", counter), ["x-bench"] = "1"}})
end
"""


def flood(envoy, total, core, tmp, path, header, value):
    """Sends `total` requests with distinct keys; returns VmRSS (KiB) samples at each quarter."""
    script = pathlib.Path(tmp) / "unique.lua"
    script.write_text(WRK_UNIQUE.format(path=path, header=header, value=value))
    samples = [envoy.rss_kib()]
    sent = 0
    quarter = total // 4
    while sent < total:
        # wrk stops at a time, not a count: run in slices and count what was sent.
        script.write_text(WRK_UNIQUE.format(path=path.replace("%d", f"{sent}-%d"), header=header,
                                            value=value.replace("%d", f"{sent}-%d")))
        reqs, _ = wrk(envoy.port, 2, core, 16, script)
        sent += reqs
        if sent >= quarter * len(samples):
            samples.append(envoy.rss_kib())
    return sent, samples


def memory(args, all_variants, envoy_core, load_core, tmp):
    rows = []
    # RSS with 1, 2 and 4 workers: the floor, the chain as modules and as the bundle.
    for name in ("wasm-floor", "chain-modules", "chain-bundle"):
        for workers in (1, 2, 4):
            e = Envoy(args.envoy, all_variants[name], workers, envoy_core, tmp)
            try:
                idle = e.rss_kib()
                wrk(e.port, 5, load_core, 32)
                rows.append((f"{name}, {workers} worker(s)", f"{idle / 1024:.1f}", f"{e.rss_kib() / 1024:.1f}", "-"))
            finally:
                e.stop()
    # The rate-limit table under a million distinct clients, the metrics filter under 100k paths.
    floods = []
    if "ratelimit" in available_filters():
        rl = dict(CONFIGS["ratelimit"])
        rl["rules"] = [{"name": "per-key", "key": [{"header": "x-client"}], "limit": 1000000000,
                        "period_s": 1, "slots": 65536}]
        floods.append(("ratelimit, 10^6 distinct keys", wasm_filter("kavach.ratelimit", DIST / "kavach-ratelimit.wasm", rl),
                       args.flood_keys, "/v1/cards/1", "x-client", "client-%d"))
    if "metrics" in available_filters():
        floods.append(("metrics, 10^5 distinct paths", kavach("metrics"), args.flood_paths,
                       "/v1/items/item-%d", "x-tenant", "t-%d"))
    for label, filt, total, path, header, value in floods:
        e = Envoy(args.envoy, [filt], 1, envoy_core, tmp)
        try:
            wrk(e.port, 2, load_core, 16)
            sent, samples = flood(e, total, load_core, tmp, path, header, value)
            rows.append((f"{label} (sent {sent})", f"{samples[0] / 1024:.1f}", f"{samples[-1] / 1024:.1f}",
                         " → ".join(f"{x / 1024:.1f}" for x in samples)))
        finally:
            e.stop()
    md = ["| run | RSS before MiB | RSS after MiB | RSS at each quarter MiB |", "|---|---|---|---|"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(md) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--noop-wasm", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rate", type=int, default=2000, help="offered load for the latency runs (req/s)")
    ap.add_argument("--only", default="", help="comma-separated variant names")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench"))
    ap.add_argument("--flood-keys", type=int, default=1_000_000)
    ap.add_argument("--flood-paths", type=int, default=100_000)
    ap.add_argument("--no-memory", action="store_true", help="skip the memory runs")
    args = ap.parse_args()

    cores = os.sched_getaffinity(0)
    envoy_core, load_core = ("0", "1") if len(cores) >= 2 else ("0", "0")
    tmp = tempfile.mkdtemp(prefix="kavach-bench-")
    all_variants = variants(args.noop_wasm)
    names = [n for n in all_variants if not args.only or n in args.only.split(",")]
    if "baseline" not in names:
        names.insert(0, "baseline")
    rows = {n: {"rps": [], "ratio": [], "cpu_us": [], "cpu_rate_us": [], "startup_s": [], "rss_kib": [],
                "p50": [], "p99": [], "errors": 0} for n in names}
    for rnd in range(args.rounds):
        order = names if rnd % 2 == 0 else list(reversed(names))  # interleave, alternate direction
        base_rps = None
        for name in order:
            e = Envoy(args.envoy, all_variants[name], 1, envoy_core, tmp)
            try:
                wrk(e.port, args.warmup, load_core, args.connections)
                t0 = e.cpu_ticks()
                reqs, errs = wrk(e.port, args.seconds, load_core, args.connections)
                t1 = e.cpu_ticks()
                # Envoy's CPU per request at the fixed rate too: ticks are 10 ms, so over the whole
                # run (5 s, 10 000 requests at 2000 req/s: one tick is 1 us per request).
                p50, p99, done = latency(e.port, args.rate, 5, load_core, tmp)
                t2 = e.cpu_ticks()
                r = rows[name]
                r["rps"].append(reqs / args.seconds)
                r["cpu_us"].append((t1 - t0) / TICK * 1e6 / max(reqs, 1))
                if done:
                    r["cpu_rate_us"].append((t2 - t1) / TICK * 1e6 / done)
                r["startup_s"].append(e.startup_s)
                r["rss_kib"].append(e.rss_kib())
                r["errors"] += errs
                if p50 is not None:
                    r["p50"].append(p50)
                    r["p99"].append(p99)
                print(f"round {rnd + 1} {name:24s} {reqs / args.seconds:9.0f} req/s "
                      f"{r['cpu_us'][-1]:6.1f} us/req p50 {p50} p99 {p99} us"
                      + (f" {r['cpu_rate_us'][-1]:6.1f} us/req at rate" if done else ""), file=sys.stderr)
            finally:
                e.stop()
        # Ratios against this round's baseline.
        base_rps = rows["baseline"]["rps"][-1]
        for name in names:
            rows[name]["ratio"].append(rows[name]["rps"][-1] / base_rps)

    sizes = {p.stem: p.stat().st_size for p in DIST.glob("*.wasm")}
    sizes["kavach-bench-noop"] = pathlib.Path(args.noop_wasm).stat().st_size
    if os.environ.get("KAVACH_BENCH_OPT_BUNDLE"):
        sizes["kavach-bundle.opt"] = pathlib.Path(os.environ["KAVACH_BENCH_OPT_BUNDLE"]).stat().st_size
    wasm_of = {"wasm-floor": "kavach-bench-noop", "chain-bundle": "kavach-bundle",
               "chain-bundle-wasm-opt": "kavach-bundle.opt"}
    for f in CHAIN_ORDER:
        wasm_of[f"kavach-{f}"] = MODULE[f]

    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    med = statistics.median
    header = ["variant", "req/s", "ratio", "envoy CPU us/req", "added us/req", "p50 us", "p99 us",
              "CPU us/req at rate", "RSS MiB", "startup s", "wasm KiB", "errors"]
    base_cpu = med(rows["baseline"]["cpu_us"])
    table = []
    for name in names:
        r = rows[name]
        size = sizes.get(wasm_of.get(name, ""), None)
        if name == "chain-modules":
            size = sum(sizes.get(MODULE[f], 0) for f in available_filters())
        table.append([name, f"{med(r['rps']):.0f}", f"{med(r['ratio']):.2f}", f"{med(r['cpu_us']):.1f}",
                      f"{med(r['cpu_us']) - base_cpu:+.1f}",
                      f"{med(r['p50']):.0f}" if r["p50"] else "-", f"{med(r['p99']):.0f}" if r["p99"] else "-",
                      f"{med(r['cpu_rate_us']):.1f}" if r["cpu_rate_us"] else "-",
                      f"{med(r['rss_kib']) / 1024:.1f}", f"{med(r['startup_s']):.2f}",
                      f"{size / 1024:.0f}" if size else "-", str(r["errors"])])
    with open(f"{out}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(table)
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(row) + " |" for row in table]
    header_text = f"""# Benchmark results

Generated by `{os.environ.get('KAVACH_BENCH_COMMAND', 'scripts/bench.sh')}`
on {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; {os.cpu_count()} cores ({cpu_model()}); {envoy_version(args.envoy)}.
Interpretation: [performance.md](performance.md).

Every variant is the same Envoy (1 worker, pinned to one core; wrk with {args.connections} connections pinned
to the other) answering a direct response, with a different HTTP filter chain in front of the
router; {args.rounds} interleaved rounds (the order reverses every round), {args.warmup} s warm-up and {args.seconds} s
measured per variant and round; medians reported. `ratio` is req/s over the same round's
baseline; `envoy CPU us/req` is Envoy's own CPU time (from /proc, so the load generator's share
is excluded) per request, `added` its difference to the baseline; p50/p99 are measured by
h2load at a fixed {args.rate} req/s (below saturation for every variant), and `CPU us/req at rate`
is Envoy's CPU time per request during that fixed-rate run (over the whole run: /proc counts in
10 ms ticks); RSS after the load. `native-chain` is Envoy's RBAC, local_ratelimit and
header_mutation (three audit headers) with a JSON file access log of every request;
`lua-chain` is the same access log and one Lua filter doing that work.

"""
    text = header_text + "\n".join(md) + "\n"
    if not args.no_memory:
        mem = memory(args, all_variants, envoy_core, load_core, tmp)
        text += "\nMemory:\n\n" + mem
    pathlib.Path(f"{out}.md").write_text(text)
    print(text)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
