//! The session's in-flight SCSI tasks, by id and by Initiator Task Tag.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use super::TaskId;
use super::collect::Assembly;
use crate::iscsi::pdu::TaskAttr;

/// Where a task is in its life.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Waiting for Data-Out.
    Collecting(Assembly),
    /// All Data-Out is in (this buffer), but an ORDERED task holds it back (SAM-5: tasks
    /// reach the logical unit in order around an ORDERED one).
    Ready(Vec<u8>),
    /// Handed to the engine; its completion is awaited.
    Executing,
    /// Handed to the engine and then aborted: its completion is awaited but answered by
    /// nothing (the TMF or logout that aborted it answers instead).
    Aborted,
}

/// One SCSI command of the session.
#[derive(Debug)]
pub(crate) struct Task {
    pub(crate) itt: u32,
    pub(crate) lun: u64,
    pub(crate) attr: TaskAttr,
    /// The whole CDB, kept until the command is handed to the engine.
    pub(crate) cdb: Bytes,
    /// R bit: the initiator expects Data-In.
    pub(crate) read: bool,
    /// W bit: the initiator sends Data-Out.
    pub(crate) write: bool,
    /// Expected Data Transfer Length (the write length of a bidirectional command).
    pub(crate) edtl: u32,
    /// Expected length of the Data-In: the EDTL, or the bidirectional read length.
    pub(crate) read_len: u32,
    /// Next R2TSN / Data-In DataSN (one numbering for both, RFC 7143 §11.8.5).
    pub(crate) in_sn: u32,
    pub(crate) phase: Phase,
    /// Write memory held for this task (its unsolicited data, then all of it once granted).
    pub(crate) reserved: usize,
    /// Whether the memory for all of its data was granted (its R2Ts may go out).
    pub(crate) granted: bool,
}

impl Task {
    /// The next R2TSN or DataSN, counting it as sent.
    pub(crate) fn next_in_sn(&mut self) -> u32 {
        let sn = self.in_sn;
        self.in_sn = self.in_sn.wrapping_add(1);
        sn
    }
}

/// ITTs of tasks dropped while their Data-Out was still coming; Data-Out for them is
/// discarded quietly. Bounded: the oldest are forgotten.
const DROPPED_ITTS_KEPT: usize = 64;

/// All tasks of the session.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    by_id: HashMap<TaskId, Task>,
    by_itt: HashMap<u32, TaskId>,
    dropped_itts: VecDeque<u32>,
    next_id: u64,
    /// Tasks with the ORDERED attribute.
    ordered: usize,
    /// Tasks in [`Phase::Ready`].
    ready: usize,
    /// Write memory the tasks hold together.
    reserved: usize,
}

impl Tasks {
    /// Adds a task (its ITT must not be in use) and returns its id.
    pub(crate) fn insert(&mut self, task: Task) -> TaskId {
        let id = TaskId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        self.dropped_itts.retain(|&itt| itt != task.itt);
        if task.attr == TaskAttr::Ordered {
            self.ordered += 1;
        }
        self.reserved += task.reserved;
        self.by_itt.insert(task.itt, id);
        self.by_id.insert(id, task);
        id
    }

    pub(crate) fn itt_in_use(&self, itt: u32) -> bool {
        self.by_itt.contains_key(&itt)
    }

    pub(crate) fn id_of(&self, itt: u32) -> Option<TaskId> {
        self.by_itt.get(&itt).copied()
    }

    pub(crate) fn get_mut(&mut self, id: TaskId) -> Option<&mut Task> {
        self.by_id.get_mut(&id)
    }

    /// Removes a task that ended.
    pub(crate) fn remove(&mut self, id: TaskId) -> Option<Task> {
        let task = self.by_id.remove(&id)?;
        if self.by_itt.get(&task.itt) == Some(&id) {
            self.by_itt.remove(&task.itt);
        }
        if task.attr == TaskAttr::Ordered {
            self.ordered -= 1;
        }
        if matches!(task.phase, Phase::Ready(_)) {
            self.ready -= 1;
        }
        self.reserved -= task.reserved;
        Some(task)
    }

    /// Write memory the tasks hold together.
    pub(crate) fn reserved(&self) -> usize {
        self.reserved
    }

    /// For a write collecting data whose memory is not granted yet: how much more it needs.
    pub(crate) fn ungranted(&self, id: TaskId) -> Option<usize> {
        let t = self.by_id.get(&id)?;
        let collecting = matches!(t.phase, Phase::Collecting(_));
        (collecting && !t.granted).then(|| (t.edtl as usize).saturating_sub(t.reserved))
    }

