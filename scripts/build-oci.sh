#!/usr/bin/env bash
# Usage: scripts/build-oci.sh [TAG]
#   Builds the modules (scripts/build.sh), then an OCI image layout per module (and the bundle) in
#   dist/oci/<module>/, in the "compat" format Istio's WasmPlugin and Envoy Gateway pull: one
#   tar+gzip layer holding plugin.wasm. No container engine needed; the same source gives the same
#   digests. TAG defaults to the workspace version. Push with e.g.
#     skopeo copy oci:dist/oci/kavach-audit:TAG docker://registry.example/kavach/audit:TAG
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TAG="${1:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)}"

scripts/build.sh
mkdir -p dist/oci
for m in $(scripts/lib/modules.sh); do
  target/release/kavach oci "dist/$m.wasm" "dist/oci/$m" "$m" "$TAG"
done
