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
# The version matrix's Debian roots and the VM's guest image (cached outside the clone) are made
# in the background while the tests below run: debootstrap and apt mostly wait on the mirror
# and dpkg. Waited for before the matrix; a failure there fails the run with its log.
PREP_LOG="$(mktemp /tmp/rshim-prep.XXXXXX)"
(RSHIM_MATRIX_ROOTS_ONLY=1 bash scripts/matrix.sh && bash scripts/vm.sh --image-only) \
  > "$PREP_LOG" 2>&1 &
PREP=$!
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
# clone; Docker 28 and 20.10), rshim beside each one's own Go shim: ctr parity, conformance
# specs, the CRI test, fault rows 3 to 6, Docker's checks.
if ! wait "$PREP"; then
  cat "$PREP_LOG" >&2
  echo "scripts/test.sh: making the matrix roots or the VM image failed (above)" >&2
  exit 1
fi
bash scripts/matrix.sh
# cgroup v2 with systemd as PID 1 and `SystemdCgroup = true`: a Debian VM under qemu (TCG).
# The CRI test whole (systemd scopes, ShimCgroup, stats, update, OOM); of the ctr parity
# scenarios only those that read cgroup v2 (metrics, OOM) and one plain run, to keep the test
# command's time (about 2 minutes under TCG; scripts/vm.sh alone runs them all).
RSHIM_VM_SCENARIOS=run-echo,metrics,oom bash scripts/vm.sh
