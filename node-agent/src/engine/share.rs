//! A ring's fair share between its targets, as pure bookkeeping: each target is a flow with a
//! weight and its own queue of commands waiting for the store; the ring admits them in turn
//! (deficit round robin, a flow's quantum its weight, one unit per command), so one target's
//! depth cannot hold the others' commands back. A flow with nothing queued is in no list and
//! costs nothing. The same weights split the CmdSN window the ring grants its sessions
//! ([`Drr::window`]). The ring-local glue around it is `super::admission`.

use std::collections::VecDeque;

/// A flow of a [`Drr`]: its slot and that slot's generation (a removed flow's id goes stale,
/// so a command of a removed target finishing late does not touch its slot's next owner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowId {
    index: usize,
    generation: u32,
}

/// The weight of a flow: 1..=[`MAX_WEIGHT`] (other values are clamped into it).
pub const MAX_WEIGHT: u32 = 1000;

struct Flow<T> {
    generation: u32,
    weight: u32,
    /// Commands the flow may still start in the current round.
    deficit: u32,
    queue: VecDeque<T>,
    /// Commands admitted and not yet done.
    inflight: u32,
}

impl<T> Flow<T> {
    fn busy(&self) -> bool {
        self.inflight > 0 || !self.queue.is_empty()
    }
}

/// What [`Drr::offer`] did with a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer<T> {
    /// It may start now (the caller reports it done with [`Drr::done`]).
    Admitted(T),
    /// It waits in its flow's queue; [`Drr::done`] hands it out when its turn comes.
    Queued,
}

/// Deficit round robin over weighted flows in front of a store of `capacity` concurrent
/// commands.
pub struct Drr<T> {
    slots: Vec<Option<Flow<T>>>,
    free: Vec<usize>,
    generations: Vec<u32>,
    /// Flows with queued commands, in round order; the front one is being served.
    active: VecDeque<usize>,
    inflight: u32,
    capacity: u32,
    /// Flows with commands queued or in flight, and the sum of their weights.
    busy_flows: u32,
    busy_weight: u64,
}

impl<T> Drr<T> {
    /// A scheduler admitting up to `capacity` commands at once (at least 1) while more than
    /// one flow has work; a lone flow is never held back.
    pub fn new(capacity: u32) -> Self {
        Drr {
            slots: Vec::new(),
            free: Vec::new(),
            generations: Vec::new(),
            active: VecDeque::new(),
            inflight: 0,
            capacity: capacity.max(1),
            busy_flows: 0,
            busy_weight: 0,
        }
    }

