#!/usr/bin/env bash
# Installs what rshim's build and tests need, only what is missing: Debian's containerd (with
# ctr and the Go shim used as the reference), runc, a static busybox for root filesystems, and
# util-linux (unshare, script), protoc (for the CRI client's generated code), the CNI plugins
# (pod networks in the CRI test), iproute2. Cargo comes from the machine's toolchain, else
# rustup is installed.
set -euo pipefail
need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v unshare >/dev/null || need+=(util-linux)
command -v script >/dev/null || need+=(bsdutils)
command -v protoc >/dev/null || need+=(protobuf-compiler)
[ -x /usr/bin/python3 ] || need+=(python3)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null; then
  echo "installing a Rust toolchain (rustup, stable)"
  command -v curl >/dev/null || { apt-get update -qq; apt-get install -y -qq curl >/dev/null; }
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
  export PATH="$HOME/.cargo/bin:$PATH"
fi
