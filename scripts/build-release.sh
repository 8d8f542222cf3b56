#!/usr/bin/env bash
# The release shim as it should be deployed: statically linked (glibc; it uses no NSS), so an
# idle shim maps no shared library (about 1.5 MiB less RSS per shim), and not position
# independent (`relocation-model=static`): a static-pie relocates itself at every start, which
# reads its 330 KiB of relocations and dirties its 240 KiB of relocated data in every shim
# (private memory that the shims of a node cannot share); then the release tools, unless
# --shim-only.
#   shim:  target/x86_64-unknown-linux-gnu/release/containerd-shim-rshim-v2
#   bench: target/release/rshim-bench (measures the static shim when it exists)
# --target keeps crt-static away from build scripts and proc-macros, which cannot be static.
set -euo pipefail
cd "$(dirname "$0")/.."
# opt-level z for the shim alone (the workspace's release profile keeps s for the tools):
# the code an idle shim keeps resident is its text, nearly all of it (the kernel maps 64 KiB
# around each page touched).
CARGO_PROFILE_RELEASE_OPT_LEVEL=z \
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static" \
  cargo build --release --locked -p rshim --bins --target x86_64-unknown-linux-gnu
shim=target/x86_64-unknown-linux-gnu/release/containerd-shim-rshim-v2
# (ldd exits 1 on a static non-PIE binary, saying "not a dynamic executable".)
if ! { ldd "$shim" 2>&1 || true; } | grep -qE "statically linked|not a dynamic executable"; then
  echo "build-release: $shim is not statically linked" >&2
  exit 1
fi
if [ "${1:-}" != --shim-only ]; then
  cargo build --release --locked --bins
fi
echo "shim: $PWD/$shim"
