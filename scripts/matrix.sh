#!/usr/bin/env bash
# rshim beside each target's own Go shim, on containerd/runc/Docker versions other than the
# host's: Debian trixie (containerd 1.7, runc 1.1), Debian sid (containerd 2.1, runc 1.3,
# Docker 28) in chroots built with debootstrap and cached outside the clone, and the host's
# Docker 20.10 (bookworm's docker.io). Prints `target | check | Go shim | rshim` and exits
# non-zero if rshim fails where the Go shim passes, or if a target cannot start.
#
#   scripts/matrix.sh                 # every target
#   scripts/matrix.sh trixie sid      # some of: trixie sid sid-docker bookworm-docker
#   RSHIM_MATRIX_CACHE=/var/cache/rshim-matrix (default)
#   RSHIM_MATRIX_MIRROR=URL           # default: the host's own Debian mirror, from its apt sources
#   RSHIM_MATRIX_KEEP=1               # keep the work dir (logs) under $CACHE/runs/
#   RSHIM_MATRIX_ROOTS_ONLY=1         # only build (or check) the cached roots
#
# Run as root. Installs debootstrap (and, for bookworm-docker, docker.io) on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
WS="$PWD"

if [ "$(id -u)" != 0 ]; then
  echo "scripts/matrix.sh: run as root" >&2
  exit 1
fi

CACHE="${RSHIM_MATRIX_CACHE:-/var/cache/rshim-matrix}"
# Docker state (also inside a root): short, for unix socket paths.
DSTATE=/tmp/rmx-$$
# The mirror the host's apt already uses for Debian's main archive (deb822 or one-line sources).
host_mirror() {
  local m
  m=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
      | grep -v -- '-security' | head -n 1)
  [ -n "$m" ] || m=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
      | awk '{print $2}' | grep -v -- '-security' | head -n 1)
  echo "$m"
}
MIRROR="${RSHIM_MATRIX_MIRROR:-$(host_mirror)}"
[ -n "$MIRROR" ] || { echo "scripts/matrix.sh: no Debian mirror in the host's apt sources; set RSHIM_MATRIX_MIRROR" >&2; exit 1; }
ALL_TARGETS=(trixie sid sid-docker bookworm-docker)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")
for t in "${TARGETS[@]}"; do
  case " ${ALL_TARGETS[*]} " in *" $t "*) ;; *) echo "unknown target $t (one of: ${ALL_TARGETS[*]})" >&2; exit 2 ;; esac
done

# Packages of each root (Debian's own): what the harness runs (containerd, ctr, runc, the
# static busybox the test image is made of, script/unshare, ip, the CNI plugins of the CRI
# test's pods) and, in sid, Docker.
ROOT_PKGS_COMMON="containerd runc busybox-static util-linux bsdutils iproute2 procps criu containernetworking-plugins"
root_pkgs() {
  case "$1" in
    trixie) echo "$ROOT_PKGS_COMMON" ;;
    sid) echo "$ROOT_PKGS_COMMON docker.io docker-cli tini" ;;
  esac
}

