"""Writes envoy-config/chain.yaml (one module per filter) and envoy-config/chain-bundle.yaml (the
same filters and configurations in the bundled module) from one definition, so the two cannot
drift. Run after changing the demo chain: python3 scripts/lib/gen-chain-configs.py
(scripts/validate-configs.sh fails when the files are not what this writes)."""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]

FILTERS = [
    ("audit", {
        "header_prefix": "x-audit-",
        "utc_offset": "+05:30",
        "return_audit_id": True,
        "query": "redact_values",
    }),
    ("residency", {
        "policy_version": "demo-2026-11-26",
        "mode": "enforce",
        "classes": [
            {"name": "public", "allowed_regions": ["*"]},
            {"name": "pii", "allowed_regions": ["in-west", "in-south"], "action": "deny"},
            {"name": "payment", "allowed_regions": ["in-west", "in-south"], "action": "deny"},
        ],
        "routes": {"payments": {"min_class": "payment"}, "kyc": {"detect_body": True}},
        "body_detection": {"max_body_bytes": 65536,
                           "detectors": {"card": "payment", "aadhaar": "pii", "pan": "pii", "upi_vpa": "payment"}},
    }),
    ("pci_authz", {
        "policy_version": "demo-2026-11-26",
        "mode": "enforce",
        "trust_domain": "bank.local",
        "rules": [
            {"name": "demo-public", "methods": ["GET", "HEAD", "POST"], "paths": ["/demo/**", "/pay/**", "/kyc/**"]},
            {"name": "checkout-read-cards", "principals": ["spiffe://bank.local/ns/payments/sa/checkout"],
             "methods": ["GET"], "paths": ["/v1/cards/*"]},
        ],
    }),
    ("ratelimit", {
        "response_headers": {"ietf": True, "on_allowed": True},
        "rules": [{"name": "per-client", "key": ["client_address"], "limit": 100, "period_s": 60,
                   "burst": 20, "slots": 16384}],
    }),
    ("metrics", {
        "max_total_series": 1500,
        "metrics": [
            {"name": "kavach_requests_total", "type": "counter", "max_series": 1000,
             "labels": [{"source": "route"}, {"source": "method"}, {"source": "status_class"},
                        {"source": "path"}]},
            {"name": "kavach_request_duration_ms", "type": "histogram", "value": "duration_ms",
             "max_series": 200, "labels": [{"source": "route"}, {"source": "status_class"}]},
        ],
    }),
]

MODULE = {"audit": "kavach-audit", "residency": "kavach-residency", "pci_authz": "kavach-pci-authz",
          "ratelimit": "kavach-ratelimit", "metrics": "kavach-metrics"}

# Labels of the metrics and rate-limit counters (see docs/metrics.md and docs/ratelimit.md).
LABEL = r"^wasmcustom\.[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*\.[^.]+)*?(\.{0}\.([^.]+))"
STATS_TAGS = [{"tag_name": t, "regex": LABEL.format(t)} for t in ("route", "method", "status_class", "path")]
STATS_TAGS.append({"tag_name": "rule",
                   "regex": r"^wasmcustom\.kavach_ratelimit_[a-z_]+_total(\.rule\.([A-Za-z0-9_-]+))$"})


def wasm_filter(name, module, config, hold_body):
    return {
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                # Security controls fail closed: a trapped VM is reloaded and the request that
                # hit the fault is refused; FAIL_OPEN would skip the controls.
                "failure_policy": "FAIL_RELOAD",
                # Residency holds the headers while it reads a body (Envoy 1.35+).
                **({"allow_on_headers_stop_iteration": True} if hold_body else {}),
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": json.dumps(config, indent=2) + "\n"},
                "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": f"dist/{module}.wasm"}}},
            },
        },
    }


def bootstrap(http_filters, header):
    router = {"name": "envoy.filters.http.router",
              "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        # The client address the rate limiter keys on is the connection's peer (an edge proxy).
        "use_remote_address": True,
        "normalize_path": True,
        "merge_slashes": True,
        "access_log": [{
            "name": "kavach.audit.records",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": "/dev/stdout",
                "log_format": {"text_format_source": {
                    "inline_string": "%FILTER_STATE(wasm.kavach.audit.record:PLAIN)%\n"}},
            },
        }],
        "route_config": {"virtual_hosts": [{"name": "demo", "domains": ["*"], "routes": [
            {"name": "payments", "match": {"prefix": "/pay"}, "route": {"cluster": "demo_upstream"}},
            {"name": "kyc", "match": {"prefix": "/kyc"}, "route": {"cluster": "demo_upstream"}},
            {"name": "demo", "match": {"prefix": "/"}, "route": {"cluster": "demo_upstream"}},
        ]}]},
        "http_filters": http_filters + [router],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}},
        "node": {"id": "edge-mumbai-1", "cluster": "kavach-demo", "locality": {"region": "in-west"},
                 "metadata": {"region": "in-west"}},
        "stats_config": {"stats_tags": STATS_TAGS},
        "static_resources": {
            "listeners": [{"name": "ingress",
                           "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": hcm}]}]}],
            "clusters": [{
                "name": "demo_upstream", "type": "STATIC", "connect_timeout": "1s",
                # The region the residency filter checks data classes against.
                "metadata": {"filter_metadata": {"kavach": {"region": "in-west"}}},
                "load_assignment": {"cluster_name": "demo_upstream", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 18080}}}}]}]},
            }],
        },
    }


HEADER = """# {title}
# Generated by scripts/lib/gen-chain-configs.py from the same definition as {other}; edit that
# script, not this file. Run from the repository root (wasm paths are relative to it):
#   scripts/build.sh && target/release/echo-upstream &
#   $(scripts/install-envoy.sh) -c envoy-config/{name}
# Filters, in order:
#   audit      strips forged x-audit-* headers, injects its own, records every request (stdout)
#   residency  payment data (route /pay, or a card/UPI id in a /kyc body) and PII (Aadhaar, PAN)
#              may only reach clusters in in-west/in-south; demo_upstream is tagged in-west
#   pci_authz  deny by default: anyone may use /demo, /pay, /kyc; only the checkout workload
#              (SPIFFE ID from its mTLS certificate) may GET /v1/cards/*; all else gets 403
#   ratelimit  100 requests a minute (+20 burst) per client address
#   metrics    kavach_requests_total{{route,method,status_class,path}} on /stats/prometheus
# This file is JSON, which is valid YAML.
"""


def render(bundle):
    hold = True
    if bundle:
        chain = {"chain": [{"filter": n, "config": c} for n, c in FILTERS]}
        filters = [wasm_filter("kavach.bundle", "kavach-bundle", chain, hold)]
        name, other, title = "chain-bundle.yaml", "chain.yaml", \
            "The whole Kavach chain as ONE bundled module: one VM pass per request."
    else:
        filters = [wasm_filter(f"kavach.{n}", MODULE[n], c, n == "residency") for n, c in FILTERS]
        name, other, title = "chain.yaml", "chain-bundle.yaml", \
            "The whole Kavach chain, one module per filter; what scripts/run.sh starts."
    text = HEADER.format(title=title, other=other, name=name) + json.dumps(bootstrap(filters, None), indent=2) + "\n"
    return name, text


def main():
    check = "--check" in sys.argv
    stale = []
    for bundle in (False, True):
        name, text = render(bundle)
        path = ROOT / "envoy-config" / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date (run python3 scripts/lib/gen-chain-configs.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
