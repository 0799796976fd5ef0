# Shared by the chart tests: counted checks and a summary that fails when a check failed or did
# not run. Sourced, not run.
# shellcheck shell=bash

passed=0; failed=0; expected=0
CHECK_OUT=""

# check NAME COMMAND...: runs COMMAND (a function or program); prints "ok NAME" or "FAIL NAME"
# with COMMAND's output. A test declares up front how many checks it means to run (expect N).
check() {
    local name="$1" t0=$SECONDS; shift
    [[ -n "$CHECK_OUT" ]] || CHECK_OUT="$(mktemp)"
    if "$@" >"$CHECK_OUT" 2>&1; then
        passed=$((passed + 1)); echo "ok   $name ($((SECONDS - t0)) s)"
    else
        failed=$((failed + 1)); echo "FAIL $name ($((SECONDS - t0)) s)"; sed 's/^/     /' "$CHECK_OUT"
        # A test may define on_check_failed to keep what explains a failure (logs, events).
        if declare -F on_check_failed >/dev/null; then on_check_failed "$name" 2>&1 | sed 's/^/     /'; fi
    fi
}

expect() { expected=$((expected + $1)); }

# chart_tool MODULE ARGS...: a check of e2e/spindletools/chart (python3 -m
# spindletools.chart.MODULE) under Debian's python3, which has python3-yaml.
chart_tool() { PYTHON=/usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/../spindletool" "chart.$1" "${@:2}"; }

# summary LABEL: "LABEL: N passed, M failed"; non-zero unless every expected check ran and passed.
summary() {
    [[ -z "$CHECK_OUT" ]] || rm -f "$CHECK_OUT"
    echo "$1: $passed passed, $failed failed"
    if ((passed + failed != expected)); then
        echo "$1: ran $((passed + failed)) of $expected checks"
        return 1
    fi
    ((failed == 0))
}

# The lock every e2e script that binds fixed addresses or runs real nodes takes (HELPERS.md).
E2E_LOCK=/tmp/spindle-e2e.lock

# e2e_lock_held: this process or an ancestor holds E2E_LOCK (say, `flock E2E_LOCK e2e/run-all`),
# so taking it again would wait forever.
e2e_lock_held() {
    local ino holders pid=$$
    [[ -e "$E2E_LOCK" ]] || return 1
    ino="$(stat -c %i "$E2E_LOCK")"
    # /proc/locks: "N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE START END"; waiters show "->".
    holders=" $(awk -v ino="$ino" '$2 == "FLOCK" { n = split($6, f, ":"); if (f[n] == ino) printf "%s ", $5 }' /proc/locks) "
    while ((pid > 1)); do
        [[ "$holders" == *" $pid "* ]] && return 0
        pid="$(ps -o ppid= -p "$pid" | tr -d ' ')"
        [[ -n "$pid" ]] || return 1
    done
    return 1
}

# with_e2e_lock "$0" "$@": re-runs the calling script under E2E_LOCK unless it holds it already.
with_e2e_lock() {
    e2e_lock_held && return 0
    flock -n "$E2E_LOCK" true || echo "${1##*/}: waiting for $E2E_LOCK (another e2e run holds it)" >&2
    exec flock "$E2E_LOCK" "$@"
}

# lease_write SERVER CA NAMESPACE TOKEN EXPECT create|patch|update NAME: one real request to the
# apiserver at SERVER (CA: its CA file) authenticated by TOKEN alone, creating, patching (an
# annotation) or replacing (PUT, as leader election does) the Lease NAME in NAMESPACE; curl, because kubectl patch reads the object first,
# which the agent's Role does not allow. EXPECT: "allowed", or a phrase the refusal must contain.
lease_write() {
    local server="$1" ca="$2" ns="$3" t="$4" expect="$5" verb="$6" name="$7" url code out
    url="$server/apis/coordination.k8s.io/v1/namespaces/$ns/leases"
    out="$(mktemp)"
    local -a req=(curl -sS --max-time 10 --cacert "$ca" -H "Authorization: Bearer $t" -o "$out" -w '%{http_code}')
    if [[ $verb == create ]]; then
        code="$("${req[@]}" -X POST -H 'Content-Type: application/json' "$url" \
            -d "{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\",\"metadata\":{\"name\":\"$name\"}}")"
    elif [[ $verb == update ]]; then
        # A replace names the version it replaces (read with the same token).
        local rv
        rv="$(curl -sS --max-time 10 --cacert "$ca" -H "Authorization: Bearer $t" "$url/$name" \
            | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])')" \
            || { echo "update lease $name: cannot read its resourceVersion"; rm -f "$out"; return 1; }
        code="$("${req[@]}" -X PUT -H 'Content-Type: application/json' "$url/$name" \
            -d "{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\",\"metadata\":{\"name\":\"$name\",\"resourceVersion\":\"$rv\",\"annotations\":{\"spindle.dev/e2e-probe\":\"written\"}}}")"
    else
        code="$("${req[@]}" -X PATCH -H 'Content-Type: application/merge-patch+json' "$url/$name" \
            -d '{"metadata":{"annotations":{"spindle.dev/e2e-probe":"written"}}}')"
    fi
    local rc=0
    if [[ $expect == allowed ]]; then
        [[ $code == 2?? ]] || { echo "$verb lease $name: HTTP $code, expected success:"; cat "$out"; rc=1; }
    elif [[ $code == 2?? ]]; then
        echo "$verb lease $name: allowed (HTTP $code), expected refused"; rc=1
    elif ! grep -q -- "$expect" "$out"; then
        echo "$verb lease $name: HTTP $code, not refused by the policy ($expect):"; cat "$out"; rc=1
    fi
    ((rc)) || echo "$verb lease $name: HTTP $code ($expect)"
    rm -f "$out"
    return "$rc"
}