log() { printf '[matrix %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

mkdir -p "$CACHE/runs"
# One run at a time per cache (the roots and their /tmp are shared).
exec 9> "$CACHE/.lock"
flock -n 9 || { echo "scripts/matrix.sh: another run holds $CACHE/.lock" >&2; exit 1; }
RUN="$(mktemp -d "$CACHE/runs/run.XXXXXX")"
RESULTS="$RUN/results.tsv"
mkdir -p "$RUN/pids"
: > "$RESULTS"
FAILED_TARGETS=()

# ---------------------------------------------------------------------------------------------
# Cleanup: every daemon we started (pid files under $RUN/pids), every mount under the roots.
cleanup() {
  local rc=$?
  set +e
  for pf in "$RUN"/pids/*; do
    [ -f "$pf" ] || continue
    local pid
    pid="$(cat "$pf")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$pf"
  done
  # The host's Docker 20.10 run: shims of its containerd, containers of its runc root.
  local pid
  for pid in $(pids_with_args -address "$DSTATE/ctrd.sock"); do kill -KILL "$pid" 2>/dev/null; done
  runc_cleanup "$DSTATE/exec/runtime-runc/moby" "$DSTATE" > /dev/null 2>&1
  unmount_under "$DSTATE"
  rm -rf "$DSTATE"
  for root in "$CACHE"/trixie "$CACHE"/sid "$CACHE"/*.building; do
    [ -d "$root" ] || continue
    kill_in_root "$root"
    root_runc_cleanup "$root"
    unmount_under "$root"
    # Temp dirs of a killed test or dockerd (only once nothing is mounted under the root).
    awk -v r="$root" 'index($5, r "/") == 1 || $5 == r {f=1} END {exit f}' /proc/self/mountinfo \
      && rm -rf "$root"/tmp/rsh-* "$root"/tmp/rmx-*
  done
  # A root whose build failed (nothing is mounted in it any more).
  for root in "$CACHE"/*.building; do
    [ -d "$root" ] || continue
    awk -v r="$root" 'index($5, r "/") == 1 || $5 == r {f=1} END {exit f}' /proc/self/mountinfo && rm -rf "$root"
  done
  if [ -z "${RSHIM_MATRIX_KEEP:-}" ] && [ $rc = 0 ]; then
    rm -rf "$RUN"
  else
    log "logs kept in $RUN"
  fi
  exit $rc
}

# Processes whose root or cwd is inside $1 (shims, containers, daemons left by a failure).
kill_in_root() {
  local root="$1" p r
  for p in /proc/[0-9]*; do
    r="$(readlink "$p/root" 2>/dev/null)" || continue
    case "$r" in "$root" | "$root"/*) kill -KILL "${p#/proc/}" 2>/dev/null ;; esac
  done
}

# Containers left by a run inside root $1 (its test or dockerd killed): runc state whose bundle
# exists inside the root, killed and deleted with the root's runc.
root_runc_cleanup() {
  local root="$1" d id bundle
  [ -x "$root/usr/sbin/runc" ] && mountpoint -q "$root/proc" || return 0
  for d in "$root"/run/containerd/runc/* "$root"/tmp/rmx-*/exec/runtime-runc/*; do
    [ -d "$d" ] || continue
    for id in "$d"/*; do
      id="${id##*/}"
      bundle="$(sed -n 's/.*"bundle":"\([^"]*\)".*/\1/p' "$d/$id/state.json" 2>/dev/null)"
      [ -n "$bundle" ] && [ -d "$root$bundle" ] || continue
      chroot "$root" runc --root "${d#"$root"}" kill "$id" KILL > /dev/null 2>&1
      chroot "$root" runc --root "${d#"$root"}" delete --force "$id" > /dev/null 2>&1
    done
  done
}

# Every mount point under $1 (deepest first), lazily.
unmount_under() {
  local root="$1" m
  for _ in 1 2 3; do
    local mounts
    mounts="$(awk -v r="$root" '$5 == r || index($5, r "/") == 1 {print $5}' /proc/self/mountinfo | sort -r -u)"
    [ -n "$mounts" ] || return 0
    while read -r m; do
      [ -n "$m" ] && umount -l "$m" 2>/dev/null
    done <<< "$mounts"
  done
  if awk -v r="$root" '$5 == r || index($5, r "/") == 1 {f=1} END {exit !f}' /proc/self/mountinfo; then
    log "WARNING: mounts left under $root"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# Roots.

# Binds the host's /proc, /sys, /dev, /run into $1 and the root onto itself (runc's pivot_root
# needs the root to be a mount point).
enter_mounts() {
  local root="$1"
  if ! mountpoint -q "$root"; then mount --bind "$root" "$root"; fi
  mount --make-private "$root"
  for d in proc sys dev run; do
    mkdir -p "$root/$d"
    mountpoint -q "$root/$d" || mount --rbind "/$d" "$root/$d"
    mount --make-rslave "$root/$d"
  done
  # cgroup v1: the host's hierarchy is under /sys/fs/cgroup already (rbind).
}

# Builds (or reuses) the root of suite $1 at $CACHE/$1; the stamp holds the package list.
ensure_root() {
  local suite="$1" root="$CACHE/$1" pkgs stamp
  pkgs="$(root_pkgs "$suite")"
  stamp="suite=$suite mirror=$MIRROR pkgs=$pkgs v=1"
  if [ -f "$root/.rshim-matrix-stamp" ] && [ "$(cat "$root/.rshim-matrix-stamp")" = "$stamp" ]; then
    log "$suite: cached root $root"
    return 0
  fi
  # Same suite and mirror, another package list: install the list into the cached root
  # (RSHIM_MATRIX_REBUILD=1 forces a new debootstrap).
  if [ -z "${RSHIM_MATRIX_REBUILD:-}" ] && [ -f "$root/.rshim-matrix-stamp" ] \
    && [ "$(sed 's/ pkgs=.*//' "$root/.rshim-matrix-stamp")" = "suite=$suite mirror=$MIRROR" ]; then
    log "$suite: package list changed: apt-get install $pkgs in the cached root"
    enter_mounts "$root"
    # shellcheck disable=SC2086
    if chroot "$root" env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin \
      sh -c "apt-get -o Acquire::Check-Valid-Until=false update -q && apt-get install -y -q --no-install-recommends $pkgs && apt-get clean" \
      > "$RUN/apt-$suite.log" 2>&1; then
      unmount_under "$root"
      echo "$stamp" > "$root/.rshim-matrix-stamp"
      log "$suite: root ready: $(root_versions "$suite")"
      return 0
    fi
    tail -n 20 "$RUN/apt-$suite.log" >&2
    unmount_under "$root"
    log "$suite: in-place install failed: rebuilding the root"
  fi
  command -v debootstrap > /dev/null || {
    log "installing debootstrap on the host"
    apt-get update -qq > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap > /dev/null \
      || die "cannot install debootstrap on the host"
  }
  local tmp="$CACHE/$suite.building"
  unmount_under "$tmp"
  rm -rf "$tmp"
  [ -d "$root" ] && { unmount_under "$root"; }
  log "$suite: debootstrap (minbase) into $tmp"
  if ! debootstrap --variant=minbase "$suite" "$tmp" "$MIRROR" > "$RUN/debootstrap-$suite.log" 2>&1; then
    tail -n 20 "$RUN/debootstrap-$suite.log" >&2
    die "$suite: debootstrap failed (log above, full: $RUN/debootstrap-$suite.log)"
  fi
  # No service starts inside the root.
  printf '#!/bin/sh\nexit 101\n' > "$tmp/usr/sbin/policy-rc.d"
  chmod 755 "$tmp/usr/sbin/policy-rc.d"
  log "$suite: apt-get install $pkgs"
  enter_mounts "$tmp"
  # shellcheck disable=SC2086
  if ! chroot "$tmp" env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    sh -c "apt-get -o Acquire::Check-Valid-Until=false update -q && apt-get install -y -q --no-install-recommends $pkgs" \
    > "$RUN/apt-$suite.log" 2>&1; then
    tail -n 20 "$RUN/apt-$suite.log" >&2
    unmount_under "$tmp"
    die "$suite: apt-get install of '$pkgs' failed in the root (log above, full: $RUN/apt-$suite.log)"
  fi
  chroot "$tmp" apt-get clean
  unmount_under "$tmp"
  for b in containerd ctr runc containerd-shim-runc-v2 busybox script unshare; do
    [ -x "$tmp/usr/bin/$b" ] || [ -x "$tmp/usr/sbin/$b" ] || [ -x "$tmp/bin/$b" ] \
      || die "$suite: the root has no $b after installing '$pkgs'"
  done
  rm -rf "$root"
  mv "$tmp" "$root"
  echo "$stamp" > "$root/.rshim-matrix-stamp"
  log "$suite: root ready: $(root_versions "$suite")"
}

root_versions() {
  local root="$CACHE/$1"
  chroot "$root" dpkg-query -W -f '${db:Status-Abbrev}${Package} ${Version}\n' containerd runc docker.io 2>/dev/null \
    | awk '$1 == "ii" {print $2 " " $3}' | tr '\n' ';' | sed 's/;$//; s/;/, /g'
}


# A result row: target, check, Go shim's verdict, rshim's verdict, detail (kept in the log).
result() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" >> "$RESULTS"; }
target_failed() {
  log "TARGET FAILED: $1: $2"
  result "$1" "(target could not run)" "FAIL" "FAIL" "$2"
  FAILED_TARGETS+=("$1")
}

# ---------------------------------------------------------------------------------------------
# What is tested: the static release shim and the compiled ctr parity test.
build() {
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  command -v cargo > /dev/null || bash scripts/install-deps.sh
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  log "building the static release shim"
  bash scripts/build-release.sh --shim-only > "$RUN/build-release.log" 2>&1 \
    || { tail -n 30 "$RUN/build-release.log" >&2; die "build-release.sh failed"; }
  SHIM="$WS/target/x86_64-unknown-linux-gnu/release/containerd-shim-rshim-v2"
  log "building the test binaries (ctr parity, conformance, CRI) and rshim-faults"
  cargo test --locked --no-run --message-format=json -p rshim-integration --test ctr_parity \
    --test conformance --test cri > "$RUN/build-test.json" 2> "$RUN/build-test.log" \
    || { tail -n 30 "$RUN/build-test.log" >&2; die "cargo test --no-run failed"; }
  cargo build --locked -p rshim-integration --bin rshim-faults > "$RUN/build-faults.log" 2>&1 \
    || { tail -n 30 "$RUN/build-faults.log" >&2; die "cargo build --bin rshim-faults failed"; }
  local t
  for t in ctr_parity conformance cri; do
    local exe
    exe="$(sed -n "s/.*\"executable\":\"\([^\"]*\/$t-[^\"]*\)\".*/\1/p" "$RUN/build-test.json" | tail -n 1)"
    [ -x "$exe" ] || die "no $t executable in cargo's output ($RUN/build-test.json)"
    TEST_BINS[$t]="$exe"
  done
  FAULTS_BIN="$WS/target/debug/rshim-faults"
}
declare -A TEST_BINS

# Copies rshim and the test binary into $1/opt/rshim.
stage() {
  local root="$1"
  rm -rf "$root/opt/rshim"
  mkdir -p "$root/opt/rshim/bin"
  cp "$SHIM" "$root/opt/rshim/bin/containerd-shim-rshim-v2"
  local t
  for t in "${!TEST_BINS[@]}"; do cp "${TEST_BINS[$t]}" "$root/opt/rshim/$t"; done
  cp "$FAULTS_BIN" "$root/opt/rshim/rshim-faults"
}

# The command prefix that runs a command in root $1 with a clean environment (words, so that
# `$(root_cmd R) cmd &` gives the command's own pid: chroot and env exec).
root_cmd() {
  echo "chroot $1 /usr/bin/env -i HOME=/root TERM=xterm LANG=C.UTF-8 PATH=/opt/rshim/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}
in_root() {
  local root="$1"
  shift
  $(root_cmd "$root") "$@"
}

# runc containers of runc root $1 whose bundle is under $2: killed and deleted (after a failure).
runc_cleanup() {
  local runc_root="$1" under="$2" runc="${3:-runc}" id
  [ -d "$runc_root" ] || return 0
  for id in "$runc_root"/*; do
    id="${id##*/}"
    if grep -q "\"$under" "$runc_root/$id/state.json" 2>/dev/null; then
      "$runc" --root "$runc_root" kill "$id" KILL 2>/dev/null
      "$runc" --root "$runc_root" delete --force "$id" 2>/dev/null
    fi
  done
}

# Live processes whose command line has the two consecutive words $1 $2 (our shims: `-address SOCK`).
pids_with_args() {
  local p args
  for p in /proc/[0-9]*; do
    args="$( { tr '\0' '\n' < "$p/cmdline"; } 2>/dev/null)" || continue
    case "$args" in *"$2"*) ;; *) continue ;; esac
    grep -x -A1 -F -- "$1" <<< "$args" | grep -qxF -- "$2" && echo "${p#/proc/}"
  done
}

