# The real nodes of `up --kubelet`: per node a containerd (runc, bridge CNI) and a kubelet; one
# kube-proxy, kube-controller-manager and kube-scheduler beside the control plane; all state
# under $state/node. node_stop and node_restore_host undo everything it changed on the host.
# Sourced by lib.sh.
# shellcheck shell=bash

# One set of real nodes per machine: the bridge, cgroups and iptables chains are host-wide.
# Node i (0-based) has the address 10.77.0.(i+1) on the bridge (node 0's is also the pods'
# gateway and the apiserver's) and its kubelet's health port on 127.0.4.(i+1); pods get
# 10.77.0.32 and up.
NODE_BRIDGE=spindle-br0
NODE_SUBNET=10.77.0.0/24
NODE_NET=10.77.0
NODE_IP=10.77.0.1            # the first node; the apiserver listens here
NODE_PREFIX=24
NODE_LOCAL_NET=127.0.4       # health and metrics ports of the node components
NODE_LOCAL=127.0.4.1
NODE_MAX=8
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
# Top-level cgroups of the nodes (each kubelet's cgroupRoot is /spindle/NODE) and of containerd.
NODE_CGROUPS=(spindle kubepods k8s.io)
NODE_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack gcc)

# node_ip I / node_local I: the addresses of node I.
node_ip() { echo "$NODE_NET.$(($1 + 1))"; }
node_local() { echo "$NODE_LOCAL_NET.$(($1 + 1))"; }

# node_preflight NAME NODE...: dies unless this machine can run the nodes of cluster NAME.
node_preflight() {
    local p missing=() owner
    (($(id -u) == 0)) || die "--kubelet needs root (kubelet, containerd and runc manage cgroups, mounts and networks)"
    for p in "${NODE_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) || die "--kubelet needs the Debian packages ${missing[*]} (e2e/install-deps installs them)"
    (($# - 1 <= NODE_MAX)) || die "--kubelet runs at most $NODE_MAX nodes"
    owner="$(cat "$NODE_OWNER_FILE" 2>/dev/null || true)"
    if [[ -n "$owner" && "$owner" != "$1" && -d "$(state_dir "$owner")/node" ]]; then
        die "real nodes already run for cluster $owner (one set per machine); stop them with: down --name $owner"
    fi
}

# node_host_settings: the host paths, settings and cgroups the nodes touch, as they are now
# ("path P", "sysctl NAME VALUE", "cgroup DIR" lines).
node_host_settings() {
    local p c h
    for p in "${NODE_HOST_PATHS[@]}"; do [[ -e "$p" ]] && echo "path $p"; done
    for p in "${NODE_SYSCTLS[@]}"; do
        [[ -r "/proc/sys/${p//.//}" ]] && echo "sysctl $p $(<"/proc/sys/${p//.//}")"
    done
    for c in "${NODE_CGROUPS[@]}"; do
        for h in /sys/fs/cgroup/*/; do [[ -d "$h$c" ]] && echo "cgroup $h$c"; done
    done
    return 0
}

# node_record_host STATE NAME: what node_restore_host must restore, written before anything
# changes; marks cluster NAME as the machine's owner of real nodes.
node_record_host() {
    local n="$1/node"
    mkdir -p "$n"
    {
        node_host_settings
        if ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then echo "link $NODE_BRIDGE"; fi
    } >"$n/host.before"
    echo "$2" >"$NODE_OWNER_FILE"
}

# node_bridge COUNT: the bridge, with the addresses of COUNT nodes.
node_bridge() {
    local i
    ip link show "$NODE_BRIDGE" >/dev/null 2>&1 || ip link add "$NODE_BRIDGE" type bridge
    for ((i = 0; i < $1; i++)); do
        ip addr replace "$(node_ip "$i")/$NODE_PREFIX" dev "$NODE_BRIDGE"
    done
    ip link set "$NODE_BRIDGE" up
}

# node_certs STATE NODE...: client certificates of the node components and each kubelet's
# serving certificate.
node_certs() {
    local d="$1" client="extendedKeyUsage=clientAuth" i=0 node
    shift
    for node in "$@"; do
        issue_cert "$d" "kubelet-$node" "/O=system:nodes/CN=system:node:$node" "$client"
        issue_cert "$d" "kubelet-serving-$node" "/CN=$node" \
            "subjectAltName=IP:$(node_ip "$i"),DNS:$node" "extendedKeyUsage=serverAuth"
        i=$((i + 1))
    done
    issue_cert "$d" kube-controller-manager "/CN=system:kube-controller-manager" "$client"
    issue_cert "$d" kube-scheduler "/CN=system:kube-scheduler" "$client"
    issue_cert "$d" kube-proxy "/CN=system:kube-proxy" "$client"
}

# node_cgroup_root NODE: the kubelet's cgroupRoot /spindle/NODE in every hierarchy (the kubelet
# requires it to exist; a cpuset needs its CPUs and memory nodes filled in).
node_cgroup_root() {
    local h d
    for h in /sys/fs/cgroup/*/; do
        for d in spindle "spindle/$1"; do
            [[ -d "$h$d" ]] || mkdir "$h$d"
            if [[ -f "$h$d/cpuset.cpus" ]]; then
                [[ -n "$(<"$h$d/cpuset.cpus")" ]] || cat "$(dirname "$h$d")/cpuset.cpus" >"$h$d/cpuset.cpus"
                [[ -n "$(<"$h$d/cpuset.mems")" ]] || cat "$(dirname "$h$d")/cpuset.mems" >"$h$d/cpuset.mems"
            fi
        done
    done
}

# node_configs STATE SERVER NODE...: the configuration of every node and of the shared
# components. The kubelets share one folder of seccomp profiles: $STATE/node/seccomp. Pods get
# a route to the bridge's network and, through the host (kube-proxy), to the Service ClusterIPs
# (the apiserver's among them): no default route, so nothing leaves the machine.
node_configs() {
    local s="$1" server="$2" n="$1/node" c i=0 node
    shift 2
    mkdir -p "$n/cni/net.d" "$n/seccomp" "$n/volume-plugins"
    for c in kube-controller-manager kube-scheduler kube-proxy; do
        write_kubeconfig_file "$n/$c.kubeconfig" "$c" "$server" "$s/ca.crt" "$s/$c.crt" "$s/$c.key" "$c"
    done
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
        "ranges": [[{"subnet": "$NODE_SUBNET", "gateway": "$NODE_IP", "rangeStart": "$NODE_NET.32"}]],
        "routes": [{"dst": "$SERVICE_CIDR"}],
        "dataDir": "$n/cni/ipam"
      }
    }
  ]
}
EOF
    cat >"$n/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $n/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $1
