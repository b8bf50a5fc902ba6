#!/usr/bin/env bash
# Proves the socket proxy's routing on this machine: the nginx configuration
# that k8s/socket-proxy/ ships (nginx.conf and socket-proxy.conf, the files
# its ConfigMap is generated from) runs on loopback in front of a real fleet,
# and carries creates, sends and polls to the daemon each socket's host name
# names.
#
#   Redis (with a password, as in k8s/)        127.0.0.1:<free port>
#   router  --admin-listen                     127.0.0.1:<free ports>
#   polysocketd-0  --daemon-name polysocketd-0 127.0.0.2:8081
#   polysocketd-1  --daemon-name polysocketd-1 127.0.0.3:8081
#     both with --socket-domain ps.localhost:<nginx port>
#   a DNS server answering the headless Service's names of those two pods
#     (polysocketd-N.polysocketd.polysocket.svc.cluster.local), nothing else
#   nginx with the shipped files; only the lines marked "# SETTING" that name
#     the resolver and the listen ports are changed, to loopback addresses
#   echo-upstream                              ws://127.0.0.1:<free port>/echo
#
# Needs the binaries from `cargo build -p router -p polysocketd -p
# polysocket-tests --bins` (or `cargo test --workspace`) in
# $CARGO_TARGET_DIR/debug (default target/debug). Installs nginx and
# redis-server with apt-get when missing. Prints one line per check and
# "N passed, M failed" last; exits non-zero on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
PROXY_DIR="$ROOT/k8s/socket-proxy"
PY="${PYTHON:-python3}"
# The daemons' port is part of the shipped proxy_pass; the two addresses are
# what the test DNS server answers for the two pods.
D0=127.0.0.2
D1=127.0.0.3
DAEMON_PORT=8081

log() { printf '== %s\n' "$*"; }
die() { printf 'test-k8s-routing: %s\n' "$*" >&2; printf '0 passed, 1 failed\n'; exit 1; }

passed=0
failed=0
ok() { passed=$((passed + 1)); printf 'ok   %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
# check DESCRIPTION WANT GOT
check() { if [[ "$3" == "$2" ]]; then ok "$1"; else fail "$1: want $2, got $3"; fi; }

# --- tools and binaries ------------------------------------------------------

for b in router polysocketd echo-upstream; do
  [[ -x "$BIN/$b" ]] || die "$BIN/$b is missing: run 'cargo build -p router -p polysocketd -p polysocket-tests --bins' first (or set CARGO_TARGET_DIR)"
done
# shellcheck source=lib/install.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/install.sh"
apt_missing=()
[[ -n "$(find_nginx)" ]] || apt_missing+=(nginx)
command -v redis-server >/dev/null 2>&1 || apt_missing+=(redis-server)
apt_install "${apt_missing[@]}"
NGINX="$(find_nginx)"
[[ -n "$NGINX" ]] || die "no nginx found after installing it"

TMP="$(mktemp -d)"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

# Ports the kernel reports free right now, on the given address.
free_port() {
  "$PY" -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "${1:-127.0.0.1}"
}
for addr in "$D0" "$D1"; do
  "$PY" -c 'import socket,sys; socket.socket().bind((sys.argv[1], int(sys.argv[2])))' "$addr" "$DAEMON_PORT" 2>/dev/null \
    || die "$addr:$DAEMON_PORT is taken (a daemon listening on 0.0.0.0:$DAEMON_PORT?)"
done
REDIS_PORT=$(free_port)
ROUTER_PORT=$(free_port)
ROUTER_ADMIN=$(free_port)
ECHO_PORT=$(free_port)
NGINX_PORT=$(free_port)
HEALTH_PORT=$(free_port)
ADMIN0=$(free_port "$D0")
ADMIN1=$(free_port "$D1")
DOMAIN="ps.localhost:$NGINX_PORT"
REDIS_PASSWORD="$("$PY" -c 'import secrets; print(secrets.token_hex(16))')"
REDIS_URL="redis://:$REDIS_PASSWORD@127.0.0.1:$REDIS_PORT"

# Waits until URL answers 200, or fails after about 10 s.
wait_200() {
  local i
  for i in $(seq 1 100); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" == 200 ]] && return 0
    sleep 0.1
  done
  return 1
}

# --- the cluster DNS ---------------------------------------------------------

# Answers A queries for the two pods' names in the headless Service, as
# CoreDNS would; NXDOMAIN for every other name (a pod that does not exist).
cat >"$TMP/dns.py" <<'EOF'
import socket, struct, sys

suffix = ".polysocketd.polysocket.svc.cluster.local"
records = {"polysocketd-0" + suffix: sys.argv[2], "polysocketd-1" + suffix: sys.argv[3]}
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
with open(sys.argv[1], "w") as f:
    f.write(str(sock.getsockname()[1]))
while True:
    query, peer = sock.recvfrom(512)
    qid, flags = struct.unpack(">HH", query[:4])
    labels, i = [], 12
    while query[i]:
        labels.append(query[i + 1:i + 1 + query[i]].decode().lower())
        i += 1 + query[i]
    qtype = struct.unpack(">H", query[i + 1:i + 3])[0]
    question = query[12:i + 5]
    address = records.get(".".join(labels))
    answers = b""
    rcode = 0 if address else 3
    if address and qtype == 1:
        answers = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 5, 4) + socket.inet_aton(address)
    header = struct.pack(">HHHHHH", qid, 0x8400 | (flags & 0x0100) | 0x80 | rcode, 1, 1 if answers else 0, 0, 0)
    sock.sendto(header + question + answers, peer)
