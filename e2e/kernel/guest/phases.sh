# shellcheck shell=dash
# The guest's test phases (busybox ash), one function per phase, run in the order the host
# names in $PHASES, each in a subshell: `fail` ends only that phase. A phase sets up what it
# needs itself (login, mount), so a failed phase does not hide what the next one shows.
# Sourced by /spindle/main after /spindle/env and lib.sh.

# Discovery returns the portal the guest asked (never 0.0.0.0), and the guest logs in there.
phase_discovery() {
  local out bad sid peers dev
  out=$(iscsiadm -m discovery -t sendtargets -p "$PORTAL" 2>&1) || fail "discovery failed: $out"
  echo "$out"
  echo "$out" | grep -q " $IQN_FS\$" || fail "discovery does not list $IQN_FS"
  bad=$(echo "$out" | awk -v p="$PORTAL" '{split($1, a, ","); if (a[1] != p) print $1}')
  [ -z "$bad" ] || fail "discovery answered portal(s) $(echo "$bad" | tr '\n' ' ') instead of $PORTAL"
  dev=$(login "$IQN_FS") || exit 1
  sid=$(session_id "$IQN_FS")
  iscsiadm -m session -r "$sid" -P 1 | grep -q "Current Portal: $PORTAL,1" ||
    fail "session $sid is not connected to $PORTAL: $(iscsiadm -m session -r "$sid" -P 1 | grep Portal)"
  peers=$(ask connections) || fail "host: $peers"
  echo "$peers" | grep -q "^${PORTAL} ${GUEST_ADDR%/*}:" ||
    fail "the host sees no connection from ${GUEST_ADDR%/*} to $PORTAL: $peers"
  say "logged in to $IQN_FS through $PORTAL as $dev"
}

