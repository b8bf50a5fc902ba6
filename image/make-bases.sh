#!/usr/bin/env bash
# Makes the Dockerfile's base images locally, from Debian's packages, and tags
# them with exactly the names its FROM lines use, so that
# `buildah build --pull=never` builds the shipped Dockerfile unchanged where no
# container registry can be reached (CI). scripts/image.sh runs it.
#
#   image/make-bases.sh [Dockerfile]
#
# Known bases (anything else fails, naming the base):
#   rust:<ver>-<suite>            Debian <suite> with gcc, libc6-dev, make,
#                                 pkg-config, ca-certificates, and this
#                                 machine's Rust toolchain (rustc --print
#                                 sysroot, without its docs) laid out as in the
#                                 official image: RUSTUP_HOME=/usr/local/rustup,
#                                 CARGO_HOME=/usr/local/cargo on PATH.
#   gcr.io/distroless/cc-debian<N>[:nonroot]
#                                 the packages distroless "cc" ships (libc6,
#                                 libssl3, libgcc-s1, libgomp1, libstdc++6,
#                                 ca-certificates' bundle, tzdata, netbase,
#                                 base-files), unpacked without their
#                                 maintainer scripts or documentation; no shell,
#                                 no package manager; users root, nobody and
#                                 nonroot (65532); for :nonroot, USER 65532 and
#                                 WORKDIR /home/nonroot, as distroless sets.
#   scratch                       nothing to make.
#
# A base already in local storage that this script did not make (a real
# pulled image) is used as it is. One it made is kept under
# localhost/polysocket-ci/<kind>:<recipe hash> and reused while this file and
# (for the builder) the Rust toolchain are unchanged: a second run takes
# seconds. Heavy steps run under `nice -n 19`.
set -euo pipefail

DOCKERFILE=${1:-Dockerfile}
HERE=$(cd "$(dirname "$0")" && pwd)
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
CACHE_REPO=localhost/polysocket-ci

log() { printf '[make-bases] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The Dockerfile's FROM images with the defaults of the ARGs declared before
# the first FROM substituted (build arguments are not passed: the defaults are
# what a user's `docker build .` gets).
from_images() {
  awk '
    function subst(s,   k, out, i, name) {
      for (k in arg) gsub("\\$\\{" k "\\}", arg[k], s)
      # $NAME without braces: NAME runs to the first character that cannot be in a name.
      out = ""
      while ((i = index(s, "$")) > 0) {
        out = out substr(s, 1, i - 1); s = substr(s, i + 1)
        match(s, /^[A-Za-z_][A-Za-z0-9_]*/)
        name = substr(s, 1, RLENGTH)
        if (RLENGTH > 0 && (name in arg)) { out = out arg[name]; s = substr(s, RLENGTH + 1) } else out = out "$"
      }
      return out s
    }
    tolower($1) == "arg" && !seen_from {
      eq = index($2, "=")
      if (eq > 0) { v = substr($2, eq + 1); gsub(/^"|"$/, "", v); arg[substr($2, 1, eq - 1)] = v }
      next
    }
    tolower($1) == "from" {
      seen_from = 1
      n = 2; while ($n ~ /^--/) n++
      img = subst($n)
      if (tolower($(n + 1)) == "as") stage[tolower($(n + 2))] = 1
      if (!(tolower(img) in stage)) print img
    }
  ' "$DOCKERFILE"
}

# Suite for a Debian release number or name found in a tag.
suite_of() {
  case "$1" in
    *bookworm*|*debian12*) echo bookworm ;;
    *trixie*|*debian13*) echo trixie ;;
    *bullseye*|*debian11*) echo bullseye ;;
    *) die "cannot tell the Debian release of base image $1" ;;
  esac
}

sources_for() { # suite -> apt source lines for mmdebstrap
  printf '%s\n' \
    "deb $MIRROR $1 main" \
    "deb $MIRROR $1-updates main" \
    "deb $SECURITY_MIRROR $1-security main"
}

image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }
image_id() { buildah inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null; }

# Is image $1 one that this script made (any of its names is in CACHE_REPO)?
made_here() {
  local id names
  id=$(image_id "$1") || return 1
  names=$(buildah images --noheading --format '{{.ID}} {{.Name}}:{{.Tag}}' --no-trunc 2>/dev/null \
    | awk -v id="$id" '{ sub(/^sha256:/, "", $1) } $1 == id { print $2 }')
  grep -q "^$CACHE_REPO/" <<<"$names"
}

