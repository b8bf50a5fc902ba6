#!/usr/bin/env bash
# The control plane at fleet sizes this machine cannot host. For each N in
# $DAEMONS: a redis-server of its own, one real router, and N simulated
# daemons (`loadgen fleet-sim`: heartbeats, a blocking pop per daemon,
# replies and releases, no upstreams), while $CLIENTS clients create sockets
# through the router for $SECONDS_EACH seconds. Prints creates/s, p99, and
# Redis' CPU per create and per idle second; writes bench/fleet-sim.json.
# A control plane that scales shows the same figures at every N.
#
#   scripts/fleet-sim.sh          # DAEMONS="10 100 1000 10000" CLIENTS=32 SECONDS_EACH=10
set -euo pipefail
cd "$(dirname "$0")/.."

command -v redis-server >/dev/null || { echo "fleet-sim.sh needs redis-server" >&2; exit 1; }
DAEMONS=${DAEMONS:-"10 100 1000 10000"}
CLIENTS=${CLIENTS:-32}
SECONDS_EACH=${SECONDS_EACH:-10}
# A blocking pop per simulated daemon: one descriptor each, here and in Redis.
ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p router -p polysocket-bench --bins
bin=target/release

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
tokens=$(mktemp)
echo '{"tokens":[{"token":"sim","targets":["ws://upstream.sim.invalid/*"],"origins":["*"],"max_connections":100000000}]}' >"$tokens"

machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "machine: $machine" >&2
out=$(mktemp)
for n in $DAEMONS; do
  redis_port=$(free_port) router_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --maxclients $((n + 1000)) >/dev/null &
  pids+=($!)
  for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  RUST_LOG=warn "$bin/router" --listen "127.0.0.1:$router_port" --redis "redis://127.0.0.1:$redis_port" \
    --trusted-proxies 127.0.0.1/32 --tokens "$tokens" --create-rate-per-ip 0 --create-rate-per-token 0 &
  router=$!
  pids+=($router)
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$router_port/healthz" && break; sleep 0.1; done
  echo "  loadgen fleet-sim --daemons $n" >&2
  "$bin/loadgen" fleet-sim --redis "redis://127.0.0.1:$redis_port" --daemons "$n" \
    --router "127.0.0.1:$router_port" --target ws://upstream.sim.invalid/x --token sim \
    --sockets "$CLIENTS" --seconds "$SECONDS_EACH" --pid "$router" | tee -a "$out" >&2
  kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
  pids=()
done

python3 - "$out" "$machine" <<'PY'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
json.dump({"machine": sys.argv[2], "command": "scripts/fleet-sim.sh", "runs": runs},
          open("bench/fleet-sim.json", "w"), indent=1)
print("%8s %10s %8s %8s %16s %20s %16s %10s" % ("daemons", "creates/s", "p50 ms", "p99 ms", "Redis µs/create",
      "… beyond idle fleet", "idle Redis ms/s", "Redis MiB"))
for r in runs:
    if "failed" in r:
        print("%8s failed: %s" % (r.get("daemons", "?"), r["failed"])); continue
    print("%8d %10.0f %8.2f %8.2f %16.2f %20.2f %16.2f %10.1f" % (r["daemons"], r["per_second"], r["p50_ms"],
          r["p99_ms"], r["redis_cpu_us_per_create"], r["redis_cpu_us_per_create_beyond_idle"],
          r["idle_redis_cpu_ms_per_second"], r["redis_used_memory_mib"]))
base = runs[0]
for r in runs[1:]:
    if "failed" in r or "failed" in base: continue
    print("N=%d vs N=%d: creates/s %.2fx, Redis CPU per create %.2fx (beyond idle %.2fx)" % (
        r["daemons"], base["daemons"], r["per_second"] / base["per_second"],
        r["redis_cpu_us_per_create"] / base["redis_cpu_us_per_create"],
        r["redis_cpu_us_per_create_beyond_idle"] / base["redis_cpu_us_per_create_beyond_idle"]))
PY