# ---------------------------------------------------------------------------------------------
# containerd targets: the ctr parity scenarios inside the root, with its containerd and Go shim.
containerd_target() {
  local suite="$1" root="$CACHE/$1" versions
  versions="$(root_versions "$suite")"
  log "$suite: ctr parity ($versions)"
  enter_mounts "$root"
  stage "$root"
  local report=/opt/rshim/parity.tsv rc=0
  rm -f "$root$report"
  mkdir -p "$root/opt/rshim/logs"
  run_in_root "$root" "parity-$suite" 1200 RSHIM_PARITY_REPORT="$report" \
    RSHIM_CONTAINERD_LOG_DIR=/opt/rshim/logs /opt/rshim/ctr_parity --nocapture --test-threads=1 || rc=$?
  if [ ! -s "$root$report" ]; then
    tail -n 40 "$RUN/parity-$suite.log" >&2
    target_failed "$suite" "ctr parity did not run (exit $rc; log $RUN/parity-$suite.log)"
    return
  fi
  local name go rshim same diff
  while IFS=$'\t' read -r name go rshim same diff; do
    local g r
    g="$go"
    case "$same" in
      same) r="$rshim (same)" ;;
      # Every differing line is a known Go shim defect (ctr_parity.rs, `explain`).
      explained) r="$rshim (differs: Go shim defect)" ;;
      *) r="$rshim, DIFFERENT" ;;
    esac
    result "$suite" "ctr $name" "$g" "$r" "$diff"
  done < "$root$report"
  cp "$root"/opt/rshim/logs/*.log "$RUN/" 2>/dev/null && mv "$RUN"/containerd-rsh-*.log "$RUN/containerd-parity-$suite.log" 2>/dev/null || true
  start_protocol "$suite" "$RUN/containerd-parity-$suite.log"
  log "$suite: ctr parity exit $rc"
  conformance_checks "$suite"
  cri_check "$suite"
  fault_rows "$suite"
}

# Runs, in root $1, a command with RSHIM_BIN_DIR set and its output in $RUN/$2.log, killed after
# $3 seconds; in the background and waited for, so that a signal to this script runs its
# cleanup at once. Returns the command's status.
run_in_root() {
  local root="$1" name="$2" limit="$3" rc=0
  shift 3
  $(root_cmd "$root") RSHIM_BIN_DIR=/opt/rshim/bin timeout -s KILL "$limit" env "$@" \
    > "$RUN/$name.log" 2>&1 &
  echo $! > "$RUN/pids/$name"
  wait $! || rc=$?
  rm -f "$RUN/pids/$name"
  return $rc
}

# containerd's contract (integration/tests/conformance.rs) on this target: a row per spec.
conformance_checks() {
  local suite="$1" root="$CACHE/$1" report=/opt/rshim/conformance.tsv rc=0
  log "$suite: conformance specs"
  rm -f "$root$report"
  run_in_root "$root" "conformance-$suite" 1200 RSHIM_CONFORMANCE_REPORT="$report" \
    /opt/rshim/conformance --nocapture --test-threads=1 || rc=$?
  if [ ! -s "$root$report" ]; then
    tail -n 40 "$RUN/conformance-$suite.log" >&2
    result "$suite" "conformance (did not run)" "fail" "FAIL" "exit $rc; log $RUN/conformance-$suite.log"
    return
  fi
  local spec go rshim why
  while IFS=$'\t' read -r spec go rshim why; do
    result "$suite" "conformance $spec" "$go" "$rshim" "$why"
  done < "$root$report"
  log "$suite: conformance exit $rc"
}

# The CRI test (integration/tests/cri.rs: pods on a CNI bridge, exec, logs, stats, update, OOM,
# stop, removal) with both handlers: one row. It fails when rshim lacks or differs from what
# the Go shim shows; when the Go shim itself lacks an expected line, the target is broken.
cri_check() {
  local suite="$1" root="$CACHE/$1" rc=0
  log "$suite: CRI test"
  run_in_root "$root" "cri-$suite" 900 /opt/rshim/cri --nocapture --test-threads=1 || rc=$?
  local g=pass r=pass why=""
  if [ "$rc" != 0 ]; then
    why="exit $rc: $(grep -m1 -E 'panicked at|lacks|sees a difference' -A2 "$RUN/cri-$suite.log" | tr '\n\t' '  ' | cut -c1-300)"
    if grep -q "Go shim lacks" "$RUN/cri-$suite.log"; then g=fail; r=fail; else r=fail; fi
    tail -n 30 "$RUN/cri-$suite.log" >&2
  fi
  grep -q "^NOTE: the Go shim fails" "$RUN/cri-$suite.log" && g="fail (Go shim alone)"
  result "$suite" "CRI test (both handlers)" "$g" "$r" "$why"
  log "$suite: CRI test exit $rc"
}

# Fault rows 3 (runc flood), 4 (mount namespaces), 5 (shim killed), 6 (containerd restarted)
# of rshim-faults on this target: a row each, rshim must pass (the Go shim's are measured).
fault_rows() {
  local suite="$1" root="$CACHE/$1" rc=0
  log "$suite: fault rows 3, 4, 5, 6"
  mkdir -p "$root/opt/rshim/faults-logs"
  run_in_root "$root" "faults-$suite" 900 RSHIM_CONTAINERD_LOG_DIR=/opt/rshim/faults-logs \
    /opt/rshim/rshim-faults --rows 3,4,5,6 || rc=$?
  mkdir -p "$RUN/faults-logs-$suite"
  cp "$root"/opt/rshim/faults-logs/* "$RUN/faults-logs-$suite/" 2> /dev/null || true
  local n=0 line num title rs
  while IFS= read -r line; do
    # | 3 runc stdio flood (...) | Go's measurement | rshim's | yes |
    num="$(awk -F' [|] ' '{print $1}' <<< "$line" | sed 's/^| //')"
    rs="$(awk -F' [|] ' '{print $NF}' <<< "$line" | sed 's/ *|$//')"
    title="fault row $num"
    n=$((n + 1))
    if [ "$rs" = yes ]; then
      result "$suite" "$title" "-" "pass" ""
    else
      result "$suite" "$title" "-" "FAIL" "$(awk -F' [|] ' '{print $3}' <<< "$line" | cut -c1-300)"
    fi
  done < <(grep -E '^\| [0-9] ' "$RUN/faults-$suite.log")
  if [ "$n" != 4 ]; then
    tail -n 30 "$RUN/faults-$suite.log" >&2
    result "$suite" "fault rows (did not run)" "-" "FAIL" "exit $rc, $n rows; log $RUN/faults-$suite.log"
  fi
  log "$suite: fault rows exit $rc"
}

# How containerd took each shim's `start` answer: its "shim bootstrap parameters" debug line
# (address dropped), attributed to the runtime of the shim log line just before it, and any
# error of a shim start. One row: what each runtime's starts showed, and how many were accepted.
start_protocol() {
  local target="$1" logf="$2"
  [ -s "$logf" ] || { result "$target" "shim start accepted (containerd log)" "?" "?" "no containerd log"; return; }
  local go rs
  # containerd 1.7: `msg="shim bootstrap parameters" ... protocol=ttrpc` after the shim's own
  # log line (runtime=...); 2.x: `msg="connecting to shim ID" ... protocol=ttrpc version=N`,
  # with ids ending in -go / -rshim (ctr parity) or the runtime's last log line (Docker).
  # containerd 1.7 logs `msg="shim bootstrap parameters" ... protocol=ttrpc`, 2.x
  # `msg="connecting to shim ID" ... protocol=ttrpc version=N`; rshim logs "shim ID serving"
  # (runtime=io.containerd.rshim.v2) just before containerd reads its answer.
  # (rshim's ids are collected in a first pass: its line may come after containerd's.)
  local prog='NR == FNR { if (/serving \(namespace/ && match($0, /msg="shim [^ ]+ serving/)) {
        id = substr($0, RSTART + 10, RLENGTH - 18); ids[id] = 1 }; next }
    /runtime=io.containerd.rshim.v2/ && /serving/ {rs = 1; next}
    /msg="shim bootstrap parameters"|msg="connecting to shim / {
      rt = rs ? "rshim" : "go"; rs = 0
      if (match($0, /msg="connecting to shim [^"]*"/)) {
        id = substr($0, RSTART + 24, RLENGTH - 25); rt = (id in ids) ? "rshim" : "go" }
      kind = ($0 ~ /bootstrap parameters/) ? "bootstrap parameters:" : "connecting to shim:"
      p = ""
      if (match($0, /protocol=[a-z]+/)) p = p " " substr($0, RSTART, RLENGTH)
      if (match($0, /version=[0-9]+/)) p = p " " substr($0, RSTART, RLENGTH)
      if (rt == want) print kind p }'
  go="$(awk -v want=go "$prog" "$logf" "$logf" | sort -u)"
  rs="$(awk -v want=rshim "$prog" "$logf" "$logf" | sort -u)"
  local errs
  errs="$(grep -c 'failed to start shim\|failed to create shim\|shim.*bootstrap.*error\|unsupported shim version' "$logf" || true)"
  local g=fail r=fail
  [ -n "$go" ] && g=pass
  [ -n "$rs" ] && r=pass
  [ "$errs" = 0 ] || { g="$g ($errs shim start errors in the log)"; r="$r ($errs shim start errors in the log)"; }
  result "$target" "shim start accepted (containerd log)" "$g" "$r" "go: $(echo "$go" | tr '\n' ';') / rshim: $(echo "$rs" | tr '\n' ';')"
}

# ---------------------------------------------------------------------------------------------
# Docker targets. $DK holds the docker command line (client and socket), run via $DRUN.


# An image with the static busybox, made with `docker import` (no registry).
docker_image() {
  local run_in="$1" busybox="$2"
  $run_in sh -c "rm -rf $DSTATE/img && mkdir -p $DSTATE/img/bin $DSTATE/img/tmp $DSTATE/img/etc && \
    cp $busybox $DSTATE/img/bin/busybox && for a in sh echo cat sleep tty true false ps head; do \
    ln -s busybox $DSTATE/img/bin/\$a; done && tar -C $DSTATE/img -cf $DSTATE/img.tar . && \
    $DK import -c 'ENV PATH=/bin' $DSTATE/img.tar rmx/busybox:latest" > /dev/null
}

# `docker ...` under a pseudo-terminal.
dtty() { $DRUN script -qec "$DK $*" /dev/null; }

# Polls (up to 20 s) until container $1's log has every one of the words $2...: the container's
# process has started its work (no fixed sleep).
dwait_logs() {
  local n="$1" w ok
  shift
  for _ in $(seq 1 100); do
    ok=1
    for w in "$@"; do
      $DRUN $DK logs "$n" 2>&1 | grep -qx -- "$w" || { ok=0; break; }
    done
    [ $ok = 1 ] && return 0
    sleep 0.2
  done
  return 1
}

# One Docker check: the observation of runtime $2 for check $1, normalised.
# Each check prints "code=N out=..." so Go and rshim can be compared and checked.
docker_checks() {
  local target="$1" rt_go="$2" rt_rshim="$3"
  # Commands here fail on purpose (exit codes are observations).
  local -
  set +e +o pipefail
  local checks=(run-exit run-stdin run-tty exec exec-tty logs pause unpause stop-term stop-kill rm)
  declare -A obs_go obs_rshim
  local which rt
  for which in go rshim; do
    if [ $which = go ]; then rt="$rt_go"; else rt="$rt_rshim"; fi
    local -A o=()
    local n="rmx-$which"
    local RT=()
    [ -n "$rt" ] && RT=(--runtime "$rt")
    $DRUN $DK rm -f "$n" "$n-t" > /dev/null 2>&1 || true
    o[run-exit]="$( { $DRUN $DK run --rm --network none "${RT[@]}" rmx/busybox sh -c 'echo out; echo err >&2; exit 3' 2> "$RUN/err"; echo "code=$?"; } | tr '\n' ' '; echo "err=$(tr '\n' ' ' < "$RUN/err")")"
    o[run-stdin]="$( { printf 'hi\nmore' | $DRUN $DK run --rm -i --network none "${RT[@]}" rmx/busybox head -c 3; echo "code=$?"; } 2>&1 | tr '\n' ' ')"
    o[run-tty]="$( { dtty run --rm -t --network none "${RT[@]}" rmx/busybox sh -c "'tty; echo ok; exit 4'"; echo "code=$?"; } 2>&1 | tr -d '\r' | tr '\n' ' ')"
    $DRUN $DK run -d --name "$n" --network none "${RT[@]}" rmx/busybox sh -c 'echo started; echo e-started >&2; while :; do sleep 1; done' > /dev/null 2>&1 || true
    dwait_logs "$n" started e-started
    o[exec]="$( { $DRUN $DK exec "$n" sh -c 'echo hi; echo e >&2; exit 5' 2> "$RUN/err"; echo "code=$?"; } | tr '\n' ' '; echo "err=$(tr '\n' ' ' < "$RUN/err")")"
    o[exec-tty]="$( { dtty exec -t "$n" sh -c "'tty; exit 2'"; echo "code=$?"; } 2>&1 | tr -d '\r' | tr '\n' ' ')"
    o[logs]="$( { $DRUN $DK logs "$n"; echo "code=$?"; } 2>&1 | sort | tr '\n' ' ')"
    o[pause]="$( { $DRUN $DK pause "$n" > /dev/null; echo "code=$?"; $DRUN $DK inspect -f '{{.State.Status}}' "$n"; } 2>&1 | tr '\n' ' ')"
    o[unpause]="$( { $DRUN $DK unpause "$n" > /dev/null; echo "code=$?"; $DRUN $DK inspect -f '{{.State.Status}}' "$n"; $DRUN $DK exec "$n" echo alive; } 2>&1 | tr '\n' ' ')"
    # pid 1 (sh) has no TERM handler: docker stop must SIGKILL it after the timeout (137).
    o[stop-kill]="$( { $DRUN $DK stop -t 1 "$n" > /dev/null; echo "code=$?"; $DRUN $DK inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$n"; } 2>&1 | tr '\n' ' ')"
    # A TERM handler that exits 7: docker stop delivers SIGTERM.
    $DRUN $DK run -d --name "$n-t" --network none "${RT[@]}" rmx/busybox sh -c 'trap "exit 7" TERM; echo trapping; while :; do sleep 0.2; done' > /dev/null 2>&1 || true
    dwait_logs "$n-t" trapping
    o[stop-term]="$( { $DRUN $DK stop -t 20 "$n-t" > /dev/null; echo "code=$?"; $DRUN $DK inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$n-t"; } 2>&1 | tr '\n' ' ')"
    o[rm]="$( { $DRUN $DK rm "$n" "$n-t" > /dev/null; echo "code=$?"; $DRUN $DK ps -a --format '{{.Names}}' | grep -c "^$n" ; } 2>&1 | tr '\n' ' ')"
    local c
    for c in "${checks[@]}"; do
      if [ $which = go ]; then obs_go[$c]="${o[$c]}"; else obs_rshim[$c]="${o[$c]}"; fi
    done
    unset o
  done
  # What each check must show (the Go shim is checked too: a broken check is not a pass).
  declare -A want=(
    [run-exit]='^out code=3 err=err $'
    [run-stdin]='^hi code=0 $'
    [run-tty]='^/dev/pts/0 ok code=4 $'
    [exec]='^hi code=5 err=e $'
    [exec-tty]='^/dev/pts/[0-9]+ code=2 $'
    [logs]='^code=0 e-started started $'
    [pause]='^code=0 paused $'
    [unpause]='^code=0 running alive $'
    [stop-kill]='^code=0 exited 137 $'
    [stop-term]='^code=0 exited 7 $'
    [rm]='^code=0 0 $'
  )
  local c g r
  for c in "${checks[@]}"; do
    if [[ "${obs_go[$c]}" =~ ${want[$c]} ]]; then g=pass; else g=fail; fi
    if [[ "${obs_rshim[$c]}" =~ ${want[$c]} ]]; then r=pass; else r=fail; fi
    if [ "${obs_go[$c]}" = "${obs_rshim[$c]}" ]; then r="$r (same)"; else r="$r, DIFFERENT"; fi
    result "$target" "docker $c" "$g" "$r" "go: ${obs_go[$c]} / rshim: ${obs_rshim[$c]}"
  done
}

# Starts containerd ($1: how to run a command there, $2: containerd binary, $3: config version,
# $4: PATH for it) and dockerd ($5: dockerd binary, $6: extra dockerd flags), waits for both.
# Both run in one mount namespace of their own with slave propagation (`unshare -m
# --propagation slave`), as systemd's MountFlags=slave makes it for dockerd: seed 003's setting,
# where rootfs mounts live in a namespace the host does not see.
start_docker() {
  local run_in="$1" ctrd="$2" cver="$3" path="$4" dockerd="$5" extra="$6" host_dir="$7"
  local disabled='["io.containerd.grpc.v1.cri"]'
  [ "$cver" = 3 ] && disabled='["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images"]'
  mkdir -p "$host_dir$DSTATE" "$RUN/pids"
  printf 'version = %s\nroot = "%s/ctrd-root"\nstate = "%s/ctrd-state"\ndisabled_plugins = %s\n[grpc]\n  address = "%s/ctrd.sock"\n[ttrpc]\n  address = "%s/ctrd.sock.ttrpc"\n[debug]\n  level = "debug"\n' \
    "$cver" "$DSTATE" "$DSTATE" "$disabled" "$DSTATE" "$DSTATE" > "$host_dir$DSTATE/ctrd.toml"
  # The namespace is held by a sleeper; containerd and dockerd enter it with nsenter.
  $run_in unshare -m --propagation slave sleep infinity > /dev/null 2>&1 &
  echo $! > "$RUN/pids/mntns-$CUR"
  local ns_pid
  ns_pid="$(cat "$RUN/pids/mntns-$CUR")"
  for _ in $(seq 1 50); do
    [ "$(readlink "/proc/$ns_pid/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ] && break
    sleep 0.1
  done
  DNS="nsenter -m -t $ns_pid"
  $DNS $run_in env PATH="$path" "$ctrd" --config "$DSTATE/ctrd.toml" > "$RUN/containerd-$CUR.log" 2>&1 &
  echo $! > "$RUN/pids/containerd-$CUR"
  for _ in $(seq 1 100); do [ -S "$host_dir$DSTATE/ctrd.sock" ] && break; sleep 0.2; done
  [ -S "$host_dir$DSTATE/ctrd.sock" ] || { tail -n 20 "$RUN/containerd-$CUR.log" >&2; return 1; }
  local extra_args=()
  read -r -a extra_args <<< "$extra"
  DOCKERD_ARGS=(env PATH="$path" "$dockerd" --data-root "$DSTATE/data" --exec-root "$DSTATE/exec"
    -H "unix://$DSTATE/docker.sock" --pidfile "$DSTATE/docker.pid" --containerd "$DSTATE/ctrd.sock"
    --config-file "$DSTATE/daemon.json" --bridge none --iptables=false "${extra_args[@]}")
  DOCKERD_RUN_IN="$run_in"
  start_dockerd
}

# (Re)starts dockerd as start_docker did, and waits until it answers.
start_dockerd() {
  $DNS $DOCKERD_RUN_IN "${DOCKERD_ARGS[@]}" >> "$RUN/dockerd-$CUR.log" 2>&1 &
  echo $! > "$RUN/pids/dockerd-$CUR"
  for _ in $(seq 1 150); do $DOCKERD_RUN_IN $DK version > /dev/null 2>&1 && return 0; sleep 0.2; done
  tail -n 20 "$RUN/dockerd-$CUR.log" >&2
  return 1
}

# Stops the daemon whose pid file is $1: SIGTERM, up to 15 s, then SIGKILL; reaped.
stop_pidfile() {
  local pf="$1" pid
  [ -f "$pf" ] || return 0
  pid="$(cat "$pf")"
  kill -TERM "$pid" 2> /dev/null
  for _ in $(seq 1 150); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2> /dev/null
  wait "$pid" 2> /dev/null
  rm -f "$pf"
}

# Stops dockerd alone (its containerd and the shims stay).
stop_dockerd() { stop_pidfile "$RUN/pids/dockerd-$CUR"; }

# Mount points of a container, in any mount namespace on the host: under Docker's state dir
# and naming the container's id $1, or a root filesystem (overlay2's `merged`) under it. Run
# when no other container exists.
mounts_mentioning() {
  cat /proc/[0-9]*/mountinfo 2> /dev/null \
    | awk -v id="$1" -v d="$DSTATE/" 'index($5, d) && (index($5, id) || $5 ~ /\/merged$/ || $5 ~ /\/rootfs$/) {print $5}' \
    | sort -u | wc -l
}

