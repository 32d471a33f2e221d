"""What one proxy-wasm host call costs in Envoy. Driven by scripts/probe-host.sh.

The probe module (bench/host-probe) repeats one kind of host call n times per request. For each
kind, Envoy (1 worker, pinned to one core; wrk pinned to the other, as in bench.py) runs the probe
at n=0 (`none`) and at n=N, back to back, in R rounds (which of the two goes first alternates);
Envoy's CPU time per request comes from /proc exactly as in bench.py, and the cost of one call is
(cpu(n=N) - cpu(none)) / N, the median over the rounds. Before measuring, each kind runs once at
log level info so that the probe's own report (what its calls returned) goes into the table: a
call that fails or answers nothing is not the call the row names.
"""

import argparse
import csv
import datetime
import os
import pathlib
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bench  # noqa: E402  (Envoy, wrk, the bootstrap and the request come from the benchmark)

# key: (probe configuration without n, what one call does)
KINDS = {
    "none": ({"call": "none"}, "nothing: the probe's callbacks run and make no host call"),
    "headers": ({"call": "headers"}, "`get_map_bytes`: all request headers"),
    "header_get": ({"call": "header_get"}, "`get_map_value_bytes`: one request header (`x-bench`)"),
    "header_set": ({"call": "header_set"}, "`set_map_value_bytes`: set one request header (`x-probe`)"),
    "header_set_map": ({"call": "header_set_map"},
                       "`set_map_bytes`: replace the whole request header map (read once per request "
                       "before the calls)"),
    "property_source": ({"call": "property_source"}, "`get_property` `source.address`"),
    "property_route": ({"call": "property_route"}, "`get_property` `xds.route_name`"),
    "property_cluster": ({"call": "property_cluster"},
                         "`get_property` `xds.cluster_name` (this kind's route names a cluster; Envoy's "
                         "health-check filter answers instead of the direct response)"),
    "property_int": ({"call": "property_int"}, "`get_property` `request.time` (8-byte integer)"),
    "property_absent": ({"call": "property_absent"},
                        "`get_property` `connection.uri_san_peer_certificate` on plaintext (answers nothing)"),
    "property_node": ({"call": "property_node"}, "`get_property` `xds.node.id`"),
    "filter_state_set": ({"call": "filter_state_set"}, "`set_property` `kavach.probe`, 300 bytes (filter state)"),
    "filter_state_get": ({"call": "filter_state_get"},
                         "`get_property` `kavach.probe`, 300 bytes of filter state (set once per request "
                         "before the calls)"),
    "counter": ({"call": "counter"}, "`increment_metric` on a counter defined at configure time"),
    "histogram": ({"call": "histogram"}, "`record_metric` on a histogram defined at configure time"),
    "shared_get": ({"call": "shared_get"}, "`get_shared_data`, 64 bytes"),
    "shared_cas": ({"call": "shared_cas"},
                   "`get_shared_data` then `set_shared_data` with the CAS token (the pair, 64 bytes)"),
    "clock": ({"call": "clock"}, "`get_current_time`"),
    "log_debug": ({"call": "log_debug"}, "`log` at debug level (dropped by Envoy at its log level)"),
    "property_int@log": ({"call": "property_int", "in": "log"}, "`get_property` `response.code`, in `on_log`"),
}

REPORT = re.compile(r"kavach-probe: call=\S+ n=\d+ in=\w+ path=.*?: "
                    r"value=(\d+) nothing=(\d+) failed=(\d+) last=(\d+)")


# Every run's route has a name (for `xds.route_name`) and answers directly, as in the benchmark.
ROUTE = dict(bench.DIRECT_RESPONSE, name="probe-route")
# `xds.cluster_name` is only set when the route names a cluster: property_cluster's runs (its `none`
# too) route to a cluster that is never connected to, and Envoy's health-check filter, after the
# probe, answers 200 before the router.
CLUSTER = {"name": "probe-upstream", "type": "STATIC", "connect_timeout": "1s",
           "load_assignment": {"cluster_name": "probe-upstream", "endpoints": [{"lb_endpoints": [
               {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9}}}}]}]}}
CLUSTER_ROUTE = {"name": "probe-route", "match": {"prefix": "/"}, "route": {"cluster": "probe-upstream"}}
HEALTH_CHECK = bench.native("envoy.filters.http.health_check",
                            "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck",
                            {"pass_through_mode": False,
                             "headers": [{"name": ":path", "string_match": {"prefix": "/"}}]})


