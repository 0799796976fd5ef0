//! Flow control by write memory ([`super::memory`]): the CmdSN window opens one slot per
//! command's worth of unsolicited data the session could take, and a write's first R2T waits
//! until the rest of the write fits. What a session holds is settled against what it needs
//! after every event, and all of it goes back when the session ends.

use super::{Action, Session, State, TaskId};
use crate::iscsi::params::{SessionParams, SessionType};
use crate::iscsi::pdu::{NopIn, Pdu, RESERVED_TAG};

/// The most unsolicited data (immediate data and unsolicited Data-Out) one command may
/// bring under `p`: it all counts against FirstBurstLength, immediate data also against the
/// target's MaxRecvDataSegmentLength.
pub(super) fn unsolicited_per_command(p: &SessionParams) -> usize {
    let first_burst = p.first_burst_len as usize;
    if p.session_type == SessionType::Discovery {
        0
    } else if !p.initial_r2t {
        first_burst
    } else if p.immediate_data {
        first_burst.min(p.max_recv_data_segment_len as usize)
    } else {
        0
    }
}

impl Session {
    /// Opens the CmdSN window towards the queue depth as far as write memory allows: each
    /// new slot holds [`unsolicited_per_command`] bytes. Writes waiting for their R2T come
    /// first: while one waits, the window does not open.
    pub(super) fn open_window(&mut self) {
        if self.state != State::Open {
            return;
        }
        self.prune_awaiting();
        if !self.awaiting.is_empty() {
            return;
        }
        // Slow start: the window grows with what the initiator uses (twice the commands in
        // flight, at least the login window), so an idle session holds little memory.
        let running = self.tasks.len();
        let want = self
            .config
            .queue_depth
            .min(self.window_cap)
            .saturating_sub(running)
            .min(self.config.login_window.max(running.saturating_mul(2)));
        let free = self.seq.window_free();
        if want <= free {
            return;
        }
        // What ended gives its memory back first.
        self.settle_memory();
        let mut more = want - free;
        let room = self.mem.limit().saturating_sub(self.mem.held());
        if let Some(slots) = room.checked_div(self.unsolicited) {
            more = more.min(u32::try_from(slots).unwrap_or(u32::MAX));
            while more > 0
                && !self
                    .mem
                    .try_take(self.unsolicited.saturating_mul(more as usize))
            {
                more /= 2;
            }
        }
        self.seq.extend(more);
    }

    /// Caps the commands the window covers, running ones included, at `cap` (at least 1):
    /// the session's part of its ring's share. A window already granted is never taken back
    /// (RFC 7143 §4.2.2.1: MaxCmdSN does not decrease); a lower cap only stops it opening
    /// further as commands end, and a command always finds a window once none run.
    pub fn set_window_cap(&mut self, cap: u32) {
        self.window_cap = cap.max(1);
    }

    /// Gives back the memory the session holds beyond what its open window and its tasks
    /// need.
    pub(super) fn settle_memory(&mut self) {
        let window = self.seq.window_free() as usize * self.unsolicited;
        self.mem.keep(window + self.tasks.reserved());
    }

    /// Takes the memory for the rest of write `id` before its first R2T, in arrival order
    /// among the writes waiting. False: it waits (see [`Session::on_memory`]).
    pub(super) fn grant(&mut self, id: TaskId) -> bool {
        self.prune_awaiting();
        if self.awaiting.front().is_some_and(|&f| f != id) {
            if !self.awaiting.contains(&id) {
                self.awaiting.push_back(id);
            }
            return false;
        }
        let Some(need) = self.tasks.ungranted(id) else {
            return true;
        };
        if !self.mem.try_take(need) {
            if self.awaiting.is_empty() {
                self.awaiting.push_back(id);
            }
            return false;
        }
        self.tasks.granted(id, need);
        if self.awaiting.front() == Some(&id) {
            self.awaiting.pop_front();
        }
        true
    }

    /// Drops waiting writes that no longer wait (ended, aborted) from the front.
    fn prune_awaiting(&mut self) {
        while let Some(&id) = self.awaiting.front() {
            if self.tasks.ungranted(id).is_some() {
                return;
            }
            self.awaiting.pop_front();
        }
    }

    /// Whether the session waits for write memory: a write waits for its R2T, or the window
    /// is closed although the queue depth would allow more. The engine then calls
    /// [`Session::on_memory`] when memory is given back.
    pub fn wants_memory(&self) -> bool {
        self.state == State::Open
            && (!self.awaiting.is_empty()
                || (self.seq.window_free() == 0 && self.tasks.len() < self.config.queue_depth))
    }

    /// Memory was given back somewhere: sends the R2Ts of writes that now fit and, if the
    /// window was closed and can open, tells the initiator with a NOP-In (RFC 7143 11.19:
    /// ITT and TTT 0xffffffff, no answer expected).
    pub fn on_memory(&mut self, out: &mut Vec<Action>) {
        if self.state != State::Open {
            return;
        }
        self.grant_waiting(out);
        let closed = self.seq.window_free() == 0;
        self.open_window();
        if closed && self.seq.window_free() > 0 {
            let sns = self.seq.sns(false);
            let nop = NopIn {
                lun: 0,
                itt: RESERVED_TAG,
                ttt: RESERVED_TAG,
                sns,
                data: bytes::Bytes::new(),
            };
            self.send(Pdu::NopIn(nop), out);
        }
        self.settle_memory();
    }

    /// Sends the R2Ts of the waiting writes that fit now, oldest first.
    pub(super) fn grant_waiting(&mut self, out: &mut Vec<Action>) {
        loop {
            self.prune_awaiting();
            let Some(&id) = self.awaiting.front() else {
                return;
            };
            if !self.grant(id) {
                return;
            }
            self.advance_collect(id, out);
        }
    }

    /// Bytes of write memory the session holds.
    pub fn memory_held(&self) -> usize {
        self.mem.held()
    }
}
