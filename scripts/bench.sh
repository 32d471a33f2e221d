#!/usr/bin/env bash
# Usage: scripts/bench.sh [--rounds N] [--seconds S] [--only a,b,...]
#   Measures Envoy with each filter variant against a no-filter baseline in the same run:
#   throughput (wrk), Envoy CPU per request (/proc), latency at a fixed offered load (h2load),
#   RSS, startup time, module sizes; then memory with 2 and 4 workers and under many distinct
#   keys. Writes docs/bench.md (latest results, with this command and the date) and
#   docs/bench.csv. Takes about 15 minutes; run it on an otherwise idle machine.
#   KAVACH_BENCH_BEFORE=<dir of another build's .wasm files> adds that build's modules and bundle
#   as `<variant>@before` rows of the same run (before/after without the noise between runs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

source scripts/lib/need.sh
need wrk:wrk h2load:nghttp2-client taskset:util-linux wasm-opt:binaryen

scripts/build.sh
cargo build --release --locked --target wasm32-wasip1 -p kavach-bench-noop
ENVOY="$(scripts/install-envoy.sh)"
# The bundle once more through binaryen's optimiser, measured as its own variant.
mkdir -p target/bench
wasm-opt -O3 --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int \
  --enable-mutable-globals dist/kavach-bundle.wasm -o target/bench/kavach-bundle.opt.wasm
export KAVACH_BENCH_OPT_BUNDLE="$ROOT/target/bench/kavach-bundle.opt.wasm"

export KAVACH_BENCH_COMMAND="scripts/bench.sh${*:+ $*}"
python3 scripts/lib/bench.py --envoy "$ENVOY" \
  --noop-wasm target/wasm32-wasip1/release/kavach_bench_noop.wasm \
  --out docs/bench "$@"
