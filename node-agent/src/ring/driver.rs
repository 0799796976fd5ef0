//! One io_uring per ring thread, driven from the thread's tokio runtime.
//!
//! Submitting: an operation's entry is pushed and the kernel entered at once (one
//! `io_uring_enter` per operation, in the poll that queues it), so a read starts while the
//! rest of the round's tasks still run instead of when the thread parks.
//!
//! Completing: completions are reaped from the shared completion queue (no system call) by a
//! task that waits for the ring's descriptor to turn readable through tokio's `AsyncFd` (the
//! ring's descriptor is pollable: readable while completions wait), so one `epoll_wait` parks
//! the thread for disk completions and sockets alike, and by the poll before parking
//! ([`before_park`]). They are delivered between rounds of tasks, never in the middle of one
//! (as with tokio-uring): reaping in every pending operation's poll let an I/O complete within
//! the round that submitted it, which the engine's drain test showed as writes finishing
//! before a fence that was meant to find them in flight.
//!
//! Buffers: an operation owns the memory the kernel reads or writes until its completion is
//! reaped. An operation dropped before that (its task aborted) leaves the memory with the
//! driver, which frees it when the completion arrives; shutting the ring down waits for every
//! submitted operation first.

use std::any::Any;
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use io_uring::{IoUring, squeue};
use slab::Slab;
use tokio::io::unix::AsyncFd;

/// What the driver knows of one submitted operation.
enum State {
    /// In flight; the task to wake, once it has been polled.
    Waiting(Option<Waker>),
    /// Completed with this result; not yet taken by its future.
    Done(i32),
    /// In flight, its future gone: the memory it uses, freed on completion.
    Orphan(#[allow(dead_code)] Box<dyn Any>),
}

/// A ring and its operations.
pub(super) struct Driver {
    ring: IoUring,
    ops: Slab<State>,
    /// Wakers collected while reaping, woken after the borrow ends (reused).
    wake: Vec<Waker>,
}

/// The thread's driver, shared with every operation it submitted (an operation keeps the
/// ring alive until it has completed).
pub(super) type Handle = Rc<RefCell<Driver>>;

thread_local! {
    static CURRENT: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

impl Driver {
    /// Sets up a ring of `entries` submission slots.
    pub(super) fn new(entries: u32) -> io::Result<Handle> {
        let ring = IoUring::builder()
            .setup_cqsize(entries * 2)
            .build(entries)?;
        Ok(Rc::new(RefCell::new(Driver {
            ring,
            ops: Slab::with_capacity(64),
            wake: Vec::new(),
        })))
    }

    /// The ring's descriptor (readable while completions wait).
    pub(super) fn fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    /// Operations submitted and not yet completed or taken.
    pub(super) fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Queues `entry` and enters the kernel with it; returns the operation's slot.
    fn submit(&mut self, entry: squeue::Entry) -> io::Result<usize> {
        let slot = self.ops.vacant_entry();
        let key = slot.key();
        let entry = entry.user_data(key as u64);
        // SAFETY: the caller (Op::submit) guarantees the memory the entry points to lives
        // until the completion is reaped: it is moved into the Op, and on to the driver if
        // the Op is dropped first.
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            // Submission queue full: hand the queued entries to the kernel and retry.
            self.ring.submit()?;
        }
        slot.insert(State::Waiting(None));
        // The entry is queued now and cannot be taken back, so the operation counts as in
        // flight whatever this enter returns (its memory must not be freed): after EBUSY or
        // EAGAIN the kernel takes it on a later enter (the next submit, or the shutdown wait).
        if let Err(e) = self.ring.submit()
            && !matches!(
                e.raw_os_error(),
                Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)
            )
        {
            tracing::error!("ring: io_uring_enter: {e}");
        }
        Ok(key)
    }

    /// Moves every completion waiting in the completion queue to its operation, collecting
    /// the tasks to wake. No system call. Returns how many were reaped.
    fn reap(&mut self) -> usize {
        let mut n = 0;
        let Driver { ring, ops, wake } = self;
        for cqe in ring.completion() {
            n += 1;
            let key = cqe.user_data() as usize;
            let Some(state) = ops.get_mut(key) else {
                continue;
            };
            match state {
                State::Waiting(w) => {
                    if let Some(w) = w.take() {
                        wake.push(w);
                    }
                    *state = State::Done(cqe.result());
                }
                State::Orphan(_) => {
                    ops.remove(key);
                }
                State::Done(_) => {}
            }
        }
        n
    }
}

/// Reaps completions of `handle`'s ring and wakes their tasks; returns how many.
pub(super) fn reap(handle: &Handle) -> usize {
    let (n, mut wake) = {
        let mut d = handle.borrow_mut();
        let n = d.reap();
        (n, std::mem::take(&mut d.wake))
    };
    for w in wake.drain(..) {
        w.wake();
    }
    // Keep the (now empty) vector's allocation for the next reap.
    handle.borrow_mut().wake = wake;
    n
}

