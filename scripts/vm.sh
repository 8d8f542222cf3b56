#!/usr/bin/env bash
# rshim beside containerd's Go shim on a node as nodes run: cgroup v2 (unified), systemd as
# PID 1, containerd's CRI with `SystemdCgroup = true` for both runtime types. A Debian VM under
# qemu (TCG: no KVM needed), booted with a directory shared over virtio-9p that carries the
# static release shim, the compiled integration tests and the job; a unit in the guest runs the
# job at boot, writes the results into the shared directory and powers off.
#
#   scripts/vm.sh              build what is missing, boot, run, print `check | Go shim | rshim`
#   scripts/vm.sh --rebuild    remake the cached guest image first
#   scripts/vm.sh --image-only build (or check) the cached guest image, then stop
#
# The guest image is cached outside the clone, in $RSHIM_VM_CACHE (default /var/cache/rshim-vm),
# per suite ($RSHIM_VM_SUITE: trixie, the default, has containerd 1.7 / runc 1.1; sid has
# containerd 2.x), and remade when missing or when its recipe (this file's GUEST_* parts)
# changes. Exit status: 0 when rshim shows what the Go shim shows; 1 when rshim fails or
# differs where the Go shim passes; 2 when the VM cannot boot or the job does not finish; 3 when
# the Go shim itself fails the reference checks (harness or environment broken). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE="${RSHIM_VM_SUITE:-trixie}"
CACHE="${RSHIM_VM_CACHE:-/var/cache/rshim-vm}/$SUITE"
MIRROR="${RSHIM_VM_MIRROR:-http://deb.debian.org/debian}"
BOOT_TIMEOUT="${RSHIM_VM_BOOT_TIMEOUT:-300}" # seconds until the job has started in the guest
JOB_TIMEOUT="${RSHIM_VM_TIMEOUT:-1500}"      # seconds until the VM has powered off
# The ctr parity scenarios run in the guest (checkpoint needs CRIU, absent from the guest).
SCENARIOS="${RSHIM_VM_SCENARIOS:-run-echo,run-exit,run-missing,run-tty,run-stdin,detached,bad,shim-killed,metrics,oom,log-uri}"
REBUILD=0
IMAGE_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --rebuild) REBUILD=1 ;;
    --image-only) IMAGE_ONLY=1 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "scripts/vm.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" != 0 ]; then
  echo "scripts/vm.sh: run as root (debootstrap, chroot)" >&2
  exit 2
fi
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
T_START=$(date +%s)
say() { echo "vm.sh [$(($(date +%s) - T_START))s] $*"; }

# ---- host tools ----------------------------------------------------------------------------
need=()
command -v debootstrap > /dev/null || need+=(debootstrap)
command -v qemu-system-x86_64 > /dev/null || need+=(qemu-system-x86)
command -v mkfs.ext4 > /dev/null || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -qq
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; then
    # qemu-utils from bookworm-backports (as some images have) breaks bookworm's qemu-system.
    echo "deb http://deb.debian.org/debian bookworm-backports main" \
      > /etc/apt/sources.list.d/rshim-vm-backports.list
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bookworm-backports "${need[@]}"
  fi
fi

# ---- the guest recipe (its hash names the cached image) ------------------------------------
GUEST_PACKAGES="linux-image-amd64,systemd,systemd-sysv,dbus,containerd,runc,busybox-static,kmod,procps,iproute2,containernetworking-plugins"
# Units that only slow a TCG boot down or wait for a terminal that nobody opens.
GUEST_MASK="serial-getty@ttyS0.service getty@tty1.service getty.target apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer dpkg-db-backup.timer systemd-timesyncd.service containerd.service"
read -r -d '' GUEST_UNIT << 'EOF' || true
[Unit]
Description=rshim VM job (scripts/vm.sh)
Wants=dbus.service
After=dbus.service basic.target
SuccessAction=poweroff
FailureAction=poweroff

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/rshim-vm-job
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
EOF
read -r -d '' GUEST_ENTRY << 'EOF' || true
#!/bin/sh
# Mounts the host's shared directory (virtio-9p) and runs its job.sh.
set -e
modprobe 9pnet_virtio
modprobe 9p
mkdir -p /shared
mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 shared /shared
echo "rshim-vm: running /shared/job.sh" > /dev/console
exec /bin/bash /shared/job.sh
EOF
RECIPE_HASH=$(printf '%s\n' "$SUITE" "$MIRROR" "$GUEST_PACKAGES" "$GUEST_MASK" "$GUEST_UNIT" \
  "$GUEST_ENTRY" recipe-1 | sha256sum | cut -c1-16)