def probe_filter(wasm, kind, n, setup_of=None):
    """The probe running `kind` n times, in the setup of `setup_of` (default: `kind`)."""
    probe = bench.wasm_filter("bench.probe", wasm, dict(KINDS[kind][0], n=n))
    if (setup_of or kind) == "property_cluster":
        return bench.Chain([probe, HEALTH_CHECK], route=CLUSTER_ROUTE, clusters=[CLUSTER])
    return bench.Chain([probe], route=ROUTE)


def check(args, kind, core, tmp):
    """One request at n=N with Envoy at log level info; returns what the probe said its calls
    returned, e.g. "50 ok (15 B)", "50 nothing", "3 failed"."""
    e = bench.Envoy(args.envoy, probe_filter(args.wasm, kind, args.n), 1, core, tmp, log_level="info")
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{e.port}{bench.PATH}", headers=bench.REQUEST_HEADERS)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                status = r.status
        except urllib.error.HTTPError as err:
            status = err.code
        found = None
        for _ in range(50):  # the on_log report comes after the response
            found = REPORT.search((e.dir / "envoy.log").read_text())
            if found:
                break
            time.sleep(0.05)
    finally:
        e.stop()
    if status != 200:
        return f"HTTP {status}"
    if not found:
        return "no report"
    value, nothing, failed, last = (int(x) for x in found.groups())
    if kind == "none":
        return "-"
    parts = []
    if value:
        call = KINDS[kind][0]["call"]
        unit = " headers" if call == "headers" else " B"
        sized = call in ("headers", "header_get", "filter_state_get", "shared_get") or call.startswith("property")
        parts.append(f"{value} ok" + (f" ({last}{unit})" if sized else ""))
    if nothing:
        parts.append(f"{nothing} nothing")
    if failed:
        parts.append(f"{failed} failed")
    return ", ".join(parts)