# The disk shows write-back cache, FUA and discard, with the Device's size.
phase_disk() {
  local dev q wc fua dmax pm size
  dev=$(login "$IQN_FS") || exit 1
  q=/sys/block/$dev/queue
  wc=$(cat "$q/write_cache"); fua=$(cat "$q/fua"); dmax=$(cat "$q/discard_max_bytes")
  pm=$(cat /sys/block/"$dev"/device/scsi_disk/*/provisioning_mode)
  size=$(($(cat /sys/block/"$dev"/size) * 512))
  say "write_cache=$wc fua=$fua discard_max_bytes=$dmax discard_granularity=$(cat "$q/discard_granularity")" \
    "provisioning_mode=$pm size=$size max_sectors_kb=$(cat "$q/max_sectors_kb")" \
    "logical_block_size=$(cat "$q/logical_block_size") physical_block_size=$(cat "$q/physical_block_size")"
  [ "$wc" = "write back" ] || fail "write cache is '$wc', expected 'write back'"
  [ "$fua" = 1 ] || fail "FUA is not supported (queue/fua=$fua)"
  [ "$dmax" -gt 0 ] || fail "no discard (discard_max_bytes=0)"
  [ "$pm" = unmap ] || fail "provisioning mode is '$pm', expected unmap"
  [ "$size" = "$FS_SIZE" ] || fail "disk size $size, the Device has $FS_SIZE"
}

# mkfs.ext4, files with checksums, fsck clean, remount, verify.
phase_fs() {
  local dev
  dev=$(login "$IQN_FS") || exit 1
  ! grep -q ' /mnt/fs ' /proc/mounts || must umount /mnt/fs
  must mkfs.ext4 -q -F "/dev/$dev"
  mkdir -p /mnt/fs
  must mount -t ext4 "/dev/$dev" /mnt/fs
  write_files 32768
  must umount /mnt/fs
  fsck_clean "$dev"
  must mount -t ext4 "/dev/$dev" /mnt/fs
  verify_sums
}

# fio writes with verification through the file system (O_DIRECT, depth 16, mixed sizes).
phase_fio() {
  ensure_mounted "$IQN_FS" >/dev/null || exit 1
  must fio --name=fs-verify --filename=/mnt/fs/fio.dat --size=64m --rw=randwrite \
    --bsrange=4k-128k --ioengine=libaio --direct=1 --iodepth=16 \
    --verify=crc32c --do_verify=1 --verify_fatal=1
  verify_sums
}

# Deleting files and fstrim give the space back: the Device's backing file shrinks.
phase_fstrim() {
  local dev before after freed_kb shrink_kb
  dev=$(ensure_mounted "$IQN_FS") || exit 1
  must dd if=/dev/zero of=/mnt/fs/trim.dat bs=1M count=96 conv=fsync
  sync
  freed_kb=$(du -ck /mnt/fs/trim.dat /mnt/fs/fio.dat 2>/dev/null | awk 'END {print $1}')
  before=$(ask allocated "$DEV_FS") || fail "host: $before"
  rm -f /mnt/fs/trim.dat /mnt/fs/fio.dat
  sync
  must fstrim -v /mnt/fs
  after=$(ask allocated "$DEV_FS") || fail "host: $after"
  shrink_kb=$(((before - after) / 1024))
  say "backing file: $((before / 1048576)) MiB -> $((after / 1048576)) MiB allocated; files removed: $((freed_kb / 1024)) MiB"
  [ "$shrink_kb" -ge $((freed_kb * 9 / 10)) ] ||
    fail "the backing file shrank by $shrink_kb KiB, expected about the $freed_kb KiB removed"
  verify_sums
  must umount /mnt/fs
  fsck_clean "$dev"
}

# try_login IQN: logs in and out again; fails if the login does not succeed.
try_login() {
  local dev
  dev=$(login "$1") || exit 1
  must dd if="/dev/$dev" of=/dev/null bs=1M count=1 iflag=direct
  logout "$1"
}

# refused IQN WHY: a login must be refused.
refused() {
  local out rc=0
  out=$(iscsiadm -m node -T "$1" -p "$PORTAL" --login 2>&1) || rc=$?
  [ $rc -ne 0 ] || { logout "$1"; fail "login to $1 succeeded with $2"; }
  [ -z "$(session_id "$1")" ] || fail "a session to $1 exists after a refused login ($2)"
  say "refused as expected ($2): exit $rc, $(echo "$out" | grep -o 'initiator reported error.*' | head -1)"
}

# chap IQN SECRET [MUTUAL_SECRET]: the node record of IQN logs in with CHAP as $CHAP_USER with
# SECRET, and with MUTUAL_SECRET expects the target to prove it is $CHAP_MUTUAL_USER.
chap() {
  node_set "$1" node.session.auth.authmethod CHAP
  node_set "$1" node.session.auth.username "$CHAP_USER"
  node_set "$1" node.session.auth.password "$2"
  [ -z "${3:-}" ] || {
    node_set "$1" node.session.auth.username_in "$CHAP_MUTUAL_USER"
    node_set "$1" node.session.auth.password_in "$3"
  }
}

# CHAP one-way and mutual from the kernel initiator; wrong secrets refused. Then the algorithms
# (node.session.auth.chap_algs, open-iscsi's default is MD5 alone): $IQN_CHAP3 allows SHA3-256
# and SHA256 only, so MD5 is refused with the right secret and each of the two, offered alone,
# logs in (the target can only have used it); mutual CHAP with each of them alone.
phase_chap() {
  local wrong=wrong-secret-0123
  node_set "$IQN_CHAP1" node.session.auth.authmethod None
  refused "$IQN_CHAP1" "no CHAP"
  chap "$IQN_CHAP1" "$wrong"
  refused "$IQN_CHAP1" "a wrong secret"
  chap "$IQN_CHAP1" "$CHAP_SECRET"
  try_login "$IQN_CHAP1"
  say "one-way CHAP: logged in with the right secret"

  chap "$IQN_CHAP2" "$CHAP_SECRET" "$wrong"
  refused "$IQN_CHAP2" "the target not knowing the secret the initiator expects"
  chap "$IQN_CHAP2" "$wrong" "$CHAP_MUTUAL_SECRET"
  refused "$IQN_CHAP2" "a wrong initiator secret (mutual)"
  chap "$IQN_CHAP2" "$CHAP_SECRET" "$CHAP_MUTUAL_SECRET"
  try_login "$IQN_CHAP2"
  say "mutual CHAP: logged in, the target proved its secret"

  chap "$IQN_CHAP3" "$CHAP_SECRET"
  node_set "$IQN_CHAP3" node.session.auth.chap_algs MD5
  refused "$IQN_CHAP3" "MD5 at a Target allowing SHA3-256 and SHA256 only"
  local alg
  for alg in SHA256 SHA3-256; do
    node_set "$IQN_CHAP3" node.session.auth.chap_algs "$alg"
    try_login "$IQN_CHAP3"
    say "one-way CHAP with $alg alone: logged in"
    node_set "$IQN_CHAP2" node.session.auth.chap_algs "$alg"
    try_login "$IQN_CHAP2"
    say "mutual CHAP with $alg alone: logged in, the target proved its secret with $alg"
  done
}

# An initiator declaring MaxRecvDataSegmentLength=8192 reads 1 MiB blocks at depth 32: every
# read comes back in 128 Data-In PDUs; fio verifies the data written before.
phase_mrdsl() {
  local t=$IQN_SMALL dev sid q r0 s0 r1 s1 per_read
  node_set "$t" 'node.conn[0].iscsi.MaxRecvDataSegmentLength' 8192
  dev=$(login "$t") || exit 1
  sid=$(session_id "$t")
  iscsiadm -m session -r "$sid" -P 2 | grep -E 'MaxRecvDataSegmentLength|MaxXmitDataSegmentLength'
  iscsiadm -m session -r "$sid" -P 2 | grep -q 'MaxRecvDataSegmentLength: 8192' ||
    fail "the session did not take MaxRecvDataSegmentLength=8192"
  q=/sys/block/$dev/queue
  [ "$(cat "$q/max_hw_sectors_kb")" -ge 1024 ] || fail "max_hw_sectors_kb $(cat "$q/max_hw_sectors_kb") < 1024"
  echo 1024 >"$q/max_sectors_kb"
  must fio --name=fill --filename="/dev/$dev" --rw=write --bs=1M --ioengine=libaio --direct=1 \
    --iodepth=8 --verify=crc32c --do_verify=0
  read -r r0 _ s0 _ </sys/block/"$dev"/stat
  must fio --name=read-1m --filename="/dev/$dev" --rw=read --bs=1M --ioengine=libaio --direct=1 \
    --iodepth=32 --verify=crc32c --verify_fatal=1
  read -r r1 _ s1 _ </sys/block/"$dev"/stat
  per_read=$(((s1 - s0) / (r1 - r0)))
  say "$((r1 - r0)) reads of $((per_read / 2)) KiB on average"
  [ "$per_read" -ge 2048 ] || fail "reads reached the disk as $((per_read / 2)) KiB, not 1 MiB"
  logout "$t"
}

# restart SIGNAL: fio with verification runs on a fresh file system while the host stops the
# agent with SIGNAL and starts it again, $RESTARTS times, two seconds apart; every restart must
# land while fio runs; the session recovers each time, no error reaches fio, the file system
# stays clean and its files intact.
restart_under_io() {
  local sig=$1 dev sid fpid rc out n=0
  dev=$(fresh_fs "$IQN_FS") || exit 1
  sid=$(session_id "$IQN_FS")
  rm -f /mnt/fs/restart.dat
  fio --name=restart-"$sig" --filename=/mnt/fs/restart.dat --size="$RESTART_FIO_SIZE" \
    --rw=randwrite --bs=16k --ioengine=libaio --direct=1 --iodepth=16 \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_backlog=256 >"/tmp/fio-$sig.out" 2>&1 &
  fpid=$!
  sleep 3
  while [ $n -lt "$RESTARTS" ]; do
    kill -0 "$fpid" 2>/dev/null || { cat "/tmp/fio-$sig.out"; fail "fio ended after $n of $RESTARTS restarts"; }
    out=$(ask restart "$sig") || fail "host could not restart the agent: $out"
    n=$((n + 1))
    say "agent restarted ($n of $RESTARTS): $out"
    wait_logged_in "$IQN_FS" 20 # the session is back before the next restart
    sleep 2
  done
  rc=0; wait "$fpid" || rc=$?
  cat "/tmp/fio-$sig.out"
  [ $rc -eq 0 ] || fail "fio exited $rc across $RESTARTS agent restarts ($sig)"
  [ "$(session_id "$IQN_FS")" = "$sid" ] || fail "session $sid did not recover (now: $(session_id "$IQN_FS"))"
  wait_logged_in "$IQN_FS" 1
  rm -f /mnt/fs/restart.dat
  must umount /mnt/fs
  fsck_clean "$dev"
  must mount -t ext4 "/dev/$dev" /mnt/fs
  verify_sums
}
phase_restart_term() { restart_under_io term; }
phase_restart_kill() { restart_under_io kill; }

# Delete under a mounted file system: writes stream in (O_DIRECT, 8 threads), the host drains
# the Device; every writer thread must get an error soon (fenced, not hung), and every write
# acknowledged before must be in the backing file (the host checks).
phase_drain() {
  local dev wpid good out t_ack
  # The host may swap the agent first (drain through the agent API): the guest is idle then,
  # and its session comes back as after a restart.
  ! grep -q ' /mnt/fs ' /proc/mounts || must umount /mnt/fs
  out=$(ask prepare-drain "$DEV_FS") || fail "host could not prepare the drain: $out"
  say "$out"
  [ -z "$(session_id "$IQN_FS")" ] || wait_logged_in "$IQN_FS" 60
  dev=$(fresh_fs "$IQN_FS") || exit 1
  /spindle/fswriter /mnt/fs/drain.dat 64 8 >/tmp/drain.log 2>/tmp/drain.err &
  wpid=$!
  for _ in $(seq 1 600); do
    good=$(grep -c '^G ' /tmp/drain.log)
    [ "$good" -ge 2000 ] && break
    kill -0 $wpid 2>/dev/null || fail "the writer stopped early: $(cat /tmp/drain.err) $(tail -3 /tmp/drain.log)"
    sleep 0.2
  done
  [ "$good" -ge 2000 ] || fail "only $good writes in 120 s"
  out=$(ask drain "$DEV_FS") || fail "host could not drain: $out"
  t_ack=$(now_ms)
  say "host drained the Device: $out"
  for _ in $(seq 1 "$DRAIN_DEADLINE"); do
    kill -0 $wpid 2>/dev/null || break
    sleep 1
  done
  if kill -0 $wpid 2>/dev/null; then
    fail "writes still blocked ${DRAIN_DEADLINE} s after the drain: hung, not fenced"
  fi
  wait $wpid || fail "the writer failed: $(cat /tmp/drain.err)"
  say "writer ended $(($(now_ms) - t_ack)) ms after the drain answer: $(grep '^END' /tmp/drain.log)"
  grep -q '^E ' /tmp/drain.log || fail "no write failed after the drain"
  send_file drain.log /tmp/drain.log
  out=$(ask check-drain "$DEV_FS") || fail "$out"
  say "$out"
  # Cleanup: if the agent is gone, fail what is left now rather than after the recovery timeout.
  echo 1 >/sys/class/iscsi_session/session"$(session_id "$IQN_FS")"/recovery_tmo 2>/dev/null
  umount -f /mnt/fs 2>/dev/null || umount -l /mnt/fs
  iscsiadm -m node -T "$IQN_FS" -p "$PORTAL" --logout >/dev/null 2>&1 || true
}