# Remove earlier recipes' images of one kind (not the current one).
prune_kind() { # kind keep-tag
  local ref
  buildah images --noheading --format '{{.Name}}:{{.Tag}}' 2>/dev/null \
    | { grep "^$CACHE_REPO/$1:" || true; } | while read -r ref; do
      [ "$ref" = "$CACHE_REPO/$1:$2" ] && continue
      log "removing the outdated base $ref"
      buildah rmi "$ref" >/dev/null 2>&1 || true
    done
}

CTR=""
cleanup() {
  if [ -n "$CTR" ]; then
    buildah umount "$CTR" >/dev/null 2>&1 || true
    buildah rm "$CTR" >/dev/null 2>&1 || true
  fi
  if [ -n "${STAGE:-}" ]; then rm -rf "$STAGE"; fi
}
trap cleanup EXIT

# ---- the builder: Debian + gcc + the host's Rust toolchain -------------------
make_rust() { # name suite out-tag
  local name=$1 suite=$2 tag=$3 sysroot tc ver mnt t0
  sysroot=$(rustc --print sysroot)
  tc=$(basename "$sysroot")
  ver=$(rustc -V | awk '{print $2}')
  t0=$SECONDS
  CTR=$(buildah from scratch)
  mnt=$(buildah mount "$CTR")
  log "$name: mmdebstrap $suite (gcc, libc6-dev, make, pkg-config, ca-certificates)"
  sources_for "$suite" | nice -n 19 mmdebstrap --quiet --variant=apt \
    --include=ca-certificates,gcc,libc6-dev,make,mawk,pkg-config \
    "$suite" "$mnt" - >&2
  log "$name: Rust $ver ($tc) from $sysroot, without share/doc"
  mkdir -p "$mnt/usr/local/rustup/toolchains/$tc" "$mnt/usr/local/cargo/bin"
  tar -C "$sysroot" --exclude=./share/doc -cf - . | tar -C "$mnt/usr/local/rustup/toolchains/$tc" -xf -
  # rustup and its proxies, as the official image has them (a proxy runs the
  # toolchain's binary by its full path, so the toolchain finds its libraries).
  install -m 0755 "$(command -v rustup)" "$mnt/usr/local/cargo/bin/rustup"
  local b
  for b in "$mnt/usr/local/rustup/toolchains/$tc/bin/"*; do
    ln "$mnt/usr/local/cargo/bin/rustup" "$mnt/usr/local/cargo/bin/$(basename "$b")"
  done
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\nauto_self_update = "disable"\n' "$tc" \
    >"$mnt/usr/local/rustup/settings.toml"
  # rustup wants /proc (as it has in a build): a private mount namespace.
  unshare --mount --propagation private sh -c 'mount -t proc proc "$1/proc" && exec chroot "$1" \
      /usr/bin/env RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo /usr/local/cargo/bin/cargo -V' \
    sh "$mnt" >&2 || die "$name: cargo does not run in the new root"
  buildah umount "$CTR" >/dev/null
  buildah config \
    --env RUSTUP_HOME=/usr/local/rustup \
    --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env RUST_VERSION="$ver" \
    --cmd bash \
    "$CTR"
  log "$name: committing"
  nice -n 19 buildah commit --quiet --rm "$CTR" "$tag" >/dev/null
  CTR=""
  log "$name: made in $((SECONDS - t0)) s"
}

# ---- the runtime: distroless-like cc ----------------------------------------
DISTROLESS_CC_PACKAGES="base-files netbase tzdata ca-certificates libc6 libssl3 libgcc-s1 libgomp1 libstdc++6"

