# Shared by scripts/fleet-sim.sh and scripts/fleet-real.sh: processes on
# free ports, stopped when the script ends, and the machine they ran on.
# Source it from the repository root after `set -euo pipefail`.

command -v redis-server >/dev/null || { echo "$(basename "$0") needs redis-server" >&2; exit 1; }
CLIENTS=${CLIENTS:-32}
SECONDS_EACH=${SECONDS_EACH:-10}
bin=target/release
# Many connections, here and in the processes started from here.
ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "machine: $machine" >&2

# A tokens file with token $1 for targets $2, without a limit that matters.
tokens_file() {
  local file
  file=$(mktemp)
  printf '{"tokens":[{"token":"%s","targets":["%s"],"origins":["*"],"max_connections":100000000}]}' "$1" "$2" >"$file"
  echo "$file"
}

# A redis-server on port $1 (further arguments are its own), in $redis_pid
# once it answers.
start_redis() {
  local port=$1; shift
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no "$@" >/dev/null &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "redis-server on port $port did not start" >&2; exit 1
}

# A router on port $1 with Redis $2 and tokens file $3, trusting loadgen's
# X-Forwarded-For and without rate limits, in $router_pid once it serves.
start_router() {
  RUST_LOG=warn "$bin/router" --listen "127.0.0.1:$1" --redis "$2" --trusted-proxies 127.0.0.1/32 \
    --tokens "$3" --create-rate-per-ip 0 --create-rate-per-token 0 &
  router_pid=$!
  pids+=("$router_pid")
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$1/healthz" && return; sleep 0.1; done
  echo "the router on port $1 did not start" >&2; exit 1
}

# Writes the JSON lines in file $1 to $2 as {machine, command, runs}.
save_runs() {
  python3 - "$1" "$2" "$machine" "$0" <<'PY'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
json.dump({"machine": sys.argv[3], "command": sys.argv[4], "runs": runs}, open(sys.argv[2], "w"), indent=1)
PY
}