    /// A new flow of weight `weight`.
    pub fn add(&mut self, weight: u32) -> FlowId {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.generations.push(0);
            self.slots.len() - 1
        });
        let generation = self.generations[index];
        self.slots[index] = Some(Flow {
            generation,
            weight: weight.clamp(1, MAX_WEIGHT),
            deficit: 0,
            queue: VecDeque::new(),
            inflight: 0,
        });
        FlowId { index, generation }
    }

    fn flow(&mut self, id: FlowId) -> Option<&mut Flow<T>> {
        self.slots
            .get_mut(id.index)?
            .as_mut()
            .filter(|f| f.generation == id.generation)
    }

    /// A new weight for a flow: its next round uses it; what is queued stays queued.
    pub fn set_weight(&mut self, id: FlowId, weight: u32) {
        let weight = weight.clamp(1, MAX_WEIGHT);
        let Some(f) = self.flow(id) else { return };
        let (old, busy) = (f.weight, f.busy());
        f.weight = weight;
        if busy {
            self.busy_weight = self.busy_weight - u64::from(old) + u64::from(weight);
        }
    }

    /// Removes a flow; returns what it still had queued (never admitted). Its commands in
    /// flight still finish and are reported with [`Drr::done`].
    pub fn remove(&mut self, id: FlowId) -> Vec<T> {
        let Some(f) = self.flow(id) else {
            return Vec::new();
        };
        let queued: Vec<T> = f.queue.drain(..).collect();
        let weight = f.weight;
        if f.inflight > 0 || !queued.is_empty() {
            self.busy_flows -= 1;
            self.busy_weight -= u64::from(weight);
        }
        // The flow's commands in flight now count against the ring alone.
        self.slots[id.index] = None;
        self.generations[id.index] = id.generation.wrapping_add(1);
        self.free.push(id.index);
        self.active.retain(|&i| i != id.index);
        queued
    }

    /// A command of flow `id` wants the store: admitted at once when the flow has nothing
    /// queued and either holds less than its share of the store's slots, or nothing waits and
    /// the store has room (or every command in flight is the flow's own); else queued.
    pub fn offer(&mut self, id: FlowId, item: T) -> Offer<T> {
        let idle_ring = self.active.is_empty();
        let under = self.inflight < self.capacity;
        let ring_inflight = self.inflight;
        let Some(fair) = self.fair_slots(id) else {
            // A removed flow's late command: nothing to share with.
            return Offer::Admitted(item);
        };
        let Some(f) = self.flow(id) else {
            return Offer::Admitted(item);
        };
        let was_busy = f.busy();
        let admitted = f.queue.is_empty()
            && (f.inflight < fair || (idle_ring && (under || f.inflight == ring_inflight)));
        let weight = f.weight;
        let mut newly_queued = false;
        let out = if admitted {
            f.inflight += 1;
            Offer::Admitted(item)
        } else {
            f.queue.push_back(item);
            newly_queued = f.queue.len() == 1;
            Offer::Queued
        };
        if !was_busy {
            self.busy_flows += 1;
            self.busy_weight += u64::from(weight);
        }
        match out {
            Offer::Admitted(_) => self.inflight += 1,
            // A flow is in the round exactly while its queue holds something.
            Offer::Queued if newly_queued => self.active.push_back(id.index),
            Offer::Queued => {}
        }
        out
    }

    /// A command admitted for flow `id` is done: returns the commands now admitted in its
    /// place, each with its flow (an item whose waiter is gone must be reported done too).
    pub fn done(&mut self, id: FlowId) -> Vec<(FlowId, T)> {
        self.inflight = self.inflight.saturating_sub(1);
        let mut own_turn = false;
        if let Some(f) = self.flow(id) {
            f.inflight = f.inflight.saturating_sub(1);
            let (busy, weight) = (f.busy(), f.weight);
            own_turn = !f.queue.is_empty();
            if !busy {
                self.busy_flows -= 1;
                self.busy_weight -= u64::from(weight);
            }
        }
        let mut out = Vec::new();
        while self.has_room() {
            let Some(next) = self.next() else { break };
            out.push(next);
        }
        // A flow under its share starts its next command itself: others' commands that do
        // not finish (a store that hangs) cannot hold it back.
        if own_turn
            && self
                .fair_slots(id)
                .is_some_and(|fair| self.flow_inflight(id) < fair)
        {
            out.extend(self.take_own(id));
        }
        out
    }

    /// The store slots flow `id` may hold whoever else waits: its weighted part of the
    /// capacity among the busy flows (itself counted in), at least 1. None: no such flow.
    fn fair_slots(&self, id: FlowId) -> Option<u32> {
        let f = self.slots.get(id.index)?.as_ref()?;
        if f.generation != id.generation {
            return None;
        }
        let weight = u64::from(f.weight);
        let total = self.busy_weight + if f.busy() { 0 } else { weight };
        let share = u64::from(self.capacity) * weight / total.max(1);
        Some(u32::try_from(share).unwrap_or(u32::MAX).max(1))
    }

    fn flow_inflight(&self, id: FlowId) -> u32 {
        self.slots[id.index].as_ref().map_or(0, |f| f.inflight)
    }

    /// Starts the head of flow `id`'s queue out of round order.
    fn take_own(&mut self, id: FlowId) -> Option<(FlowId, T)> {
        let f = self.flow(id)?;
        let item = f.queue.pop_front()?;
        f.inflight += 1;
        let emptied = f.queue.is_empty();
        if emptied {
            f.deficit = 0;
        }
        self.inflight += 1;
        if emptied {
            self.active.retain(|&i| i != id.index);
        }
        Some((id, item))
    }

    /// Whether the front flow may start one more command now.
    fn has_room(&self) -> bool {
        let Some(&front) = self.active.front() else {
            return false;
        };
        if self.inflight < self.capacity {
            return true;
        }
        // A lone flow is never held back by its own commands.
        let own = self.slots[front].as_ref().map_or(0, |f| f.inflight);
        self.active.len() == 1 && own == self.inflight
    }

    /// The next command in deficit round robin order.
    fn next(&mut self) -> Option<(FlowId, T)> {
        loop {
            let index = *self.active.front()?;
            let f = self.slots[index].as_mut()?;
            if f.deficit == 0 {
                f.deficit = f.weight;
            }
            let Some(item) = f.queue.pop_front() else {
                f.deficit = 0;
                self.active.pop_front();
                continue;
            };
            f.deficit -= 1;
            f.inflight += 1;
            let id = FlowId {
                index,
                generation: f.generation,
            };
            if f.queue.is_empty() {
                // A flow that empties its queue gives up the rest of its round.
                f.deficit = 0;
                self.active.pop_front();
            } else if f.deficit == 0 {
                self.active.rotate_left(1);
            }
            self.inflight += 1;
            return Some((id, item));
        }
    }

    /// The CmdSN window one of flow `id`'s `sessions` sessions may be granted out of the
    /// ring's `budget`: the whole budget while the flow is the ring's only busy one, else the
    /// flow's weighted part of it split among its sessions, never less than 1.
    pub fn window(&self, id: FlowId, budget: u32, sessions: u32) -> u32 {
        let Some(f) = self.slots.get(id.index).and_then(Option::as_ref) else {
            return budget.max(1);
        };
        let others_busy = self.busy_flows > u32::from(f.busy());
        if !others_busy {
            return budget.max(1);
        }
        let weight = u64::from(f.weight);
        let total = self.busy_weight + if f.busy() { 0 } else { weight };
        let share = u64::from(budget) * weight / total.max(1);
        let per_session = share / u64::from(sessions.max(1));
        u32::try_from(per_session).unwrap_or(u32::MAX).max(1)
    }

    /// Commands admitted and not yet done, on the whole ring.
    pub fn inflight(&self) -> u32 {
        self.inflight
    }

    /// Commands waiting for their turn, on the whole ring.
    pub fn queued(&self) -> usize {
        self.active
            .iter()
            .filter_map(|&i| self.slots[i].as_ref())
            .map(|f| f.queue.len())
            .sum()
    }

    /// Flows with commands queued or in flight.
    pub fn busy_flows(&self) -> u32 {
        self.busy_flows
    }
}

#[cfg(test)]
#[path = "share_tests.rs"]
mod tests;