# Checks that need a daemon configured for them, for runtime $2 (empty: the daemon's default):
# attach (stdin through `docker attach` reaches the process, whose output is then in its log:
# Docker 28's attach client itself loses output that comes right after its stdin's EOF, with
# either shim); live-restore (dockerd restarted while a container runs, then the container is
# stopped and removed with nothing left mounted in any namespace); the seed-002 flood (runtime
# $3 runs a runc that writes 1 MiB to the container's stderr before creating it). Prints
# `check<TAB>observation` lines.
docker_daemon_checks() {
  local which="$1" rt="$2" flood_rt="$3"
  local -
  set +e +o pipefail
  local n="rmx-$which" RT=()
  [ -n "$rt" ] && RT=(--runtime "$rt")
  local o
  o="$( { $DRUN $DK run -di --name "$n-a" --network none "${RT[@]}" rmx/busybox sh -c 'read l; echo got:$l; exit 6' > /dev/null; \
    printf 'hello\n' | $DRUN timeout -s KILL 30 $DK attach "$n-a" > /dev/null; echo "code=$?"; \
    $DRUN $DK logs "$n-a"; $DRUN $DK rm "$n-a" > /dev/null; } 2>&1 | tr '\n' ' ')"
  printf 'attach\t%s\n' "$o"
  # live-restore
  local id running exec_out
  id="$($DRUN $DK run -d --name "$n-l" --network none "${RT[@]}" rmx/busybox sh -c 'echo up; while :; do sleep 1; done' 2> /dev/null)"
  dwait_logs "$n-l" up
  stop_dockerd
  running="$($DRUN $DK version > /dev/null 2>&1 && echo dockerd-still-up || echo dockerd-down)"
  start_dockerd > /dev/null 2>&1 || running="$running dockerd-did-not-restart"
  running="$running $($DRUN $DK inspect -f '{{.State.Status}}' "$n-l" 2>&1)"
  exec_out="$($DRUN timeout -s KILL 30 $DK exec "$n-l" echo alive 2>&1)"
  local stop_rc rm_rc
  $DRUN timeout -s KILL 30 $DK stop -t 1 "$n-l" > /dev/null 2>&1
  stop_rc=$?
  $DRUN timeout -s KILL 30 $DK rm "$n-l" > /dev/null 2>&1
  rm_rc=$?
  printf 'live-restore\t%s exec=%s stop=%s rm=%s mounts-left=%s\n' "$running" "$exec_out" "$stop_rc" "$rm_rc" \
    "$( [ -n "$id" ] && mounts_mentioning "$id" || echo no-container)"
  # The flood: the Go shim hangs here (it drains the pipes only after runc create returned),
  # so the run is bounded and only rshim's is judged.
  o="$( { $DRUN timeout -s KILL 30 $DK run --rm --network none --runtime "$flood_rt" rmx/busybox echo after-flood 2> "$RUN/flood-err"; echo "code=$?"; } | tr '\n' ' '; \
    echo "stderr-bytes=$(wc -c < "$RUN/flood-err")")"
  printf 'flood\t%s\n' "$o"
}

