//! The drain of one LUN, as an explicit state machine (the agent's side of the delete
//! protocol: node/delete.rs and DrainDevice in docs/agent-api.md), and the flush
//! acknowledgement it ends with.
//!
//! One vocabulary from the wire to the engine: [`DrainState`] is the agent API's `DrainState`
//! (`DRAIN_STATE_RUNNING` ...), the state a Device's record keeps and the state of each of its
//! LUNs here; [`DrainAck`] is the acknowledgement the engine gives, the node keeps and the API
//! answers (with the Device's identity).
//!
//! ```text
//! Running --fence--> Draining --flush done--> Flushed --release--> Released
//!                        \--flush failed--> Failed --forced release--> Released
//! ```
//! - **Draining**: the fence is up: new commands are refused (CHECK CONDITION, 25h/00h) and the
//!   other LUNs of each I_T nexus get a REPORTED LUNS DATA HAS CHANGED unit attention (both at
//!   once, when the fence goes up); commands accepted before the fence run to the end, none is
//!   dropped.
//! - **Flushed**: in-flight reached zero and fdatasync succeeded: this is the acknowledgement.
//! - **Failed**: the flush failed (or did not finish in time): not flushed; only a forced
//!   release (the user accepts the loss) leaves it.
//! - **Released**: the store is closed; the LUN is gone.
//!
//! Every request is re-entrant: asking to drain a LUN that is already draining or flushed
//! waits for (or reports) the same outcome instead of repeating work.

use std::cell::Cell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Where a Device (and each of its LUNs) is in the delete protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DrainState {
    /// Served: commands are admitted.
    Running,
    /// Fenced; the flush has not completed (after a restart: nothing in flight, flush owed).
    // Records on disk name it "Fenced" (its name before the vocabulary was unified): kept, so
    // state files read the same both ways across an upgrade.
    #[serde(rename = "Fenced")]
    Draining,
    /// Drained and flushed: the acknowledgement was given.
    Flushed,
    /// Closed; never served again.
    Released,
    /// A flush failed: not flushed; only a (forced) release clears it.
    Failed,
}

/// What happened to a LUN's drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainEvent {
    /// Someone asked for a drain: the fence goes up.
    Fence,
    /// The in-flight count reached zero.
    Idle,
    /// fdatasync succeeded.
    FlushDone,
    /// The flush failed or did not finish in time.
    FlushFailed,
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
        (S::Running, E::Fence) => Ok(S::Draining),
        (S::Draining | S::Flushed | S::Failed, E::Fence) => Ok(state),
        (S::Draining, E::Idle) => Ok(S::Draining),
        (S::Draining, E::FlushDone) => Ok(S::Flushed),
        (S::Flushed, E::FlushDone) => Ok(S::Flushed),
        (S::Draining | S::Failed, E::FlushFailed) => Ok(S::Failed),
        (S::Flushed, E::Release) | (S::Released, E::Release) => Ok(S::Released),
        (_, E::ForceRelease) => Ok(S::Released),
        _ => Err(InvalidTransition { state, event }),
    }
}

/// The flush acknowledgement of a Device, as the engine gives it, the node keeps it (and gives
/// it again to every later drain) and the agent API answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainAck {
    /// Target (`namespace/name`) whose LUNs were fenced; none when no Target used the Device.
    pub target: Option<String>,
    pub luns: Vec<u64>,
    /// Commands accepted before the fence that finished before the flush.
    pub drained_commands: u32,
    /// Commands refused by the fence (CHECK CONDITION 25h/00h) before the flush.
    pub fenced_commands: u64,
    /// From the fence to the end of the flush.
    pub duration_micros: u64,
    /// When the flush completed (Unix milliseconds).
    pub flushed_at_unix_ms: i64,
}

impl DrainAck {
    /// The acknowledgement of a flush that just completed, `duration` after the fence.
    pub fn now(
        target: Option<String>,
        luns: Vec<u64>,
        drained_commands: u32,
        fenced_commands: u64,
        duration: std::time::Duration,
    ) -> Self {
        let flushed_at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        DrainAck {
            target,
            luns,
            drained_commands,
            fenced_commands,
            duration_micros: duration.as_micros() as u64,
            flushed_at_unix_ms,
        }
    }

    /// From the fence to the end of the flush.
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.duration_micros)
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
    /// LUN starts in Draining with nothing in flight, or Flushed, or Failed).
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
            (E::Fence, S::Draining),
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
    fn a_failed_flush_stays_failed_until_a_forced_release() {
        assert_eq!(next(S::Draining, E::FlushFailed), Ok(S::Failed));
        assert_eq!(
            next(S::Failed, E::Fence),
            Ok(S::Failed),
            "a repeated drain changes nothing"
        );
        assert!(
            next(S::Failed, E::FlushDone).is_err(),
            "never flushed after a failure"
        );
        assert!(next(S::Failed, E::Release).is_err());
        assert_eq!(next(S::Failed, E::ForceRelease), Ok(S::Released));
        assert!(next(S::Running, E::FlushFailed).is_err());
    }

    #[test]
    fn the_state_keeps_its_name_on_disk() {
        let on_disk = |s: S| serde_json::to_string(&s).unwrap();
        assert_eq!(on_disk(S::Draining), "\"Fenced\"");
        assert_eq!(on_disk(S::Flushed), "\"Flushed\"");
        assert_eq!(
            serde_json::from_str::<S>("\"Fenced\"").unwrap(),
            S::Draining
        );
    }

    #[test]
    fn a_forced_release_is_the_one_way_out_of_any_state() {
        for s in [S::Running, S::Draining, S::Flushed, S::Released, S::Failed] {
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