build_image() {
  local tmp="$CACHE.tmp"
  say "building the $SUITE guest in $CACHE (debootstrap; a few minutes)"
  # A finished debootstrap of the same suite and packages is kept (an interrupted build resumes
  # after it).
  local bootstrap
  bootstrap=$(printf '%s\n' "$SUITE" "$MIRROR" "$GUEST_PACKAGES" | sha256sum | cut -c1-16)
  if [ "$(cat "$tmp/debootstrap.ok" 2> /dev/null)" != "$bootstrap" ] &&
    [ "$(cat "$CACHE/debootstrap.ok" 2> /dev/null)" = "$bootstrap" ]; then
    rm -rf "$tmp"
    mv "$CACHE" "$tmp" # only the guest's configuration changed: redo that on the same root
  fi
  if [ "$(cat "$tmp/debootstrap.ok" 2> /dev/null)" != "$bootstrap" ]; then
    rm -rf "$tmp"
    mkdir -p "$tmp"
    if ! debootstrap --variant=minbase --include="$GUEST_PACKAGES" "$SUITE" "$tmp/root" \
      "$MIRROR" > "$tmp/debootstrap.log" 2>&1; then
      tail -n 30 "$tmp/debootstrap.log" >&2
      echo "scripts/vm.sh: debootstrap of $SUITE failed (log: $tmp/debootstrap.log)" >&2
      exit 2
    fi
    echo "$bootstrap" > "$tmp/debootstrap.ok"
  fi
  local r="$tmp/root"
  echo rshim-vm > "$r/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 rshim-vm\n' > "$r/etc/hosts"
  echo '/dev/vda / ext4 rw,relatime 0 1' > "$r/etc/fstab"
  chroot "$r" passwd -d root > /dev/null
  for unit in $GUEST_MASK; do ln -sf /dev/null "$r/etc/systemd/system/$unit"; done
  printf '%s\n' "$GUEST_UNIT" > "$r/etc/systemd/system/rshim-vm-job.service"
  ln -sf /etc/systemd/system/rshim-vm-job.service \
    "$r/etc/systemd/system/multi-user.target.wants/rshim-vm-job.service"
  printf '%s\n' "$GUEST_ENTRY" > "$r/usr/local/sbin/rshim-vm-job"
  chmod 755 "$r/usr/local/sbin/rshim-vm-job"
  rm -f "$r"/var/cache/apt/archives/*.deb
  local kernel initrd
  kernel=$(ls "$r"/boot/vmlinuz-* | sort -V | tail -n 1)
  initrd=$(ls "$r"/boot/initrd.img-* | sort -V | tail -n 1)
  if [ ! -s "$kernel" ] || [ ! -s "$initrd" ]; then
    echo "scripts/vm.sh: the guest has no kernel or initrd in $r/boot" >&2
    exit 2
  fi
  cp "$kernel" "$tmp/vmlinuz"
  cp "$initrd" "$tmp/initrd.img"
  say "making the disk image (mkfs.ext4 -d)"
  truncate -s 6G "$tmp/disk.img"
  mkfs.ext4 -q -F -L rshim-root -d "$r" "$tmp/disk.img"
  echo "$RECIPE_HASH" > "$tmp/recipe"
  rm -rf "$CACHE"
  mv "$tmp" "$CACHE"
}

if [ "$REBUILD" = 1 ] || [ "$(cat "$CACHE/recipe" 2> /dev/null)" != "$RECIPE_HASH" ] ||
  [ ! -s "$CACHE/disk.img" ] || [ ! -s "$CACHE/vmlinuz" ] || [ ! -s "$CACHE/initrd.img" ]; then
  build_image
else
  say "cached $SUITE guest: $CACHE (recipe $RECIPE_HASH)"
fi
T_IMAGE=$(date +%s)
[ "$IMAGE_ONLY" = 1 ] && exit 0

# ---- host artifacts: the static shim and the compiled tests --------------------------------
say "building the static release shim and the integration tests"
bash scripts/build-release.sh --shim-only | tail -n 1
tests_out=$(cargo test --locked --no-run -p rshim-integration --test cri --test ctr_parity 2>&1) || {
  echo "$tests_out" >&2
  exit 2
}
test_bin() {
  echo "$tests_out" | sed -n "s/.*Executable tests\/$1\.rs (\(.*\))/\1/p" | tail -n 1
}
CRI_BIN=$(test_bin cri)
CTR_BIN=$(test_bin ctr_parity)
if [ ! -x "$CRI_BIN" ] || [ ! -x "$CTR_BIN" ]; then
  echo "scripts/vm.sh: cannot find the compiled tests in cargo's output:" >&2
  echo "$tests_out" >&2
  exit 2
fi
SHARED=$(mktemp -d /tmp/rshim-vm.XXXXXX)
mkdir -p "$SHARED/bin" "$SHARED/tests" "$SHARED/out"
# RSHIM_VM_SHIM: another shim binary to put under test (default: the static release build).
cp "${RSHIM_VM_SHIM:-target/x86_64-unknown-linux-gnu/release/containerd-shim-rshim-v2}" \
  "$SHARED/bin/containerd-shim-rshim-v2"
cp "$CRI_BIN" "$SHARED/tests/cri"
cp "$CTR_BIN" "$SHARED/tests/ctr_parity"
cat > "$SHARED/job.sh" << EOF
#!/bin/bash
# Runs in the guest at boot (rshim-vm-job.service); results go to /shared/out.
set -u
S=/shared
O=\$S/out
{
  echo "kernel: \$(uname -r)"
  echo "cgroup fs: \$(stat -fc %T /sys/fs/cgroup) (cgroup2fs = v2)"
  echo "pid 1: \$(cat /proc/1/comm), \$(systemctl --version | head -n 1)"
  echo "containerd: \$(containerd --version)"
  echo "runc: \$(runc --version | head -n 1)"
  echo "boot to job: \$(cut -d' ' -f1 /proc/uptime) s since the kernel started"
} > \$O/facts.txt 2>&1
date +%s > \$O/started
export HOME=/root PATH=\$S/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export RSHIM_BIN_DIR=\$S/bin RSHIM_IT_OBS_DIR=\$O/obs RSHIM_IT_LOG_DIR=\$O/logs
# ShimCgroup for both CRI handlers: each shim must move itself there.
mkdir -p /sys/fs/cgroup/rshim-shims
t=\$(date +%s)
echo "rshim-vm: CRI with SystemdCgroup = true" > /dev/console
RSHIM_IT_SYSTEMD_CGROUP=1 RSHIM_IT_SHIM_CGROUP=/rshim-shims \
  timeout 900 \$S/tests/cri --test-threads=1 --nocapture > \$O/cri.log 2>&1
echo \$? > \$O/cri.rc
echo \$((\$(date +%s) - t)) > \$O/cri.secs
t=\$(date +%s)
echo "rshim-vm: ctr parity scenarios $SCENARIOS" > /dev/console
RSHIM_SCENARIOS=$SCENARIOS timeout 900 \$S/tests/ctr_parity --test-threads=1 --nocapture \
  > \$O/ctr.log 2>&1
echo \$? > \$O/ctr.rc
echo \$((\$(date +%s) - t)) > \$O/ctr.secs
journalctl -b --no-pager -o short-monotonic > \$O/journal.txt 2>&1
date +%s > \$O/done
sync
EOF

# ---- boot ------------------------------------------------------------------------------------
QEMU=
stop_qemu() {
  [ -n "$QEMU" ] || return 0
  kill "$QEMU" 2> /dev/null || true
  wait "$QEMU" 2> /dev/null || true
}
trap stop_qemu EXIT
fail_boot() {
  stop_qemu
  echo "---- guest console (last 40 lines of $SHARED/console.log) ----"
  tail -n 40 "$SHARED/console.log" 2> /dev/null || true
  echo "scripts/vm.sh: $*" >&2
  exit 2
}
# Boots the guest and waits for its job; on failure says why in WHY and returns 1.
boot_and_run() {
  say "booting the $SUITE guest (TCG, 2 vCPUs, 4 GiB); shared dir $SHARED"
  T_BOOT=$(date +%s)
  qemu-system-x86_64 -accel tcg -m 4G -smp 2 -display none -monitor none -no-reboot \
    -serial "file:$SHARED/console.log" -nic none \
    -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 quiet loglevel=4 panic=-1 systemd.show_status=0" \
    -drive "file=$CACHE/disk.img,format=raw,if=virtio" -snapshot \
    -virtfs "local,path=$SHARED,mount_tag=shared,security_model=passthrough,id=shared" &
  QEMU=$!
  local started=0 now
  while kill -0 "$QEMU" 2> /dev/null; do
    now=$(date +%s)
    if [ "$started" = 0 ] && [ -e "$SHARED/out/started" ]; then
      started=1
      say "guest booted, job running ($(grep 'boot to job' "$SHARED/out/facts.txt" 2> /dev/null || true))"
      say "CRI test, then ctr parity scenarios (about 5 minutes under TCG)"
    fi
    if [ "$started" = 0 ] && [ $((now - T_BOOT)) -gt "$BOOT_TIMEOUT" ]; then
      WHY="the VM did not boot to its job within ${BOOT_TIMEOUT}s"
      return 1
    fi
    if [ $((now - T_BOOT)) -gt "$JOB_TIMEOUT" ]; then
      WHY="the VM did not finish within ${JOB_TIMEOUT}s (started: $started)"
      return 1
    fi
    sleep 2
  done
  wait "$QEMU" || true
  QEMU=
  if [ ! -e "$SHARED/out/started" ]; then
    WHY="the VM exited without starting its job"
    return 1
  fi
  if [ ! -e "$SHARED/out/done" ]; then
    WHY="the VM exited before its job finished"
    return 1
  fi
}
# A guest kernel that crashes (seen once: an int3 trap in the page allocator while the kernel
# patched its own code, which TCG's emulation of cross-modifying code can break) says nothing
# about either shim: the guest is booted once more, from its unchanged image, and only a
# second failure fails the check.
WHY=
if ! boot_and_run; then
  if grep -qE "Oops:|Kernel panic" "$SHARED/console.log" 2> /dev/null; then
    stop_qemu
    QEMU=
    mv "$SHARED/console.log" "$SHARED/console.crashed.log"
    rm -rf "$SHARED/out"
    mkdir -p "$SHARED/out"
    say "the guest kernel crashed ($WHY; console kept in $SHARED/console.crashed.log): once more"
    boot_and_run || fail_boot "$WHY"
  else
    fail_boot "$WHY"
  fi
fi
trap - EXIT
T_END=$(date +%s)
O="$SHARED/out"

# ---- results ---------------------------------------------------------------------------------
echo
sed 's/^/guest /' "$O/facts.txt"
echo
# The table also goes to integration/results/vm.md (with the guest's facts and the scenarios).
TABLE="$SHARED/table.md"
row() { echo "$1" | tee -a "$TABLE"; }
row "| check | Go shim | rshim |"
row "|---|---|---|"
differences=0
cell() { printf '%s' "$1" | cut -c1-110 | sed 's/|/\\|/g'; }
for go in "$O"/obs/*-go.txt; do
  [ -e "$go" ] || continue
  base=$(basename "$go" -go.txt)
  rs="$O/obs/$base-rshim.txt"
  n=$(wc -l < "$go")
  m=$(wc -l < "$rs" 2> /dev/null || echo 0)
  [ "$m" -gt "$n" ] && n=$m
  for i in $(seq 1 "$n"); do
    g=$(sed -n "${i}p" "$go")
    r=$(sed -n "${i}p" "$rs" 2> /dev/null)
    key="${g%%: *}"
    [ -n "$key" ] || key="${r%%: *}"
    gv="${g#*: }"
    rv="${r#*: }"
    if [ "$g" = "$r" ]; then
      row "| $base: $(cell "$key") | $(cell "$gv") | same |"
    else
      differences=$((differences + 1))
      row "| **$base: $(cell "$key")** | $(cell "$gv") | **$(cell "$rv")** |"
    fi
  done
done
echo
verdict=0
for t in cri ctr; do
  rc=$(cat "$O/$t.rc")
  secs=$(cat "$O/$t.secs")
  if [ "$rc" = 0 ]; then
    say "$t test: passed in the guest (${secs}s)"
    continue
  fi
  echo "---- $t test failed (exit $rc, ${secs}s); end of its output ----"
  if grep -q "panicked at" "$O/$t.log"; then
    sed -n '/panicked at/,$p' "$O/$t.log" | grep -v '^\s*$' | head -n 60
  else
    grep -v '^\s*$' "$O/$t.log" | tail -n 40
  fi
  if grep -qE "Go shim lacks|reference \(Go shim\) run of" "$O/$t.log"; then
    say "$t test: the Go shim itself fails a reference check: harness or guest broken"
    [ "$verdict" = 0 ] && verdict=3
  else
    say "$t test: rshim differs from or fails where the Go shim passes"
    verdict=1
  fi
done
# A row can differ while its test passes: the Go shim alone failed an expected line (its flake,
# left out of the comparison); rshim passed it.
while read -r line; do say "$line"; done < <(grep -h "^NOTE: " "$O/cri.log" "$O/ctr.log" || true)
say "timings: image $((T_IMAGE - T_START))s, build $((T_BOOT - T_IMAGE))s, VM $((T_END - T_BOOT))s; $differences differing rows"
say "all guest output (logs, console, journal, observations): $SHARED"
mkdir -p integration/results
{
  echo "scripts/vm.sh, $(date -u +%Y-%m-%d), ctr scenarios: $SCENARIOS"
  echo
  sed 's/^/    /' "$O/facts.txt"
  echo
  cat "$TABLE"
} > integration/results/vm.md
exit "$verdict"