# Writes the flooding runc ($1) and, beside it, a runtime options TOML naming it ($1.toml): a
# thin wrapper that writes 1 MiB to its stderr (the container's stderr pipe) on `create`, then
# execs the real runc (seed 002).
write_flood_runc() {
  printf '#!/bin/sh\nfor a in "$@"; do if [ "$a" = create ]; then yes abcdefghi | head -c 1048576 >&2; break; fi; done\nexec /usr/sbin/runc "$@"\n' > "$1"
  chmod 755 "$1"
  printf 'BinaryName = "%s"\n' "$2" > "$1.toml"
}

# Turns docker_daemon_checks' lines for both runtimes ($2, $3: files) into rows of target $1.
docker_daemon_results() {
  local target="$1" go_f="$2" rs_f="$3" c
  declare -A want=(
    [attach]='^code=6 got:hello $'
    [live-restore]='^dockerd-down running exec=alive stop=0 rm=0 mounts-left=0$'
    [flood]='^after-flood code=0 stderr-bytes=1048576$'
  )
  for c in attach live-restore flood; do
    local go rs g r
    go="$(awk -F'\t' -v c="$c" '$1 == c {print $2}' "$go_f")"
    rs="$(awk -F'\t' -v c="$c" '$1 == c {print $2}' "$rs_f")"
    if [[ "$go" =~ ${want[$c]} ]]; then g=pass; else g=fail; fi
    if [[ "$rs" =~ ${want[$c]} ]]; then r=pass; else r=fail; fi
    # The Go shim's flood hang is its known defect (bug class 3): measured, not judged.
    if [ "$c" = flood ]; then
      [ "$r" = fail ] && r=FAIL
      [ "$g" = fail ] && g="fail (measured)"
      result "$target" "docker $c (seed 002)" "$g" "$r" "go: $go / rshim: $rs"
      continue
    fi
    if [ "$go" = "$rs" ]; then r="$r (same)"; else r="$r, DIFFERENT"; fi
    result "$target" "docker $c" "$g" "$r" "go: $go / rshim: $rs"
  done
}

