#!/usr/bin/env bash
# What one create costs Redis as the fleet grows: for N = 10 .. 10,000
# registered daemons, reserves slots through the real RedisFleet (the script
# every create runs) on a redis-server of its own, and prints reserves per
# second and Redis' own CPU time per reserve (INFO commandstats). A control
# plane that scales shows the same figures at every N.
#
#   scripts/reserve-cost.sh            # DAEMONS="10 100 1000 10000" RESERVES=20000
set -euo pipefail
cd "$(dirname "$0")/.."

command -v redis-server >/dev/null || { echo "reserve-cost.sh needs redis-server" >&2; exit 1; }
cargo build --release -q -p polysocket-bench --bins
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --save '' --appendonly no --daemonize no >/dev/null &
redis=$!
trap 'kill $redis 2>/dev/null || true' EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf '%10s %14s %24s\n' daemons reserves/s "Redis µs per reserve"
for n in ${DAEMONS:-10 100 1000 10000}; do
  line=$(target/release/loadgen reserve-cost --redis "redis://127.0.0.1:$port" --daemons "$n" --reserves "${RESERVES:-20000}")
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%10d %14d %24.2f" % (r["daemons"], r["reserves_per_second"], r["redis_usec_per_reserve"]))' "$line"
done
