#!/usr/bin/env bash
# Runs a local fleet on loopback: one Redis, two routers, three daemons with
# *.localhost names (curl and browsers resolve them to 127.0.0.1), plus an
# upstream echo server to talk to. Ctrl-C stops everything.
#
#   scripts/fleet.sh            # ports: Redis 6400, routers 8180-8181, daemons 8191-8193, echo 9001
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_PORT=${REDIS_PORT:-6400}
cargo build --release -q -p router -p polysocketd -p polysocket-tests --bins
bin=target/release

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
pids+=($!)
redis="redis://127.0.0.1:$REDIS_PORT"
sleep 0.3

"$bin/echo-upstream" 9001 &
pids+=($!)
for port in 8180 8181; do
  "$bin/router" --listen "127.0.0.1:$port" --redis "$redis" --tokens examples/tokens.json &
  pids+=($!)
done
for n in 1 2 3; do
  port=$((8190 + n))
  "$bin/polysocketd" --listen "127.0.0.1:$port" --fqdn "d$n.localhost:$port" --redis "$redis" \
    --allow-private-targets &
  pids+=($!)
done

sleep 1
cat <<EOT

polysocket fleet running (Ctrl-C stops it):
  Redis      $redis
  routers    http://localhost:8180  http://localhost:8181
  daemons    d1.localhost:8191  d2.localhost:8192  d3.localhost:8193
  upstream   ws://127.0.0.1:9001/echo

Try it:
  curl 'http://localhost:8180/create?from=curl&token=dev&target=ws://127.0.0.1:9001/echo'
  # then, with the fqdn and socket it answers:
  curl --data 'hello' -H 'Content-Type: text/plain' "http://<fqdn>/s/<socket>"
  curl "http://<fqdn>/j/<socket>?ttl=5000"
  curl http://localhost:8191/metrics
EOT
wait
