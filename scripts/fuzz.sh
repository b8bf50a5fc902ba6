#!/usr/bin/env bash
# Fuzzes every parser of client input (query strings and callbacks, target
# URLs and patterns, /s requests and batches of messages, messages in
# pieces) for FUZZ_SECONDS each
# (default 30), after replaying every input that once found a bug
# (fuzz/regressions/<target>/). A new crash fails the run; its input is in
# fuzz/artifacts/<target>/: fix the bug, then move the input to regressions.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install --quiet --locked cargo-fuzz
fi

# cargo fuzz passes flags only nightly compilers accept; this machine has one
# stable toolchain, which accepts them when told it is bootstrapping.
export RUSTC_BOOTSTRAP=1
seconds=${FUZZ_SECONDS:-30}
targets=$(cargo fuzz list)

cargo fuzz build --sanitizer none
for target in $targets; do
  if [ -d "regressions/$target" ]; then
    echo "== $target: replaying regressions"
    cargo fuzz run --sanitizer none "$target" "regressions/$target" -- -runs=0
  fi
  echo "== $target: fuzzing for ${seconds}s"
  cargo fuzz run --sanitizer none "$target" -- -max_total_time="$seconds" 2>&1 | grep -E "^Done|ERROR|panicked" || true
  if [ -n "$(ls -A "artifacts/$target" 2>/dev/null)" ]; then
    echo "fuzzing found a failing input for $target: fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
echo "fuzzed:" $targets
