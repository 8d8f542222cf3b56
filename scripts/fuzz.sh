#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time: `scripts/fuzz.sh [SECONDS]` (default
# 30 per target). cargo-fuzz builds with nightly-only flags (sanitizer, coverage); on the stable
# toolchain of these machines RUSTC_BOOTSTRAP=1 enables them for this build only.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-30}
if ! command -v cargo-fuzz > /dev/null; then
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build 2>&1 | tail -n 2
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  echo "fuzz: $target for ${secs}s"
  cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -rss_limit_mb=4096 \
    2>&1 | grep -E "^(#[0-9]+ +DONE|==|SUMMARY|thread|panicked|Done)" || true
  # libFuzzer exits non-zero on a crash; pipefail is off for the grep above, so check here.
  if ls "artifacts/$target"/crash-* > /dev/null 2>&1; then
    echo "fuzz: $target crashed; reproduce with: cargo fuzz run $target artifacts/$target/crash-..." >&2
    exit 1
  fi
done
