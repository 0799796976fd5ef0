//! Write memory: how many bytes of Data-Out the sessions may hold, per session and for the
//! whole agent, enforced by back-pressure instead of allocation.
//!
//! A session holds memory for (a) each open slot of its CmdSN window: a command sent in it
//! may bring up to FirstBurstLength of unsolicited data, and (b) each write it has asked for
//! data with R2T: the rest of that write. It asks the agent's [`WriteMemory`] before it opens
//! a window slot (MaxCmdSN) or sends a write's first R2T, and gives the memory back when the
//! command ends or the session does. When the memory is not there, the window stays closed
//! and the R2T waits: the initiator is slowed down, the agent does not grow.
//!
//! Fairness: a session may hold at most the session limit. A session holding little (at most
//! a quarter of the session limit) may use the whole agent limit; a session holding more may
//! use only three quarters of it. Sessions that hold stalled writes (an initiator that never
//! sends the rest) thus cannot take the last quarter, which keeps light sessions going.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

use tokio::sync::Notify;

/// The agent's write memory: a limit, what is in use, and a signal when some comes back.
#[derive(Debug)]
pub struct WriteMemory {
    limit: usize,
    session_limit: usize,
    used: AtomicUsize,
    freed: Notify,
}

/// Default bound on the Data-Out the whole agent holds.
pub const DEFAULT_AGENT_LIMIT: usize = 512 << 20;
/// Default bound on the Data-Out one session holds.
pub const DEFAULT_SESSION_LIMIT: usize = 64 << 20;

impl WriteMemory {
    /// A pool of `limit` bytes of which one session may hold at most `session_limit`.
    pub fn new(limit: usize, session_limit: usize) -> Self {
        WriteMemory {
            limit,
            session_limit: session_limit.min(limit),
            used: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    /// The agent's pool ([`WriteMemory::configure`] sets its limits at start).
    pub fn global() -> Arc<WriteMemory> {
        GLOBAL
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Sets the limits of the agent's pool; call once at start, before any session.
    pub fn configure(limit: usize, session_limit: usize) {
        let pool = Arc::new(WriteMemory::new(limit, session_limit));
        match GLOBAL.write() {
            Ok(mut g) => *g = pool,
            Err(e) => *e.into_inner() = pool,
        }
    }

    /// The most one session may hold.
    pub fn session_limit(&self) -> usize {
        self.session_limit
    }

    /// The most the agent may hold.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now by every session together.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` for a session that holds `held` already, if the limits allow.
    fn try_take(&self, held: usize, bytes: usize) -> bool {
        if bytes == 0 {
            return true;
        }
        let after = held.saturating_add(bytes);
        if after > self.session_limit {
            return false;
        }
        let ceiling = if after <= self.session_limit / 4 {
            self.limit
        } else {
            self.limit - self.limit / 4
        };
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let total = used.checked_add(bytes)?;
                (total <= ceiling).then_some(total)
            })
            .is_ok()
    }

    /// Takes `bytes` whatever the limits say (what a login already promised).
    fn force_take(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Gives `bytes` back and wakes the sessions waiting for memory.
    fn give(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(bytes))
            });
        self.freed.notify_waiters();
    }

    /// Resolves once memory has been given back (register before checking what you wait
    /// for: a give between the check and the await still wakes you).
    pub fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }
}

static GLOBAL: LazyLock<RwLock<Arc<WriteMemory>>> = LazyLock::new(|| {
    RwLock::new(Arc::new(WriteMemory::new(
        DEFAULT_AGENT_LIMIT,
        DEFAULT_SESSION_LIMIT,
    )))
});

/// What one session holds of a [`WriteMemory`]; everything goes back when it is dropped.
#[derive(Debug)]
pub(crate) struct Budget {
    pool: Arc<WriteMemory>,
    held: usize,
}

impl Budget {
    pub(crate) fn new(pool: Arc<WriteMemory>) -> Self {
        Budget { pool, held: 0 }
    }

    /// Takes `bytes` more if the limits allow.
    pub(crate) fn try_take(&mut self, bytes: usize) -> bool {
        let ok = self.pool.try_take(self.held, bytes);
        if ok {
            self.held += bytes;
        }
        ok
    }

    /// Takes `bytes` more whatever the limits say.
    pub(crate) fn force_take(&mut self, bytes: usize) {
        self.pool.force_take(bytes);
        self.held += bytes;
    }

    /// Gives back whatever is held beyond `needed`.
    pub(crate) fn keep(&mut self, needed: usize) {
        if self.held > needed {
            self.pool.give(self.held - needed);
            self.held = needed;
        }
    }

    /// Bytes held.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// The most this session may hold.
    pub(crate) fn limit(&self) -> usize {
        self.pool.session_limit()
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.pool.give(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_and_agent_limits_hold_and_light_sessions_keep_a_quarter() {
        let pool = Arc::new(WriteMemory::new(1000, 400));
        let (mut h1, mut h2, mut h3) = (
            Budget::new(pool.clone()),
            Budget::new(pool.clone()),
            Budget::new(pool.clone()),
        );
        assert!(h1.try_take(300) && h2.try_take(300));
        assert!(!h1.try_take(101), "session limit");
        assert!(
            !h3.try_take(300),
            "heavy sessions stop at three quarters of the agent limit"
        );
        assert!(h3.try_take(150));
        assert!(!h3.try_take(1));
        // Light sessions (at most a quarter of the session limit) use the last quarter.
        let (mut l1, mut l2, mut l3) = (
            Budget::new(pool.clone()),
            Budget::new(pool.clone()),
            Budget::new(pool.clone()),
        );
        assert!(l1.try_take(100));
        assert!(!l1.try_take(1), "101 bytes is no longer light");
        assert!(l2.try_take(100));
        assert!(!l3.try_take(100), "never past the agent limit");
        assert_eq!(pool.used(), 950);
        drop(h1);
        assert_eq!(pool.used(), 650);
        l1.keep(40);
        assert_eq!((l1.held(), pool.used()), (40, 590));
        drop((h2, h3, l1, l2, l3));
        assert_eq!(pool.used(), 0, "everything comes back when sessions end");
    }
}