make_distroless_cc() { # name suite out-tag
  local name=$1 suite=$2 tag=$3 mnt t0 p deb nonroot=0
  case "$name" in *:nonroot) nonroot=1 ;; esac
  t0=$SECONDS
  STAGE=$(mktemp -d /var/tmp/polysocket-bases.XXXXXX)
  log "$name: downloading $DISTROLESS_CC_PACKAGES ($suite)"
  # The extract variant downloads the packages with their dependencies; only
  # the named ones are unpacked below (no debconf, perl, openssl, mawk).
  sources_for "$suite" | nice -n 19 mmdebstrap --quiet --variant=extract \
    --include="${DISTROLESS_CC_PACKAGES// /,}" --skip=cleanup/apt/cache \
    "$suite" "$STAGE/stage" - >&2
  CTR=$(buildah from scratch)
  mnt=$(buildah mount "$CTR")
  mkdir -p "$mnt/var/lib/dpkg/status.d"
  for p in $DISTROLESS_CC_PACKAGES; do
    deb=$(ls "$STAGE/stage/var/cache/apt/archives/${p}_"*.deb 2>/dev/null | head -n1)
    [ -n "$deb" ] || die "$name: package $p was not downloaded"
    dpkg-deb -x "$deb" "$mnt"
    dpkg-deb -f "$deb" >"$mnt/var/lib/dpkg/status.d/$p"
  done
  chmod 0755 "$mnt"
  # ca-certificates' postinst would build the bundle: every certificate it ships.
  mkdir -p "$mnt/etc/ssl/certs"
  cat "$mnt"/usr/share/ca-certificates/*/*.crt >"$mnt/etc/ssl/certs/ca-certificates.crt"
  # No maintainer tools (update-ca-certificates), documentation or lintian data.
  rm -rf "$mnt/usr/share/ca-certificates" "$mnt/usr/sbin" "$mnt/usr/share/doc" "$mnt/usr/share/man" \
    "$mnt/usr/share/info" "$mnt/usr/share/lintian" "$mnt/usr/share/gcc" "$mnt/usr/share/gdb"
  ln -sf /usr/share/zoneinfo/Etc/UTC "$mnt/etc/localtime"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$mnt/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n' >"$mnt/etc/group"
  printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n' >"$mnt/etc/nsswitch.conf"
  install -d -m 0700 "$mnt/root"
  install -d -m 0700 -o 65532 -g 65532 "$mnt/home/nonroot"
  install -d -m 1777 "$mnt/tmp"
  for p in /bin/sh /usr/bin/sh /bin/bash /bin/dash; do
    [ ! -e "$mnt$p" ] || die "$name: a shell ($p) is left in the image"
  done
  buildah umount "$CTR" >/dev/null
  local cfg=(--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt)
  if [ "$nonroot" = 1 ]; then cfg+=(--user 65532 --workingdir /home/nonroot); fi
  buildah config "${cfg[@]}" "$CTR"
  nice -n 19 buildah commit --quiet --rm "$CTR" "$tag" >/dev/null
  CTR=""
  rm -rf "$STAGE"; STAGE=""
  log "$name: made in $((SECONDS - t0)) s"
}

recipe_hash() { # kind extra...
  { cat "$HERE/make-bases.sh"; printf '%s\n' "$@"; } | sha256sum | cut -c1-16
}

need=0
for name in $(from_images); do
  [ "$name" != scratch ] || continue
  case "$name" in
    rust:*|docker.io/library/rust:*)
      command -v rustc >/dev/null && command -v rustup >/dev/null \
        || die "$name: needs this machine's Rust toolchain (rustup, rustc) on PATH"
      kind=rust-builder
      suite=$(suite_of "$name")
      hash=$(recipe_hash "$kind" "$suite" "$(rustc -vV)" "$(cargo -V)")
      ;;
    gcr.io/distroless/cc-debian*)
      kind=distroless-cc
      suite=$(suite_of "$name")
      hash=$(recipe_hash "$kind" "$suite" "$name")
      ;;
    *)
      if image_exists "$name"; then log "$name: present"; continue; fi
      die "base image $name is not in local storage and this script cannot make it"
      ;;
  esac
  # Short names resolve to docker.io/library/ in local storage as on a pull.
  case "$name" in */*) full=$name ;; *) full=docker.io/library/$name ;; esac
  cached=$CACHE_REPO/$kind:$hash
  if image_exists "$full" && ! made_here "$full"; then
    log "$full: present (not made here), used as it is"
    continue
  fi
  if image_exists "$cached"; then
    log "$full: reusing $cached"
  else
    need=1
    case "$kind" in
      rust-builder) make_rust "$full" "$suite" "$cached" ;;
      distroless-cc) make_distroless_cc "$full" "$suite" "$cached" ;;
    esac
  fi
  buildah tag "$cached" "$full"
  prune_kind "$kind" "$hash"
  log "$full -> $(image_id "$full" | cut -c1-12)"
done
[ "$need" = 1 ] || log "all bases were already there"
