//! The task set of one logical unit (SAM-5 8): every command from the moment it reaches the
//! unit until it ends, whichever I_T nexus sent it. The control mode page reports TST=000b
//! (one task set shared by all I_T nexuses), so ordering and aborts work across nexuses.
//!
//! - **Task attributes.** A SIMPLE task starts at once unless an older ORDERED task is still
//!   in the set; an ORDERED task starts once every older task has ended; a HEAD OF QUEUE task
//!   starts at once. (QUEUE ALGORITHM MODIFIER 1: SIMPLE tasks may run in any order.)
//! - **Aborts.** [`TaskSet::abort`] marks tasks aborted: one that has not started never does,
//!   one that runs finishes its I/O (an accepted write is never cut in half) and in both cases
//!   the command ends with TASK ABORTED (TAS=1). [`TaskSet::ended`] waits until every marked
//!   task has left the set, so a task management function or PREEMPT AND ABORT completes only
//!   after the tasks it aborted.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use tokio::sync::Notify;

use super::NexusId;

/// SAM-5 task attributes the unit honours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TaskAttr {
    #[default]
    Simple,
    Ordered,
    HeadOfQueue,
}

/// A command as the task manager sees it: the nexus that sent it, the caller's tag for it
/// (unique within the nexus while the command lives), and its task attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskKey {
    pub nexus: NexusId,
    pub tag: u64,
    pub attr: TaskAttr,
}

#[derive(Debug)]
struct Entry {
    key: TaskKey,
    aborted: bool,
}

#[derive(Debug, Default)]
struct Inner {
    next_seq: u64,
    /// Tasks in the set, oldest first.
    tasks: BTreeMap<u64, Entry>,
    /// How many ORDERED tasks are in the set (SIMPLE tasks need not look when none is).
    ordered: usize,
    /// Nexuses whose new tasks are aborted on arrival while a PREEMPT AND ABORT runs.
    fenced: Vec<NexusId>,
}

/// The task set of one logical unit.
#[derive(Debug, Default)]
pub struct TaskSet {
    inner: RefCell<Inner>,
    /// Signalled whenever a task leaves the set or is aborted.
    changed: Notify,
}

/// Tasks marked aborted by one [`TaskSet::abort`], to wait for with [`TaskSet::ended`].
#[derive(Debug, Default)]
#[must_use = "wait for the aborted tasks with TaskSet::ended"]
pub struct Aborted(Vec<u64>);

impl Aborted {
    /// How many tasks were marked.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no task was marked.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A task's place in the set; dropping it takes the task out.
pub struct Ticket {
    set: Rc<TaskSet>,
    seq: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.set.inner.borrow_mut();
        if let Some(e) = inner.tasks.remove(&self.seq)
            && e.key.attr == TaskAttr::Ordered
        {
            inner.ordered -= 1;
        }
        drop(inner);
        self.set.changed.notify_waiters();
    }
}

impl Ticket {
    /// Waits until the task may start (its attribute allows it, or it was aborted). Returns
    /// false when the task was aborted: it must not start.
    pub async fn turn(&self) -> bool {
        loop {
            let changed = self.set.changed.notified();
            match self.set.may_start(self.seq) {
                Some(start) => return start,
                None => changed.await,
            }
        }
    }

    /// Whether the task has been aborted (its command ends with TASK ABORTED).
    pub fn aborted(&self) -> bool {
        self.set
            .inner
            .borrow()
            .tasks
            .get(&self.seq)
            .is_none_or(|e| e.aborted)
    }
}

impl TaskSet {
    /// Adds a task to the set. A task from a nexus being preempted is aborted at once.
    pub fn enter(self: &Rc<Self>, key: TaskKey) -> Ticket {
        let mut inner = self.inner.borrow_mut();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let aborted = inner.fenced.contains(&key.nexus);
        if key.attr == TaskAttr::Ordered {
            inner.ordered += 1;
        }
        inner.tasks.insert(seq, Entry { key, aborted });
        Ticket {
            set: self.clone(),
            seq,
        }
    }

    /// Some(true): start now; Some(false): aborted, do not start; None: wait.
    fn may_start(&self, seq: u64) -> Option<bool> {
        let inner = self.inner.borrow();
        let entry = inner.tasks.get(&seq)?;
        if entry.aborted {
            return Some(false);
        }
        let blocked = match entry.key.attr {
            TaskAttr::HeadOfQueue => false,
            TaskAttr::Simple => {
                inner.ordered > 0
                    && inner
                        .tasks
                        .range(..seq)
                        .any(|(_, e)| e.key.attr == TaskAttr::Ordered)
            }
            TaskAttr::Ordered => inner.tasks.range(..seq).next().is_some(),
        };
        (!blocked).then_some(true)
    }

    /// Marks every task `which` selects as aborted and wakes those waiting for their turn.
    pub fn abort(&self, mut which: impl FnMut(&TaskKey) -> bool) -> Aborted {
        let mut inner = self.inner.borrow_mut();
        let mut marked = Vec::new();
        for (seq, e) in inner.tasks.iter_mut() {
            if which(&e.key) {
                e.aborted = true;
                marked.push(*seq);
            }
        }
        drop(inner);
        self.changed.notify_waiters();
        Aborted(marked)
    }

