#!/usr/bin/env bash
# Where a round trip's CPU goes, in numbers that do not depend on what else
# the machine is doing: runs polysocketd --standalone under callgrind, drives
# it with loadgen (one socket: send, then long-poll for the echo), and prints
# the daemon's user-space instructions per round trip and the functions they
# are spent in. The kernel's share (loopback TCP) is not counted; see the
# README's benchmark section for that.
#
#   scripts/profile.sh                     # this tree's daemon
#   DAEMON=/path/to/polysocketd scripts/profile.sh   # another build, for a before/after
#   CLIENT=polysocket-stream scripts/profile.sh      # echoes received on an NDJSON stream
#
# Two runs of different length: their difference is round trips alone,
# without start-up and the create.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "profile.sh needs valgrind (apt-get install valgrind)" >&2; exit 1; }
cargo build --release -q -p polysocketd -p polysocket-tests -p polysocket-bench --bins
bin=target/release
daemon=${DAEMON:-$bin/polysocketd}
out=$(mktemp -d)

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

tokens=$out/tokens.json
echo '{"tokens":[{"token":"bench","targets":["ws://127.0.0.1:*/*"],"origins":["*"],"max_connections":100}]}' > "$tokens"
"$bin/echo-upstream" 9211 >/dev/null & pids+=($!)

# Instructions the daemon executed and round trips loadgen made, for a run
# of $1 seconds.
measure() {
  local callgrind=$out/callgrind.$1
  valgrind --tool=callgrind --callgrind-out-file="$callgrind" "$daemon" --standalone --listen 127.0.0.1:8291 \
    --tokens "$tokens" --allow-private-targets --workers 1 --shutdown-grace 0s --max-sends-per-second 0 \
    --max-polls-per-ip 1000000 2>/dev/null & local pid=$!
  for _ in $(seq 300); do curl -sf -o /dev/null http://127.0.0.1:8291/readyz && break; sleep 0.1; done
  local run
  run=$("$bin/loadgen" "${CLIENT:-polysocket}" --router 127.0.0.1:8291 --target ws://127.0.0.1:9211/echo --token bench \
    --sockets 1 --seconds "$1")
  kill -INT "$pid"; wait "$pid" || true
  local instructions operations
  instructions=$(grep -m1 '^summary:' "$callgrind" | awk '{print $2}')
  operations=$(python3 -c 'import json,sys; r = json.loads(sys.argv[1]); assert r["errors"] == 0, r; print(r["operations"])' "$run")
  echo "$instructions $operations"
}

read -r short_ir short_ops < <(measure 2)
read -r long_ir long_ops < <(measure 6)
python3 - "$short_ir" "$short_ops" "$long_ir" "$long_ops" <<'EOF'
import sys
short_ir, short_ops, long_ir, long_ops = map(int, sys.argv[1:])
per = (long_ir - short_ir) / (long_ops - short_ops)
print(f"{long_ops - short_ops} round trips more in the long run: {per:,.0f} instructions per round trip")
EOF
if [ -n "${KEEP:-}" ]; then cp "$out/callgrind.6" "$KEEP"; fi
echo
echo "Where they go (the long run, self cost, top 20; start-up and the create included):"
callgrind_annotate "$out/callgrind.6" > "$out/annotated" 2>/dev/null
awk '/^ *[0-9,]+ \(/ && !/PROGRAM TOTALS/ && n < 20 { print substr($0, 1, 160); n++ }' "$out/annotated" > "$out/top"
cat "$out/top"
if grep -q memset "$out/top"; then
  echo
  echo "(callgrind counts a 'rep stosb' once per byte, so large memsets are overstated: the"
  echo " README's benchmark section compares them with perf's real-CPU share)"
fi
rm -rf "$out"
