#!/usr/bin/env bash
# Usage: scripts/build.sh
#   Builds every filter module (and the bundle, when present) for wasm32-wasip1 in release mode
#   and copies them to dist/ with stable names: dist/kavach-<filter>.wasm.
#   Also builds the native tools (target/release/kavach, target/release/echo-upstream).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Every cdylib crate under filters/ is a module.
mapfile -t MODULES < <(scripts/lib/modules.sh)

PKG_ARGS=()
for m in "${MODULES[@]}"; do PKG_ARGS+=(-p "$m"); done

echo "building ${MODULES[*]} for wasm32-wasip1" >&2
cargo build --release --locked --target wasm32-wasip1 "${PKG_ARGS[@]}"
echo "building native tools" >&2
cargo build --release --locked -p kavach-cli -p kavach-integration --bins

mkdir -p dist
for m in "${MODULES[@]}"; do
  cp "target/wasm32-wasip1/release/${m//-/_}.wasm" "dist/$m.wasm"
  echo "dist/$m.wasm $(wc -c < "dist/$m.wasm") bytes" >&2
done