clusterCIDR: $NODE_SUBNET
healthzBindAddress: $NODE_LOCAL:10256
metricsBindAddress: $NODE_LOCAL:10249
nodePortAddresses: ["$NODE_SUBNET"]
# Leave the host's conntrack and route_localnet settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
EOF
    for node in "$@"; do
        node_config "$s" "$server" "$node" "$i"
        i=$((i + 1))
    done
}

# node_config STATE SERVER NODE I: the containerd and kubelet of node NODE (index I).
node_config() {
    local s="$1" server="$2" node="$3" i="$4" d="$1/node/$3" n="$1/node"
    mkdir -p "$d/containerd" "$d/kubelet" "$d/pod-logs"
    ln -sfn "$n/seccomp" "$d/kubelet/seccomp"
    write_kubeconfig_file "$d/kubelet.kubeconfig" "$node" "$server" "$s/ca.crt" "$s/kubelet-$node.crt" \
        "$s/kubelet-$node.key" "system:node:$node"
    cat >"$d/containerd/config.toml" <<EOF
version = 2
root = "$d/containerd/root"
state = "$d/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$d/containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$(node_pause_ref)"
  # The VM withholds CAP_SYS_RESOURCE even from root: runc cannot lower oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "$(node_local "$i")"
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
        Root = "$d/containerd/runc"
EOF
    cat >"$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $(node_ip "$i")
port: 10250
readOnlyPort: 0
healthzBindAddress: $(node_local "$i")
healthzPort: 10248
tlsCertFile: $s/kubelet-serving-$node.crt
tlsPrivateKeyFile: $s/kubelet-serving-$node.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $s/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$d/containerd/containerd.sock
# cgroup v1 (hybrid) and no systemd as PID 1 here; one cgroup subtree per node.
cgroupDriver: cgroupfs
cgroupRoot: /spindle/$node
failCgroupV1: false
failSwapOn: false
# Images are imported, never pulled: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
podLogsDir: $d/pod-logs
volumePluginDir: $n/volume-plugins
serializeImagePulls: false
shutdownGracePeriod: 0s
EOF
}

# node_names STATE: the real nodes of a cluster, one a line.
node_names() { cat "$1/node/names" 2>/dev/null || true; }

# node_containerd STATE NODE: the containerd socket of a node.
node_containerd() { echo "$1/node/$2/containerd/containerd.sock"; }

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

