#!/usr/bin/env bash
# Builds the container image from the shipped Dockerfile with no container
# registry (CI reaches only the package registries), then runs it end to end.
#
#   scripts/image.sh
#
# 1. tools: installs buildah, mmdebstrap, redis-server, curl, file when missing
#    (apt-get update first); needs this machine's Rust toolchain (rustup).
# 2. bases: image/make-bases.sh makes the Dockerfile's FROM images locally from
#    Debian's packages and tags them with the Dockerfile's own names
#    (rust:1-bookworm, gcr.io/distroless/cc-debian12:nonroot); kept and reused
#    while their recipe and the toolchain are unchanged.
# 3. build: `buildah build --isolation chroot --pull=never --layers` of the
#    Dockerfile as a user's `docker build .` runs it (no build arguments), under
#    `nice -n 19`; cargo reaches crates.io over the host's network. The build
#    trusts this machine's CA bundle (mounted at build time only: where TLS to
#    crates.io goes through a CA of this machine's, cargo needs it).
# 4. the image: its configuration (user 65532, entrypoint, ports, no shell) and
#    its size, which must be under IMAGE_MAX_MB (40) MB.
# 5. k8s/: the rendered manifests reference the image by the name built here.
# 6. end to end (image/e2e.sh): a Redis, an echo upstream, and a router and
#    two daemons from the image, run as the image's user on its read-only root:
#    readiness, one create, a send and a receive, /metrics, a SIGTERM drain.
#
# Prints each phase's time and ends with "N passed, M failed"; exits non-zero
# on any failure. Idempotent: a second run reuses the bases and the build cache
# (seconds when the crates did not change). Cleans up what it started.
#
# Environment: IMAGE (polysocket:<workspace version>; also tagged :latest),
# IMAGE_MAX_MB (40), IMAGE_ARCHIVE (a
# path: also save the image there as a docker-archive, e.g. for
# `kind load image-archive`), IMAGE_KEEP_WORK=1 (keep the scratch directory).
set -euo pipefail
cd "$(dirname "$0")/.."
# Tagged with the workspace's version, as k8s/ refers to it, and as latest.
VERSION=$(awk -F'"' '/^\[workspace\.package\]/ { w = 1; next } /^\[/ { w = 0 }
  w && $1 ~ /^version *= *$/ { print $2; exit }' Cargo.toml)
IMAGE=${IMAGE:-polysocket:${VERSION:-latest}}
MAX_MB=${IMAGE_MAX_MB:-40}

WORK=$(mktemp -d /tmp/polysocket-image.XXXXXX)
RESULTS=$WORK/results
: >"$RESULTS"
CTR=""
T_START=$SECONDS
TIMINGS=()

cleanup() {
  local rc=$?
  if [ -n "$CTR" ]; then
    buildah umount "$CTR" >/dev/null 2>&1 || true
    buildah rm "$CTR" >/dev/null 2>&1 || true
  fi
  if [ "${IMAGE_KEEP_WORK:-0}" = 1 ]; then echo "(scratch directory kept: $WORK)"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '== %s\n' "$*"; }
pass() { echo "PASS $1" >>"$RESULTS"; printf '  ok    %s\n' "$1"; }
fail() { echo "FAIL $1" >>"$RESULTS"; printf '  FAIL  %s\n' "$1"; }
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name"; fi; }
PHASE_T0=$SECONDS PHASE=""
phase() { # starts a phase, closing the previous one
  if [ -n "$PHASE" ]; then TIMINGS+=("$(printf '%-8s %4d s' "$PHASE" $((SECONDS - PHASE_T0)))"); fi
  PHASE=$1 PHASE_T0=$SECONDS
  [ "$1" = end ] || say "$1: ${2:-}"
}
summary() {
  phase end
  local passed failed
  passed=$(grep -c '^PASS' "$RESULTS" || true)
  failed=$(grep -c '^FAIL' "$RESULTS" || true)
  say "timings"
  printf '  %s\n' "${TIMINGS[@]}" "$(printf '%-8s %4d s' total $((SECONDS - T_START)))"
  if [ "$failed" -gt 0 ]; then
    say "failed:"
    sed -n 's/^FAIL /  /p' "$RESULTS"
  fi
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}
# A phase whose failure leaves nothing to check further.
fatal() { fail "$1"; summary || true; exit 1; }

# ---- 1. tools -------------------------------------------------------------------
phase tools "buildah, mmdebstrap, redis-server, curl, file, python3"
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v curl >/dev/null || missing+=(curl)
command -v file >/dev/null || missing+=(file)
command -v python3 >/dev/null || missing+=(python3)
command -v setpriv >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
  echo "  installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v rustup >/dev/null || ! command -v rustc >/dev/null; then
  fatal "the Rust toolchain (rustup) must be on PATH: the builder base copies it"
fi
echo "  buildah $(buildah --version | awk '{print $3}'), mmdebstrap $(mmdebstrap --version | awk '{print $2}'), $(rustc -V)"

# ---- 2. bases -------------------------------------------------------------------
phase bases "the Dockerfile's FROM images, made from Debian's packages when missing"
image/make-bases.sh Dockerfile || fatal "base images"

# ---- 3. build -------------------------------------------------------------------
phase build "buildah build of the Dockerfile -> $IMAGE (nice -n 19)"
# No --layers: the Dockerfile's cache mounts keep crates and target/ between
# builds (a rebuild with nothing changed takes seconds), and intermediate
# images would pile up with every source change.
build_args=(--isolation chroot --pull=never -f Dockerfile -t "$IMAGE")
[ "${IMAGE%:*}:latest" = "$IMAGE" ] || build_args+=(-t "${IMAGE%:*}:latest")
CA_BUNDLE=${CARGO_HTTP_CAINFO:-/etc/ssl/certs/ca-certificates.crt}
if [ -f "$CA_BUNDLE" ]; then
  build_args+=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
fi
previous=$(buildah inspect --type image --format '{{.FromImageID}}' "$IMAGE" 2>/dev/null || true)
containers_before=$(buildah containers -q --all)
if ! nice -n 19 buildah build "${build_args[@]}" . >"$WORK/build.log" 2>&1; then
  tail -n 40 "$WORK/build.log"
  # A failed step leaves its working container behind.
  for c in $(buildah containers -q --all); do
    [[ $containers_before == *"$c"* ]] || buildah rm "$c" >/dev/null 2>&1 || true
  done
  fatal "buildah build"
fi
grep -E '^(\[[0-9]/[0-9]\] STEP|--> Using cache| *Finished|Successfully tagged)' "$WORK/build.log" | sed 's/^/  /'
pass "the Dockerfile builds"
# The image this build replaced, now without a name: removed.
dangling=$(buildah images --noheading --filter dangling=true --format '{{.ID}}')
if [ -n "$previous" ] && [[ $dangling == *"${previous:0:12}"* ]]; then
  buildah rmi "$previous" >/dev/null 2>&1 || true
fi

# ---- 4. the image ---------------------------------------------------------------
phase image "configuration, contents, size"
cfg() { buildah inspect --type image --format "$1" "$IMAGE"; }
user=$(cfg '{{.OCIv1.Config.User}}')
workdir=$(cfg '{{.OCIv1.Config.WorkingDir}}')
entrypoint=$(cfg '{{range .OCIv1.Config.Entrypoint}}{{.}} {{end}}')
ports=$(cfg '{{range $p, $v := .OCIv1.Config.ExposedPorts}}{{$p}} {{end}}')
cfg '{{range .OCIv1.Config.Env}}{{println .}}{{end}}' | sed '/^$/d' >"$WORK/image-env"
echo "  user=$user workdir=$workdir entrypoint=$entrypoint ports=$ports"
echo "  env: $(tr '\n' ' ' <"$WORK/image-env")"
check "USER is 65532:65532" test "$user" = 65532:65532
check "ENTRYPOINT is the router" test "$entrypoint" = "/usr/local/bin/router "
check "EXPOSE 8080 and 8081" test "$ports" = "8080/tcp 8081/tcp "

CTR=$(buildah from --pull=never "$IMAGE")
MNT=$(buildah mount "$CTR")
check "router and polysocketd are executables in /usr/local/bin" \
  test -x "$MNT/usr/local/bin/router" -a -x "$MNT/usr/local/bin/polysocketd"
check "no shell in the image" bash -c '! ls "$1"/bin/sh "$1"/usr/bin/sh "$1"/bin/bash "$1"/bin/dash 2>/dev/null | grep -q .' _ "$MNT"
check "the binaries are stripped" \
  bash -c '! file -b "$1"/usr/local/bin/router "$1"/usr/local/bin/polysocketd 2>/dev/null | grep -q "not stripped"' _ "$MNT"

# Size as `buildah images`/`docker images` give it: the layers, uncompressed.
size_bytes=$(python3 - "$IMAGE" <<'EOF' 2>/dev/null || true
import json, subprocess, sys
info = json.loads(subprocess.check_output(["buildah", "info"]))
root, driver = info["store"]["GraphRoot"], info["store"]["GraphDriverName"]
image_id = subprocess.check_output(
    ["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", sys.argv[1]], text=True).strip()
images = json.load(open(f"{root}/{driver}-images/images.json"))
layers = {l["id"]: l for l in json.load(open(f"{root}/{driver}-layers/layers.json"))}
layer = next(i["layer"] for i in images if i["id"] == image_id)
total = 0
while layer:
    total += layers[layer].get("diff-size", 0)
    layer = layers[layer].get("parent")
print(total)
EOF
)
if ! [[ $size_bytes =~ ^[0-9]+$ ]] || [ "$size_bytes" -eq 0 ]; then
  size_bytes=$(du -sb "$MNT" | cut -f1) # the files a container sees
fi
bins=$(($(stat -c %s "$MNT/usr/local/bin/router") + $(stat -c %s "$MNT/usr/local/bin/polysocketd")))
mb() { echo "$(($1 / 1000000)).$(($1 % 1000000 / 100000))"; }
size_mb=$(mb "$size_bytes")
echo "  image size: $size_mb MB ($size_bytes bytes; the two binaries: $(mb "$bins") MB)"
echo "  buildah images: $(buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$IMAGE" | head -n1)"
check "image size under $MAX_MB MB (it is $size_mb MB)" test "$size_bytes" -lt $((MAX_MB * 1000000))

