#!/usr/bin/env bash
# Installs what rshim's build and tests need, only what is missing: Debian's containerd (with
# ctr and the Go shim used as the reference), runc, a static busybox for root filesystems, and
# util-linux (unshare, script), protoc (for the CRI client's generated code). Cargo comes from
# the machine's toolchain (rustup).
set -euo pipefail
need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v unshare >/dev/null || need+=(util-linux)
command -v script >/dev/null || need+=(bsdutils)
command -v protoc >/dev/null || need+=(protobuf-compiler)
[ -x /usr/bin/python3 ] || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install a Rust toolchain (rustup) first" >&2
  exit 1
fi