/// Makes `handle` this thread's driver.
pub(super) fn install(handle: Handle) {
    CURRENT.with(|c| *c.borrow_mut() = Some(handle));
}

/// This thread's driver, if it runs one.
pub(super) fn current() -> Option<Handle> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Reaps completions whenever the ring's descriptor turns readable; runs for the life of the
/// runtime.
pub(super) async fn reaper(handle: Handle) {
    let fd = handle.borrow().fd();
    // SAFETY: the descriptor is the ring's, owned by `handle`, which this task holds for
    // longer than `afd` (declared later, dropped first); nothing replaces or closes it.
    let afd = match unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) } {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("ring: cannot watch the ring's descriptor: {e}");
            return;
        }
    };
    loop {
        let Ok(mut ready) = afd.readable().await else {
            return;
        };
        ready.clear_ready();
        reap(&handle);
    }
}

/// Longest a ring waits at shutdown for operations still in flight (a send to a peer that
/// stopped reading may never finish); what is left then is leaked, never freed under the
/// kernel.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Takes this thread's driver away and waits until the kernel has finished every operation
/// it submitted (their memory may only be freed then), for at most [`SHUTDOWN_WAIT`].
pub(super) fn shutdown() {
    let Some(handle) = CURRENT.with(|c| c.borrow_mut().take()) else {
        return;
    };
    let deadline = std::time::Instant::now() + SHUTDOWN_WAIT;
    loop {
        let mut d = handle.borrow_mut();
        d.reap();
        d.wake.clear();
        let waiting = d
            .ops
            .iter()
            .filter(|(_, s)| !matches!(s, State::Done(_)))
            .count();
        if waiting == 0 {
            return;
        }
        let ts = io_uring::types::Timespec::new().nsec(100_000_000);
        let args = io_uring::types::SubmitArgs::new().timespec(&ts);
        let res = d.ring.submitter().submit_with_args(1, &args);
        let failed = res.as_ref().is_err_and(|e| {
            !matches!(
                e.raw_os_error(),
                Some(libc::ETIME | libc::EINTR | libc::EBUSY)
            )
        });
        if failed || std::time::Instant::now() >= deadline {
            tracing::error!(
                "ring: {waiting} operations still in flight at shutdown ({res:?}); their \
                 buffers are leaked"
            );
            // Orphans are forgotten; a live future of a waiting operation is left as it is (if
            // dropped later it becomes an orphan of this driver, which no longer reaps).
            for (_, s) in d.ops.iter_mut() {
                if matches!(s, State::Orphan(_))
                    && let State::Orphan(b) = std::mem::replace(s, State::Done(0))
                {
                    std::mem::forget(b);
                }
            }
            return;
        }
    }
}

/// One submitted operation, owning `T` (its buffers and whatever keeps the descriptor open)
/// until the kernel is done with it. Resolves to the completion's result and `T`.
pub(super) struct Op<T: 'static> {
    driver: Handle,
    key: usize,
    data: Option<T>,
}

impl<T: 'static> Op<T> {
    /// Submits `entry` on this thread's ring.
    ///
    /// # Safety
    /// Every pointer in `entry` must point into memory owned by `data` (heap memory that does
    /// not move when `data` does) or be otherwise valid until the operation completes.
    pub(super) unsafe fn submit(entry: squeue::Entry, data: T) -> Result<Self, (io::Error, T)> {
        let Some(driver) = current() else {
            let e =
                io::Error::other("no ring on this thread (ring operations run on ring threads)");
            return Err((e, data));
        };
        let key = driver.borrow_mut().submit(entry);
        match key {
            Ok(key) => Ok(Op {
                driver,
                key,
                data: Some(data),
            }),
            Err(e) => Err((e, data)),
        }
    }
}

impl<T: Unpin + 'static> std::future::Future for Op<T> {
    type Output = (i32, T);

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut d = this.driver.borrow_mut();
        match d.ops.get_mut(this.key) {
            Some(State::Done(res)) => {
                let res = *res;
                d.ops.remove(this.key);
                drop(d);
                let data = this.data.take().expect("operation polled after completion");
                Poll::Ready((res, data))
            }
            Some(State::Waiting(w)) => {
                match w {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            _ => panic!("ring operation state lost"),
        }
    }
}

impl<T: 'static> Drop for Op<T> {
    fn drop(&mut self) {
        let Some(data) = self.data.take() else {
            return;
        };
        let Ok(mut d) = self.driver.try_borrow_mut() else {
            // Dropped while the driver is borrowed (cannot happen from the code above):
            // never free memory the kernel may still use.
            std::mem::forget(data);
            return;
        };
        match d.ops.get_mut(self.key) {
            Some(State::Done(_)) => {
                d.ops.remove(self.key);
            }
            Some(s @ State::Waiting(_)) => *s = State::Orphan(Box::new(data)),
            _ => std::mem::forget(data),
        }
    }
}

