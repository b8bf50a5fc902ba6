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

DAEMONS=${DAEMONS:-"10 100 1000 10000"}
cargo build --release -q -p router -p polysocket-bench --bins
# shellcheck source=lib/fleet-bench.sh
source scripts/lib/fleet-bench.sh
tokens=$(tokens_file sim 'ws://upstream.sim.invalid/*')

out=$(mktemp)
for n in $DAEMONS; do
  redis_port=$(free_port) router_port=$(free_port)
  start_redis "$redis_port" --maxclients $((n + 1000))
  start_router "$router_port" "redis://127.0.0.1:$redis_port" "$tokens"
  echo "  loadgen fleet-sim --daemons $n" >&2
  "$bin/loadgen" fleet-sim --redis "redis://127.0.0.1:$redis_port" --daemons "$n" \
    --router "127.0.0.1:$router_port" --target ws://upstream.sim.invalid/x --token sim \
    --sockets "$CLIENTS" --seconds "$SECONDS_EACH" --pid "$router_pid" | tee -a "$out" >&2
  kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
  pids=()
done

save_runs "$out" bench/fleet-sim.json
python3 - bench/fleet-sim.json <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))["runs"]
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
