# The real node of `up --kubelet`: containerd + runc + bridge CNI + kubelet + kube-proxy +
# kube-controller-manager + kube-scheduler beside the control plane, all state under
# $state/node; node_stop and node_restore_host undo everything it changed on the host. Sourced
# by lib.sh.
# shellcheck shell=bash

# One real node per machine: its bridge, cgroups and iptables chains are host-wide.
NODE_BRIDGE=spindle-br0
NODE_SUBNET=10.77.0.0/24
NODE_IP=10.77.0.1            # the bridge's address: node IP, apiserver, pods' gateway
NODE_PREFIX=24
NODE_LOCAL=127.0.4.1         # health and metrics ports of the node components
NODE_OWNER_FILE="$STATE_ROOT/spindle-node.owner"
NODE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# What kubelet, containerd and CNI write outside the state folder (paths hard-coded upstream),
# parents before children; node_restore_host removes those that did not exist at `up`.
NODE_HOST_PATHS=(/var/lib/kubelet /var/lib/kubelet/device-plugins /var/lib/cni /var/log/containers
    /var/log/pods /run/containerd /run/netns /etc/cni /opt/cni /opt/containerd /run/kubernetes
    /usr/libexec/kubernetes)
# Host settings kubelet, kube-proxy and the bridge plugin may change; restored by node_restore_host.
NODE_SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward
    net.ipv6.conf.all.forwarding net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables
    net.bridge.bridge-nf-call-ip6tables net.netfilter.nf_conntrack_max
    net.netfilter.nf_conntrack_tcp_timeout_established net.netfilter.nf_conntrack_tcp_timeout_close_wait)
# Top-level cgroups kubelet and containerd create in every hierarchy.
NODE_CGROUPS=(kubepods k8s.io)
NODE_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack gcc)

# node_preflight NAME: dies unless this machine can run the node of cluster NAME.
node_preflight() {
    local p missing=()
    (($(id -u) == 0)) || die "--kubelet needs root (kubelet, containerd and runc manage cgroups, mounts and networks)"
    for p in "${NODE_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) || die "--kubelet needs the Debian packages ${missing[*]} (e2e/install-deps installs them)"
    if [[ -s "$NODE_OWNER_FILE" && "$(<"$NODE_OWNER_FILE")" != "$1" && -d "$(state_dir "$(<"$NODE_OWNER_FILE")")/node" ]]; then
        die "a real node already runs for cluster $(<"$NODE_OWNER_FILE") (one per machine); stop it with: down --name $(<"$NODE_OWNER_FILE")"
    fi
}

