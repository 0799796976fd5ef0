//! The fair share on a ring thread: one [`Drr`] per ring (thread-local: a ring's targets are
//! all tasks of that thread), each target a flow of it. A command waits for its
//! [`Permit`] before it reaches the store; a target with nothing queued is in no list, has no
//! timer and is never woken. The same flows size the CmdSN window of each session.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::share::{Drr, FlowId, Offer};

/// Commands a ring lets into its stores at once while more than one of its targets has work
/// (a lone target is never held back): deep enough to keep a fast device busy, shallow
/// enough that a newcomer's command waits for a few of them, not for a deep queue.
pub const STORE_SLOTS: u32 = 64;

/// The CmdSN window a ring's sessions share, by weight, while more than one of its targets is
/// busy (a lone busy target keeps the full queue depth).
pub const WINDOW_BUDGET: u32 = 16;

/// A queued command's place: set admitted (and woken) when its turn comes.
#[derive(Default)]
struct Waiter {
    admitted: Cell<bool>,
    /// Its command was dropped while queued (aborted, connection gone): skip it.
    gone: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

thread_local! {
    static RING: RefCell<Drr<Rc<Waiter>>> = RefCell::new(Drr::new(STORE_SLOTS));
}

/// A target's flow on the ring it runs on (made and used on that ring's thread only).
pub struct Share {
    id: FlowId,
}

impl Share {
    /// Joins this thread's ring with `weight`.
    pub fn new(weight: u32) -> Self {
        Share {
            id: RING.with(|r| r.borrow_mut().add(weight)),
        }
    }

    /// A new weight, from the next round on (nothing queued or running is touched).
    pub fn set_weight(&self, weight: u32) {
        RING.with(|r| r.borrow_mut().set_weight(self.id, weight));
    }

    /// The CmdSN window one of the target's `sessions` sessions may have now.
    pub fn window(&self, sessions: u32) -> u32 {
        RING.with(|r| r.borrow().window(self.id, WINDOW_BUDGET, sessions))
    }

    /// Waits for this target's turn at the store.
    pub fn admit(&self) -> Admit {
        Admit {
            id: self.id,
            waiter: None,
            finished: false,
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let queued = RING.with(|r| r.borrow_mut().remove(self.id));
        // Commands still queued (none while the target's tasks hold it) run unshared.
        for w in queued {
            admit_waiter(&w);
        }
    }
}

fn admit_waiter(w: &Waiter) {
    w.admitted.set(true);
    if let Some(waker) = w.waker.borrow_mut().take() {
        waker.wake();
    }
}

/// One command of `id` left the store: the commands whose turn it is now are woken.
fn release(id: FlowId) {
    let mut done = vec![id];
    while let Some(id) = done.pop() {
        let next = RING.with(|r| r.borrow_mut().done(id));
        for (flow, w) in next {
            if w.gone.get() {
                done.push(flow);
            } else {
                admit_waiter(&w);
            }
        }
    }
}

/// The wait for a command's turn ([`Share::admit`]).
pub struct Admit {
    id: FlowId,
    waiter: Option<Rc<Waiter>>,
    /// The permit was handed out: dropping the future owes nothing.
    finished: bool,
}

impl Future for Admit {
    type Output = Permit;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit> {
        let admitted = match &self.waiter {
            None => {
                let w = Rc::new(Waiter::default());
                let offer = RING.with(|r| r.borrow_mut().offer(self.id, w.clone()));
                match offer {
                    Offer::Admitted(_) => true,
                    Offer::Queued => {
                        *w.waker.borrow_mut() = Some(cx.waker().clone());
                        self.waiter = Some(w);
                        false
                    }
                }
            }
            Some(w) if w.admitted.get() => true,
            Some(w) => {
                *w.waker.borrow_mut() = Some(cx.waker().clone());
                false
            }
        };
        if !admitted {
            return Poll::Pending;
        }
        self.finished = true;
        Poll::Ready(Permit { id: self.id })
    }
}

impl Drop for Admit {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(w) = &self.waiter {
            if w.admitted.get() {
                // Its turn came but nobody took it: hand it on.
                release(self.id);
            } else {
                w.gone.set(true);
            }
        }
    }
}

/// A command's place at the store; dropping it lets the next command in.
pub struct Permit {
    id: FlowId,
}

impl Drop for Permit {
    fn drop(&mut self) {
        release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll_once(f: &mut Pin<Box<Admit>>) -> Poll<Permit> {
        let waker = Waker::noop();
        f.as_mut().poll(&mut Context::from_waker(waker))
    }

    fn admitted(f: Admit) -> Permit {
        match poll_once(&mut Box::pin(f)) {
            Poll::Ready(p) => p,
            Poll::Pending => panic!("admitted at once"),
        }
    }

    #[test]
    fn a_queued_command_dropped_before_its_turn_passes_the_turn_on() {
        // A lone target fills the stores; the other takes its share (half) and then waits.
        let (holder, a) = (Share::new(1), Share::new(1));
        let held: Vec<Permit> = (0..STORE_SLOTS).map(|_| admitted(holder.admit())).collect();
        let mine: Vec<Permit> = (0..STORE_SLOTS / 2).map(|_| admitted(a.admit())).collect();
        let mut dropped = Box::pin(a.admit());
        let mut next = Box::pin(a.admit());
        assert!(poll_once(&mut dropped).is_pending());
        assert!(poll_once(&mut next).is_pending());
        drop(dropped);
        drop(mine);
        let Poll::Ready(p) = poll_once(&mut next) else {
            panic!("the turn of the dropped command went to the next one");
        };
        drop((p, held));
        RING.with(|r| assert_eq!((r.borrow().inflight(), r.borrow().queued()), (0, 0)));
    }
}
