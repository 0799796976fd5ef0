//! The leader fence: the highest operator leader term this agent has seen, kept on disk
//! (`<data dir>/.spindle/leader-term`, replaced atomically and fsynced), and the rule every
//! mutating call follows: a call whose term is lower is refused before it changes anything.
//!
//! A deposed operator leader (frozen, or cut off from the apiserver behind a half-open
//! connection) may still send calls after its standby took over. The new leader's first call to
//! this agent raises the term; from then on every call of the old leader is refused, so it can
//! neither serve again a Target the new leader removed nor roll a CHAP secret back.
//!
//! Calls of the current term run concurrently (read side of a lock); a call that raises the term
//! waits for the calls of older terms still running, so nothing the old leader started finishes
//! after the new leader's first change. Term 0 (an operator that sends no term) is simply the
//! lowest term: accepted while no leader with a term has called, refused once one has.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{IntCounter, IntGauge};
use tokio::sync::{RwLock, RwLockReadGuard};

/// File under the data dir holding the highest term seen.
pub const TERM_FILE: &str = ".spindle/leader-term";

/// Why a call was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The call comes from a leader older than one this agent has obeyed.
    #[error("stale leader: term {term} < {highest}")]
    Stale {
        /// The call's term.
        term: u64,
        /// The highest term seen.
        highest: u64,
    },
    /// The new term could not be made durable: the call was not admitted (the term is not
    /// raised either, so nothing is promised that a restart would forget).
    #[error("recording leader term {term} in {path}: {source}")]
    Persist {
        term: u64,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The term file exists but does not hold a term.
    #[error(
        "{path}: not a leader term ({content:?}); fix or remove it (removing it accepts any leader again)"
    )]
    Corrupt { path: String, content: String },
}

/// The highest term seen, and the lock that orders calls of different terms.
pub struct Fence {
    path: PathBuf,
    highest: RwLock<u64>,
    /// The same number, readable without waiting (metrics, tests).
    seen: AtomicU64,
}

/// A call admitted by the fence: while it is held, no call of a higher term starts.
pub struct Admitted<'a>(#[allow(dead_code)] RwLockReadGuard<'a, u64>);

struct FenceMetrics {
    refusals: IntCounter,
    term: IntGauge,
}

fn metrics() -> &'static FenceMetrics {
    static M: LazyLock<FenceMetrics> = LazyLock::new(|| {
        let refusals = IntCounter::new(
            "agent_stale_leader_refusals_total",
            "Agent API calls refused because they came from a deposed operator leader",
        )
        .expect("static metric definition");
        let term = IntGauge::new(
            "agent_leader_term",
            "Highest operator leader term the agent has obeyed",
        )
        .expect("static metric definition");
        let registry = &crate::metrics::get().registry;
        // Registering twice (tests building several fences) is the only possible error.
        let _ = registry.register(Box::new(refusals.clone()));
        let _ = registry.register(Box::new(term.clone()));
        FenceMetrics { refusals, term }
    });
    &M
}

impl Fence {
    /// Reads the highest term seen from `data_dir` (none yet: 0).
    pub fn open(data_dir: &Path) -> Result<Self, FenceError> {
        let path = data_dir.join(TERM_FILE);
        let highest = match fs::read_to_string(&path) {
            Ok(s) => s.trim().parse::<u64>().map_err(|_| FenceError::Corrupt {
                path: path.display().to_string(),
                content: s.chars().take(40).collect(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => {
                return Err(FenceError::Persist {
                    term: 0,
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        metrics()
            .term
            .set(i64::try_from(highest).unwrap_or(i64::MAX));
        Ok(Self {
            path,
            highest: RwLock::new(highest),
            seen: AtomicU64::new(highest),
        })
    }

    /// The highest term seen.
    pub fn highest(&self) -> u64 {
        self.seen.load(Ordering::Acquire)
    }

    /// Admits a call of `term`: refused when an higher term was seen; a higher term is made
    /// durable first, after the calls of older terms still running have finished.
    pub async fn admit(&self, term: u64) -> Result<Admitted<'_>, FenceError> {
        {
            let highest = self.highest.read().await;
            match term.cmp(&*highest) {
                std::cmp::Ordering::Equal => return Ok(Admitted(highest)),
                std::cmp::Ordering::Less => return Err(refuse(term, *highest)),
                std::cmp::Ordering::Greater => {}
            }
        }
        let mut highest = self.highest.write().await;
        if term < *highest {
            return Err(refuse(term, *highest));
        }
        if term > *highest {
            persist(&self.path, term).map_err(|source| FenceError::Persist {
                term,
                path: self.path.display().to_string(),
                source,
            })?;
            tracing::info!(term, previous = *highest, "new operator leader term");
            *highest = term;
            self.seen.store(term, Ordering::Release);
            metrics().term.set(i64::try_from(term).unwrap_or(i64::MAX));
        }
        Ok(Admitted(highest.downgrade()))
    }
}

fn refuse(term: u64, highest: u64) -> FenceError {
    metrics().refusals.inc();
    FenceError::Stale { term, highest }
}

/// Writes `term` to `path` atomically: a temporary file, fsynced, renamed, the folder fsynced.
fn persist(path: &Path, term: u64) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    crate::store::durable::replace(path, format!("{term}\n").as_bytes())
}

/// Refusals counted so far (tests).
#[cfg(test)]
pub fn refusals() -> u64 {
    metrics().refusals.get()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn terms_only_grow_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let f = Fence::open(dir.path()).unwrap();
        assert_eq!(f.highest(), 0);
        // Term 0 (an operator without terms) is accepted while nothing higher was seen.
        drop(f.admit(0).await.unwrap());
        drop(f.admit(7).await.unwrap());
        drop(f.admit(7).await.unwrap());
        let before = refusals();
        let e = f.admit(6).await.err().expect("older term refused");
        assert_eq!(e.to_string(), "stale leader: term 6 < 7");
        assert!(matches!(f.admit(0).await, Err(FenceError::Stale { .. })));
        assert!(refusals() >= before + 2);
        assert_eq!(f.highest(), 7);
        drop(f);

        // A restarted agent remembers.
        let f = Fence::open(dir.path()).unwrap();
        assert_eq!(f.highest(), 7);
        assert!(matches!(
            f.admit(5).await,
            Err(FenceError::Stale {
                term: 5,
                highest: 7
            })
        ));
        drop(f.admit(9).await.unwrap());
        assert_eq!(
            fs::read_to_string(dir.path().join(TERM_FILE)).unwrap(),
            "9\n"
        );
        assert!(!dir.path().join(".spindle/.leader-term.tmp").exists());
    }

    #[test]
    fn a_damaged_term_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(".spindle")).unwrap();
        fs::write(dir.path().join(TERM_FILE), "banana").unwrap();
        let e = Fence::open(dir.path()).err().expect("refused");
        assert!(e.to_string().contains("not a leader term"), "{e}");
    }

    #[tokio::test]
    async fn a_new_term_waits_for_the_calls_of_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::sync::Arc::new(Fence::open(dir.path()).unwrap());
        let old = f.admit(1).await.unwrap();
        let raising = tokio::spawn({
            let f = f.clone();
            async move {
                let _a = f.admit(2).await.unwrap();
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !raising.is_finished(),
            "term 2 began while a term 1 call ran"
        );
        assert_eq!(f.highest(), 1);
        drop(old);
        tokio::time::timeout(Duration::from_secs(5), raising)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(f.highest(), 2);
    }
}
