#!/usr/bin/env bash
# Benchmarks polysocket against the gateways a user would deploy instead (a
# SockJS and an Engine.IO gateway relaying to the upstream through `ws`, from
# npm) and against two floors (a minimal actix-web handler, one request per
# operation; a direct WebSocket). One run, one machine, one load generator
# (bench/, release build), one upstream echo server. Prints tables, writes
# bench/results.json and bench/results.svg.
#
#   scripts/bench.sh                       # everything, 5 s per run
#   SOCKETS="1 100" SCENARIOS=round-trip SECONDS_EACH=10 scripts/bench.sh
#
# Scenarios: round-trip (echo at each of $SOCKETS), send (POST /s against the
# floor's POST), memory (daemon RSS per idle socket at 10,000 sockets, each
# having carried a message both ways; and every system's RSS per idle client
# at 3,000, each after a round trip, waiting in a poll),
# create (creates/s: router + Redis + 2 daemons), streaming (round trips and
# upstream pushes at $PUSH_HZ a socket, at each of $STREAM_SOCKETS, over
# polysocket's NDJSON stream, plain and gzipped, and SockJS's xhr_streaming
# and eventsource).
#
# Every single-process system runs with --pid: its CPU time per operation,
# from /proc, is reported beside throughput (cpu_us_per_op), a figure that
# does not depend on sharing the cores with the load generator.
#
# polysocket runs in two shapes, each with the daemon's defaults (one worker
# thread): "polysocket", one standalone process, the quick start; and
# "polysocket-fleet", a router, Redis and a daemon per core, as the fleet is
# deployed to use every core.
set -euo pipefail
cd "$(dirname "$0")/.."

# A gateway or a standalone daemon holds two descriptors per socket (client
# and upstream) in one process, and the hard open-file limit here is 20,000:
# 9,000 is the largest size every system runs; at 10,000 only the fleet,
# whose daemons share the sockets, and the floors do (see `fits`).
SOCKETS=${SOCKETS:-"1 100 1000 9000 10000"}
SECONDS_EACH=${SECONDS_EACH:-5}
SCENARIOS=${SCENARIOS:-"round-trip send memory create streaming"}
STREAM_SOCKETS=${STREAM_SOCKETS:-"100 1000"}
PUSH_HZ=${PUSH_HZ:-50}
IDLE_SOCKETS=${IDLE_SOCKETS:-10000}
POLLING_SOCKETS=${POLLING_SOCKETS:-3000}
ulimit -n "$(ulimit -Hn)"
echo "open-file limit: $(ulimit -n); $(nproc) cores"

command -v node >/dev/null && command -v npm >/dev/null || { echo "the peers need node and npm" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "the create scenario needs redis-server" >&2; exit 1; }

cargo build --release -q -p polysocketd -p router -p polysocket-tests -p polysocket-bench --bins
bin=target/release

# The peers are installed from npm into a scratch folder, never committed.
peers=target/bench-peers
mkdir -p "$peers"
cp bench/peers/package.json bench/peers/package-lock.json bench/peers/gateway.js "$peers/"
(cd "$peers" && npm ci --no-audit --no-fund --silent)

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_for() { for _ in $(seq 100); do curl -sf -o /dev/null "$1" && return; sleep 0.1; done; echo "$1 never answered" >&2; exit 1; }

tokens=$(mktemp)
echo '{"tokens":[{"token":"bench","targets":["ws://127.0.0.1:*/*"],"origins":["*"],"max_connections":1000000}]}' > "$tokens"
# The per-client limits are lifted: every simulated client is 127.0.0.1.
unlimited=(--tokens "$tokens" --allow-private-targets --capacity 1000000 --create-rate-per-ip 0
  --create-rate-per-token 0 --max-polls-per-ip 1000000 --max-sends-per-second 0 --unknown-socket-rate 0)
upstream=ws://127.0.0.1:9101

