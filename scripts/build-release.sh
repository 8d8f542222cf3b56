#!/usr/bin/env bash
# The release shim as it should be deployed: statically linked (static-pie, glibc; it uses no
# NSS), so an idle shim maps no shared library (about 1.5 MiB less RSS per shim); then the
# release tools, unless --shim-only.
#   shim:  target/x86_64-unknown-linux-gnu/release/containerd-shim-rshim-v2
#   bench: target/release/rshim-bench (measures the static shim when it exists)
# --target keeps crt-static away from build scripts and proc-macros, which cannot be static.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked -p rshim --bins --target x86_64-unknown-linux-gnu
shim=target/x86_64-unknown-linux-gnu/release/containerd-shim-rshim-v2
if ! ldd "$shim" 2>&1 | grep -qE "statically linked|not a dynamic executable"; then
  echo "build-release: $shim is not statically linked" >&2
  exit 1
fi
if [ "${1:-}" != --shim-only ]; then
  cargo build --release --locked --bins
fi
echo "shim: $PWD/$shim"
