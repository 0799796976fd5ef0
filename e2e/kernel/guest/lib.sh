# shellcheck shell=dash
# Helpers of the guest's test phases (busybox ash): the control channel to the host runner,
# failure reporting, and open-iscsi steps. Sourced by /spindle/main.
#
# Control channel: /dev/ttyS1, a line protocol with the host (e2e/kernel/harness/channel.py):
#   guest -> host  PHASE <name>            a phase starts
#                  END <name> ok|fail <msg> it ended
#                  ASK <verb> <args...>     the host does something; answers OK <text> or NO <text>
#                  FILE <name> ... EOF      a file for the host (lines in between, as they are)
#                  BYE                      every phase ran; the guest powers off

CTL=/dev/ttyS1
STATE=/run/spindle
mkdir -p "$STATE"

ctl_open() {
  stty -F "$CTL" raw -echo
  exec 3<>"$CTL"
}

send() { printf '%s\n' "$*" >&3; }

# ask VERB ARGS...: prints the host's answer text; fails (still printing it) if it was NO.
ask() {
  local reply
  send "ASK $*"
  read -r reply <&3 || { echo "no answer from the host to: $*" >&2; return 1; }
  case $reply in
    "OK "*|OK) echo "${reply#OK}" | sed 's/^ //' ;;
    *) echo "${reply#NO }"; return 1 ;;
  esac
}

# send_file NAME PATH: uploads a text file to the host.
send_file() {
  send "FILE $1"
  cat "$2" >&3
  send "EOF"
}

# A marker in the kernel log, so the host can tell which phase each kernel message belongs to.
mark() { echo "spindle-guest: $*" >/dev/kmsg; }

say() { echo "[$PHASE] $*" >&2; }

# fail MESSAGE: ends the current phase (phases run in a subshell) as failed.
fail() {
  say "FAIL: $*"
  echo "$*" >"$STATE/failure"
  exit 1
}

# must CMD ARGS...: runs CMD, failing the phase with its output if it fails.
must() {
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  [ -z "$out" ] || printf '%s\n' "$out"
  [ $rc -eq 0 ] || fail "$* exited $rc: $(printf '%s' "$out" | tail -n 3 | tr '\n' ' ')"
}

now_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }

# --- open-iscsi ------------------------------------------------------------------------------

start_iscsid() {
  mkdir -p /etc/iscsi /var/lib/iscsi /run/lock/iscsi /var/lock/iscsi
  cp /spindle/iscsid.conf /etc/iscsi/iscsid.conf
  echo "InitiatorName=$INITIATOR" >/etc/iscsi/initiatorname.iscsi
  iscsid -f &   # its messages go to the console, each starting with "iscsid: "
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    iscsiadm -m session >/dev/null 2>&1 && return 0
    # "No active sessions" (exit 21) also means iscsid answered.
    iscsiadm -m session 2>&1 | grep -q 'No active sessions' && return 0
    sleep 1
  done
  fail "iscsid did not start"
}

# node_set IQN NAME VALUE: sets one parameter of the node record of IQN at $PORTAL.
node_set() {
  must iscsiadm -m node -T "$1" -p "$PORTAL" -o update -n "$2" -v "$3"
}

# session_id IQN: the session number of IQN, empty if not logged in.
session_id() {
  iscsiadm -m session 2>/dev/null | awk -v t="$1" '$4 == t {print $2}' | tr -d '[]'
}

# login IQN: logs in (if not already) and waits for its disk; prints the disk name (sdX).
login() {
  local iqn=$1 sid dev
  sid=$(session_id "$iqn")
  [ -n "$sid" ] || must iscsiadm -m node -T "$iqn" -p "$PORTAL" --login >&2
  sid=$(session_id "$iqn")
  [ -n "$sid" ] || fail "no session for $iqn after login"
  for _ in $(seq 1 100); do
    dev=""
    for b in /sys/class/iscsi_session/session"$sid"/device/target*/*:*:*:*/block/*; do
      [ -e "$b" ] && { dev=${b##*/}; break; }
    done
    [ -n "$dev" ] && [ -b "/dev/$dev" ] && { echo "$dev"; return 0; }
    sleep 0.2
  done
  iscsiadm -m session -r "$sid" -P 3 >&2
  ls -lR /sys/class/iscsi_session/session"$sid"/device/ >&2
  fail "the disk of $iqn did not appear"
}

