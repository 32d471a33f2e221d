#!/usr/bin/env bash
# Usage: [KAVACH_PROFILE_FILTERS=audit,ratelimit] scripts/profile-chain.sh [TOP]
#   Where the bundle's cost per request goes, outside Envoy: runs the benchmark's chain (the five
#   filters with scripts/lib/bench.py's configurations and request) natively through a host that
#   counts its calls (filters/kavach-core/src/profile_tests.rs), and under callgrind twice, with
#   200 and 1200 requests, through a plain host whose own work is next to nothing. Prints the
#   host calls per request (what each costs in Envoy: docs/host-calls.md) and the instructions
#   per request of the TOP (40) costliest functions (inclusive). Instruction counts do not
#   depend on what else the machine is doing. KAVACH_PROFILE_FILTERS keeps only the named filters.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/lib/need.sh
need valgrind:valgrind
bin="$(cargo test --release --locked -p kavach-core --lib --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "kavach_core" and m.get("executable"):
        print(m["executable"])')"
out="$(mktemp -d)"
KAVACH_PROFILE_REQUESTS=1000 "$bin" profile_tests::profile_bench_chain --exact --ignored --nocapture --test-threads=1 \
  | sed -n '/host calls per request/,/in all/p'
# Instructions with a plain host whose own work is next to nothing (the counting host's
# bookkeeping would otherwise be counted with the filters').
for n in 200 1200; do
  KAVACH_PROFILE_REQUESTS=$n valgrind --tool=callgrind --callgrind-out-file="$out/cg.$n" \
    "$bin" profile_tests::profile_bench_chain_plain --exact --ignored --test-threads=1 >/dev/null 2>&1
done
python3 scripts/lib/callgrind-diff.py "$out/cg.200" 200 "$out/cg.1200" 1200 "${1:-40}"
rm -rf "$out"