EOF
"$PY" "$TMP/dns.py" "$TMP/dns.port" "$D0" "$D1" &
pids+=($!)
for _ in $(seq 1 50); do [[ -s "$TMP/dns.port" ]] && break; sleep 0.1; done
[[ -s "$TMP/dns.port" ]] || die "the test DNS server did not start"
DNS_PORT=$(cat "$TMP/dns.port")

# --- the fleet ---------------------------------------------------------------

log "Redis, router, daemons polysocketd-0 ($D0) and polysocketd-1 ($D1), echo upstream"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --requirepass "$REDIS_PASSWORD" \
  >"$TMP/redis.log" 2>&1 &
pids+=($!)
echo '{"tokens":[{"token":"dev","targets":["ws://127.0.0.1:*/*"],"origins":["*"],"max_connections":100}]}' >"$TMP/tokens.json"
"$BIN/echo-upstream" "$ECHO_PORT" >"$TMP/echo.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" -a "$REDIS_PASSWORD" --no-auth-warning ping >/dev/null 2>&1 && break; sleep 0.1; done
# As in k8s/config.env: the proxies are trusted, keep-alive outlasts theirs.
"$BIN/router" --listen "127.0.0.1:$ROUTER_PORT" --admin-listen "127.0.0.1:$ROUTER_ADMIN" --redis "$REDIS_URL" \
  --tokens "$TMP/tokens.json" --trusted-proxies 127.0.0.0/8 --keep-alive 75s >"$TMP/router.log" 2>&1 &
pids+=($!)
n=0
for addr in "$D0" "$D1"; do
  admin=$ADMIN0
  [[ $n == 1 ]] && admin=$ADMIN1
  "$BIN/polysocketd" --listen "$addr:$DAEMON_PORT" --admin-listen "$addr:$admin" --redis "$REDIS_URL" \
    --socket-domain "$DOMAIN" --daemon-name "polysocketd-$n" --allow-private-targets \
    --trusted-proxies 127.0.0.0/8 --keep-alive 75s >"$TMP/polysocketd-$n.log" 2>&1 &
  pids+=($!)
  n=$((n + 1))
