//! Task management (RFC 7143 §11.5, §4.2.3): terminating tasks and answering only once the
//! affected tasks have ended. Logout uses the same waiting.

use tracing::debug;

use super::tasks::Phase;
use super::{Action, Closed, Session, TaskId, TmfId};
use crate::iscsi::pdu::{
    LogoutResponse, Pdu, TaskFunction, TaskMgmtRequest, TaskMgmtResponse, logout_response,
    tmf_response,
};

/// The answer a [`Waiter`] sends once nothing holds it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reply {
    /// Task Management Function Response; with `close`, the connection closes after it.
    Tmf { itt: u32, response: u8, close: bool },
    /// Logout Response "closed", then the connection closes.
    Logout { itt: u32 },
}

/// A response held back until some tasks end and, optionally, the engine reports.
#[derive(Debug)]
struct Waiter {
    tasks: Vec<TaskId>,
    engine: Option<TmfId>,
    reply: Reply,
}

/// Responses waiting for tasks to end.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    pending: Vec<Waiter>,
    next_tmf: u64,
}

impl Session {
    pub(super) fn on_tmf(&mut self, t: TaskMgmtRequest, out: &mut Vec<Action>) {
        if !self.admit(t.cmd_sn, t.immediate, t.exp_stat_sn, out) {
            return;
        }
        if self.is_discovery() {
            self.reject(
                crate::iscsi::pdu::reject_reason::COMMAND_NOT_SUPPORTED,
                &Pdu::TaskMgmtRequest(t),
                out,
            );
            return;
        }
        debug!(function = ?t.function, lun = t.lun, ref_itt = t.ref_task_tag, "task management");
        let reply = |response| Reply::Tmf {
            itt: t.itt,
            response,
            close: false,
        };
        let lun = t.lun;
        match t.function {
            TaskFunction::AbortTask => match self.tasks.id_of(t.ref_task_tag) {
                Some(id) => {
                    let wait = self.terminate(vec![id], out);
                    self.hold(wait, None, reply(tmf_response::COMPLETE), out);
                }
                // A task that already completed (its CmdSN is below ExpCmdSN) or never
                // existed. One connection delivers in order, so a command the RefCmdSN names
                // cannot still be on its way.
                None => self.hold(
                    Vec::new(),
                    None,
                    reply(tmf_response::TASK_DOES_NOT_EXIST),
                    out,
                ),
            },
            TaskFunction::AbortTaskSet => {
                let ids = self.tasks.select(|task| task.lun == lun);
                let wait = self.terminate(ids, out);
                self.hold(wait, None, reply(tmf_response::COMPLETE), out);
            }
            TaskFunction::ClearTaskSet | TaskFunction::LogicalUnitReset => {
                let ids = self.tasks.select(|task| task.lun == lun);
                self.reset(ids, t.function, lun, reply(tmf_response::COMPLETE), out);
            }
            TaskFunction::TargetWarmReset | TaskFunction::TargetColdReset => {
                let ids = self.tasks.select(|_| true);
                let close = t.function == TaskFunction::TargetColdReset;
                let reply = Reply::Tmf {
                    itt: t.itt,
                    response: tmf_response::COMPLETE,
                    close,
                };
                self.reset(ids, t.function, lun, reply, out);
            }
            // Reassignment needs ErrorRecoveryLevel 2.
            TaskFunction::TaskReassign => self.hold(
                Vec::new(),
                None,
                reply(tmf_response::REASSIGNMENT_NOT_SUPPORTED),
                out,
            ),
            TaskFunction::ClearAca | TaskFunction::Other(_) => {
                self.hold(Vec::new(), None, reply(tmf_response::NOT_SUPPORTED), out)
            }
        }
    }

    /// Terminates this session's `ids` and asks the engine for the rest of the function.
    fn reset(
        &mut self,
        ids: Vec<TaskId>,
        function: TaskFunction,
        lun: u64,
        reply: Reply,
        out: &mut Vec<Action>,
    ) {
        let wait = self.terminate(ids, out);
        let id = TmfId(self.waiters.next_tmf);
        self.waiters.next_tmf = self.waiters.next_tmf.wrapping_add(1);
        out.push(Action::TaskMgmt { id, function, lun });
        self.hold(wait, Some(id), reply, out);
    }

