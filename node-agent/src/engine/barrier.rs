//! The write barrier of a snapshot, for one LUN: writes accepted before it finish, new writes
//! wait (neither fenced nor failed) while reads go on, until the snapshot's copy is taken and
//! the barrier is lowered.
//!
//! ```text
//! Open --raise--> Holding --writes idle--> Held --lower--> Open
//!                    \------------------lower-----------/
//! ```
//! - **Holding**: new writes wait at the barrier; the writes accepted before it run to the end.
//! - **Held**: no write is running: the store can be flushed and copied, crash-consistent.
//!
//! Unlike the drain's fence (`drain.rs`) nothing is refused: an initiator sees a write that
//! took longer, never an error.

use std::cell::Cell;
use std::rc::Rc;

use tokio::sync::Notify;

/// Where a LUN's write barrier is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarrierState {
    /// Writes run.
    Open,
    /// Raised: new writes wait; writes accepted before still run.
    Holding,
    /// Raised and no write runs: the store is still.
    Held,
}

/// What happened to a barrier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarrierEvent {
    Raise,
    /// The last write accepted before the barrier finished (or none was running).
    WritesIdle,
    Lower,
}

/// A transition the barrier does not allow.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("barrier: {event:?} is not allowed in state {state:?}")]
pub struct InvalidBarrier {
    pub state: BarrierState,
    pub event: BarrierEvent,
}

/// The pure transition function. One snapshot at a time holds a LUN: a second raise is refused
/// (the node takes a Device's snapshots in turn).
pub fn next(state: BarrierState, event: BarrierEvent) -> Result<BarrierState, InvalidBarrier> {
    use BarrierEvent as E;
    use BarrierState as S;
    match (state, event) {
        (S::Open, E::Raise) => Ok(S::Holding),
        (S::Holding | S::Held, E::WritesIdle) => Ok(S::Held),
        (_, E::Lower) => Ok(S::Open),
        _ => Err(InvalidBarrier { state, event }),
    }
}

/// The barrier of one LUN, shared by the engine's tasks (one thread: no locks).
#[derive(Debug)]
pub struct WriteBarrier {
    state: Cell<BarrierState>,
    /// Writes past the barrier and not finished.
    writes: Cell<u32>,
    /// Writes that had to wait at the barrier, since the LUN started.
    waited: Cell<u64>,
    idle: Notify,
    lowered: Notify,
}

impl Default for WriteBarrier {
    fn default() -> Self {
        WriteBarrier {
            state: Cell::new(BarrierState::Open),
            writes: Cell::new(0),
            waited: Cell::new(0),
            idle: Notify::new(),
            lowered: Notify::new(),
        }
    }
}

/// A write past the barrier; dropping it ends the write.
#[derive(Debug)]
pub struct Passed {
    barrier: Rc<WriteBarrier>,
}

impl Drop for Passed {
    fn drop(&mut self) {
        let n = self.barrier.writes.get() - 1;
        self.barrier.writes.set(n);
        if n == 0 {
            self.barrier.idle.notify_waiters();
        }
    }
}

impl WriteBarrier {
    /// Lets a write through, waiting while the barrier is raised.
    pub async fn pass(self: &Rc<Self>) -> Passed {
        let mut counted = false;
        loop {
            let lowered = self.lowered.notified();
            if self.state.get() == BarrierState::Open {
                break;
            }
            if !counted {
                self.waited.set(self.waited.get() + 1);
                counted = true;
            }
            lowered.await;
        }
        self.writes.set(self.writes.get() + 1);
        Passed {
            barrier: self.clone(),
        }
    }

    /// Raises the barrier: new writes wait from now on.
    pub fn raise(&self) -> Result<(), InvalidBarrier> {
        self.state.set(next(self.state.get(), BarrierEvent::Raise)?);
        Ok(())
    }

    /// Waits until the writes accepted before the barrier have finished: the LUN is Held.
    pub async fn wait_held(&self) -> Result<(), InvalidBarrier> {
        loop {
            let idle = self.idle.notified();
            if self.writes.get() == 0 {
                break;
            }
            idle.await;
        }
        self.state
            .set(next(self.state.get(), BarrierEvent::WritesIdle)?);
        Ok(())
    }

    /// Lowers the barrier: the waiting writes go on.
    pub fn lower(&self) {
        self.state.set(BarrierState::Open);
        self.lowered.notify_waiters();
    }

    pub fn state(&self) -> BarrierState {
        self.state.get()
    }

    /// Writes running past the barrier.
    pub fn writes(&self) -> u32 {
        self.writes.get()
    }

    /// Writes that waited at the barrier so far.
    pub fn waited(&self) -> u64 {
        self.waited.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BarrierEvent as E;
    use BarrierState as S;

    #[test]
    fn the_barrier_goes_open_holding_held_open() {
        let mut s = S::Open;
        for (e, want) in [
            (E::Raise, S::Holding),
            (E::WritesIdle, S::Held),
            (E::Lower, S::Open),
        ] {
            s = next(s, e).unwrap();
            assert_eq!(s, want);
        }
        assert_eq!(
            next(S::Holding, E::Lower),
            Ok(S::Open),
            "a failed copy lowers"
        );
    }

    #[test]
    fn one_barrier_at_a_time_and_no_idle_without_a_barrier() {
        assert!(next(S::Holding, E::Raise).is_err());
        assert!(next(S::Held, E::Raise).is_err());
        assert!(next(S::Open, E::WritesIdle).is_err());
    }

    fn local(f: impl std::future::Future<Output = ()>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f);
    }

    #[test]
    fn writes_wait_at_the_barrier_and_go_on_when_it_is_lowered() {
        local(async {
            let b = Rc::new(WriteBarrier::default());
            let before = b.pass().await;
            b.raise().unwrap();
            let done = Rc::new(Cell::new(0));
            let mut waiting = Vec::new();
            for _ in 0..3 {
                let (b, done) = (b.clone(), done.clone());
                waiting.push(tokio::task::spawn_local(async move {
                    let _w = b.pass().await;
                    done.set(done.get() + 1);
                }));
            }
            tokio::task::yield_now().await;
            assert_eq!(done.get(), 0, "new writes wait, none failed");
            assert_eq!(b.waited(), 3);
            // Held only once the write accepted before the barrier finishes.
            let held = {
                let b = b.clone();
                tokio::task::spawn_local(async move { b.wait_held().await })
            };
            tokio::task::yield_now().await;
            assert_eq!(b.state(), S::Holding);
            drop(before);
            held.await.unwrap().unwrap();
            assert_eq!((b.state(), b.writes()), (S::Held, 0));
            tokio::task::yield_now().await;
            assert_eq!(done.get(), 0, "still held");
            b.lower();
            for w in waiting {
                w.await.unwrap();
            }
            assert_eq!(done.get(), 3, "every held write went on");
            assert_eq!(b.state(), S::Open);
            assert_eq!(b.writes(), 0);
        });
    }

    #[test]
    fn a_barrier_with_no_write_running_is_held_at_once() {
        local(async {
            let b = Rc::new(WriteBarrier::default());
            b.raise().unwrap();
            b.wait_held().await.unwrap();
            assert_eq!(b.state(), S::Held);
            assert!(b.raise().is_err(), "a second snapshot waits its turn");
            b.lower();
            let _w = b.pass().await;
            assert_eq!(b.waited(), 0);
        });
    }
}
