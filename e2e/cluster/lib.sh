# Shared by build, up and down: pinned versions, cache and state locations, small helpers.
# shellcheck shell=bash

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/cluster/versions
source "$CLUSTER_DIR/versions"

# Where the built binaries live; reused across runs and worktrees.
CACHE_DIR="${SPINDLE_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spindle/k8s-$KUBERNETES_VERSION}"
BIN_DIR="$CACHE_DIR/bin"

# Service ClusterIPs (kube-apiserver --service-cluster-ip-range); the first is the kubernetes
# Service, which pods use to reach the apiserver.
SERVICE_CIDR=10.0.0.0/24
# shellcheck disable=SC2034 # used by up
SERVICE_APISERVER_IP=10.0.0.1

# Root under which each named cluster keeps its state (certs, data, logs, pids).
STATE_ROOT="${XDG_RUNTIME_DIR:-/tmp}"

die() {
    echo "${0##*/}: $*" >&2
    exit 1
}

# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port [TAKEN]: prints a port nothing listens on at 127.0.0.1, not in the space-separated
# list TAKEN. It is drawn below the kernel's ephemeral range (ip_local_port_range), so an outgoing
# connection of another process cannot take it between this check and the listener's bind.
free_port() {
    local taken=" ${1:-} " low=32768 high=60999 first=10000 span p
    read -r low high </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    span=$((low - first))
    if ((span < 1000)); then # the ephemeral range starts low: draw above it
        first=$((high + 1)) span=$((65536 - high - 1))
        ((span >= 100)) || { first=10000 span=20000; } # no room outside it: retry on collisions
    fi
    for _ in $(seq 200); do
        p=$((first + RANDOM % span))
        if [[ "$taken" != *" $p "* ]] && port_free "$p"; then
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# lock_clusters: serializes `up` and `down` on this machine (one lock file for all names, so
# nothing is left behind per cluster). Spawned processes must not inherit fd 9.
lock_clusters() {
    exec 9>"$STATE_ROOT/spindle-cluster.lock"
    flock 9
}

# state_dir NAME: the state directory of cluster NAME.
state_dir() {
    [[ "$1" =~ ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ ]] || die "invalid cluster name: $1"
    echo "$STATE_ROOT/spindle-cluster-$1"
}

# pid_alive PIDFILE PROGRAM: true if the pid in PIDFILE runs PROGRAM, i.e. PROGRAM is one of its
# command-line words (guards against pid reuse).
pid_alive() {
    local pid
    [[ -s "$1" ]] || return 1
    pid="$(<"$1")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    pid_runs "$pid" "$2"
}

# pid_runs PID PROGRAM: PROGRAM is one of the command-line words of process PID.
pid_runs() {
    [[ -r "/proc/$1/cmdline" ]] || return 1
    tr '\0' '\n' <"/proc/$1/cmdline" | grep -qxF "$2"
}

# await_exec PID PROGRAM: waits (up to 10 s) until the just-forked PID runs PROGRAM or is gone.
# Between fork and exec a child still shows its parent's command line, so pid_alive would call a
# process that is about to start "exited".
await_exec() {
    local i
    for ((i = 0; i < 200; i++)); do
        pid_exited "$1" || pid_runs "$1" "$2" && return 0
        sleep 0.05
    done
}

# stop_pid PIDFILE BINARY: SIGTERM the process, SIGKILL after 10 s; no-op if it is gone. Returns
# once the process has exited (an exiting process loses its command line before it is gone).
stop_pid() {
    local pid i
    pid_alive "$1" "$2" || return 0
    pid="$(<"$1")"
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        pid_alive "$1" "$2" || break
        sleep 0.1
    done
    pid_alive "$1" "$2" && kill -KILL "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
        pid_exited "$pid" && return 0
        sleep 0.1
    done
}

# pid_exited PID: no such process, or only its zombie (awaiting its parent) is left.
pid_exited() {
    local state
    state="$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null)" || return 0
    [[ -z "$state" || "$state" == Z || "$state" == X ]]
}

# issue_cert DIR NAME SUBJECT EXTENSION...: DIR/NAME.key and a certificate signed by DIR/ca.*.
issue_cert() {
    local d="$1" n="$2" subject="$3"
    shift 3
    openssl ecparam -name prime256v1 -genkey -noout -out "$d/$n.key" 2>/dev/null
    openssl req -new -key "$d/$n.key" -subj "$subject" -out "$d/$n.csr" 2>/dev/null
    printf '%s\n' "$@" >"$d/$n.ext"
    openssl x509 -req -in "$d/$n.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
        -CAcreateserial -days 30 -extfile "$d/$n.ext" -out "$d/$n.crt" 2>/dev/null
    chmod 600 "$d/$n.key"
}

# write_kubeconfig_file FILE CLUSTER SERVER CA CERT KEY USER: a kubeconfig with client certificates.
write_kubeconfig_file() {
    local b64=(base64 -w0)
    cat >"$1" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: $2
  cluster:
    server: $3
    certificate-authority-data: $("${b64[@]}" "$4")
users:
- name: $7
  user:
    client-certificate-data: $("${b64[@]}" "$5")
    client-key-data: $("${b64[@]}" "$6")
contexts:
- name: $2
  context: {cluster: $2, user: $7}
current-context: $2
KUBECONFIG
    chmod 600 "$1"
}

# shellcheck source=e2e/cluster/node/lib.sh
source "$CLUSTER_DIR/node/lib.sh"

# stop_spindle_processes DIR: stops the operator replicas, then the agents, that
# `e2e/cluster/spindle` started for the cluster in DIR (each records WHAT.pid and WHAT.bin).
stop_spindle_processes() {
    local f what
    for f in "$1"/spindle/operator*.bin "$1"/spindle/agent-*.bin; do
        [[ -s "$f" ]] || continue
        what="${f%.bin}"
        stop_pid "$what.pid" "$(<"$f")"
    done
}

# stop_cluster DIR: stops the processes recorded in a state directory (Spindle's processes; with
# a real node its pods and daemons, restoring the host) and removes it.
stop_cluster() {
    local dir="$1" node=false
    [[ -d "$dir" ]] || return 0
    [[ -d "$dir/node" ]] && node=true
    stop_spindle_processes "$dir"
    if $node; then node_stop "$dir"; fi
    stop_pid "$dir/watchdog.pid" "$CLUSTER_DIR/watchdog"
    stop_pid "$dir/kube-apiserver.pid" "$BIN_DIR/kube-apiserver"
    stop_pid "$dir/etcd.pid" "$BIN_DIR/etcd"
    if $node; then node_restore_host "$dir"; fi
    rm -rf -- "$dir"
}