stop_docker() {
  local run_in="$1" host_dir="$2" pf pid
  local -
  set +e
  $run_in $DK rm -f rmx-go rmx-go-t rmx-go-a rmx-go-l rmx-rshim rmx-rshim-t rmx-rshim-a rmx-rshim-l > /dev/null 2>&1 || true
  for pf in "$RUN/pids/dockerd-$CUR" "$RUN/pids/containerd-$CUR" "$RUN/pids/mntns-$CUR"; do
    stop_pidfile "$pf"
  done
  # Shims of that containerd and containers of its runc root, if any survived.
  for pid in $(pids_with_args -address "$DSTATE/ctrd.sock"); do kill -KILL "$pid" 2>/dev/null; done
  local runc=runc
  [ -n "$host_dir" ] && runc="$host_dir/usr/sbin/runc"
  [ -x "$runc" ] || runc=runc
  runc_cleanup "$host_dir$DSTATE/exec/runtime-runc/moby" "$DSTATE" "$runc" > /dev/null 2>&1
  unmount_under "$host_dir$DSTATE"
  rm -rf "$host_dir$DSTATE"
}

sid_docker_target() {
  local root="$CACHE/sid" t=sid-docker
  CUR=$t
  enter_mounts "$root"
  stage "$root"
  local ver
  ver="$(in_root "$root" dockerd --version 2>&1 | sed -n 's/^Docker version \([^,]*\).*/Docker \1/p')"
  log "$t: $ver"
  mkdir -p "$root$DSTATE"
  # rshim-flood: Docker hands a shim other than runc's its options as runtimeoptions.v1.Options
  # (a TOML path), which rshim reads as CRI's do; runc-flood: the Go shim with BinaryName.
  write_flood_runc "$root/opt/rshim/runc-flood" /opt/rshim/runc-flood
  printf '{"runtimes": {"rshim": {"runtimeType": "io.containerd.rshim.v2"}, "rshim-flood": {"runtimeType": "io.containerd.rshim.v2", "options": {"ConfigPath": "/opt/rshim/runc-flood.toml"}}, "runc-flood": {"path": "/opt/rshim/runc-flood"}}, "live-restore": true}\n' > "$root$DSTATE/daemon.json"
  DK="docker -H unix://$DSTATE/docker.sock"
  DRUN="$(root_cmd "$root")"
  if ! start_docker "$DRUN" containerd 3 /opt/rshim/bin:/usr/sbin:/usr/bin:/sbin:/bin dockerd \
    "--ip6tables=false" "$root"; then
    stop_docker "$DRUN" "$root"
    target_failed "$t" "dockerd or its containerd did not start (logs $RUN/dockerd-$t.log, $RUN/containerd-$t.log)"
    return
  fi
  docker_image "$DRUN" /usr/bin/busybox || { stop_docker "$DRUN" "$root"; target_failed "$t" "docker import failed"; return; }
  docker_checks "$t ($ver)" runc rshim
  docker_daemon_checks go runc runc-flood > "$RUN/$t-daemon-go.tsv"
  docker_daemon_checks rshim rshim rshim-flood > "$RUN/$t-daemon-rshim.tsv"
  docker_daemon_results "$t ($ver)" "$RUN/$t-daemon-go.tsv" "$RUN/$t-daemon-rshim.tsv"
  start_protocol "$t ($ver)" "$RUN/containerd-$t.log"
  stop_docker "$DRUN" "$root"
}

