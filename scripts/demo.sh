#!/usr/bin/env bash
# The main job: installs what is missing, builds rshim, starts a private containerd with rshim
# and runs, execs, kills and deletes a container, showing its events. Run as root.
# `scripts/demo.sh --runtime go` shows the same with containerd's Go shim.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/demo.sh: run as root (it starts containers)" >&2
  exit 1
fi
bash scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --bins --quiet
exec ./target/debug/rshim-demo "$@"
