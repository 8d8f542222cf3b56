#!/usr/bin/env bash
# The whole test suite: unit tests, the shim driven directly over ttrpc (tests/), and the
# real-containerd scenarios (integration/), rshim side by side with containerd's Go shim.
# Installs what it needs (Debian packages, a Rust toolchain if missing). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: run as root (it starts containers)" >&2
  exit 1
fi
bash scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

export CARGO_TERM_COLOR=never
# House rules first: formatted, and clippy-clean with warnings as errors.
rustup component add rustfmt clippy > /dev/null 2>&1 || true
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings 2>&1 | tail -n 3
# The shim binary must exist before the tests that launch it.
cargo build --workspace --bins --locked 2>&1 | tail -n 3
cargo test --workspace --locked -- --test-threads=4 2>&1
# The shim as deployed (static release build), through containerd beside the Go shim.
bash scripts/build-release.sh --shim-only
RSHIM_BIN_DIR="$PWD/target/x86_64-unknown-linux-gnu/release" \
  cargo test --locked -p rshim-integration --test ctr_parity 2>&1
# The fault-injection suite: bug classes on real containerd, rshim beside the Go shim.
./target/debug/rshim-faults
# The benchmark harness, quick and to a temp dir: it must keep working (figures are not
# asserted; the published ones come from a full release run).
./target/debug/rshim-bench --quick --out "$(mktemp -d /tmp/rshim-bench-ci.XXXX)" > /dev/null
# cargo-fuzz targets of the decoding paths, 30 s each (installs cargo-fuzz if missing).
bash scripts/fuzz.sh 30
# Other containerd, runc and Docker versions (Debian 13 and sid roots, cached outside the
# clone; Docker 28 and 20.10), rshim beside each one's own Go shim.
bash scripts/matrix.sh