# node_start STATE NODE...: starts every node's containerd and kubelet and the shared
# components (control plane already up); waits for every Node to be Ready.
node_start() {
    local s="$1" n="$1/node" i=0 node sock pause
    shift
    printf '%s\n' "$@" >"$n/names"
    pause="$(node_pause_image)"
    for node in "$@"; do
        node_cgroup_root "$node"
        spawn "containerd-$node" /usr/bin/containerd --config "$n/$node/containerd/config.toml"
    done
    for node in "$@"; do
        sock="$(node_containerd "$s" "$node")"
        node_wait "containerd of $node" 30 ctr --address "$sock" version
        ctr --address "$sock" -n k8s.io images import "$pause" >/dev/null
        spawn "kubelet-$node" "$BIN_DIR/kubelet" --config "$n/$node/kubelet.yaml" \
            --kubeconfig "$n/$node/kubelet.kubeconfig" --root-dir "$n/$node/kubelet" \
            --hostname-override "$node" --node-ip "$(node_ip "$i")"
        i=$((i + 1))
    done
    spawn kube-controller-manager "$BIN_DIR/kube-controller-manager" \
        --kubeconfig "$n/kube-controller-manager.kubeconfig" --leader-elect=false \
        --bind-address "$NODE_LOCAL" --secure-port 10257 --cert-dir "$n/kcm-certs" \
        --use-service-account-credentials --root-ca-file "$s/ca.crt" \
        --service-account-private-key-file "$s/sa.key" --profiling=false \
        --flex-volume-plugin-dir "$n/volume-plugins"
    spawn kube-scheduler "$BIN_DIR/kube-scheduler" --kubeconfig "$n/kube-scheduler.kubeconfig" \
        --leader-elect=false --bind-address "$NODE_LOCAL" --secure-port 10259 \
        --cert-dir "$n/scheduler-certs" --profiling=false
    # One kube-proxy serves every node: they share the host's network namespace.
    spawn kube-proxy "$BIN_DIR/kube-proxy" --config "$n/kube-proxy.yaml"
    for node in "$@"; do
        node_wait "Node $node" 90 node_ready "$node"
    done
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

# node_pod_pids NODE COMM: sets POD_PIDS to the processes named COMM in the pods of NODE (its
# kubelet's cgroupRoot /spindle/NODE). Starts no process: a test that kills an agent mid-drain
# has a hundred milliseconds or so.
node_pod_pids() {
    local h f pid comm
    POD_PIDS=()
    shopt -s globstar nullglob
    for h in /sys/fs/cgroup/pids /sys/fs/cgroup/unified /sys/fs/cgroup; do
        [[ -d "$h/spindle/$1" ]] || continue
        for f in "$h/spindle/$1"/**/cgroup.procs; do
            while read -r pid; do
                read -r comm 2>/dev/null <"/proc/$pid/comm" || continue
                [[ "$comm" != "$2" ]] || POD_PIDS+=("$pid")
            done 2>/dev/null <"$f"
        done
        break
    done
    shopt -u globstar nullglob
}

# node_stop STATE: stops the pods (through the API: on SIGTERM agents close their sessions and
# flush) and the nodes' daemons, and unmounts what they mounted. The control plane still runs.
node_stop() {
    local s="$1" n="$1/node" pid i node alive=false
    # Pods first; nothing recreates them once the controller-manager is gone.
    stop_pid "$s/kube-controller-manager.pid" "$BIN_DIR/kube-controller-manager"
    stop_pid "$s/kube-scheduler.pid" "$BIN_DIR/kube-scheduler"
    for node in $(node_names "$s"); do
        pid_alive "$s/kubelet-$node.pid" "$BIN_DIR/kubelet" && alive=true
    done
    if $alive && [[ -s "$s/kubeconfig" ]]; then
        "$BIN_DIR/kubectl" --kubeconfig "$s/kubeconfig" delete pods --all --all-namespaces \
            --wait --timeout 120s >/dev/null 2>&1 || echo "down: pods did not stop within 120 s; killing them" >&2
    fi
    for node in $(node_names "$s"); do stop_pid "$s/kubelet-$node.pid" "$BIN_DIR/kubelet"; done
    stop_pid "$s/kube-proxy.pid" "$BIN_DIR/kube-proxy"
    # Whatever still runs in the pods' cgroups, then containerd and its shims.
    for ((i = 0; i < 3; i++)); do
        for pid in $(node_cgroup_pids); do kill -KILL "$pid" 2>/dev/null || true; done
        sleep 0.2
    done
    for node in $(node_names "$s"); do
        stop_pid "$s/containerd-$node.pid" /usr/bin/containerd
        for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $(node_containerd "$s" "$node")( |$)" || true); do
            kill -KILL "$pid" 2>/dev/null || true
        done
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
    local ipt table
    node_host_settings
    ip -o link show 2>/dev/null | awk -F': ' -v b="$NODE_BRIDGE" '$2 == b || $0 ~ "master " b {print "link " $2}'
    for ipt in iptables ip6tables; do
        for table in filter nat mangle raw; do
            { "$ipt" -t "$table" -S 2>/dev/null || true; } | awk -v p="$ipt $table " '/(KUBE|CNI)-/ {print p $0}'
        done
    done
    findmnt -rn -o TARGET | awk '/spindle-cluster-|\/kubelet\/|containerd/ {print "mount " $0}'
    # Zombies (exited, awaiting their parent) hold nothing.
    ps -eo stat=,comm= | awk '$1 !~ /^Z/ && $2 ~ /^(kubelet|containerd|containerd-shim|kube-proxy)/ {print "process " $2}' | sort
}
