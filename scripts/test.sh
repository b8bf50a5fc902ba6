#!/usr/bin/env bash
# Runs every test, installing what the tests need when it is missing:
# redis-server (the fleet tests start their own) and kosoku (the Autobahn
# WebSocket cases the daemon's upstream client is checked against).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server >/dev/null
fi

if ! command -v kosoku >/dev/null 2>&1; then
  echo "== installing kosoku"
  python3 -m pip install --quiet --disable-pip-version-check kosoku
  command -v pyenv >/dev/null 2>&1 && pyenv rehash
fi

cargo test --workspace "$@"