def cpu_per_request(args, kind, n, setup_of, envoy_core, load_core, tmp):
    """Envoy CPU µs per request under wrk, exactly as bench.py measures it; and wrk's non-2xx count."""
    e = bench.Envoy(args.envoy, probe_filter(args.wasm, kind, n, setup_of), 1, envoy_core, tmp)
    try:
        bench.wrk(e.port, args.warmup, load_core, args.connections)
        t0 = e.cpu_ticks()
        reqs, errs = bench.wrk(e.port, args.seconds, load_core, args.connections)
        t1 = e.cpu_ticks()
    finally:
        e.stop()
    return (t1 - t0) / bench.TICK * 1e6 / max(reqs, 1), errs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--wasm", required=True, help="the built probe module (kavach_bench_probe.wasm)")
    ap.add_argument("--n", type=int, default=50, help="calls per request in the measured runs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5, help="measured seconds per run")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--only", default="", help="comma-separated call kinds (default: all)")
    ap.add_argument("--out", default=str(bench.ROOT / "docs" / "host-calls"),
                    help="output path without extension (.md and .csv are written)")
    ap.add_argument("--check", action="store_true",
                    help="only run each kind once and print what its calls returned")
    args = ap.parse_args()
    if args.n < 1:
        ap.error("--n must be at least 1")

    kinds = [k for k in KINDS if k != "none"]
    if args.only:
        wanted = [k for k in args.only.split(",") if k]
        unknown = [k for k in wanted if k not in KINDS]
        if unknown:
            ap.error(f"unknown call kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
        kinds = [k for k in kinds if k in wanted]
        if not kinds:
            ap.error("--only: name at least one call kind besides none (none is measured with each)")

    cores = os.sched_getaffinity(0)
    envoy_core, load_core = ("0", "1") if len(cores) >= 2 else ("0", "0")
    tmp = tempfile.mkdtemp(prefix="kavach-probe-")
    checks = {k: check(args, k, envoy_core, tmp) for k in ["none"] + kinds}
    for k, c in checks.items():
        print(f"check {k:20s} {c}", file=sys.stderr)
    if args.check:
        shutil.rmtree(tmp, ignore_errors=True)
        return

    floor, per_call, errors = [], {k: [] for k in kinds}, {k: 0 for k in ["none"] + kinds}
    cpu_n = {k: [] for k in kinds}
    for rnd in range(args.rounds):
        for k in kinds if rnd % 2 == 0 else list(reversed(kinds)):
            pair = [("none", 0), (k, args.n)]
            if (rnd + kinds.index(k)) % 2:
                pair.reverse()  # which of the two goes first alternates
            cpu = {}
            for kind, n in pair:
                cpu[kind], errs = cpu_per_request(args, kind, n, k, envoy_core, load_core, tmp)
                errors[k] += errs  # a kind's errors: non-2xx answers in its runs, `none` included
                if kind == "none" and k != "property_cluster":
                    errors["none"] += errs
            if k != "property_cluster":  # the floor is the plain setup's
                floor.append(cpu["none"])
            cpu_n[k].append(cpu[k])
            per_call[k].append((cpu[k] - cpu["none"]) / args.n)
            print(f"round {rnd + 1} {k:20s} none {cpu['none']:6.1f} us/req, n={args.n} {cpu[k]:7.1f} us/req: "
                  f"{per_call[k][-1]:6.3f} us per call", file=sys.stderr)

    med = statistics.median
    header = ["call kind", "what one call does", "us per call", "spread (min-max)", "us/req at n",
              "what the calls returned", "errors"]
    if not floor:
        floor = [float("nan")]
    rows = [["none", KINDS["none"][1] + " (the floor, per request)", f"{med(floor):.1f} us/req",
             f"{min(floor):.1f}-{max(floor):.1f}", "-", checks["none"], str(errors["none"])]]
    for k in kinds:
        v = per_call[k]
        rows.append([k, KINDS[k][1], f"{med(v):.3f}", f"{min(v):.3f}-{max(v):.3f}", f"{med(cpu_n[k]):.1f}",
                     checks[k], str(errors[k])])

    smoke = args.rounds < 3 or args.seconds < 5
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{out}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["call kind", "what one call does", "us per call (median)", "min", "max",
                    "envoy CPU us/req at n (median)", "n", "rounds", "what the calls returned", "errors",
                    "smoke run"])
        smoke_cell = "yes" if smoke else "no"
        w.writerow(["none", KINDS["none"][1], "", "", "", f"{med(floor):.2f}", 0, args.rounds, checks["none"],
                    errors["none"], smoke_cell])
        for k in kinds:
            v = per_call[k]
            w.writerow([k, KINDS[k][1], f"{med(v):.4f}", f"{min(v):.4f}", f"{max(v):.4f}", f"{med(cpu_n[k]):.2f}",
                        args.n, args.rounds, checks[k], errors[k], smoke_cell])

    banner = ""
    if smoke:
        banner = (f"> **Smoke run** ({args.rounds} round(s) of {args.seconds} s): it only shows that the script "
                  "works. These numbers are not measurements; run `scripts/probe-host.sh` with its defaults "
                  "for real ones.\n\n")
    if args.only:
        banner += f"> Partial run: only {', '.join(kinds)}.\n\n"
    command = os.environ.get("KAVACH_PROBE_COMMAND", "scripts/probe-host.sh")
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    text = f"""# Host-call costs

{banner}Generated by `{command}`
on {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; {os.cpu_count()} cores ({bench.cpu_model()}); Envoy {bench.envoy_version(args.envoy)}.
Interpretation: [performance.md](performance.md).

What one call from a wasm filter back into Envoy costs, in Envoy CPU time. The probe module
(`bench/host-probe`) repeats one kind of call {args.n} times per request (in the request-headers
callback unless the kind says otherwise). For each kind, the same Envoy as in the benchmark
([bench.md](bench.md): 1 worker pinned to one core, wrk with {args.connections} connections pinned to the
other, a direct response) runs the probe with no call (`none`) and with {args.n} calls, back to back, in
{args.rounds} round(s) of {args.warmup} s warm-up and {args.seconds} s measured; Envoy's CPU time per request comes from
/proc. `us per call` is (CPU per request with {args.n} calls - CPU per request with none) / {args.n}, the
median over the rounds, with the lowest and highest round beside it. `none` is the floor: the
probe's callbacks entered on every request with no host call, in µs per request. Set-up calls
made once per request before the loop (`header_set_map`, `filter_state_get`) are included,
divided by {args.n}. `what the calls returned` is the probe's own report of one request at log level
info ("ok": a value or success, with the size of the last value; "nothing": no value).

"""
    text += "\n".join(md) + "\n"
    pathlib.Path(f"{out}.md").write_text(text)
    print(text)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