    /// Reports that the engine carried out [`Action::TaskMgmt`] `id`; `response` is the task
    /// management response code (e.g. [`tmf_response::COMPLETE`] or
    /// [`tmf_response::LUN_DOES_NOT_EXIST`]). The response goes out once this session's
    /// affected tasks have also ended.
    pub fn on_tmf_done(&mut self, id: TmfId, response: u8, out: &mut Vec<Action>) {
        for w in &mut self.waiters.pending {
            if w.engine == Some(id) {
                w.engine = None;
                if let Reply::Tmf { response: r, .. } = &mut w.reply {
                    *r = response;
                }
            }
        }
        self.release(out);
    }

    /// Ends tasks: those still collecting data are dropped now, executing ones are aborted
    /// (the engine is told) and returned, to be waited for.
    pub(super) fn terminate(&mut self, ids: Vec<TaskId>, out: &mut Vec<Action>) -> Vec<TaskId> {
        let mut wait = Vec::new();
        let mut abort = Vec::new();
        for id in ids {
            let Some(task) = self.tasks.get_mut(id) else {
                continue;
            };
            match task.phase {
                Phase::Collecting(_) | Phase::Ready(_) => {
                    if let Some(t) = self.tasks.drop_collecting(id) {
                        match t.phase {
                            Phase::Collecting(asm) => self.pool.give(asm.into_spare()),
                            Phase::Ready(buf) => self.pool.give(buf),
                            Phase::Executing | Phase::Aborted => {}
                        }
                    }
                }
                Phase::Executing => {
                    task.phase = Phase::Aborted;
                    abort.push(id);
                    wait.push(id);
                }
                Phase::Aborted => wait.push(id),
            }
        }
        if !abort.is_empty() {
            out.push(Action::Abort { tasks: abort });
        }
        wait
    }

    /// Queues `reply` until `tasks` have ended and the engine reported on `engine`.
    pub(super) fn hold(
        &mut self,
        tasks: Vec<TaskId>,
        engine: Option<TmfId>,
        reply: Reply,
        out: &mut Vec<Action>,
    ) {
        self.waiters.pending.push(Waiter {
            tasks,
            engine,
            reply,
        });
        self.release(out);
    }

    /// Notes that a task ended (completed or aborted) and sends what waited only for it.
    pub(super) fn task_ended(&mut self, id: TaskId, out: &mut Vec<Action>) {
        for w in &mut self.waiters.pending {
            w.tasks.retain(|&t| t != id);
        }
        self.release(out);
        if !self.is_closed() {
            self.release_ready(out);
        }
    }

    /// Sends, in arrival order, the replies nothing holds back any more.
    fn release(&mut self, out: &mut Vec<Action>) {
        let (ready, pending): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiters.pending)
            .into_iter()
            .partition(|w| w.tasks.is_empty() && w.engine.is_none());
        self.waiters.pending = pending;
        for w in ready {
            if self.is_closed() {
                return;
            }
            self.send_reply(w.reply, out);
        }
    }

    fn send_reply(&mut self, reply: Reply, out: &mut Vec<Action>) {
        match reply {
            Reply::Tmf {
                itt,
                response,
                close,
            } => {
                let sns = self.sns(true);
                self.send(
                    Pdu::TaskMgmtResponse(TaskMgmtResponse { response, itt, sns }),
                    out,
                );
                if close {
                    self.close(Closed::ByInitiator("TARGET COLD RESET"), out);
                }
            }
            Reply::Logout { itt } => {
                let sns = self.sns(true);
                let rsp = LogoutResponse {
                    response: logout_response::CLOSED,
                    itt,
                    sns,
                    time2wait: 0,
                    time2retain: 0,
                };
                self.send(Pdu::LogoutResponse(rsp), out);
                self.close(Closed::ByInitiator("logged out"), out);
            }
        }
    }
}
