#!/usr/bin/env bash
# Round-trip benchmark: polysocket against two baselines measured in the
# same run on the same machine: the floor (one plain HTTP request per round
# trip to a minimal actix-web handler) and a direct WebSocket client. The
# same load generator (bench/, release build) and the same upstream echo
# server serve every system. Prints a table and writes bench/results.json.
#
#   scripts/bench.sh                 # 1, 100 and 1000 sockets, 5 s each
#   SOCKETS="1 100" SECONDS_EACH=10 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SOCKETS=${SOCKETS:-"1 100 1000"}
SECONDS_EACH=${SECONDS_EACH:-5}
ulimit -n 65536 2>/dev/null || true

cargo build --release -q -p polysocketd -p polysocket-tests -p polysocket-bench --bins
bin=target/release

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

tokens=$(mktemp)
echo '{"tokens":[{"token":"bench","targets":["ws://127.0.0.1:*/*"],"origins":["*"],"max_connections":100000}]}' > "$tokens"

"$bin/echo-upstream" 9101 >/dev/null & pids+=($!)
# The per-client limits are lifted: every simulated client is 127.0.0.1.
RUST_LOG=warn "$bin/polysocketd" --standalone --listen 127.0.0.1:8181 --tokens "$tokens" --allow-private-targets \
  --capacity 100000 --create-rate-per-ip 0 --create-rate-per-token 0 --max-polls-per-ip 100000 \
  --max-sends-per-second 0 --unknown-socket-rate 0 & pids+=($!)
"$bin/loadgen" serve-floor --listen 127.0.0.1:8191 & pids+=($!)
for url in http://127.0.0.1:8181/readyz http://127.0.0.1:8191/echo?d=x; do
  for _ in $(seq 100); do curl -sf -o /dev/null "$url" && break; sleep 0.1; done
done

results=bench/results.json
: > "$results.tmp"
for n in $SOCKETS; do
  load=(--sockets "$n" --seconds "$SECONDS_EACH")
  "$bin/loadgen" polysocket --router 127.0.0.1:8181 --target ws://127.0.0.1:9101/echo --token bench "${load[@]}" >> "$results.tmp"
  "$bin/loadgen" floor --server 127.0.0.1:8191 "${load[@]}" >> "$results.tmp"
  "$bin/loadgen" websocket --target ws://127.0.0.1:9101/echo "${load[@]}" >> "$results.tmp"
done

python3 - "$results.tmp" "$results" <<'PY'
import json, os, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
machine = {"cores": os.cpu_count(), "command": "scripts/bench.sh", "seconds_each": rows[0]["seconds"] if rows else 0}
json.dump({"machine": machine, "runs": rows}, open(sys.argv[2], "w"), indent=1)
os.remove(sys.argv[1])
by = {(r["system"], r["sockets"]): r for r in rows}
print(f"{'sockets':>7} {'system':>10} {'round trips/s':>14} {'p50 ms':>8} {'p99 ms':>8} {'vs floor':>9} {'errors':>7}")
for n in sorted({r["sockets"] for r in rows}):
    floor = by[("floor", n)]["per_second"]
    for system in ("polysocket", "floor", "websocket"):
        r = by[(system, n)]
        print(f"{n:>7} {system:>10} {r['per_second']:>14.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['per_second'] / floor:>8.2f}x {r['errors']:>7}")
        if r["first_error"]:
            print(f"        first error: {r['first_error']}")
print(f"({machine['cores']} cores; figures in {sys.argv[2]})")
PY
