#!/usr/bin/env bash
# The slow-link benchmark: what a user on a slow or flaky connection sees.
# Five client systems run in headless Chromium without window.WebSocket,
# each through its own server and its own emulated link (a TCP delay proxy
# on loopback, bench/slowlink/link.mjs) to one upstream echo server:
# polysocket.js streaming and JSONP against polysocketd --standalone;
# sockjs-client (xhr-streaming; jsonp-polling) and engine.io-client
# (polling) against the gateways of bench/peers/gateway.js. Scenarios: open,
# round-trip, burst, feed, trickle, outage (bench/slowlink/README.md). Prints a
# table per link and writes bench/slowlink-results.json. Exits non-zero if a
# system failed a scenario (each failure is listed; the others still run).
#
#   scripts/slow-link.sh                        # everything, about 6 minutes
#   SYSTEMS=polysocket-stream SCENARIOS=burst scripts/slow-link.sh
#
# Settings (environment):
#   LINKS       link profiles, RTTms[/RATE(k|m)bit]   default "100ms 300ms/1mbit"
#   SYSTEMS     polysocket-stream polysocket-jsonp sockjs-xhr-streaming
#               sockjs-jsonp-polling engine.io-polling (default: all)
#   SCENARIOS   open round-trip burst feed trickle outage (default: all)
#   SCENARIO_TIMEOUT  seconds a scenario may take before it is reported as
#               timed out (default 60)
#   POLYSOCKETD the daemon binary (default: the release build, built first
#               when missing or when BUILD=1)
#   POLYSOCKET_CLIENT_FROM_DISK  1 (default): pages load client/polysocket.js
#               from this checkout, so a client change shows without a
#               build; 0: the copy compiled into the daemon, through the link
#   CHROMIUM    the browser (default /usr/bin/chromium, installed if missing)
#   OUT         the JSON file (default bench/slowlink-results.json)
#   TRACE=1     print every request each scenario made, with its timing
set -euo pipefail
# Paths given relative to where the script was started from.
[[ -n "${POLYSOCKETD:-}" ]] && POLYSOCKETD=$(realpath -m "$POLYSOCKETD")
[[ -n "${OUT:-}" ]] && export OUT=$(realpath -m "$OUT")
cd "$(dirname "$0")/.."

# shellcheck source=lib/install.sh
source scripts/lib/install.sh

command -v node >/dev/null && command -v npm >/dev/null || { echo "the benchmark needs node and npm" >&2; exit 1; }
if [[ -z "${CHROMIUM:-}" ]]; then
  [ -x /usr/bin/chromium ] || apt_install chromium
fi

if [[ -z "${POLYSOCKETD:-}" ]]; then
  POLYSOCKETD="${CARGO_TARGET_DIR:-target}/release/polysocketd"
  if [[ "${BUILD:-0}" == 1 || ! -x "$POLYSOCKETD" ]]; then
    cargo build --release -q -p polysocketd
  fi
fi
[ -x "$POLYSOCKETD" ] || { echo "POLYSOCKETD=$POLYSOCKETD is not an executable" >&2; exit 1; }

if [[ ! -d bench/slowlink/node_modules || bench/slowlink/package-lock.json -nt bench/slowlink/node_modules/.package-lock.json ]]; then
  echo "== installing the benchmark's npm packages"
  npm --prefix bench/slowlink ci --no-audit --no-fund --loglevel=error
fi

export POLYSOCKETD
export POLYSOCKET_CLIENT_FROM_DISK="${POLYSOCKET_CLIENT_FROM_DISK:-1}"
exec node bench/slowlink/run.mjs