if [ -n "${IMAGE_ARCHIVE:-}" ]; then
  rm -f "$IMAGE_ARCHIVE"
  buildah push --quiet "$IMAGE" "docker-archive:$IMAGE_ARCHIVE:${IMAGE#localhost/}" >/dev/null
  echo "  saved to $IMAGE_ARCHIVE (docker-archive)"
fi

# ---- 5. k8s/ ----------------------------------------------------------------------
phase k8s "the manifests reference $IMAGE"
# What kustomize renders (kubectl when there is one), else the image: lines
# with the kustomization's `images:` retag applied. Third-party images (redis)
# are left out: only references to the polysocket image count.
norm() { sed -e 's#^docker\.io/library/##' -e 's#^localhost/##'; }
want=$(echo "$IMAGE" | norm)
repo=${want%:*}
KUBECTL=${KUBECTL:-$(command -v kubectl || true)}
if [ -n "$KUBECTL" ] && "$KUBECTL" kustomize k8s/ >"$WORK/k8s.yaml" 2>/dev/null; then
  how="kubectl kustomize"
  refs=$(sed -n 's/^ *image: *//p' "$WORK/k8s.yaml" | tr -d "\"'" | norm)
else
  how="k8s/*.yaml with kustomization.yaml's images:"
  new=$(awk -v r="$repo" '
    /^images:/ { on = 1; next } on && /^[^ #-]/ { on = 0 }
    on && $1 == "-" && $2 == "name:" { cur = $3 }
    on && cur == r && $1 == "newName:" { name = $2 } on && cur == r && $1 == "newTag:" { tag = $2 }
    END { gsub(/["\047]/, "", name); gsub(/["\047]/, "", tag); print name "|" tag }' k8s/kustomization.yaml)
  refs=$(grep -rhoE '^ *image: *[^ ]+' k8s --include='*.yaml' | sed 's/^ *image: *//' | tr -d "\"'" | norm \
    | while read -r ref; do
      name=$ref tag=latest
      if [[ ${ref##*/} == *:* ]]; then name=${ref%:*} tag=${ref##*:}; fi
      if [ "$name" = "$repo" ]; then
        n=${new%|*} t=${new#*|}
        echo "${n:-$name}:${t:-$tag}"
      else echo "$ref"; fi
    done)
fi
ours=$(echo "$refs" | awk -v r="$repo" -F: '$1 == r || $1 ~ "/" r "$"' | sort -u)
echo "  $how: $(echo "$refs" | sort -u | tr '\n' ' ')"
check "k8s references the polysocket image as $want" test "$ours" = "$want"

# ---- 6. end to end ----------------------------------------------------------------
phase e2e "a router and two daemons from the image, as uid ${user%%:*}, read-only root"
IMG_USER=$user IMG_WORKDIR=$workdir unshare --mount --propagation private \
  bash image/e2e.sh "$MNT" "$WORK" || fail "image/e2e.sh ran to its end"

summary
