#!/usr/bin/env bash
# Compares two polysocketd builds' resident memory per idle socket on this
# machine, in one invocation: each as a fresh standalone process, in turn
# (ROUNDS times), against one echo server and the same load generator;
# SOCKETS sockets each carry a message both ways, then sit idle
# (`loadgen idle-memory`, as the memory scenario of scripts/bench.sh).
#
#   scripts/ab-idle-memory.sh OLD_POLYSOCKETD [NEW_POLYSOCKETD]
#
# NEW defaults to this checkout's release build; build OLD from another
# commit with e.g. `git worktree add /tmp/old <rev>` and
# `CARGO_TARGET_DIR=target/old cargo build --release -p polysocketd` there.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: scripts/ab-idle-memory.sh OLD_POLYSOCKETD [NEW_POLYSOCKETD]}
new=${2:-target/release/polysocketd}
SOCKETS=${SOCKETS:-10000}
ROUNDS=${ROUNDS:-2}
ulimit -n "$(ulimit -Hn)"
echo "open-file limit: $(ulimit -n); $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"

cargo build --release -q -p polysocket-tests -p polysocket-bench --bins
tokens=$(mktemp)
echo '{"tokens":[{"token":"bench","targets":["ws://127.0.0.1:*/*"],"origins":["*"],"max_connections":1000000}]}' > "$tokens"
# The per-client limits are lifted: every simulated client is 127.0.0.1.
unlimited=(--tokens "$tokens" --allow-private-targets --capacity 1000000 --create-rate-per-ip 0
  --create-rate-per-token 0 --max-polls-per-ip 1000000 --max-sends-per-second 0 --unknown-socket-rate 0)
target/release/echo-upstream 9101 >/dev/null & upstream=$!
trap 'kill $upstream 2>/dev/null || true' EXIT
sleep 0.5

for round in $(seq "$ROUNDS"); do
  for which in old new; do
    bin=$new; [ "$which" = old ] && bin=$old
    # Sockets must outlive the measurement.
    RUST_LOG=error "$bin" --standalone --listen 127.0.0.1:8182 "${unlimited[@]}" --idle-timeout 600s & daemon=$!
    for _ in $(seq 100); do curl -sf http://127.0.0.1:8182/readyz >/dev/null && break; sleep 0.1; done
    echo -n "$which, round $round: "
    target/release/loadgen idle-memory --router 127.0.0.1:8182 --target ws://127.0.0.1:9101/echo --token bench \
      --sockets "$SOCKETS" --pid "$daemon"
    kill "$daemon"; wait "$daemon" 2>/dev/null || true
  done
done
