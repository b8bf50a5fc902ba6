# Sourced by the scripts that install what they need on a fresh machine.

# Installs Debian packages, refreshing the package lists once per run.
apt_install() {
  (($#)) || return 0
  echo "== installing with apt-get: $*"
  export DEBIAN_FRONTEND=noninteractive
  if [[ -z "${APT_UPDATED:-}" ]]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  apt-get install -y -qq "$@" >/dev/null
}

# Debian puts nginx in /usr/sbin, which a non-login PATH may lack.
find_nginx() { command -v nginx || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } || true; }
