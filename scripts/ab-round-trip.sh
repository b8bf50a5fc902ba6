#!/usr/bin/env bash
# Compares two polysocketd builds' CPU per round trip on this machine, in
# one invocation: both standalone against one echo server, the load
# generator alternating between them (ROUNDS times, at each of SOCKETS),
# CPU time from /proc. For "did this change cost anything", where a
# committed figure from another day or machine cannot tell.
#
#   scripts/ab-round-trip.sh OLD_POLYSOCKETD [NEW_POLYSOCKETD]
#
# NEW defaults to this checkout's release build; build OLD from another
# commit with e.g. `git worktree add /tmp/old <rev>` and
# `CARGO_TARGET_DIR=target/old cargo build --release -p polysocketd` there.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: scripts/ab-round-trip.sh OLD_POLYSOCKETD [NEW_POLYSOCKETD]}
new=${2:-target/release/polysocketd}
SOCKETS=${SOCKETS:-"100 1000"}
ROUNDS=${ROUNDS:-2}
SECONDS_EACH=${SECONDS_EACH:-5}

cargo build --release -q -p polysocket-tests -p polysocket-bench --bins
bin=target/release
tokens=$(mktemp)
echo '{"tokens":[{"token":"bench","targets":["ws://127.0.0.1:*/*"],"origins":["*"],"max_connections":1000000}]}' > "$tokens"
# As scripts/bench.sh: every simulated client is 127.0.0.1, so the
# per-client limits are lifted.
unlimited=(--tokens "$tokens" --allow-private-targets --capacity 100000 --create-rate-per-ip 0
  --create-rate-per-token 0 --max-polls-per-ip 1000000 --max-sends-per-second 0 --unknown-socket-rate 0)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
"$bin/echo-upstream" 9201 >/dev/null & pids+=($!)
RUST_LOG=error "$old" --standalone --listen 127.0.0.1:8301 "${unlimited[@]}" & old_pid=$!; pids+=($old_pid)
RUST_LOG=error "$new" --standalone --listen 127.0.0.1:8302 "${unlimited[@]}" & new_pid=$!; pids+=($new_pid)
for port in 8301 8302; do
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.1; done
done

for round in $(seq "$ROUNDS"); do
  for n in $SOCKETS; do
    for which in old new; do
      if [ "$which" = old ]; then port=8301; pid=$old_pid; else port=8302; pid=$new_pid; fi
      "$bin/loadgen" polysocket --name "$which" --router "127.0.0.1:$port" --target ws://127.0.0.1:9201/echo \
        --token bench --sockets "$n" --seconds "$SECONDS_EACH" --pid "$pid" |
        python3 -c "import json,sys; r=json.load(sys.stdin); print(f\"round $round  {r['system']:>3}  {r['sockets']:>5} sockets  {r['per_second']:8.0f} round trips/s  {r['cpu_us_per_op']:6.1f} us CPU each\")"
    done
  done
done