"$bin/echo-upstream" 9101 >/dev/null & pids+=($!)
RUST_LOG=warn "$bin/polysocketd" --standalone --listen 127.0.0.1:8181 "${unlimited[@]}" & pids+=($!)
standalone=$!
"$bin/loadgen" serve-floor --listen 127.0.0.1:8191 & pids+=($!)
floor=$!
node "$peers/gateway.js" sockjs 8201 "$upstream/echo" >/dev/null & pids+=($!)
sockjs=$!
node "$peers/gateway.js" engine.io 8202 "$upstream/echo" >/dev/null & pids+=($!)
engineio=$!
# A SockJS gateway whose upstream pushes, for the streaming scenario.
node "$peers/gateway.js" sockjs 8203 "$upstream/push?hz=$PUSH_HZ" >/dev/null & pids+=($!)
sockjs_push=$!
wait_for http://127.0.0.1:8181/readyz
wait_for "http://127.0.0.1:8191/echo?d=x"
wait_for http://127.0.0.1:8201/sockjs/info
wait_for http://127.0.0.1:8203/sockjs/info
wait_for "http://127.0.0.1:8202/engine.io/?EIO=4&transport=polling"

# A fleet: Redis on port $1, a router on $2, daemons on the ports after it,
# each started with the remaining arguments. Its processes go into $fleet,
# Redis first.
start_fleet() {
  local redis_port=$1 router_port=$2 daemons=$3; shift 3
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null & fleet=($!)
  local redis=redis://127.0.0.1:$redis_port
  sleep 0.3
  RUST_LOG=warn "$bin/router" --listen "127.0.0.1:$router_port" --redis "$redis" --trusted-proxies 127.0.0.1/32 \
    --tokens "$tokens" --create-rate-per-ip 0 --create-rate-per-token 0 & fleet+=($!)
  for port in $(seq $((router_port + 1)) $((router_port + daemons))); do
    RUST_LOG=warn "$bin/polysocketd" --listen "127.0.0.1:$port" --fqdn "127.0.0.1:$port" --redis "$redis" \
      --allow-private-targets --capacity 1000000 "$@" & fleet+=($!)
    wait_for "http://127.0.0.1:$port/readyz"
  done
  wait_for "http://127.0.0.1:$router_port/readyz"
  pids+=("${fleet[@]}")
}
# Redis last, so that nothing logs its loss.
stop_fleet() {
  kill "${fleet[@]:1}"; wait "${fleet[@]:1}" 2>/dev/null || true
  kill "${fleet[0]}"; wait "${fleet[0]}" 2>/dev/null || true
}

out=bench/results.jsonl
: > "$out"
# A run that fails says so and the others go on.
run() { echo "  loadgen $*" >&2; "$bin/loadgen" "$@" | tee -a "$out" >&2 || echo "  (that run failed)" >&2; }
# Whether one process can hold $1 sockets at two descriptors each; a size
# that does not fit is recorded as not run, with why.
fits() {
  [ $((2 * $2 + 256)) -le "$(ulimit -Hn)" ] && return
  printf '{"system":"%s","scenario":"round-trip","sockets":%s,"failed":"%s"}\n' "$1" "$2" \
    "two descriptors per socket in one process exceed the open-file limit of $(ulimit -Hn)" | tee -a "$out" >&2
  return 1
}
# Gateways keep a session this long after its client stops polling.
let_sessions_expire() { if [ "$1" -ge 1000 ]; then sleep 6; fi; }

