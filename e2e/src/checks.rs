//! The check tables of the e2e suites: each suite starts one cluster and runs its checks in
//! order on it, each in a namespace of its own, reporting each by name with its duration.
//! `SPINDLE_E2E_ONLY=TEXT` runs only the checks whose name contains TEXT. A failed check does not
//! stop the others; at the end the operator logs are printed and every failure is listed.

use std::time::Instant;

use crate::spindle::Spindle;

/// One check: the cluster and the namespace it runs in.
pub type Check = fn(&Spindle, &str) -> anyhow::Result<()>;

/// How many lines of each operator replica's log a failure prints.
const LOG_TAIL: usize = 200;

/// Runs `checks` (name, check) in order, check `i` in namespace `{prefix}-{i}`; on a failure
/// prints the log tails of the operator replicas `logs`, then panics listing every failure.
pub fn run_table(s: &Spindle, prefix: &str, checks: &[(&str, Check)], logs: &[&str]) {
    run(
        s,
        checks
            .iter()
            .enumerate()
            .map(|(i, (name, check))| (*name, format!("{prefix}-{i}"), *check)),
        logs,
    );
}

/// Runs `checks` (name, namespace, check) in order, creating each namespace first; on a failure
/// prints the log tails of the operator replicas `logs`, then panics listing every failure.
pub fn run<'a>(
    s: &Spindle,
    checks: impl IntoIterator<Item = (&'a str, String, Check)>,
    logs: &[&str],
) {
    let only = std::env::var("SPINDLE_E2E_ONLY").unwrap_or_default();
    let mut failures = Vec::new();
    let mut ran = 0;
    for (name, ns, check) in checks {
        if !only.is_empty() && !name.contains(&only) {
            continue;
        }
        ran += 1;
        let started = Instant::now();
        let r = s.namespace(&ns).and_then(|()| check(s, &ns));
        eprintln!(
            "{} {name} ({:.1} s)",
            if r.is_ok() { "ok  " } else { "FAIL" },
            started.elapsed().as_secs_f64()
        );
        if let Err(e) = r {
            failures.push(format!("{name}: {e:#}"));
        }
    }
    assert!(ran > 0, "SPINDLE_E2E_ONLY={only:?} matched no check");
    if !failures.is_empty() {
        for id in logs {
            let log = s.rt.operator_log(id).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "{id} log:\n{}",
                lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
