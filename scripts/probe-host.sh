#!/usr/bin/env bash
# Usage: scripts/probe-host.sh [--n N] [--rounds R] [--seconds S] [--only kind1,kind2] [--out PATH]
#                              [--check]
#   What one proxy-wasm host call costs in Envoy: runs the probe module (bench/host-probe) with
#   no call and with N calls of one kind per request (default 50), back to back in R rounds
#   (default 3), and divides the difference in Envoy CPU per request by N. Writes
#   docs/host-calls.md (the table, with this command and the date) and docs/host-calls.csv
#   (--out PATH writes PATH.md and PATH.csv instead). --check only runs each kind once and prints
#   what its calls returned. All kinds at the defaults take about 15 minutes; run it on an
#   otherwise idle machine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

source scripts/lib/need.sh
need wrk:wrk taskset:util-linux

cargo build --release --locked --target wasm32-wasip1 -p kavach-bench-probe
ENVOY="$(scripts/install-envoy.sh)"

export KAVACH_PROBE_COMMAND="scripts/probe-host.sh${*:+ $*}"
python3 scripts/lib/probe.py --envoy "$ENVOY" \
  --wasm target/wasm32-wasip1/release/kavach_bench_probe.wasm \
  --out docs/host-calls "$@"
