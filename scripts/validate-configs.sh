#!/usr/bin/env bash
# Usage: scripts/validate-configs.sh
#   Checks every deployment file under envoy-config/ (build first: scripts/build.sh):
#   - `envoy --mode validate` on each Envoy config (from the repository root, where their relative
#     wasm paths resolve; this also runs each plugin's configure step);
#   - the docker-compose file pins the Envoy version we test with;
#   - every Istio WasmPlugin manifest against Istio's WasmPlugin schema;
#   - every plugin configuration in all of them with `kavach validate` (the filters' own rules);
#   - the JSON Schemas in schemas/ are what the code generates.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ENVOY="${KAVACH_ENVOY:-$(scripts/install-envoy.sh)}"
# The compose file must pin the version the project tests by default (scripts/install-envoy.sh),
# whichever Envoy validates the configs here (scripts/test-matrix.sh runs older ones too).
VERSION="$(sed -n 's/^VERSION="${KAVACH_ENVOY_VERSION:-\(.*\)}"$/\1/p' scripts/install-envoy.sh)"

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
ISTIO_VENV="$ROOT/.tools/istio-models"
if [[ ! -x "$ISTIO_VENV/bin/python" ]] || ! "$ISTIO_VENV/bin/python" -c 'import cloudcoil.models.istio, yaml' 2>/dev/null; then
  python3 -m venv "$ISTIO_VENV"
  "$ISTIO_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "cloudcoil-models-istio==1.24.2.1" "pyyaml==6.0.2" >&2
fi
"$ISTIO_VENV/bin/python" scripts/lib/check-istio.py envoy-config/istio/*.yaml || status=1

target/release/kavach validate envoy-config/*.yaml envoy-config/istio/*.yaml || status=1
target/release/kavach schema --check schemas || status=1
python3 scripts/lib/gen-chain-configs.py --check || status=1
exit $status
