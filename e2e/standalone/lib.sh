# shellcheck shell=bash
# Shared helpers of the standalone tests: build tools, start and stop agents, assertions.
# Sourced, not run. Each test gets its own work dir and its own loopback address.

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
AGENT=${SPINDLE_AGENT:-$TARGET_DIR/release/spindle-agent}
# /var/tmp, not /tmp: backing files need a disk filesystem (tmpfs refuses O_DIRECT).
WORK=${SPINDLE_TEST_WORK:-$(mktemp -d /var/tmp/spindle-test.XXXXXX)}
TOOLS=$WORK/tools
AGENT_PIDS=()
FAULTFS=${SPINDLE_FAULTFS:-$TARGET_DIR/release/spindle-faultfs}
FAULTFS_MOUNTS=()

log() { printf '[%s] %s\n' "${TEST_NAME:-test}" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

# Compiles the C helpers (libiscsi initiators) once per work dir.
build_tools() {
  mkdir -p "$TOOLS"
  local t
  for t in writer powerwriter; do
    [[ -x $TOOLS/$t ]] || gcc -O2 -Wall -o "$TOOLS/$t" "$ROOT/e2e/standalone/tools/$t.c" -liscsi
  done
}

# spindletool MODULE ARGS...: a check of e2e/spindletools (python3 -m spindletools.MODULE).
spindletool() { "$ROOT/e2e/spindletool" "$@"; }

# start_agent NAME MANIFEST_DIR ADDR:PORT [extra args...]: starts an agent in the background,
# waits until its portal accepts connections, and sets AGENT_PID and AGENT_LOG.
start_agent() {
  local name=$1 manifests=$2 listen=$3; shift 3
  AGENT_LOG=$WORK/$name.log
  DATA_DIR=$WORK/$name-data
  mkdir -p "$DATA_DIR"
  "$AGENT" standalone --manifests "$manifests" --data-dir "$DATA_DIR" --listen "$listen" "$@" \
    >"$AGENT_LOG" 2>&1 &
  AGENT_PID=$!
  AGENT_PIDS+=("$AGENT_PID")
  # The portal listens before the Targets are applied: wait for the agent's "ready" line (an
  # initiator that came at the port's first answer was refused "target not found" on a busy
  # machine).
  for _ in $(seq 1 400); do
    if grep -q "ready: the manifests' Targets are served" "$AGENT_LOG"; then return 0; fi
    kill -0 "$AGENT_PID" 2>/dev/null || { cat "$AGENT_LOG" >&2; fail "agent $name exited at start"; }
    sleep 0.05
  done
  cat "$AGENT_LOG" >&2
  fail "agent $name did not serve its manifests on $listen within 20 s"
}

# stop_agent PID: SIGTERM, then require a clean exit (status 0) within 30 s.
stop_agent() {
  local pid=$1
  kill -TERM "$pid"
  local rc=0
  timeout 30 tail --pid="$pid" -f /dev/null || fail "agent $pid did not exit 30 s after SIGTERM"
  wait "$pid" || rc=$?
  [[ $rc -eq 0 ]] || { cat "$AGENT_LOG" >&2; fail "agent exited $rc after SIGTERM"; }
}

# mount_faultfs NAME: a spindle-faultfs mount over a fresh backing folder ("the disk"). Sets
# FFS_DISK (the backing folder), FFS_MNT (the mount point) and FFS_PID.
mount_faultfs() {
  FFS_DISK=$WORK/$1-disk FFS_MNT=$WORK/$1-mnt
  mkdir -p "$FFS_DISK" "$FFS_MNT"
  remount_faultfs
}

# remount_faultfs: (re)starts spindle-faultfs on FFS_MNT over FFS_DISK, with an empty cache.
remount_faultfs() {
  "$FAULTFS" --backing "$FFS_DISK" "$FFS_MNT" >"$WORK/faultfs.log" 2>&1 &
  FFS_PID=$!
  FAULTFS_MOUNTS+=("$FFS_MNT")
  for _ in $(seq 1 100); do
    [[ -e $FFS_MNT/.faultfs ]] && return 0
    kill -0 "$FFS_PID" 2>/dev/null || { cat "$WORK/faultfs.log" >&2; fail "spindle-faultfs did not start"; }
    sleep 0.05
  done
  fail "spindle-faultfs did not mount on $FFS_MNT"
}

# faultfs CMD: sends a command to the mounted spindle-faultfs (powercut, fail-fsync, ...).
faultfs() { printf '%s\n' "$1" >"$FFS_MNT/.faultfs"; }

# unmount_faultfs: the process goes (with whatever it still cached) and the mount with it.
unmount_faultfs() {
  kill -KILL "$FFS_PID" 2>/dev/null || true
  wait "$FFS_PID" 2>/dev/null || true
  fusermount3 -u -z "$FFS_MNT" 2>/dev/null || umount -l "$FFS_MNT" 2>/dev/null || true
}

cleanup() {
  for p in "${AGENT_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for m in "${FAULTFS_MOUNTS[@]}"; do fusermount3 -u -z "$m" 2>/dev/null || true; done
  [[ -n ${SPINDLE_KEEP_WORK:-} ]] || rm -rf "$WORK"
}
trap cleanup EXIT

# The manifests' one builder in bash (the Python tools have spindletools/manifests.py):
# device_yaml NAME PATH SIZE [extra spec lines] (a file), block_device_yaml NAME PATH [extra spec
# lines] (a block device) and target_yaml NAME IQN "lun:dev ..." [acl/chap yaml].
device_yaml() { device_doc "$1" "{file: {path: $2, sizeBytes: $3}}" "${4:-}"; }
block_device_yaml() { device_doc "$1" "{block: {path: $2}}" "${3:-}"; }

# device_doc NAME SOURCE EXTRA: a Device of 512-byte blocks on the standalone agent's node.
device_doc() {
  printf -- '---\napiVersion: spindle.dev/v1alpha1\nkind: Device\nmetadata: {name: %s, namespace: default}\nspec:\n  nodeName: local\n  source: %s\n  blockSize: 512\n%s\n' "$1" "$2" "$3"
}

target_yaml() {
  local name=$1 iqn=$2 luns=$3 extra=${4:-"  acl: {allowAll: true}"}
  printf -- '---\napiVersion: spindle.dev/v1alpha1\nkind: Target\nmetadata: {name: %s, namespace: default}\nspec:\n  iqn: %s\n  luns:\n' "$name" "$iqn"
  local l
  for l in $luns; do printf '    - {lun: %s, deviceRef: %s}\n' "${l%%:*}" "${l#*:}"; done
  printf '%s\n' "$extra"
}
