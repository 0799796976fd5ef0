# shellcheck shell=dash
# The phases of the CSI node e2e (e2e/kernel/csi-node) in the guest, one function each, run by
# /spindle/main (busybox ash). The helpers of e2e/kernel/guest/lib.sh are loaded first.
# From /spindle/env: CONTROLLER (host:port of `spindle-csi controller` on the host),
# STORAGE_NODE, INITIATOR, SANITY_SIZE, SANITY_EXPAND_SIZE, UNSTAGE_BOUND (seconds).

SOCK=/run/csi/csi.sock
REGISTRY=/var/lib/kubelet/plugins_registry
HEALTH=127.0.0.1:9808

# check ARGS...: csi-node-check against the controller and the node plugin.
check() { csi-node-check --controller "http://$CONTROLLER" --node "$SOCK" "$@"; }

start_plugin() {
  mkdir -p /run/csi "$REGISTRY"
  RUST_LOG=info,spindle_csi=debug spindle-csi node --endpoint "unix://$SOCK" \
    --state-dir /var/lib/spindle-csi/volumes --kubelet-registration-dir "$REGISTRY" \
    --kubelet-csi-path /var/lib/kubelet/plugins/csi.spindle.dev/csi.sock \
    --health-address "$HEALTH" --iscsiadm-timeout 60 --device-timeout 60 \
    >/tmp/plugin.log 2>&1 &
  for _ in $(seq 1 100); do
    [ -S "$SOCK" ] && wget -q -O /dev/null "http://$HEALTH/healthz" 2>/dev/null && return 0
    sleep 0.2
  done
  fail "the node plugin did not start: $(tail -n 5 /tmp/plugin.log | tr '\n' ' ')"
}

# The plugin answers kubelet's registration socket, its health endpoint, and NodeGetInfo with
# this node's initiator name.
phase_csi_plugin() {
  [ -S "$REGISTRY/csi.spindle.dev-reg.sock" ] || fail "no registration socket in $REGISTRY"
  wget -q -O - "http://$HEALTH/healthz" | grep -q ok || fail "/healthz does not answer ok"
  eval "$(check info)" || fail "NodeGetInfo failed"
  [ "$NODE_ID" = "$INITIATOR" ] || fail "NodeGetInfo says $NODE_ID, the initiator is $INITIATOR"
  say "node ID $NODE_ID; registration socket and /healthz up"
}

# sanity KIND: csi-sanity's Node Service suite with volumes of access type KIND (mount or
# block); its log goes to the host as sanity-KIND.log.
sanity() {
  local kind=$1 rc=0
  printf 'spindle.dev/chap: none\nspindle.dev/node: %s\n' "$STORAGE_NODE" >/tmp/sanity-params.yaml
  csi-sanity --csi.endpoint "unix://$SOCK" --csi.controllerendpoint "$CONTROLLER" \
    --csi.testvolumesize "$SANITY_SIZE" --csi.testvolumeexpandsize "$SANITY_EXPAND_SIZE" \
    --csi.testvolumeparameters /tmp/sanity-params.yaml --csi.testvolumeaccesstype "$kind" \
    --csi.stagingdir /tmp/csi-staging --csi.mountdir /tmp/csi-mount \
    --ginkgo.focus 'Node Service' --ginkgo.v --ginkgo.no-color --ginkgo.timeout 40m \
    >/tmp/sanity.log 2>&1 || rc=$?
  send_file "sanity-$kind.log" /tmp/sanity.log
  grep -E '^(Ran |SUCCESS|FAIL)' /tmp/sanity.log >&2
  [ $rc -eq 0 ] || fail "csi-sanity exited $rc: $(grep -E '^\s*\[FAIL\]' /tmp/sanity.log | head -3 | tr '\n' ' ')"
  # Every node test that runs must pass, and no session or node record may be left behind.
  [ -z "$(iscsiadm -m session 2>/dev/null)" ] || fail "sessions left after csi-sanity: $(iscsiadm -m session)"
  [ -z "$(iscsiadm -m node 2>/dev/null)" ] || fail "node records left after csi-sanity: $(iscsiadm -m node)"
}

phase_csi_sanity() { sanity mount; }

phase_csi_sanity_block() { sanity block; }

# node_records IQN: the node records of IQN (empty if none).
node_records() { iscsiadm -m node 2>/dev/null | awk -v t="$1" '$2 == t'; }