    /// Records that `more` bytes were granted to task `id` for the rest of its data.
    pub(crate) fn granted(&mut self, id: TaskId, more: usize) {
        if let Some(t) = self.by_id.get_mut(&id) {
            t.reserved += more;
            t.granted = true;
            self.reserved += more;
        }
    }

    /// Whether task `id` must wait before it goes to the engine (SAM-5 task attributes, as
    /// far as this nexus goes; the logical unit orders tasks across nexuses): an ORDERED
    /// task waits until every older task of its LUN has gone to the engine, any other
    /// SIMPLE task until every older ORDERED one has. HEAD OF QUEUE never waits.
    pub(crate) fn held_back(&self, id: TaskId) -> bool {
        let Some(t) = self.by_id.get(&id) else {
            return false;
        };
        let not_handed = |u: &Task| matches!(u.phase, Phase::Collecting(_) | Phase::Ready(_));
        let older = |(uid, u): (&TaskId, &Task)| *uid < id && u.lun == t.lun && not_handed(u);
        match t.attr {
            TaskAttr::HeadOfQueue => false,
            TaskAttr::Ordered => self.by_id.iter().any(older),
            _ => {
                self.ordered > 0
                    && self
                        .by_id
                        .iter()
                        .any(|e| e.1.attr == TaskAttr::Ordered && older(e))
            }
        }
    }

    /// Parks a task whose data is complete until [`Tasks::held_back`] lets it go.
    pub(crate) fn set_ready(&mut self, id: TaskId, data: Vec<u8>) {
        if let Some(t) = self.by_id.get_mut(&id) {
            if !matches!(t.phase, Phase::Ready(_)) {
                self.ready += 1;
            }
            t.phase = Phase::Ready(data);
        }
    }

    /// Parked tasks that may go to the engine now, oldest first, with their data.
    pub(crate) fn take_released(&mut self) -> Vec<(TaskId, Vec<u8>)> {
        let mut out = Vec::new();
        if self.ready == 0 {
            return out;
        }
        for id in self.select(|t| matches!(t.phase, Phase::Ready(_))) {
            if self.held_back(id) {
                continue;
            }
            if let Some(t) = self.by_id.get_mut(&id)
                && let Phase::Ready(data) = std::mem::replace(&mut t.phase, Phase::Executing)
            {
                self.ready -= 1;
                out.push((id, data));
            }
        }
        out
    }

    /// Removes a task still collecting data and remembers its ITT, so Data-Out already on
    /// the way for it is dropped without complaint.
    pub(crate) fn drop_collecting(&mut self, id: TaskId) -> Option<Task> {
        let task = self.remove(id)?;
        self.forget_itt(task.itt);
        Some(task)
    }

    /// Remembers an ITT whose Data-Out is to be dropped quietly.
    pub(crate) fn forget_itt(&mut self, itt: u32) {
        if self.dropped_itts.len() >= DROPPED_ITTS_KEPT {
            self.dropped_itts.pop_front();
        }
        self.dropped_itts.push_back(itt);
    }

    pub(crate) fn was_dropped(&self, itt: u32) -> bool {
        self.dropped_itts.contains(&itt)
    }

    /// Ids of the tasks `pick` selects, oldest first.
    pub(crate) fn select(&self, mut pick: impl FnMut(&Task) -> bool) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self
            .by_id
            .iter()
            .filter(|(_, t)| pick(t))
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// How many tasks are in each phase.
    pub(crate) fn counts(&self) -> TaskCounts {
        let mut c = TaskCounts::default();
        for t in self.by_id.values() {
            match t.phase {
                Phase::Collecting(_) | Phase::Ready(_) => c.collecting += 1,
                Phase::Executing => c.executing += 1,
                Phase::Aborted => c.aborting += 1,
            }
        }
        c
    }

    /// Number of tasks holding a slot of the queue depth.
    pub(crate) fn len(&self) -> u32 {
        u32::try_from(self.by_id.len()).unwrap_or(u32::MAX)
    }
}

/// In-flight tasks of a session by phase, for metrics and queue-depth accounting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskCounts {
    /// Write commands still receiving Data-Out, and commands held back by an ORDERED one.
    pub collecting: u32,
    /// Commands handed to the engine and not completed.
    pub executing: u32,
    /// Commands handed to the engine, then aborted, whose completion is still awaited.
    pub aborting: u32,
}

impl TaskCounts {
    /// All tasks in flight.
    pub fn total(&self) -> u32 {
        self.collecting + self.executing + self.aborting
    }
}
