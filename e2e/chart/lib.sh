# Shared by the chart tests: counted checks and a summary that fails when a check failed or did
# not run. Sourced, not run.
# shellcheck shell=bash

passed=0; failed=0; expected=0
CHECK_OUT="$(mktemp)"

# check NAME COMMAND...: runs COMMAND (a function or program); prints "ok NAME" or "FAIL NAME"
# with COMMAND's output. A test declares up front how many checks it means to run (expect N).
check() {
    local name="$1" t0=$SECONDS; shift
    if "$@" >"$CHECK_OUT" 2>&1; then
        passed=$((passed + 1)); echo "ok   $name ($((SECONDS - t0)) s)"
    else
        failed=$((failed + 1)); echo "FAIL $name ($((SECONDS - t0)) s)"; sed 's/^/     /' "$CHECK_OUT"
    fi
}

expect() { expected=$((expected + $1)); }

# summary LABEL: "LABEL: N passed, M failed"; non-zero unless every expected check ran and passed.
summary() {
    rm -f "$CHECK_OUT"
    echo "$1: $passed passed, $failed failed"
    if ((passed + failed != expected)); then
        echo "$1: ran $((passed + failed)) of $expected checks"
        return 1
    fi
    ((failed == 0))
}
