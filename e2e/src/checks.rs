//! The e2e suites' harness: each test binary (`harness = false`) is a table of checks, each check
//! a libtest-mimic trial named by the check, so the standard filter picks checks by name
//! (`cargo test -p spindle-e2e --test operator -- 'delete'`), `--list` lists them and each is
//! reported pass or fail. `SPINDLE_E2E_ONLY=TEXT` is that filter when none is given (scripts and
//! docs use it).
//!
//! The checks of a binary share one fixture (a cluster, agents): it is started once, by the first
//! check that runs (`--list` or a filter matching nothing starts nothing), the checks run one
//! after the other in table order, and it is stopped after the last. A failed check does not stop
//! the others; when any failed, the fixture prints what explains it (the operator logs).

use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use libtest_mimic::{Arguments, Failed, Trial};

use crate::spindle::Spindle;

/// What a suite's checks share; started once before the first check that runs.
pub trait Fixture: Send + 'static {
    /// Prints what explains failures (logs); called after the checks when any failed.
    fn report_failure(&self) {}
    /// Called once after the checks, `passed` when none failed; then the fixture is dropped.
    fn finish(&mut self, passed: bool) {
        let _ = passed;
    }
}

/// One check of a suite over fixture `F`.
pub type Body<F> = Box<dyn FnOnce(&mut F) -> anyhow::Result<()> + Send>;

/// How the fixture starts.
type Start<F> = Box<dyn FnOnce() -> anyhow::Result<F> + Send>;

/// The fixture, started by the first check that needs it.
enum Shared<F> {
    NotStarted(Start<F>),
    Started(F),
    /// Why it did not start (every check after the first reports it too).
    Broken(String),
}

impl<F> Shared<F> {
    fn get(&mut self) -> Result<&mut F, Failed> {
        if matches!(self, Self::NotStarted(_)) {
            // Broken until `start` returns: a panic in it leaves the suite so.
            let Self::NotStarted(start) = std::mem::replace(self, Self::Broken("panicked".into()))
            else {
                unreachable!()
            };
            let started = Instant::now();
            *self = match start() {
                Ok(f) => {
                    eprint!("(started in {:.1} s) ", started.elapsed().as_secs_f64());
                    Self::Started(f)
                }
                Err(e) => Self::Broken(format!("{e:#}")),
            };
        }
        match self {
            Self::Started(f) => Ok(f),
            Self::Broken(why) => Err(format!("the suite did not start: {why}").into()),
            Self::NotStarted(_) => unreachable!(),
        }
    }
}

/// Runs the suite's `checks` (name, body) as trials over the fixture `start` makes, with the
/// command line's libtest arguments; the exit code says whether any check failed.
pub fn run<F: Fixture>(
    start: impl FnOnce() -> anyhow::Result<F> + Send + 'static,
    checks: impl IntoIterator<Item = (String, Body<F>)>,
) -> ExitCode {
    let mut args = Arguments::from_args();
    // The checks share the fixture and build on each other's leftovers (a restarted agent,
    // a deleted Node put back): one at a time, in table order.
    args.test_threads = Some(1);
    // A check takes seconds to minutes: a dot per check (cargo test --quiet passes --quiet
    // on) would not say which one is running or failed.
    args.quiet = false;
    if args.filter.is_none() {
        args.filter = std::env::var("SPINDLE_E2E_ONLY")
            .ok()
            .filter(|only| !only.is_empty());
    }
    let shared = Arc::new(Mutex::new(Shared::NotStarted(Box::new(start) as Start<F>)));
    let trials = checks
        .into_iter()
        .map(|(name, body)| {
            let shared = Arc::clone(&shared);
            Trial::test(name, move || {
                let mut shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
                let fixture = shared.get()?;
                let started = Instant::now();
                let r = body(fixture);
                eprint!("({:.1} s) ", started.elapsed().as_secs_f64());
                r.map_err(|e| format!("{e:#}").into())
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // The trials are gone (run or filtered out): the fixture is ours alone again.
    let shared = Arc::try_unwrap(shared)
        .ok()
        .map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner));
    if let Some(Shared::Started(mut fixture)) = shared {
        if conclusion.has_failed() {
            fixture.report_failure();
        }
        fixture.finish(!conclusion.has_failed());
    }
    conclusion.exit_code()
}

/// One check of a Spindle suite: the cluster and the namespace it runs in.
pub type Check = fn(&Spindle, &str) -> anyhow::Result<()>;

/// How many lines of each operator replica's log a failure prints.
const LOG_TAIL: usize = 200;

/// A Spindle suite's fixture: the cluster, and the operator replicas whose logs a failure prints.
struct Operated {
    s: Spindle,
    logs: &'static [&'static str],
}

impl Fixture for Operated {
    fn report_failure(&self) {
        for id in self.logs {
            let log = self.s.rt.operator_log(id).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "{id} log:\n{}",
                lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
            );
        }
    }
}

/// Runs the Spindle suite `checks` (name, check) on the cluster `start` makes, check `i` in
/// namespace `{prefix}-{i}`; a failure prints the log tails of the operator replicas `logs`.
pub fn run_table(
    start: impl FnOnce() -> anyhow::Result<Spindle> + Send + 'static,
    prefix: &str,
    checks: &[(&str, Check)],
    logs: &'static [&'static str],
) -> ExitCode {
    run_in_namespaces(
        start,
        checks
            .iter()
            .enumerate()
            .map(|(i, (name, check))| (*name, format!("{prefix}-{i}"), *check)),
        logs,
    )
}

/// Runs the Spindle suite `checks` (name, namespace, check) on the cluster `start` makes,
/// creating each namespace first; a failure prints the log tails of the operator replicas `logs`.
pub fn run_in_namespaces<'a>(
    start: impl FnOnce() -> anyhow::Result<Spindle> + Send + 'static,
    checks: impl IntoIterator<Item = (&'a str, String, Check)>,
    logs: &'static [&'static str],
) -> ExitCode {
    run(
        move || Ok(Operated { s: start()?, logs }),
        checks.into_iter().map(|(name, ns, check)| {
            let body: Body<Operated> =
                Box::new(move |f| f.s.namespace(&ns).and_then(|()| check(&f.s, &ns)));
            (name.to_owned(), body)
        }),
    )
}
