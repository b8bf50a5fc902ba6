#!/usr/bin/env bash
# End-to-end check of a built image, run by scripts/image.sh inside a private
# mount namespace (`unshare --mount --propagation private`): every mount made
# here goes away with it.
#
#   image/e2e.sh ROOTFS WORK
#
# ROOTFS: the image's root file system, as `buildah mount` gives it for a
# container of the image (a writable container layer: mount points are made
# there, as a container runtime makes them). WORK: a scratch directory; check
# results are appended to WORK/results as "PASS name" / "FAIL name", service
# logs go to WORK/logs. The image's configuration comes in the environment:
# IMG_USER (USER), IMG_WORKDIR (WORKDIR), WORK/image-env (ENV, one a line).
#
# Like a container runtime with readOnlyRootFilesystem, runAsUser and
# allowPrivilegeEscalation: false (k8s/): the image's binaries run with the
# image's root file system mounted read-only as their root, as the image's
# user, with no new privileges, the image's environment only, /proc, a minimal
# /dev, /sys read-only, an /etc/hosts, and the tokens file mounted read-only at
# /etc/polysocket (where k8s mounts its Secret). The network is the host's, so
# they talk over loopback: one Redis (the host's redis-server: the image ships
# none), one upstream WebSocket echo server (image/ws_echo.py), one router and
# two daemons from the image.
set -uo pipefail

ROOTFS=$1
WORK=$2
HERE=$(cd "$(dirname "$0")" && pwd)
RESULTS=$WORK/results
LOGS=$WORK/logs
R=$WORK/root
mkdir -p "$LOGS" "$R" "$WORK/config"

pass() { echo "PASS $1" >>"$RESULTS"; printf '  ok    %s\n' "$1"; }
fail() { echo "FAIL $1" >>"$RESULTS"; printf '  FAIL  %s%s\n' "$1" "${2:+: $2}"; }
# check NAME COMMAND...: one result from a command's exit status.
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name"; fi; }

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
}
trap cleanup EXIT