# A disk whose NAA is not the context's is refused before anything touches it: no mount, no
# file system (the host checks the backing file is still all zeros), no session left; the
# right NAA then stages.
phase_csi_wrong_naa() {
  local out wrong last
  out=$(check create csi-node-naa-check "$SANITY_SIZE" spindle.dev/chap=none "spindle.dev/node=$STORAGE_NODE") ||
    fail "CreateVolume: $out"
  eval "$out"
  printf '%s\n' "$out" >"$STATE/naa-volume"
  check controller-publish "$VOLUME" "$INITIATOR" >/dev/null || fail "ControllerPublishVolume failed"
  last=$(printf '%s' "$NAA" | tail -c 1)
  if [ "$last" = 0 ]; then wrong="${NAA%?}1"; else wrong="${NAA%?}0"; fi
  if out=$(check stage "$VOLUME" /tmp/naa-stage "$PORTALS" "$IQN" "$LUN" "$wrong"); then
    fail "NodeStageVolume with naa $wrong accepted disk naa $NAA"
  fi
  eval "$out"
  # shellcheck disable=SC2154  # code, message: set by the eval of the answer
  say "refused: $code: $message"
  [ "$code" = FailedPrecondition ] || fail "expected FAILED_PRECONDITION: $code: $message"
  case $message in
    *"is naa.$NAA, not the volume's naa.$wrong"*) ;;
    *) fail "the refusal does not name the NAAs: $message" ;;
  esac
  ! grep -q ' /tmp/naa-stage ' /proc/mounts || fail "the staging path got mounted"
  [ -z "$(session_id "$IQN")" ] || fail "the session made for the refused disk is left"
  [ -z "$(node_records "$IQN")" ] || fail "the node record made for the refused disk is left"
  out=$(ask zeros "$VOLUME") || fail "after the refusal: $out"
  say "backing file: $out"
  check stage "$VOLUME" /tmp/naa-stage "$PORTALS" "$IQN" "$LUN" "$NAA" >/dev/null ||
    fail "NodeStageVolume with the right naa failed: $(tail -n 3 /tmp/plugin.log | tr '\n' ' ')"
  grep -q ' /tmp/naa-stage ext4 ' /proc/mounts || fail "staged but /tmp/naa-stage holds no ext4"
  say "with naa $NAA: staged, ext4 mounted"
}

# Unstage with the target gone (agent stopped): unmount, SCSI disk deleted, logout and node
# record deletion all the same, within UNSTAGE_BOUND seconds; health says why before.
phase_csi_target_gone() {
  local out t0 secs disk
  [ -s "$STATE/naa-volume" ] || fail "no volume from phase csi-wrong-naa"
  eval "$(cat "$STATE/naa-volume")"
  check publish "$VOLUME" /tmp/naa-stage /tmp/naa-pub >/dev/null || fail "NodePublishVolume failed"
  echo "written before the target went away" >/tmp/naa-pub/file || fail "writing through the mount"
  sync
  eval "$(check health "$VOLUME")"
  # shellcheck disable=SC2153  # HEALTHY, REASON, MESSAGE: set by the eval of the answer
  [ "$HEALTHY" = true ] || fail "unhealthy while the target serves: $REASON $MESSAGE"
  disk=$(for b in /sys/class/iscsi_session/session"$(session_id "$IQN")"/device/target*/*:*:*:*/block/*; do echo "${b##*/}"; done)
  out=$(ask stop-agent) || fail "stopping the agent: $out"
  say "agent: $out"
  for _ in $(seq 1 30); do
    eval "$(check health "$VOLUME")"
    [ "$HEALTHY" = false ] && break
    sleep 1
  done
  [ "$HEALTHY" = false ] || fail "still healthy 30 s after the target went away"
  say "health: $REASON: $MESSAGE"
  t0=$(now_ms)
  check unpublish "$VOLUME" /tmp/naa-pub >/dev/null || fail "NodeUnpublishVolume failed"
  out=$(check unstage "$VOLUME" /tmp/naa-stage) || fail "NodeUnstageVolume failed: $out"
  secs=$(( ($(now_ms) - t0) / 1000 ))
  say "unpublish + unstage with the target gone: ${secs} s (disk was $disk)"
  send "NOTE unstage-target-gone-seconds $secs"
  [ "$secs" -le "$UNSTAGE_BOUND" ] || fail "unstage took ${secs} s, bound ${UNSTAGE_BOUND} s"
  [ -z "$(session_id "$IQN")" ] || fail "session left: $(iscsiadm -m session)"
  [ -z "$(node_records "$IQN")" ] || fail "node record left: $(node_records "$IQN")"
  ! grep -q ' /tmp/naa-stage ' /proc/mounts || fail "still mounted"
  [ -z "$disk" ] || [ ! -e "/sys/block/$disk" ] || fail "disk $disk still there"
  check unstage "$VOLUME" /tmp/naa-stage >/dev/null || fail "a second NodeUnstageVolume failed"
}