# Bookworm's docker.io (20.10) on the host, with the host's containerd 1.6 and runc: extracted
# (not installed, so no service starts) into $CACHE/bookworm-docker. The Go shim run uses the
# host's PATH; the rshim run puts rshim as containerd-shim-runc-v2 in a directory before /usr/bin.
bookworm_docker_target() {
  local t=bookworm-docker dir="$CACHE/bookworm-docker"
  if [ ! -x "$dir/usr/sbin/dockerd" ] || [ ! -f "$dir/.stamp" ]; then
    log "$t: fetching bookworm's docker.io (extracted, not installed)"
    rm -rf "$dir" && mkdir -p "$dir/debs"
    if ! (cd "$dir/debs" && apt-get update -qq && apt-get download docker.io tini) > "$RUN/apt-$t.log" 2>&1; then
      tail -n 20 "$RUN/apt-$t.log" >&2
      target_failed "$t" "apt-get download docker.io failed (log $RUN/apt-$t.log)"
      return
    fi
    local deb
    for deb in "$dir"/debs/*.deb; do dpkg-deb -x "$deb" "$dir"; done
    touch "$dir/.stamp"
  fi
  [ -x "$dir/usr/sbin/dockerd" ] || { target_failed "$t" "no dockerd in bookworm's docker.io"; return; }
  local missing
  missing="$(ldd "$dir/usr/sbin/dockerd" "$dir/usr/bin/docker" 2>&1 | grep 'not found' || true)"
  [ -z "$missing" ] || { target_failed "$t" "dockerd needs libraries the host lacks: $missing"; return; }
  local ver
  ver="$("$dir/usr/sbin/dockerd" --version | sed -n 's/^Docker version \([^,]*\).*/Docker \1/p')"
  DK="$dir/usr/bin/docker -H unix://$DSTATE/docker.sock"
  DRUN=""
  local dropin="$RUN/dropin"
  mkdir -p "$dropin"
  cp "$SHIM" "$dropin/containerd-shim-runc-v2"
  local which
  declare -A paths=([go]="$dir/usr/sbin:$dir/usr/bin:/usr/sbin:/usr/bin:/sbin:/bin" [rshim]="$dropin:$dir/usr/sbin:$dir/usr/bin:/usr/sbin:/usr/bin:/sbin:/bin")
  # docker_checks runs Go then rshim against one daemon; here each has its own daemon, so the
  # checks run twice with the same (default) runtime and the two halves are merged.
  : > "$RUN/bw-go.tsv"
  for which in go rshim; do
    CUR="$t-$which"
    mkdir -p "$DSTATE"
    write_flood_runc "$DSTATE/runc-flood" "$DSTATE/runc-flood"
    printf '{"runtimes": {"flood": {"path": "%s/runc-flood"}}, "live-restore": true}\n' "$DSTATE" > "$DSTATE/daemon.json"
    if ! start_docker "" /usr/bin/containerd 2 "${paths[$which]}" "$dir/usr/sbin/dockerd" "" ""; then
      stop_docker "" ""
      target_failed "$t" "dockerd 20.10 ($which) did not start (logs $RUN/dockerd-$CUR.log, $RUN/containerd-$CUR.log)"
      return
    fi
    docker_image "" /bin/busybox || { stop_docker "" ""; target_failed "$t" "docker import failed"; return; }
    local saved="$RESULTS"
    RESULTS="$RUN/bw-$which.tsv"
    : > "$RESULTS"
    docker_checks "$t" "" ""
    RESULTS="$saved"
    docker_daemon_checks "$which" "" flood > "$RUN/$t-daemon-$which.tsv"
    stop_docker "" ""
  done
  # Merge: the Go column from the Go daemon's run, the rshim column from the drop-in's run.
  local tg c g _r d rr rd
  while IFS=$'\t' read -r tg c g _r d && IFS=$'\t' read -r _ _ _ rr rd <&3; do
    local go_obs="${d#go: }"; go_obs="${go_obs%% / rshim: *}"
    local rs_obs="${rd##* / rshim: }"
    local rv="${rr%% *}"; rv="${rv%,}"
    if [ "$go_obs" = "$rs_obs" ]; then rv="$rv (same)"; else rv="$rv, DIFFERENT"; fi
    result "$t ($ver)" "$c" "$g" "$rv" "go: $go_obs / rshim: $rs_obs"
  done < "$RUN/bw-go.tsv" 3< "$RUN/bw-rshim.tsv"
  # Which shim served: rshim logs "shim ID serving (namespace ...)"; the Go shim never does.
  local ng nr g=fail r=fail
  ng="$(grep -c 'serving (namespace' "$RUN/containerd-$t-go.log" || true)"
  nr="$(grep -c 'serving (namespace' "$RUN/containerd-$t-rshim.log" || true)"
  [ "$ng" = 0 ] && g=pass
  [ "$nr" -gt 0 ] && r=pass
  result "$t ($ver)" "drop-in served (containerd log)" "$g" "$r" "rshim's 'serving' lines: go daemon $ng, drop-in daemon $nr"
  docker_daemon_results "$t ($ver)" "$RUN/$t-daemon-go.tsv" "$RUN/$t-daemon-rshim.tsv"
}