    /// Waits until every task of `aborted` has left the set.
    pub async fn ended(&self, aborted: Aborted) {
        loop {
            let changed = self.changed.notified();
            let left = {
                let inner = self.inner.borrow();
                aborted.0.iter().any(|s| inner.tasks.contains_key(s))
            };
            if !left {
                return;
            }
            changed.await;
        }
    }

    /// While `nexuses` are fenced, their new tasks are aborted as they arrive.
    pub fn fence(&self, nexuses: &[NexusId]) {
        self.inner.borrow_mut().fenced.extend_from_slice(nexuses);
    }

    /// Lifts a [`TaskSet::fence`].
    pub fn unfence(&self, nexuses: &[NexusId]) {
        self.inner
            .borrow_mut()
            .fenced
            .retain(|n| !nexuses.contains(n));
    }

    /// Tasks in the set (started or waiting).
    pub fn len(&self) -> usize {
        self.inner.borrow().tasks.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn key(nexus: u64, tag: u64, attr: TaskAttr) -> TaskKey {
        TaskKey {
            nexus: NexusId(nexus),
            tag,
            attr,
        }
    }

    fn on_local<F: std::future::Future<Output = ()>>(f: F) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f);
    }

    /// Starts a task that records when it got its turn.
    fn start(
        set: &Rc<TaskSet>,
        k: TaskKey,
        log: &Rc<RefCell<Vec<(u64, bool)>>>,
    ) -> (Rc<Cell<Option<Ticket>>>, tokio::task::JoinHandle<()>) {
        let ticket = set.enter(k);
        let slot = Rc::new(Cell::new(None));
        let (slot2, log) = (slot.clone(), log.clone());
        let h = tokio::task::spawn_local(async move {
            let go = ticket.turn().await;
            log.borrow_mut().push((k.tag, go));
            // A task that may not start ends at once; one that starts holds its place
            // until the test ends it.
            if go {
                slot2.set(Some(ticket));
            }
        });
        (slot, h)
    }

    async fn settle() {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn ordered_waits_for_older_and_holds_younger_simple_tasks() {
        on_local(async {
            let set = Rc::new(TaskSet::default());
            let log = Rc::new(RefCell::new(Vec::new()));
            let (a, _) = start(&set, key(1, 1, TaskAttr::Simple), &log);
            let (o, _) = start(&set, key(2, 2, TaskAttr::Ordered), &log);
            let (b, _) = start(&set, key(1, 3, TaskAttr::Simple), &log);
            let (h, _) = start(&set, key(1, 4, TaskAttr::HeadOfQueue), &log);
            settle().await;
            assert_eq!(
                *log.borrow(),
                vec![(1, true), (4, true)],
                "SIMPLE before and HoQ run"
            );
            drop(a.take());
            settle().await;
            assert_eq!(
                log.borrow()[2],
                (2, true),
                "ORDERED after the older one ended"
            );
            // HoQ still holds a place, but it is younger than the ORDERED task.
            assert_eq!(
                log.borrow().len(),
                3,
                "the younger SIMPLE waits for ORDERED"
            );
            drop(o.take());
            settle().await;
            assert_eq!(log.borrow()[3], (3, true));
            drop((b.take(), h.take()));
            assert!(set.is_empty());
        });
    }

    #[test]
    fn aborted_tasks_never_start_and_ended_waits_for_running_ones() {
        on_local(async {
            let set = Rc::new(TaskSet::default());
            let log = Rc::new(RefCell::new(Vec::new()));
            let (running, _) = start(&set, key(1, 1, TaskAttr::Ordered), &log);
            let (_waiting, _) = start(&set, key(2, 2, TaskAttr::Simple), &log);
            let (_other, _) = start(&set, key(3, 3, TaskAttr::Simple), &log);
            settle().await;
            assert_eq!(*log.borrow(), vec![(1, true)]);
            let aborted = set.abort(|k| k.nexus != NexusId(3));
            assert_eq!(aborted.len(), 2);
            settle().await;
            assert!(
                log.borrow().contains(&(2, false)),
                "aborted while waiting: never starts"
            );
            let done = Rc::new(Cell::new(false));
            let (set2, done2) = (set.clone(), done.clone());
            tokio::task::spawn_local(async move {
                set2.ended(aborted).await;
                done2.set(true);
            });
            settle().await;
            assert!(!done.get(), "the running task has not ended yet");
            let t = running.take().unwrap();
            assert!(t.aborted(), "its command ends with TASK ABORTED");
            drop(t);
            settle().await;
            assert!(done.get());
            assert!(log.borrow().contains(&(3, true)), "the other nexus goes on");
        });
    }

    #[test]
    fn a_fenced_nexus_gets_its_new_tasks_aborted() {
        on_local(async {
            let set = Rc::new(TaskSet::default());
            set.fence(&[NexusId(9)]);
            assert!(set.enter(key(9, 1, TaskAttr::Simple)).aborted());
            assert!(!set.enter(key(8, 1, TaskAttr::Simple)).aborted());
            set.unfence(&[NexusId(9)]);
            assert!(!set.enter(key(9, 2, TaskAttr::Simple)).aborted());
        });
    }
}