# node_record_host STATE NAME: what node_restore_host must restore, written before anything changes;
# marks cluster NAME as the machine's node.
node_record_host() {
    local n="$1/node" p c h
    mkdir -p "$n"
    {
        for p in "${NODE_HOST_PATHS[@]}"; do [[ -e "$p" ]] && echo "path $p"; done
        for p in "${NODE_SYSCTLS[@]}"; do
            [[ -r "/proc/sys/${p//.//}" ]] && echo "sysctl $p $(<"/proc/sys/${p//.//}")"
        done
        for c in "${NODE_CGROUPS[@]}"; do
            for h in /sys/fs/cgroup/*/; do [[ -d "$h$c" ]] && echo "cgroup $h$c"; done
        done
        if ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then echo "link $NODE_BRIDGE"; fi
    } >"$n/host.before"
    echo "$2" >"$NODE_OWNER_FILE"
}

node_bridge() {
    ip link show "$NODE_BRIDGE" >/dev/null 2>&1 || ip link add "$NODE_BRIDGE" type bridge
    ip addr replace "$NODE_IP/$NODE_PREFIX" dev "$NODE_BRIDGE"
    ip link set "$NODE_BRIDGE" up
}

# node_certs STATE NODE: client certificates of the node components, the kubelet's serving one.
node_certs() {
    local d="$1" node="$2" client="extendedKeyUsage=clientAuth"
    issue_cert "$d" kubelet "/O=system:nodes/CN=system:node:$node" "$client"
    issue_cert "$d" kubelet-serving "/CN=$node" "subjectAltName=IP:$NODE_IP,DNS:$node" "extendedKeyUsage=serverAuth"
    issue_cert "$d" kube-controller-manager "/CN=system:kube-controller-manager" "$client"
    issue_cert "$d" kube-scheduler "/CN=system:kube-scheduler" "$client"
    issue_cert "$d" kube-proxy "/CN=system:kube-proxy" "$client"
}

# node_configs STATE NODE SERVER: containerd, CNI, kubelet and kube-proxy configuration files.
node_configs() {
    local s="$1" node="$2" server="$3" n="$1/node" c
    mkdir -p "$n/containerd" "$n/cni/net.d" "$n/kubelet/seccomp" "$n/pod-logs" "$n/volume-plugins"
    for c in kubelet kube-controller-manager kube-scheduler kube-proxy; do
        write_kubeconfig_file "$n/$c.kubeconfig" "$node" "$server" "$s/ca.crt" "$s/$c.crt" "$s/$c.key" "$c"
    done
    cat >"$n/containerd/config.toml" <<EOF
version = 2
root = "$n/containerd/root"
state = "$n/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$n/containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$n/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$(node_pause_ref)"
  # The VM withholds CAP_SYS_RESOURCE even from root: runc cannot lower oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "$NODE_LOCAL"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$n/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$n/containerd/runc"
EOF
    cat >"$n/cni/net.d/10-spindle.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "spindle",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$NODE_SUBNET", "gateway": "$NODE_IP"}]],
        "dataDir": "$n/cni/ipam"
      }
    }
  ]
}
EOF
    cat >"$n/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: $NODE_LOCAL
healthzPort: 10248
tlsCertFile: $s/kubelet-serving.crt
tlsPrivateKeyFile: $s/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $s/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$n/containerd/containerd.sock
# cgroup v1 (hybrid) and no systemd as PID 1 here.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
# Images are imported, never pulled: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
podLogsDir: $n/pod-logs
volumePluginDir: $n/volume-plugins
serializeImagePulls: false
shutdownGracePeriod: 0s
EOF
    cat >"$n/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $n/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $node
clusterCIDR: $NODE_SUBNET
healthzBindAddress: $NODE_LOCAL:10256
metricsBindAddress: $NODE_LOCAL:10249
nodePortAddresses: ["$NODE_SUBNET"]
# Leave the host's conntrack and route_localnet settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
EOF
}

node_pause_ref() { echo "docker.io/library/spindle-pause:1"; }

# node_pause_image: the sandbox image, a static `pause` program alone, cached as an OCI archive.
node_pause_image() {
    local cache="$CACHE_DIR/pause" sum work
    sum="$(sha256sum "$NODE_DIR/pause.c" | cut -c1-16)"
    if [[ ! -s "$cache/pause-$sum.oci.tar" ]]; then
        work="$(mktemp -d)"
        mkdir -p "$cache" "$work/rootfs"
        gcc -static -O2 -o "$work/rootfs/pause" "$NODE_DIR/pause.c"
        "$CLUSTER_DIR/../images/oci-archive" --rootfs "$work/rootfs" --name "$(node_pause_ref)" \
            --entrypoint /pause --user 65535:65535 --out "$cache/pause-$sum.oci.tar"
        rm -rf -- "$work"
    fi
    echo "$cache/pause-$sum.oci.tar"
}

# node_wait WHAT SECONDS COMMAND...: polls COMMAND until it succeeds, dies after SECONDS.
node_wait() {
    local what="$1" secs="$2" deadline=$((SECONDS + $2)); shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what not ready after $secs s; see the logs in $STATE_ROOT/spindle-cluster-*/"
        sleep 0.2
    done
}

# node_start STATE NODE: starts the node's daemons (control plane already up) and waits for the
# Node to be Ready.
node_start() {
    local s="$1" node="$2" n="$1/node" sock="$1/node/containerd/containerd.sock"
    spawn containerd /usr/bin/containerd --config "$n/containerd/config.toml"
    node_wait containerd 30 ctr --address "$sock" version
    ctr --address "$sock" -n k8s.io images import "$(node_pause_image)" >/dev/null
    spawn kubelet "$BIN_DIR/kubelet" --config "$n/kubelet.yaml" --kubeconfig "$n/kubelet.kubeconfig" \
        --root-dir "$n/kubelet" --hostname-override "$node" --node-ip "$NODE_IP"
    spawn kube-controller-manager "$BIN_DIR/kube-controller-manager" \
        --kubeconfig "$n/kube-controller-manager.kubeconfig" --leader-elect=false \
        --bind-address "$NODE_LOCAL" --secure-port 10257 --cert-dir "$n/kcm-certs" \
        --use-service-account-credentials --root-ca-file "$s/ca.crt" \
        --service-account-private-key-file "$s/sa.key" --profiling=false \
        --flex-volume-plugin-dir "$n/volume-plugins"
    spawn kube-scheduler "$BIN_DIR/kube-scheduler" --kubeconfig "$n/kube-scheduler.kubeconfig" \
        --leader-elect=false --bind-address "$NODE_LOCAL" --secure-port 10259 \
        --cert-dir "$n/scheduler-certs" --profiling=false
    spawn kube-proxy "$BIN_DIR/kube-proxy" --config "$n/kube-proxy.yaml"
    node_wait "Node $node" 90 node_ready "$node"
}

node_ready() {
    [[ "$(kubectl get node "$1" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

# node_iptables_sweep: removes the KUBE-* and CNI-* chains, and the rules jumping to them, from
# every table of iptables and ip6tables; one iptables-restore --noflush per table, so other
# chains are left as they are.
node_iptables_sweep() {
    local ipt table script
    for ipt in iptables ip6tables; do
        command -v "$ipt-save" >/dev/null || continue
        for table in filter nat mangle raw; do
            script="$("$ipt-save" -t "$table" 2>/dev/null | awk -v t="$table" '
                /^:(KUBE|CNI)-/ { chains[++n] = substr($1, 2) }
                /^-A / && $2 !~ /^(KUBE|CNI)-/ && / -j (KUBE|CNI)-/ { sub(/^-A /, "-D "); del[++d] = $0 }
                END {
                    if (n + d == 0) exit
                    print "*" t
                    for (i = 1; i <= d; i++) print del[i]
                    for (i = 1; i <= n; i++) print "-F " chains[i]
                    for (i = 1; i <= n; i++) print "-X " chains[i]
                    print "COMMIT"
                }')" || true
            [[ -z "$script" ]] || "$ipt-restore" --noflush <<<"$script" \
                || echo "down: could not remove the node's $ipt $table chains" >&2
        done
    done
}

# node_unmount_under DIR: unmounts every mount at or below DIR, deepest first.
node_unmount_under() {
    local m
    findmnt -rn -o TARGET | awk -v d="$1" 'index($0, d "/") == 1 || $0 == d' | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
}

# node_cgroup_pids: processes in the node's cgroups (the pods' containers).
node_cgroup_pids() {
    local c
    for c in "${NODE_CGROUPS[@]}"; do
        find /sys/fs/cgroup/*/"$c" -name cgroup.procs -exec cat {} + 2>/dev/null || true
    done | sort -u
}

# node_stop STATE: stops the pods (through the API: agents drain and flush on SIGTERM) and the
# node's daemons, and unmounts what they mounted. The control plane still runs.
node_stop() {
    local s="$1" n="$1/node" pid i sock="$1/node/containerd/containerd.sock"
    # Pods first, through the API (agents drain and flush on SIGTERM); nothing recreates them.
    stop_pid "$s/kube-controller-manager.pid" "$BIN_DIR/kube-controller-manager"
    stop_pid "$s/kube-scheduler.pid" "$BIN_DIR/kube-scheduler"
    if pid_alive "$s/kubelet.pid" "$BIN_DIR/kubelet" && [[ -s "$s/kubeconfig" ]]; then
        "$BIN_DIR/kubectl" --kubeconfig "$s/kubeconfig" delete pods --all --all-namespaces \
            --wait --timeout 120s >/dev/null 2>&1 || echo "down: pods did not stop within 120 s; killing them" >&2
    fi
    stop_pid "$s/kubelet.pid" "$BIN_DIR/kubelet"
    stop_pid "$s/kube-proxy.pid" "$BIN_DIR/kube-proxy"
    # Whatever still runs in the pods' cgroups, then containerd and its shims.
    for ((i = 0; i < 3; i++)); do
        for pid in $(node_cgroup_pids); do kill -KILL "$pid" 2>/dev/null || true; done
        sleep 0.2
    done
    stop_pid "$s/containerd.pid" /usr/bin/containerd
    for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $sock( |$)" || true); do
        kill -KILL "$pid" 2>/dev/null || true
    done
    node_unmount_under "$n"
}

# node_restore_host STATE: after node_stop and the control plane (which listens on the bridge),
# removes the node's network, cgroups and host paths and restores the settings that
# node_record_host found.
node_restore_host() {
    local s="$1" before="$1/node/host.before" c h p link
    [[ -f "$before" ]] || before=/dev/null
    # Network: veths left on the bridge, the bridge unless it was there before, iptables chains.
    for link in $(ip -o link show master "$NODE_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
        ip link del "$link" 2>/dev/null || true
    done
    grep -qx "link $NODE_BRIDGE" "$before" || ip link del "$NODE_BRIDGE" 2>/dev/null || true
    node_iptables_sweep
    # cgroups the node created, deepest first.
    for c in "${NODE_CGROUPS[@]}"; do
        for h in /sys/fs/cgroup/*/; do
            if [[ -d "$h$c" ]] && ! grep -qxF "cgroup $h$c" "$before"; then
                find "$h$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
            fi
        done
    done
    # Host paths the node created (parents first: a removed parent takes its children).
    for p in "${NODE_HOST_PATHS[@]}"; do
        if [[ -e "$p" ]] && ! grep -qxF "path $p" "$before"; then
            node_unmount_under "$p"
            rm -rf -- "$p"
        fi
    done
    # Settings, as they were.
    { grep '^sysctl ' "$before" || true; } | while read -r _ p v; do
        [[ "$(cat "/proc/sys/${p//.//}" 2>/dev/null)" == "$v" ]] || echo "$v" >"/proc/sys/${p//.//}" 2>/dev/null || true
    done
    [[ -s "$NODE_OWNER_FILE" && "$(<"$NODE_OWNER_FILE")" == "$(basename "$s" | sed 's/^spindle-cluster-//')" ]] \
        && rm -f "$NODE_OWNER_FILE"
    # Never delete through a mount (a pod's hostPath, a data dir).
    if findmnt -rn -o TARGET | awk -v d="$s/" 'index($0, d) == 1' | grep -q .; then
        die "mounts remain under $s; not removing it: $(findmnt -rn -o TARGET | grep -F "$s/")"
    fi
}

# node_host_state: one line per host setting the real node touches (paths, settings, cgroups,
# links, iptables chains, mounts and processes of any node); `down` must bring it back.
node_host_state() {
    local p c h ipt table
    for p in "${NODE_HOST_PATHS[@]}"; do [[ -e "$p" ]] && echo "path $p"; done
    for p in "${NODE_SYSCTLS[@]}"; do
        [[ -r "/proc/sys/${p//.//}" ]] && echo "sysctl $p $(<"/proc/sys/${p//.//}")"
    done
    for c in "${NODE_CGROUPS[@]}"; do
        for h in /sys/fs/cgroup/*/; do [[ -d "$h$c" ]] && echo "cgroup $h$c"; done
    done
    ip -o link show 2>/dev/null | awk -F': ' -v b="$NODE_BRIDGE" '$2 == b || $0 ~ "master " b {print "link " $2}'
    for ipt in iptables ip6tables; do
        for table in filter nat mangle raw; do
            { "$ipt" -t "$table" -S 2>/dev/null || true; } | awk -v p="$ipt $table " '/(KUBE|CNI)-/ {print p $0}'
        done
    done
    findmnt -rn -o TARGET | awk '/spindle-cluster-|\/kubelet\/|containerd/ {print "mount " $0}'
    ps -eo comm= | awk '/^(kubelet|containerd|containerd-shim|kube-proxy)/ {print "process " $0}' | sort
}
