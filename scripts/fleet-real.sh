#!/usr/bin/env bash
# Real processes beside the simulation (scripts/fleet-sim.sh): one router,
# one Redis and, for each count in $DAEMON_COUNTS, that many real polysocketd
# processes on this machine, while $CLIENTS clients create sockets back to
# back for $SECONDS_EACH seconds (each socket opens a real upstream
# WebSocket; unpolled sockets end after --idle-timeout, freeing their slots).
# A fleet that scales creates as fast with 200 daemons as with 2. Prints a
# table and writes bench/fleet-real.json.
#
#   scripts/fleet-real.sh          # DAEMON_COUNTS="2 200" CLIENTS=32 SECONDS_EACH=10
set -euo pipefail
cd "$(dirname "$0")/.."

DAEMON_COUNTS=${DAEMON_COUNTS:-"2 200"}
cargo build --release -q -p router -p polysocketd -p polysocket-tests -p polysocket-bench --bins
# shellcheck source=lib/fleet-bench.sh
source scripts/lib/fleet-bench.sh
tokens=$(tokens_file real 'ws://127.0.0.1:*/*')
upstream_port=$(free_port)
"$bin/echo-upstream" "$upstream_port" >/dev/null & pids+=($!)

out=$(mktemp)
for count in $DAEMON_COUNTS; do
  redis_port=$(free_port) router_port=$(free_port)
  start_redis "$redis_port"
  redis=redis://127.0.0.1:$redis_port
  start_router "$router_port" "$redis" "$tokens"
  fleet=("$redis_pid" "$router_pid")
  ports=()
  for _ in $(seq "$count"); do
    port=$(free_port)
    RUST_LOG=warn "$bin/polysocketd" --listen "127.0.0.1:$port" --fqdn "127.0.0.1:$port" \
      --redis "$redis" --allow-private-targets --idle-timeout 3s >/dev/null & fleet+=($!)
    ports+=("$port")
  done
  for port in "${ports[@]}"; do
    for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.1; done
  done
  registered=$(redis-cli -p "$redis_port" zcard '{ps}:live')
  echo "  $count daemons started, $registered registered; loadgen creates" >&2
  # CPU seconds (user + system) of Redis, of the router and of all daemons together.
  cpu() { for pid in "$@"; do cut -d' ' -f14,15 "/proc/$pid/stat"; done | awk '{t += $1 + $2} END {print t / 100}'; }
  before=("$(cpu "${fleet[0]}")" "$(cpu "$router_pid")" "$(cpu "${fleet[@]:2}")")
  line=$("$bin/loadgen" creates --router "127.0.0.1:$router_port" --target "ws://127.0.0.1:$upstream_port/echo" \
    --token real --sockets "$CLIENTS" --seconds "$SECONDS_EACH" --pid "$router_pid")
  after=("$(cpu "${fleet[0]}")" "$(cpu "$router_pid")" "$(cpu "${fleet[@]:2}")")
  python3 - "$line" "$count" "${before[@]}" "${after[@]}" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
r["daemons"] = int(sys.argv[2])
before, after = [float(x) for x in sys.argv[3:6]], [float(x) for x in sys.argv[6:9]]
creates = max(r.get("operations", 0), 1)
for name, b, a in zip(("redis", "router", "daemons"), before, after):
    r[name + "_cpu_us_per_create"] = round((a - b) * 1e6 / creates, 1)
print(json.dumps(r))
PY
  kill "${fleet[@]:1}"; wait "${fleet[@]:1}" 2>/dev/null || true
  kill "${fleet[0]}"; wait "${fleet[0]}" 2>/dev/null || true
done >"$out"

save_runs "$out" bench/fleet-real.json
python3 - bench/fleet-real.json <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))["runs"]
print("%8s %10s %8s %8s %22s %22s %24s" % ("daemons", "creates/s", "p50 ms", "p99 ms", "Redis CPU µs/create",
      "router CPU µs/create", "daemons' CPU µs/create"))
for r in runs:
    print("%8d %10.0f %8.2f %8.2f %22.1f %22.1f %24.1f" % (r["daemons"], r["per_second"], r["p50_ms"], r["p99_ms"],
          r["redis_cpu_us_per_create"], r["router_cpu_us_per_create"], r["daemons_cpu_us_per_create"]))
for r in runs[1:]:
    print("%d daemons vs %d: creates/s %.2fx" % (r["daemons"], runs[0]["daemons"], r["per_second"] / runs[0]["per_second"]))
PY