/// Completes a no-op on this thread's ring (proves the ring works end to end).
pub(super) async fn no_op() -> io::Result<()> {
    // SAFETY: a no-op passes no memory.
    let op =
        unsafe { Op::submit(io_uring::opcode::Nop::new().build(), ()) }.map_err(|(e, ())| e)?;
    let (res, ()) = op.await;
    if res < 0 {
        return Err(io::Error::from_raw_os_error(-res));
    }
    Ok(())
}

/// How long a thread about to sleep polls for completions first, while operations are in
/// flight: `SPINDLE_RING_POLL_US` microseconds, default [`DEFAULT_POLL_US`]; 0 turns polling
/// off. On this project's VM a halted CPU costs a VM exit to wake, so a read that completes
/// within the budget is reaped without one (docs/benchmarks.md, "Ring driver").
fn poll_budget() -> std::time::Duration {
    static BUDGET: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();
    *BUDGET.get_or_init(|| {
        let us = match std::env::var("SPINDLE_RING_POLL_US") {
            Err(_) => DEFAULT_POLL_US,
            Ok(v) => v.trim().parse().unwrap_or_else(|_| {
                tracing::warn!(
                    "SPINDLE_RING_POLL_US={v:?} is not a whole number of microseconds; \
                     polling {DEFAULT_POLL_US} µs"
                );
                DEFAULT_POLL_US
            }),
        };
        std::time::Duration::from_micros(us)
    })
}

/// Default poll before parking, µs.
const DEFAULT_POLL_US: u64 = 30;

/// Most operations in flight for which a thread polls: with more, new commands keep arriving
/// and parks are short anyway, and on a small machine the spinning takes CPU from the
/// clients (4 KiB writes QD32 lost 25 % with polling at any depth).
const POLL_MAX_IN_FLIGHT: usize = 4;

/// Polls that found nothing in a row after which polling pauses, and how many parks it pauses
/// for: a thread whose I/O takes longer than the budget stops spending CPU on it.
const MISSES_TO_PAUSE: u32 = 8;
const PAUSE_PARKS: u32 = 64;

thread_local! {
    /// Polls in a row that found nothing; parks skipped since polling paused.
    static POLL_MISSES: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
}

/// Runs before the thread parks: submits what is still queued, then, with 1 to
/// [`POLL_MAX_IN_FLIGHT`] operations in flight, polls briefly for their completions (see
/// [`poll_budget`]); a completion found wakes its task, so the thread does not sleep.
pub(super) fn before_park() {
    let Some(h) = current() else { return };
    {
        // Entries an enter refused for the moment (EBUSY, EAGAIN) go in before sleeping.
        let mut d = h.borrow_mut();
        if !d.ring.submission().is_empty()
            && let Err(e) = d.ring.submit()
        {
            tracing::debug!("ring: io_uring_enter before parking: {e}");
        }
    }
    let budget = poll_budget();
    if budget.is_zero() {
        return;
    }
    if !(1..=POLL_MAX_IN_FLIGHT).contains(&h.borrow().in_flight()) {
        return;
    }
    let (misses, skipped) = POLL_MISSES.with(|m| m.get());
    if misses >= MISSES_TO_PAUSE && skipped < PAUSE_PARKS {
        POLL_MISSES.with(|m| m.set((misses, skipped + 1)));
        return;
    }
    let start = std::time::Instant::now();
    let mut found = 0;
    while found == 0 && start.elapsed() < budget {
        std::hint::spin_loop();
        found = reap(&h);
    }
    let misses = if found > 0 { 0 } else { misses + 1 };
    POLL_MISSES.with(|m| m.set((misses, 0)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Runtime;
    use crate::ring::file::tests::{pipe, submit_and_drop};

    fn misses() -> (u32, u32) {
        POLL_MISSES.with(|m| m.get())
    }

    #[test]
    fn the_poll_before_parking_reaps_completions_and_pauses_when_it_finds_none() {
        Runtime::new().unwrap().block_on(async {
            let ring = current().unwrap();
            // A read of an empty pipe stays in flight: every poll finds nothing.
            let (r, _w) = pipe();
            submit_and_drop(r.read_exact_at_aligned(4096, 0)).await;
            assert_eq!(ring.borrow().in_flight(), 1);
            for i in 1..=MISSES_TO_PAUSE {
                before_park();
                assert_eq!(misses(), (i, 0), "an empty poll counts");
            }
            before_park();
            assert_eq!(misses(), (MISSES_TO_PAUSE, 1), "then polling pauses");
            for _ in 1..PAUSE_PARKS {
                before_park();
            }
            assert_eq!(misses(), (MISSES_TO_PAUSE, PAUSE_PARKS));
            // A no-op completes at once; the poll after the pause reaps it and resets.
            // SAFETY: a no-op passes no memory.
            let nop = unsafe { Op::submit(io_uring::opcode::Nop::new().build(), ()) }
                .map_err(|(e, ())| e)
                .unwrap();
            before_park();
            assert_eq!(
                misses(),
                (0, 0),
                "a poll that found a completion resets the count"
            );
            let key = nop.key;
            assert!(matches!(ring.borrow().ops.get(key), Some(State::Done(0))));
            assert_eq!(nop.await.0, 0);
        });
    }
}
