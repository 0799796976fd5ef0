//! The drain of one LUN, as an explicit state machine (the agent's side of the delete
//! protocol: node/delete.rs and DrainDevice in docs/agent-api.md).
//!
//! ```text
//! Running --fence--> Fencing --fenced--> Draining --idle--> Flushed --release--> Released
//! ```
//! - **Fencing**: new commands are refused (CHECK CONDITION, 25h/00h) and the other LUNs of each
//!   I_T nexus get a REPORTED LUNS DATA HAS CHANGED unit attention.
//! - **Draining**: commands accepted before the fence run to the end; none is dropped.
//! - **Flushed**: in-flight reached zero and fdatasync succeeded: this is the acknowledgement.
//! - **Released**: the store is closed; the LUN is gone.
//!
//! Every request is re-entrant: asking to drain a LUN that is already draining or flushed
//! waits for (or reports) the same outcome instead of repeating work.

use std::cell::Cell;
use std::rc::Rc;

use tokio::sync::Notify;

/// Where a LUN is in its drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DrainState {
    Running,
    Fencing,
    Draining,
    Flushed,
    Released,
}

/// What happened to a LUN's drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainEvent {
    /// Someone asked for a drain.
    Fence,
    /// The fence is up and the other LUNs were told.
    Fenced,
    /// The in-flight count reached zero.
    Idle,
    /// fdatasync succeeded.
    FlushDone,
    /// The store was closed.
    Release,
    /// The store was closed without a flush: the user accepted the loss
    /// (`spindle.dev/skip-flush`). Allowed from any state.
    ForceRelease,
}

/// A transition the state machine does not allow.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("drain: {event:?} is not allowed in state {state:?}")]
pub struct InvalidTransition {
    pub state: DrainState,
    pub event: DrainEvent,
}

/// The pure transition function. Repeating a request that is already under way (or done) is
/// not an error: it leaves the state as it is.
pub fn next(state: DrainState, event: DrainEvent) -> Result<DrainState, InvalidTransition> {
    use DrainEvent as E;
    use DrainState as S;
    match (state, event) {
        (S::Running, E::Fence) => Ok(S::Fencing),
        (S::Fencing | S::Draining | S::Flushed, E::Fence) => Ok(state),
        (S::Fencing, E::Fenced) => Ok(S::Draining),
        (S::Draining, E::Idle) => Ok(S::Draining),
        (S::Draining, E::FlushDone) => Ok(S::Flushed),
        (S::Flushed, E::FlushDone) => Ok(S::Flushed),
        (S::Flushed, E::Release) | (S::Released, E::Release) => Ok(S::Released),
        (_, E::ForceRelease) => Ok(S::Released),
        _ => Err(InvalidTransition { state, event }),
    }
}

/// Admission control and in-flight accounting for one LUN, shared by the engine's tasks (one
/// thread: no locks).
#[derive(Debug)]
pub struct Gate {
    state: Cell<DrainState>,
    inflight: Cell<u32>,
    /// Commands refused since the fence went up.
    refused: Cell<u64>,
    idle: Notify,
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new(DrainState::Running)
    }
}

/// Proof that a command was admitted; dropping it ends the command's in-flight time.
#[derive(Debug)]
pub struct Admitted {
    gate: Rc<Gate>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let n = self.gate.inflight.get() - 1;
        self.gate.inflight.set(n);
        if n == 0 {
            self.gate.idle.notify_waiters();
        }
    }
}

impl Gate {
    /// A gate starting in `state`: a Device fenced before an agent restart stays fenced (its
    /// LUN starts in Draining with nothing in flight, or Flushed).
    pub fn new(state: DrainState) -> Self {
        Gate {
            state: Cell::new(state),
            inflight: Cell::new(0),
            refused: Cell::new(0),
            idle: Notify::new(),
        }
    }

    /// Admits a new command, or `None` once the fence is up (and counts the refusal).
    pub fn admit(self: &Rc<Self>) -> Option<Admitted> {
        if self.state.get() != DrainState::Running {
            self.refused.set(self.refused.get() + 1);
            return None;
        }
        self.inflight.set(self.inflight.get() + 1);
        Some(Admitted { gate: self.clone() })
    }

    /// The current state.
    pub fn state(&self) -> DrainState {
        self.state.get()
    }

    /// Commands admitted and not yet finished.
    pub fn inflight(&self) -> u32 {
        self.inflight.get()
    }

    /// Commands the fence refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }

    /// Applies `event`, returning the new state.
    pub fn apply(&self, event: DrainEvent) -> Result<DrainState, InvalidTransition> {
        let s = next(self.state.get(), event)?;
        self.state.set(s);
        Ok(s)
    }

    /// Waits until no admitted command is left.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.inflight.get() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DrainEvent as E;
    use DrainState as S;

    #[test]
    fn the_happy_path_goes_through_every_state_in_order() {
        let mut s = S::Running;
        for (e, want) in [
            (E::Fence, S::Fencing),
            (E::Fenced, S::Draining),
            (E::Idle, S::Draining),
            (E::FlushDone, S::Flushed),
            (E::Release, S::Released),
        ] {
            s = next(s, e).unwrap();
            assert_eq!(s, want);
        }
    }

    #[test]
    fn repeated_requests_are_idempotent() {
        assert_eq!(next(S::Draining, E::Fence), Ok(S::Draining));
        assert_eq!(next(S::Flushed, E::Fence), Ok(S::Flushed));
        assert_eq!(next(S::Released, E::Release), Ok(S::Released));
    }

    #[test]
    fn no_release_before_flush_and_no_flush_before_fence() {
        assert!(next(S::Running, E::Release).is_err());
        assert!(next(S::Draining, E::Release).is_err());
        assert!(next(S::Running, E::FlushDone).is_err());
        assert!(next(S::Released, E::Fence).is_err());
    }

    #[test]
    fn a_forced_release_is_the_one_way_out_of_any_state() {
        for s in [S::Running, S::Fencing, S::Draining, S::Flushed, S::Released] {
            assert_eq!(next(s, E::ForceRelease), Ok(S::Released));
        }
    }

    #[test]
    fn the_fence_refuses_new_commands_but_keeps_admitted_ones() {
        let g = Rc::new(Gate::default());
        let a = g.admit().expect("running admits");
        assert_eq!(g.inflight(), 1);
        g.apply(E::Fence).unwrap();
        assert!(g.admit().is_none(), "fenced gate admits nothing");
        assert!(g.admit().is_none());
        assert_eq!(g.inflight(), 1);
        assert_eq!(g.refused(), 2, "every refusal is counted");
        drop(a);
        assert_eq!(g.inflight(), 0);
    }

    #[test]
    fn wait_idle_returns_only_when_the_last_command_finishes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let g = Rc::new(Gate::default());
            let a = g.admit().unwrap();
            let b = g.admit().unwrap();
            g.apply(E::Fence).unwrap();
            let done = Rc::new(Cell::new(false));
            let (g2, d2) = (g.clone(), done.clone());
            let waiter = tokio::task::spawn_local(async move {
                g2.wait_idle().await;
                d2.set(true);
            });
            tokio::task::yield_now().await;
            drop(a);
            tokio::task::yield_now().await;
            assert!(!done.get(), "one command still in flight");
            drop(b);
            waiter.await.unwrap();
            assert!(done.get());
        });
    }
}
