#!/usr/bin/env bash
# Runs every test, installing what the tests need when it is missing:
# redis-server (the fleet tests start their own), kosoku (the Autobahn
# WebSocket cases), Debian's chromium and the npm packages of the browser
# tests (playwright-core drives chromium; acorn checks the client is ES3;
# sockjs, engine.io and their clients are the fallback test's peers) and
# of the npm package's tests (TypeScript 5 and 7, esbuild, webpack, publint
# and attw, at the versions of tests/npm/package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=lib/install.sh
source scripts/lib/install.sh

command -v redis-server >/dev/null 2>&1 || apt_install redis-server
[ -x /usr/bin/chromium ] || apt_install chromium

if ! command -v kosoku >/dev/null 2>&1; then
  echo "== installing kosoku"
  python3 -m pip install --quiet --disable-pip-version-check kosoku
  command -v pyenv >/dev/null 2>&1 && pyenv rehash
fi

if [ ! -d tests/browser/node_modules ]; then
  echo "== installing the browser tests' npm packages"
  npm --prefix tests/browser ci --no-audit --no-fund --loglevel=error
fi

if [ ! -d tests/npm/node_modules ]; then
  echo "== installing the npm package tests' npm packages"
  npm --prefix tests/npm ci --no-audit --no-fund --loglevel=error
fi

# The Rust tests; they also build the binaries the browser tests start.
# The hostile-input suite measures what other sockets see while it
# attacks: it runs on its own afterwards, one test at a time, figures shown.
cargo test --workspace "$@" -- --skip hostile_

echo "== hostile inputs (tests/tests/hostile.rs)"
cargo test -p polysocket-tests --test hostile -- --nocapture --test-threads 1 2>&1 | grep -vE "^\s+(Compiling|Finished|Running)"

echo "== browser tests (headless chromium)"
npm --prefix tests/browser test

# client/ as the npm package "polysocket": packed, installed from the
# tarball, linted (publint, attw), type-checked, and bundled with esbuild
# and webpack into pages run in chromium against the binaries built above.
echo "== npm package tests"
npm --prefix tests/npm test