dump_logs() {
  local f
  for f in "$LOGS"/*.log; do
    echo "---- $(basename "$f") (last 25 lines)"
    tail -n 25 "$f"
  done
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---- the container's root ----------------------------------------------------
# Mount points first, in the container layer (the image itself is untouched).
mkdir -p "$ROOTFS/proc" "$ROOTFS/dev" "$ROOTFS/sys" "$ROOTFS/etc/polysocket"
[ -e "$ROOTFS/etc/hosts" ] || : >"$ROOTFS/etc/hosts"
mount --bind "$ROOTFS" "$R"
mount -o remount,bind,ro,nosuid,nodev "$R"
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount -t tmpfs -o nosuid,noexec,mode=0755,size=64k tmpfs "$R/dev"
for n in null zero full random urandom tty; do
  : >"$R/dev/$n"
  mount --bind "/dev/$n" "$R/dev/$n"
done
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys" 2>/dev/null \
  || { mount --rbind /sys "$R/sys" && mount -o remount,bind,ro "$R/sys"; }
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$WORK/hosts"
mount --bind "$WORK/hosts" "$R/etc/hosts"
mount -o remount,bind,ro "$R/etc/hosts"
cat >"$WORK/config/tokens.json" <<'EOF'
{"tokens":[{"token":"dev","targets":["ws://127.0.0.1:*/*"],"origins":["*"],"max_connections":100}]}
EOF
chmod 0755 "$WORK/config"
chmod 0644 "$WORK/config/tokens.json"
mount --bind "$WORK/config" "$R/etc/polysocket"
mount -o remount,bind,ro "$R/etc/polysocket"

# The image's user: numeric, or a name in the image's /etc/passwd.
user=${IMG_USER%%:*}
group=${IMG_USER#*:}
[ "$group" != "$IMG_USER" ] || group=""
if ! [[ $user =~ ^[0-9]+$ ]]; then
  user=$(awk -F: -v u="$user" '$1 == u { print $3 }' "$R/etc/passwd")
fi
if [ -z "$group" ]; then
  group=$(awk -F: -v u="$user" '$3 == u { print $4 }' "$R/etc/passwd")
elif ! [[ $group =~ ^[0-9]+$ ]]; then
  group=$(awk -F: -v g="$group" '$1 == g { print $3 }' "$R/etc/group")
fi
check "image user $user:$group is not root" test -n "$user" -a -n "$group" -a "${user:-0}" != 0
mapfile -t IMG_ENV <"$WORK/image-env"

# in_image NAME COMMAND...: runs an image binary in the background as the
# image's user, log in LOGS/NAME.log; sets LAST_PID (the binary's own pid: each
# tool execs the next).
in_image() {
  local name=$1; shift
  env -i "${IMG_ENV[@]}" HOME="${IMG_WORKDIR:-/}" \
    setpriv --no-new-privs \
    unshare --root="$R" --wd="${IMG_WORKDIR:-/}" --setgid="$group" --setuid="$user" -- "$@" \
    >"$LOGS/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# wait_http URL [SECONDS]: until it answers 200.
wait_http() {
  local deadline=$((SECONDS + ${2:-20}))
  until curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# wait_exit PID SECONDS: waits for a child of this shell (not in a subshell:
# only this shell can collect its status); sets RC to its exit code, or to
# "timeout" when it still runs after SECONDS.
wait_exit() {
  local deadline=$((SECONDS + $2))
  while kill -0 "$1" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then RC=timeout; return; fi
    sleep 0.1
  done
  wait "$1"
  RC=$?
}

# wait_log FILE TEXT [SECONDS]: until FILE holds TEXT.
wait_log() {
  local deadline=$((SECONDS + ${3:-20}))
  until grep -q "$2" "$1" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

json_get() { # FILE EXPR: evaluates a Python expression on the JSON in FILE (as j)
  python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null
}

# ---- services ----------------------------------------------------------------
P_REDIS=$(free_port)
P_ECHO=$(free_port)
P_ROUTER=$(free_port)
P_D1=$(free_port)
P_D2=$(free_port)
REDIS=redis://127.0.0.1:$P_REDIS

redis-server --port "$P_REDIS" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  >"$LOGS/redis.log" 2>&1 &
PIDS+=("$!")
python3 "$HERE/ws_echo.py" "$P_ECHO" >"$LOGS/echo.log" 2>&1 &
PIDS+=("$!")

in_image router /usr/local/bin/router --listen "127.0.0.1:$P_ROUTER" --redis "$REDIS" \
  --tokens /etc/polysocket/tokens.json
PID_ROUTER=$LAST_PID
in_image d1 /usr/local/bin/polysocketd --listen "127.0.0.1:$P_D1" --redis "$REDIS" \
  --fqdn "d1.localhost:$P_D1" --allow-private-targets --shutdown-grace 5s
PID_D1=$LAST_PID
in_image d2 /usr/local/bin/polysocketd --listen "127.0.0.1:$P_D2" --redis "$REDIS" \
  --fqdn "d2.localhost:$P_D2" --allow-private-targets --shutdown-grace 5s
PID_D2=$LAST_PID

check "router /readyz" wait_http "http://127.0.0.1:$P_ROUTER/readyz"
check "daemon d1 /readyz" wait_http "http://127.0.0.1:$P_D1/readyz"
check "daemon d2 /readyz" wait_http "http://127.0.0.1:$P_D2/readyz"
check "router /healthz" wait_http "http://127.0.0.1:$P_ROUTER/healthz" 2
# The create below dials the echo server at once: on a loaded machine Python can
# still be starting when the binaries already answer.
check "upstream echo server listens" wait_log "$LOGS/echo.log" listening

# ---- they run as a container would run them ------------------------------------
for svc in router:$PID_ROUTER d1:$PID_D1 d2:$PID_D2; do
  name=${svc%%:*} pid=${svc#*:}
  st=/proc/$pid/status
  check "$name runs the image's binary" \
    bash -c '[[ $(readlink "/proc/$1/exe") == "$2"/usr/local/bin/* ]]' _ "$pid" "$R"
  check "$name runs as $user:$group, no supplementary groups" \
    bash -c '[ "$(awk "/^Uid:/ {print \$2,\$3,\$4,\$5}" "$1")" = "$2 $2 $2 $2" ] &&
      [ "$(awk "/^Gid:/ {print \$2,\$3,\$4,\$5}" "$1")" = "$3 $3 $3 $3" ] &&
      [ -z "$(awk "/^Groups:/ {print \$2}" "$1")" ] &&
      [ "$(awk "/^NoNewPrivs:/ {print \$2}" "$1")" = 1 ] &&
      [ "$(awk "/^CapEff:/ {print \$2}" "$1")" = 0000000000000000 ]' _ "$st" "$user" "$group"
  check "$name has a read-only root" \
    bash -c 'awk "\$5 == \"/\" { print \$6 }" "/proc/$1/mountinfo" | grep -qE "(^|,)ro(,|$)"' _ "$pid"
done
check "the image's root refuses writes from its user" \
  bash -c '! setpriv --reuid="$2" --regid="$3" --clear-groups touch "$1/tmp/.w" 2>/dev/null &&
    ! setpriv --reuid="$2" --regid="$3" --clear-groups touch "$1/home/nonroot/.w" 2>/dev/null' \
  _ "$R" "$user" "$group"

# ---- one create, a send and a receive ------------------------------------------
curl -sS --max-time 20 -o "$WORK/create.json" \
  "http://127.0.0.1:$P_ROUTER/create?from=ci&target=ws://127.0.0.1:$P_ECHO/echo&token=dev"
echo "  create: $(cat "$WORK/create.json" 2>/dev/null)"
FQDN=$(json_get "$WORK/create.json" 'j["fqdn"] if j.get("ok") else ""')
SOCKET=$(json_get "$WORK/create.json" 'j["socket"] if j.get("ok") else ""')
check "create through the router" test -n "$FQDN" -a -n "$SOCKET"
host=${FQDN%:*} port=${FQDN##*:}
case "$port" in
  "$P_D1") OWNER=d1 PID_OWNER=$PID_D1 PID_OTHER=$PID_D2 ;;
  "$P_D2") OWNER=d2 PID_OWNER=$PID_D2 PID_OTHER=$PID_D1 ;;
  *) OWNER="" PID_OWNER="" PID_OTHER="" ;;
esac
check "the create names a daemon of the fleet ($FQDN)" \
  bash -c '[ -n "$1" ] && [[ $2 == *.d?.localhost ]]' _ "$OWNER" "$host"
if [ -z "$OWNER" ]; then # the rest needs the socket: stop with the logs
  dump_logs
  exit 0
fi
RESOLVE=(--resolve "$host:$port:127.0.0.1")

code=$(curl -sS --max-time 10 "${RESOLVE[@]}" -o "$WORK/send.json" -w '%{http_code}' \
  -X POST -H 'Content-Type: text/plain' --data hello "http://$FQDN/s/$SOCKET")
echo "  send: $code $(cat "$WORK/send.json" 2>/dev/null)"
check "send: 201" test "$code" = 201

curl -sS --max-time 10 "${RESOLVE[@]}" -o "$WORK/poll.json" "http://$FQDN/j/$SOCKET?ttl=5000"
echo "  receive: $(cat "$WORK/poll.json" 2>/dev/null)"
check "receive: the echo of hello" test "$(json_get "$WORK/poll.json" \
  '[(m["type"], m["seq"], m["data"]) for m in j["messages"]] == [("text", 1, "hello")] and j["ok"]')" = True

# ---- metrics -------------------------------------------------------------------
curl -sS --max-time 5 -o "$WORK/metrics-router" "http://127.0.0.1:$P_ROUTER/metrics"
curl -sS --max-time 5 -o "$WORK/metrics-owner" "http://$FQDN/metrics" "${RESOLVE[@]}"
curl -sS --max-time 5 -o "$WORK/metrics-d1" "http://127.0.0.1:$P_D1/metrics"
curl -sS --max-time 5 -o "$WORK/metrics-d2" "http://127.0.0.1:$P_D2/metrics"
check "router /metrics counts the create" \
  grep -qE '^polysocket_creates_total\{outcome="ok"\} 1$' "$WORK/metrics-router"
check "daemon /metrics counts the socket and both messages" \
  bash -c 'grep -qE "^polysocket_sockets_open 1$" "$1" &&
    grep -qE "^polysocket_messages_total\{direction=\"upstream\"\} 1$" "$1" &&
    grep -qE "^polysocket_messages_total\{direction=\"client\"\} 1$" "$1"' _ "$WORK/metrics-owner"
check "both daemons serve /metrics" \
  bash -c 'grep -q "^polysocket_sockets_open" "$1" && grep -q "^polysocket_sockets_open" "$2"' \
  _ "$WORK/metrics-d1" "$WORK/metrics-d2"

# ---- SIGTERM drain -------------------------------------------------------------
# A poll waits on the socket; SIGTERM its daemon: the poll gets the close (1001
# "going away"), the daemon leaves the fleet (/readyz fails), and once the
# client has read the close (its next poll acknowledges it) the daemon exits 0,
# within its --shutdown-grace (5 s).
curl -sS --max-time 15 "${RESOLVE[@]}" -o "$WORK/drain-poll.json" \
  "http://$FQDN/j/$SOCKET?ttl=10000" &
POLL=$!
sleep 0.5
t0=$(date +%s%N)
kill -TERM "$PID_OWNER"
wait "$POLL"
echo "  poll during drain: $(cat "$WORK/drain-poll.json" 2>/dev/null)"
check "the waiting poll gets close 1001" test "$(json_get "$WORK/drain-poll.json" \
  '[m["code"] for m in j["messages"] if m["type"] == "close"] == [1001]')" = True
ready=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$FQDN/readyz" "${RESOLVE[@]}")
check "the draining daemon fails /readyz ($ready)" test "$ready" = 503
seq=$(json_get "$WORK/drain-poll.json" 'max(m["seq"] for m in j["messages"] if "seq" in m)')
curl -s -o /dev/null --max-time 5 "${RESOLVE[@]}" "http://$FQDN/j/$SOCKET?ack=$seq&ttl=1000"
wait_exit "$PID_OWNER" 8
rc=$RC
took_ms=$((($(date +%s%N) - t0) / 1000000))
echo "  $OWNER exited $rc, $((took_ms / 1000)).$((took_ms % 1000 / 100)) s after SIGTERM"
check "SIGTERM: the daemon drains and exits 0 within its grace (5 s)" \
  test "$rc" = 0 -a "$took_ms" -le 5500

kill -TERM "$PID_OTHER" "$PID_ROUTER"
wait_exit "$PID_OTHER" 8
rc_other=$RC
wait_exit "$PID_ROUTER" 8
rc_router=$RC
check "SIGTERM: the idle daemon exits 0 ($rc_other)" test "$rc_other" = 0
check "SIGTERM: the router exits 0 ($rc_router)" test "$rc_router" = 0

if grep -q '^FAIL' "$RESULTS"; then dump_logs; fi
exit 0