# ---------------------------------------------------------------------------------------------
T0=$(date +%s)
if [ -n "${RSHIM_MATRIX_ROOTS_ONLY:-}" ]; then
  # Only prepare the cached roots of the selected targets.
  for t in "${TARGETS[@]}"; do
    case "$t" in trixie) ensure_root trixie ;; sid | sid-docker) ensure_root sid ;; esac
  done
  exit 0
fi
build
for t in "${TARGETS[@]}"; do
  case "$t" in
    trixie | sid)
      if (ensure_root "$t"); then containerd_target "$t"; else target_failed "$t" "root could not be built (see above)"; fi
      ;;
    sid-docker)
      if (ensure_root sid); then sid_docker_target; else target_failed "$t" "root could not be built (see above)"; fi
      ;;
    bookworm-docker)
      bookworm_docker_target
      ;;
  esac
done

echo
TABLE="$RUN/table.md"
echo "| target | check | Go shim | rshim |" | tee "$TABLE"
echo "|---|---|---|---|" | tee -a "$TABLE"
bad=0
while IFS=$'\t' read -r tg c g r d; do
  echo "| $tg | $c | $g | $r |" | tee -a "$TABLE"
  # rshim fails where the Go shim passes: its own check fails, or it shows something else.
  if [[ "$g" == pass* ]] && { [[ "$r" != pass* ]] || [[ "$r" == *DIFFERENT* ]]; }; then bad=1; fi
  if [ "$g" = "-" ] && [[ "$r" == *DIFFERENT* ]]; then bad=1; fi
  # Rows rshim must pass whatever the Go shim does (fault rows, the flood: the Go shim's are
  # measured, not judged).
  if [[ "$r" == FAIL* ]]; then bad=1; fi
done < "$RESULTS"
echo
# The observations behind every row that differs.
if grep -qE 'FAIL|DIFFERENT|differs|fail' "$RESULTS"; then
  echo "Differences and failures:"
  awk -F'\t' '$4 ~ /DIFFERENT|differs|fail|FAIL/ || $3 ~ /fail|FAIL/ {print "- " $1 " / " $2 ": " $5}' "$RESULTS"
fi
echo "How containerd took the shims' start answers:"
awk -F'\t' '$2 ~ /shim start/ {print "- " $1 ": " $5}' "$RESULTS"
echo "matrix: $(( $(date +%s) - T0 ))s; logs: $RUN"
# A run of every target is the one the README points to.
if [ "${TARGETS[*]}" = "${ALL_TARGETS[*]}" ]; then
  mkdir -p "$WS/integration/results"
  { echo "scripts/matrix.sh, $(date -u +%Y-%m-%d), $(uname -r), $(nproc) cores"; echo; cat "$TABLE"; } \
    > "$WS/integration/results/matrix.md"
fi
if [ ${#FAILED_TARGETS[@]} -gt 0 ]; then
  echo "matrix: targets that could not run: ${FAILED_TARGETS[*]}" >&2
  exit 1
fi
if [ $bad = 1 ]; then
  echo "matrix: rshim fails where the Go shim passes" >&2
  RSHIM_MATRIX_KEEP=1
  exit 1
fi
