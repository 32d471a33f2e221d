#!/usr/bin/env bash
# Usage: scripts/validate-configs.sh
#   Runs `envoy --mode validate` on every Envoy config under envoy-config/ (from the repository
#   root, where their relative wasm paths resolve; build the modules first), and checks that the
#   docker-compose file uses the Envoy version we test with.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ENVOY="${KAVACH_ENVOY:-$(scripts/install-envoy.sh)}"
VERSION="$("$ENVOY" --version | sed -n 's#.*/\([0-9][0-9.]*\)/.*#\1#p')"

status=0
for config in envoy-config/*.yaml; do
  case "$config" in *docker-compose*) continue ;; esac
  if out="$("$ENVOY" --mode validate -c "$config" -l error 2>&1)"; then
    echo "ok       $config"
  else
    echo "INVALID  $config"; echo "$out" | tail -n 20; status=1
  fi
done

compose=envoy-config/docker-compose.yaml
if grep -q "image: envoyproxy/envoy:v$VERSION\$" "$compose"; then
  echo "ok       $compose (envoyproxy/envoy:v$VERSION)"
else
  echo "MISMATCH $compose does not pin envoyproxy/envoy:v$VERSION"; status=1
fi
exit $status