# wait_logged_in IQN SECONDS: waits until the session of IQN is logged in (after a reconnect).
wait_logged_in() {
  local sid
  sid=$(session_id "$1")
  [ -n "$sid" ] || fail "no session for $1"
  for _ in $(seq 1 "$2"); do
    iscsiadm -m session -r "$sid" -P 1 2>/dev/null | grep -q 'iSCSI Session State: LOGGED_IN' &&
      return 0
    sleep 1
  done
  fail "session $sid of $1 is not logged in after $2 s: $(iscsiadm -m session -r "$sid" -P 1 | grep State)"
}

logout() {
  [ -z "$(session_id "$1")" ] || must iscsiadm -m node -T "$1" -p "$PORTAL" --logout
}

# logout_others: ends every session but the file system's, which phases share; each other
# target belongs to one phase, and one left behind by a failed phase would blur the next.
logout_others() {
  local t
  for t in $(iscsiadm -m session 2>/dev/null | awk '{print $4}'); do
    [ "$t" = "$IQN_FS" ] || iscsiadm -m node -T "$t" -p "$PORTAL" --logout >/dev/null 2>&1 ||
      echo "could not log out of $t"
  done
}

# ensure_mounted IQN: the file system of IQN (made in phase fs) mounted on /mnt/fs.
ensure_mounted() {
  local dev
  dev=$(login "$1") || exit 1
  grep -q ' /mnt/fs ' /proc/mounts || must mount -t ext4 "/dev/$dev" /mnt/fs
  echo "$dev"
}

# write_files MAX_KB: random files in /mnt/fs/keep (200 small ones, then sizes up to MAX_KB)
# and their checksums in $STATE/sums.
write_files() {
  local i
  mkdir -p /mnt/fs/keep/small
  for i in $(seq 1 200); do
    dd if=/dev/urandom of="/mnt/fs/keep/small/f$i" bs=1k count=$((i % 37 + 1)) 2>/dev/null ||
      fail "writing small file $i"
  done
  for i in 1 64 1000 4096 8192 16384 32768; do
    [ "$i" -le "$1" ] || break
    dd if=/dev/urandom of=/mnt/fs/keep/f$i bs=1k count=$i 2>/dev/null || fail "writing file f$i"
  done
  (cd /mnt/fs && find keep -type f | sort | xargs sha256sum) >"$STATE/sums"
  say "wrote $(wc -l <"$STATE/sums") files, $(du -sk /mnt/fs/keep | cut -f1) KiB"
}

# fresh_fs IQN: a new ext4 with checksummed files on the disk of IQN, mounted on /mnt/fs;
# prints the disk. Logs in again if an earlier phase left the disk offline.
fresh_fs() {
  local dev
  dev=$(login "$1") || exit 1
  if [ "$(cat /sys/block/"$dev"/device/state)" != running ]; then
    say "$dev is $(cat /sys/block/"$dev"/device/state): logging in again"
    umount -l /mnt/fs 2>/dev/null
    logout "$1" >&2
    dev=$(login "$1") || exit 1
  fi
  ! grep -q ' /mnt/fs ' /proc/mounts || umount /mnt/fs 2>/dev/null || umount -l /mnt/fs
  must mkfs.ext4 -q -F -E nodiscard "/dev/$dev" >&2
  mkdir -p /mnt/fs
  must mount -t ext4 "/dev/$dev" /mnt/fs >&2
  write_files 8192
  echo "$dev"
}

# verify_sums: the checksummed files written in phase fs are intact.
verify_sums() {
  [ -s "$STATE/sums" ] || fail "no checksums from phase fs"
  (cd /mnt/fs && sha256sum -c -s "$STATE/sums") || fail "checksums differ: $(cd /mnt/fs && sha256sum -c "$STATE/sums" 2>&1 | grep -v ': OK' | head -3 | tr '\n' ' ')"
  say "$(wc -l <"$STATE/sums") files match their checksums"
}

# fsck_clean DEV: e2fsck -fn finds nothing to fix (the file system must be unmounted).
fsck_clean() {
  must e2fsck -fn "/dev/$1"
}