done
for url in "http://127.0.0.1:$ROUTER_ADMIN" "http://$D0:$ADMIN0" "http://$D1:$ADMIN1"; do
  wait_200 "$url/healthz" || { tail -n 20 "$TMP"/*.log >&2; die "$url/healthz never answered"; }
done
# What the kubelet's probes ask, on the admin ports the manifests probe.
for name in "router 127.0.0.1:$ROUTER_ADMIN" "polysocketd-0 $D0:$ADMIN0" "polysocketd-1 $D1:$ADMIN1"; do
  read -r service admin <<<"$name"
  if wait_200 "http://$admin/readyz"; then
    ok "$service /readyz is 200 on its admin port"
  else
    fail "$service /readyz on its admin port: $(curl -s -w ' (%{http_code})' "http://$admin/readyz")"
  fi
done

# --- nginx with the shipped configuration ------------------------------------

log "nginx $("$NGINX" -v 2>&1 | sed 's/.*: //') with k8s/socket-proxy/{nginx.conf,socket-proxy.conf}"
mkdir -p "$TMP/conf" "$TMP/prefix"
# nginx's workers (as nobody when run by root) create their temporary
# directories under the prefix.
chmod 755 "$TMP" "$TMP/prefix"
cp "$PROXY_DIR/nginx.conf" "$PROXY_DIR/socket-proxy.conf" "$TMP/conf/"
sed -i -E \
  -e "s/^resolver [^ ;]+/resolver 127.0.0.1:$DNS_PORT/" \
  -e "s/^( *listen )8080([ ;])/\\1127.0.0.1:$NGINX_PORT\\2/" \
  -e "s/^( *listen )9090;/\\1127.0.0.1:$HEALTH_PORT;/" \
  "$TMP/conf/socket-proxy.conf"
# Only lines marked "# SETTING" may differ from the shipped file.
changed=$(diff "$PROXY_DIR/socket-proxy.conf" "$TMP/conf/socket-proxy.conf" | grep '^<' || true)
check "only lines marked SETTING were changed for loopback (4 lines)" \
  "4 0" "$(grep -c . <<<"$changed") $(grep -vc '# SETTING' <<<"$changed" || true)"
if "$NGINX" -t -q -e stderr -p "$TMP/prefix/" -c "$TMP/conf/nginx.conf" 2>"$TMP/nginx-t.log"; then
  ok "nginx -t accepts the shipped configuration"
else
  fail "nginx -t: $(cat "$TMP/nginx-t.log")"
fi
"$NGINX" -e stderr -p "$TMP/prefix/" -c "$TMP/conf/nginx.conf" -g 'daemon off;' >"$TMP/nginx.log" 2>&1 &
pids+=($!)
wait_200 "http://127.0.0.1:$HEALTH_PORT/healthz" || { cat "$TMP/nginx.log" >&2; die "nginx did not start"; }
ok "proxy health on its own port"

# --- creates until both daemons hold a socket --------------------------------

log "creates through the router"
declare -A host_of=()
sockets=()
seen0=0
seen1=0
for i in $(seq 1 20); do
  body=$(curl -sS "http://127.0.0.1:$ROUTER_PORT/create?from=curl&token=dev&target=ws://127.0.0.1:$ECHO_PORT/echo") || body=""
  read -r fqdn socket < <("$PY" -c '
import json, sys
d = json.loads(sys.argv[1] or "{}")
print(d.get("fqdn", "-") if d.get("ok") else "-", d.get("socket", "-"))' "$body" 2>/dev/null || echo "- -")
  if [[ "$fqdn" == - ]]; then
    fail "create $i: $body"
    continue
  fi
  host_of[$socket]=$fqdn
  sockets+=("$socket")
  [[ "$fqdn" == *-polysocketd-0.$DOMAIN ]] && seen0=$((seen0 + 1))
  [[ "$fqdn" == *-polysocketd-1.$DOMAIN ]] && seen1=$((seen1 + 1))
  ((seen0 > 0 && seen1 > 0 && ${#sockets[@]} >= 4)) && break
done
for n in 0 1; do
  count=$seen0
  [[ $n == 1 ]] && count=$seen1
  if ((count > 0)); then ok "polysocketd-$n got $count socket(s)"; else fail "no socket on polysocketd-$n"; fi
done
bad=0
for s in "${sockets[@]}"; do
  [[ "${host_of[$s]}" =~ ^s[0-9a-f]{12}-polysocketd-[01]\.ps\.localhost:$NGINX_PORT$ ]] || { bad=1; fail "host ${host_of[$s]}"; }
done
((bad)) || ok "every socket host is s<12 hex>-<daemon>.$DOMAIN"

# --- sends and polls through nginx -------------------------------------------

# curl to nginx on loopback, with the socket's host name in the request.
via_proxy() { # host path [curl args...]
  local host=$1 path=$2
  shift 2
  curl -sS --max-time 20 --resolve "${host%%:*}:$NGINX_PORT:127.0.0.1" -o "$TMP/body" -w '%{http_code}' "$@" "http://$host$path" \
    || echo 000
}
log "sends and polls through nginx"
for s in "${sockets[@]}"; do
  host=${host_of[$s]}
  daemon=${host#*-}
  daemon=${daemon%%.*}
  code=$(via_proxy "$host" "/s/$s" -X POST -H 'Content-Type: text/plain' --data "hello $s")
  check "send to $daemon ($s) answers 201" 201 "$code"
  code=$(via_proxy "$host" "/j/$s?ttl=5000")
  echoed=$("$PY" -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(any(m.get("type") == "text" and m.get("data") == sys.argv[2] for m in d.get("messages", [])))' \
    "$TMP/body" "hello $s" 2>/dev/null || echo False)
  check "poll on $daemon ($s) returns the echo" "200 True" "$code $echoed"
  # The same request with the other daemon's name: the host, not chance,
  # picks the daemon.
  other=polysocketd-1
  [[ $daemon == polysocketd-1 ]] && other=polysocketd-0
  code=$(via_proxy "${host/-$daemon./-$other.}" "/j/$s?ttl=0")
  check "the same socket under $other's name is unknown there (403)" 403 "$code"
done

# --- what the proxy must not do ----------------------------------------------

log "hosts that name no daemon"
code=$(via_proxy "s0123456789ab-polysocketd-7.$DOMAIN" "/j/${sockets[0]}?ttl=0")
check "a daemon that does not exist (polysocketd-7) gets 502, not another daemon" 502 "$code"
code=$(via_proxy "router.$DOMAIN" "/j/${sockets[0]}?ttl=0")
check "a host that is not a socket's gets 404" 404 "$code"
code=$(via_proxy "s0123456789ab-redis.$DOMAIN" "/")
check "a label naming something else than a daemon pod gets 404" 404 "$code"
code=$(via_proxy "${host_of[${sockets[0]}]}" "/metrics")
check "/metrics is not reachable through the proxy" 404 "$code"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ROUTER_PORT/metrics" || true)
check "/metrics is not on the router's public port" 404 "$code"

# --- metrics the monitoring uses exist ---------------------------------------

log "metrics named by k8s/monitoring against the binaries' /metrics"
# One socket closed through the proxy (its close read and acknowledged), so
# that the close counter has a sample.
s=${sockets[0]}
code=$(via_proxy "${host_of[$s]}" "/s/$s" -X POST --data-urlencode t=c --data-urlencode code=1000)
check "closing a socket through the proxy answers 201" 201 "$code"
code=$(via_proxy "${host_of[$s]}" "/j/$s?ttl=5000")
closed=$(grep -c '"type":"close"' "$TMP/body" || true)
check "the poll after it returns the close" "200 1" "$code $closed"
code=$(via_proxy "${host_of[$s]}" "/j/$s?ttl=0")
check "the next poll acknowledges it and the socket is gone (403)" 403 "$code"
curl -s "http://127.0.0.1:$ROUTER_ADMIN/metrics" "http://$D0:$ADMIN0/metrics" "http://$D1:$ADMIN1/metrics" >"$TMP/metrics"
used=$(grep -ohE 'polysocket_[a-z_]+' "$ROOT/k8s/monitoring/prometheus-rule.yaml" "$ROOT/k8s/monitoring/grafana-dashboard.json" \
  | sed -E 's/_(bucket|sum|count)$//' | sort -u)
missing=""
for m in $used; do
  grep -qE "^$m(_bucket|_sum|_count)?(\{| )" "$TMP/metrics" || missing+=" $m"
done
check "every metric the alerts and dashboard use is exported ($(wc -w <<<"$used") names)" "" "${missing# }"
registered=$(grep -hE '^polysocket_fleet_registered ' "$TMP/metrics" | awk '{s += $2} END {print s + 0}')
check "both daemons report polysocket_fleet_registered 1" 2 "$registered"

printf '%d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
