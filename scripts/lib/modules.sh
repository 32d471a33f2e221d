#!/usr/bin/env bash
# Prints the package name of every wasm module crate (cdylib) under filters/, one per line.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
for manifest in "$ROOT"/filters/*/Cargo.toml; do
  if grep -q 'crate-type = \["cdylib"\]' "$manifest"; then
    sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n1
  fi
done