for scenario in $SCENARIOS; do
  case $scenario in
  round-trip)
    start_fleet 6392 8186 "$(nproc)" --max-polls-per-ip 1000000 --max-sends-per-second 0 --unknown-socket-rate 0
    for n in $SOCKETS; do
      load=(--sockets "$n" --seconds "$SECONDS_EACH")
      fits polysocket "$n" && run polysocket --router 127.0.0.1:8181 --target "$upstream/echo" --token bench "${load[@]}" \
        --pid "$standalone"
      run polysocket --name polysocket-fleet --router 127.0.0.1:8186 --target "$upstream/echo" --token bench "${load[@]}"
      if fits engine.io "$n"; then
        run engine-io --gateway 127.0.0.1:8202 "${load[@]}" --pid "$engineio"
        let_sessions_expire "$n"
      fi
      for transport in xhr jsonp; do
        fits "sockjs-$transport" "$n" || continue
        run sockjs --gateway 127.0.0.1:8201 --transport "$transport" "${load[@]}" --pid "$sockjs"
        let_sessions_expire "$n"
      done
      run floor --server 127.0.0.1:8191 "${load[@]}" --pid "$floor"
      run websocket --target "$upstream/echo" "${load[@]}"
    done
    stop_fleet
    ;;
  send)
    load=(--sockets 100 --seconds "$SECONDS_EACH")
    run polysocket --send-only --router 127.0.0.1:8181 --target "$upstream/discard" --token bench "${load[@]}"
    run floor --post --server 127.0.0.1:8191 "${load[@]}"
    ;;
  memory)
    # A daemon of its own, so that its baseline is a fresh process.
    # Sockets must outlive the measurement: creating and exercising 10,000
    # takes longer than the default idle timeout.
    RUST_LOG=warn "$bin/polysocketd" --standalone --listen 127.0.0.1:8182 "${unlimited[@]}" --idle-timeout 600s &
    daemon=$!
    wait_for http://127.0.0.1:8182/readyz
    run idle-memory --router 127.0.0.1:8182 --target "$upstream/echo" --token bench --sockets "$IDLE_SOCKETS" --pid "$daemon"
    kill "$daemon"; wait "$daemon" || true
    # Every system the same way, each a fresh process: $POLLING_SOCKETS
    # clients, each after a round trip, waiting in a poll.
    idle=(--sockets "$POLLING_SOCKETS" --idle-memory)
    RUST_LOG=warn "$bin/polysocketd" --standalone --listen 127.0.0.1:8184 "${unlimited[@]}" & daemon=$!
    node "$peers/gateway.js" sockjs 8211 "$upstream/echo" >/dev/null & sockjs_idle=$!
    node "$peers/gateway.js" engine.io 8212 "$upstream/echo" >/dev/null & engineio_idle=$!
    wait_for http://127.0.0.1:8184/readyz
    wait_for http://127.0.0.1:8211/sockjs/info
    wait_for "http://127.0.0.1:8212/engine.io/?EIO=4&transport=polling"
    run polysocket --router 127.0.0.1:8184 --target "$upstream/echo" --token bench "${idle[@]}" --pid "$daemon"
    run sockjs --gateway 127.0.0.1:8211 --transport xhr "${idle[@]}" --pid "$sockjs_idle"
    run engine-io --gateway 127.0.0.1:8212 "${idle[@]}" --pid "$engineio_idle"
    kill "$daemon" "$sockjs_idle" "$engineio_idle"; wait "$daemon" "$sockjs_idle" "$engineio_idle" || true
    # What actix-web alone holds for a client waiting in a request (the
    # floor server runs in loadgen, on the system allocator).
    "$bin/loadgen" serve-floor --listen 127.0.0.1:8192 & floor_idle=$!
    wait_for "http://127.0.0.1:8192/echo?d=up"
    run floor --server 127.0.0.1:8192 "${idle[@]}" --pid "$floor_idle"
    kill "$floor_idle"; wait "$floor_idle" || true
    ;;
  create)
    start_fleet 6391 8183 2
    run creates --router 127.0.0.1:8183 --target "$upstream/echo" --token bench --sockets 64 --seconds "$SECONDS_EACH"
    stop_fleet
    ;;
  streaming)
    for n in $STREAM_SOCKETS; do
      load=(--sockets "$n" --seconds "$SECONDS_EACH")
      ours=(--router 127.0.0.1:8181 --token bench "${load[@]}" --pid "$standalone")
      # The long poll in the same run, for the ratio.
      run polysocket --name polysocket-poll --target "$upstream/echo" "${ours[@]}"
      run polysocket-stream --target "$upstream/echo" "${ours[@]}"
      for transport in xhr-streaming eventsource; do
        run sockjs-stream --gateway 127.0.0.1:8201 --transport "$transport" "${load[@]}" --pid "$sockjs"
        let_sessions_expire "$n"
      done
      run polysocket-stream --push --target "$upstream/push?hz=$PUSH_HZ" "${ours[@]}"
      # The same gzipped: what compression costs per message and per stream.
      run polysocket-stream --push --gzip --target "$upstream/push?hz=$PUSH_HZ" "${ours[@]}"
      for transport in xhr-streaming eventsource; do
        run sockjs-stream --push --gateway 127.0.0.1:8203 --transport "$transport" "${load[@]}" --pid "$sockjs_push"
        let_sessions_expire "$n"
      done
    done
    ;;
  *) echo "unknown scenario $scenario" >&2; exit 64 ;;
  esac
done

python3 bench/report.py "$out" bench/results.json bench/results.svg
rm -f "$out"
