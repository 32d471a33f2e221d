#!/usr/bin/env bash
# Usage: scripts/run.sh
#   Builds the filters, then starts the demo upstream on 127.0.0.1:18080 and Envoy on
#   127.0.0.1:10000 with the whole Kavach chain (envoy-config/chain.yaml) in front of it.
#   Ctrl-C stops both. Envoy's log: .run/envoy.log; audit records: .run/audit.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/build.sh
ENVOY="$(scripts/install-envoy.sh)"
RUN="$ROOT/.run"
mkdir -p "$RUN"

PIDS=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "stopping..." >&2
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

target/release/echo-upstream 127.0.0.1:18080 demo >"$RUN/upstream.log" 2>&1 &
PIDS+=($!)
"$ENVOY" -c envoy-config/chain.yaml --concurrency 2 --file-flush-interval-msec 500 >"$RUN/audit.log" 2>"$RUN/envoy.log" &
PIDS+=($!)

for _ in $(seq 1 100); do
  if curl -fs http://127.0.0.1:9901/ready >/dev/null 2>&1; then break; fi
  if ! kill -0 "${PIDS[1]}" 2>/dev/null; then
    echo "Envoy exited; its log:" >&2; tail -n 30 "$RUN/envoy.log" >&2; exit 1
  fi
  sleep 0.1
done

cat <<'MSG'

Kavach is running: Envoy on http://127.0.0.1:10000 -> demo upstream on 127.0.0.1:18080.

  curl -si localhost:10000/demo/hello -H 'x-audit-id: forged'   # forged header replaced; RateLimit fields
  curl -si localhost:10000/v1/cards/1                             # 403: no verified SPIFFE identity
  curl -si localhost:10000/kyc/submit -d '{"card":"4111 1111 1111 1111"}'  # payment data, in-region: allowed
  tail -f .run/audit.log                                          # one chained audit record per request
  target/release/kavach verify .run/audit.log                     # verify the chains
  curl -s localhost:9901/stats/prometheus | grep ^kavach_         # bounded metrics, real labels

Ctrl-C stops everything.
MSG
wait
