//! SCSI Command intake and Data-Out collection: a command becomes a task, gathers its data
//! (immediate, unsolicited, R2T sequences) and is handed to the engine once complete.

use std::mem;

use bytes::Bytes;
use tracing::{debug, warn};

use super::collect::{Assembly, DataError};
use super::tasks::{Phase, Task};
use super::{Action, Closed, Command, ScsiOutcome, Session, TaskId, next_tag};
use crate::iscsi::pdu::{
    DataOut, Pdu, R2t, Residual, ScsiCommand, ScsiResponse, TaskAttr, reject_reason, scsi_response,
};
use crate::scsi::Status;
use crate::scsi::sense::{self, Sense, SenseKey};

/// Why a command is rejected before it becomes a task.
fn check_command(s: &Session, c: &ScsiCommand) -> Option<u8> {
    let p = &s.params;
    let imm = u64::try_from(c.data.len()).unwrap_or(u64::MAX);
    let edtl = u64::from(c.expected_data_len);
    let first_burst = u64::from(p.first_burst_len);
    if s.is_discovery() {
        return Some(reject_reason::COMMAND_NOT_SUPPORTED);
    }
    if c.itt == crate::iscsi::pdu::RESERVED_TAG {
        return Some(reject_reason::INVALID_PDU_FIELD);
    }
    if s.tasks.itt_in_use(c.itt) {
        return Some(reject_reason::TASK_IN_PROGRESS);
    }
    if c.immediate && s.tasks.len() >= s.config.queue_depth {
        return Some(reject_reason::IMMEDIATE_COMMAND_REJECT);
    }
    if imm > 0 && (!c.write || !p.immediate_data || imm > edtl || imm > first_burst) {
        return Some(reject_reason::PROTOCOL_ERROR);
    }
    // F clear on a write announces unsolicited Data-Out, which needs InitialR2T=No and room
    // left in the first burst.
    if c.write && !c.final_ && (p.initial_r2t || imm >= edtl.min(first_burst)) {
        return Some(reject_reason::PROTOCOL_ERROR);
    }
    None
}

impl Session {
    pub(super) fn on_command(&mut self, c: ScsiCommand, out: &mut Vec<Action>) {
        if !self.admit(c.cmd_sn, c.immediate, c.exp_stat_sn, out) {
            return;
        }
        if let Some(reason) = check_command(self, &c) {
            self.reject(reason, &Pdu::ScsiCommand(c), out);
            return;
        }
        let edtl = c.expected_data_len;
        let max_write = (self.config.max_write_len as usize).min(self.mem.limit());
        if c.write && edtl as usize > max_write {
            warn!(
                itt = c.itt,
                edtl,
                max = max_write,
                "write longer than the session buffers; failing it"
            );
            self.answer_early(&c, scsi_response::TARGET_FAILURE, None, out);
            return;
        }
        if matches!(c.attr, TaskAttr::Aca | TaskAttr::Reserved(_)) {
            // ACA needs NACA support (INQUIRY NormACA=0) and reserved values mean nothing:
            // the command is refused before it becomes a task (SAM-5).
            let sense = Sense::illegal(sense::INVALID_FIELD_IN_INFORMATION_UNIT);
            self.answer_early(&c, scsi_response::COMPLETED, Some(sense), out);
            return;
        }
        let read_len = if c.write {
            c.bidi_read_len.unwrap_or(0)
        } else {
            edtl
        };
        let collect = c.write && edtl > 0;
        // The unsolicited data this write may bring: a non-immediate command's window slot
        // held it already; an immediate command (outside the window) must find it now.
        let reserved = if collect {
            self.unsolicited.min(edtl as usize)
        } else {
            0
        };
        if c.immediate && !self.mem.try_take(reserved) {
            self.reject(
                reject_reason::IMMEDIATE_COMMAND_REJECT,
                &Pdu::ScsiCommand(c),
                out,
            );
            return;
        }
        let phase = if collect {
            let unsolicited_end = (!c.final_).then_some(self.params.first_burst_len.min(edtl));
            let buf = self.pool.take(usize::try_from(edtl).unwrap_or(usize::MAX));
            Phase::Collecting(Assembly::new(buf, edtl, &c.data, unsolicited_end))
        } else {
            Phase::Executing
        };
        let id = self.tasks.insert(Task {
            itt: c.itt,
            lun: c.lun,
            attr: c.attr,
            cdb: c.cdb,
            read: c.read,
            write: c.write,
            edtl,
            read_len,
            in_sn: 0,
            phase,
            reserved,
            granted: false,
        });
        if collect {
            self.advance_collect(id, out);
        } else {
            self.execute(id, Vec::new(), out);
        }
    }

    /// Answers a command that never becomes a task: with iSCSI response `response`, or with
    /// CHECK CONDITION and `sense` when given. Data-Out already on its way is dropped.
    fn answer_early(
        &mut self,
        c: &ScsiCommand,
        response: u8,
        sense: Option<Sense>,
        out: &mut Vec<Action>,
    ) {
        self.tasks.forget_itt(c.itt);
        let sns = self.sns(true);
        let (status, sense) = match sense {
            Some(s) => (Status::CheckCondition as u8, Bytes::from(s.to_bytes(false))),
            None => (0, Bytes::new()),
        };
        let rsp = ScsiResponse {
            response,
            status,
            residual: Residual::None,
            bidi_residual: Residual::None,
            itt: c.itt,
            snack_tag: 0,
            sns,
            exp_data_sn: 0,
            sense,
            response_data: Bytes::new(),
        };
        self.send(Pdu::ScsiResponse(rsp), out);
    }

    /// Ends, with TASK ABORTED, the tasks of this session that another I_T nexus's task
    /// management (LUN RESET, CLEAR TASK SET, TARGET RESET) or PREEMPT AND ABORT aborted
    /// and that have not reached the engine yet: those still receiving Data-Out or held back
    /// by an ORDERED task. `on_lun` selects them by their raw LUN field. Tasks already with
    /// the engine end when it reports them (with TASK ABORTED from the logical unit).
    pub fn abort_third_party(&mut self, on_lun: impl Fn(u64) -> bool, out: &mut Vec<Action>) {
        let ids = self
            .tasks
            .select(|t| on_lun(t.lun) && matches!(t.phase, Phase::Collecting(_) | Phase::Ready(_)));
        for id in ids {
            let Some(mut task) = self.tasks.drop_collecting(id) else {
                continue;
            };
            match mem::replace(&mut task.phase, Phase::Executing) {
                Phase::Collecting(asm) => self.pool.give(asm.into_spare()),
                Phase::Ready(buf) => self.pool.give(buf),
                Phase::Executing | Phase::Aborted => {}
            }
            let outcome = ScsiOutcome {
                status: Status::TaskAborted as u8,
                ..ScsiOutcome::default()
            };
            self.respond(task, outcome, out);
            self.task_ended(id, out);
        }
        self.settle_memory();
    }

    pub(super) fn on_data_out(&mut self, d: DataOut, out: &mut Vec<Action>) {
        self.seq.acknowledge(d.exp_stat_sn);
        let in_order = self.params.data_pdu_in_order;
        let Some(id) = self.tasks.id_of(d.itt) else {
            if self.tasks.was_dropped(d.itt) {
                debug!(itt = d.itt, "Data-Out for a dropped task discarded");
            } else {
                self.reject(reject_reason::INVALID_PDU_FIELD, &Pdu::DataOut(d), out);
            }
            return;
        };
        let result = match self.tasks.get_mut(id).map(|t| &mut t.phase) {
            Some(Phase::Collecting(asm)) if asm.expects(d.ttt) => asm.on_data(&d, in_order),
            Some(Phase::Aborted) => {
                debug!(itt = d.itt, "Data-Out for an aborted task discarded");
                return;
            }
            _ => {
                self.reject(reject_reason::INVALID_PDU_FIELD, &Pdu::DataOut(d), out);
                return;
            }
        };
        match result {
            Ok(()) => self.advance_collect(id, out),
            // A wrong DataSN or offset loses this command's data, not the connection: the
            // command ends with CHECK CONDITION, ABORTED COMMAND and the rest of its
            // Data-Out is discarded.
            Err(err @ (DataError::DataSn { .. } | DataError::Offset { .. })) => {
                warn!(itt = d.itt, ttt = d.ttt, %err, "bad Data-Out; failing the command");
                let asc = match err {
                    DataError::DataSn { .. } => sense::DATA_PHASE_ERROR,
                    _ => sense::DATA_OFFSET_ERROR,
                };
                if let Some(mut task) = self.tasks.drop_collecting(id) {
                    if let Phase::Collecting(asm) = mem::replace(&mut task.phase, Phase::Executing)
                    {
                        self.pool.give(asm.into_spare());
                    }
                    let outcome = ScsiOutcome {
                        status: Status::CheckCondition as u8,
                        sense: Sense::new(SenseKey::AbortedCommand, asc).to_bytes(false),
                        ..ScsiOutcome::default()
                    };
                    self.respond(task, outcome, out);
                    self.task_ended(id, out);
                }
            }
            Err(err) => {
                warn!(itt = d.itt, ttt = d.ttt, %err, "bad Data-Out; closing the connection");
                self.close(Closed::ByTarget("a Data-Out broke its sequence"), out);
            }
        }
    }

    /// After data arrived: execute the task if all of it is in, else send the R2Ts now due
    /// (once the memory for the rest of the write is granted).
    pub(super) fn advance_collect(&mut self, id: TaskId, out: &mut Vec<Action>) {
        let r2t_due = self.tasks.get_mut(id).is_some_and(|t| {
            !t.granted && matches!(&t.phase, Phase::Collecting(asm) if asm.r2t_due())
        });
        if r2t_due && !self.grant(id) {
            return;
        }
        let (max_r2t, max_burst) = (self.params.max_outstanding_r2t, self.params.max_burst_len);
        let mut ttt = self.next_ttt;
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        let Phase::Collecting(asm) = &mut task.phase else {
            return;
        };
        if asm.is_complete() {
            if let Phase::Collecting(asm) = mem::replace(&mut task.phase, Phase::Executing) {
                self.execute(id, asm.into_buf(), out);
            }
            return;
        }
        let plans = asm.plan_r2ts(max_r2t, max_burst, || next_tag(&mut ttt));
        let (itt, lun) = (task.itt, task.lun);
        let numbered: Vec<_> = plans.into_iter().map(|p| (p, task.next_in_sn())).collect();
        self.next_ttt = ttt;
        for (plan, r2t_sn) in numbered {
            let sns = self.sns(false);
            let r2t = R2t {
                lun,
                itt,
                ttt: plan.ttt,
                sns,
                r2t_sn,
                buffer_offset: plan.offset,
                desired_len: plan.len,
            };
            self.send(Pdu::R2t(r2t), out);
        }
    }

    /// A task whose data is complete goes to the engine, unless an ORDERED task holds it
    /// back; then so do the held tasks it (or its going) releases.
    fn execute(&mut self, id: TaskId, data_out: Vec<u8>, out: &mut Vec<Action>) {
        if self.tasks.held_back(id) {
            self.tasks.set_ready(id, data_out);
            return;
        }
        self.hand_over(id, data_out, out);
        self.release_ready(out);
    }

    /// Hands the held tasks that may go now to the engine.
    pub(super) fn release_ready(&mut self, out: &mut Vec<Action>) {
        for (id, data) in self.tasks.take_released() {
            self.hand_over(id, data, out);
        }
    }

    /// Hands a task whose data is complete to the engine.
    fn hand_over(&mut self, id: TaskId, data_out: Vec<u8>, out: &mut Vec<Action>) {
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        task.phase = Phase::Executing;
        out.push(Action::Execute(Command {
            task: id,
            lun: task.lun,
            itt: task.itt,
            attr: task.attr,
            cdb: mem::take(&mut task.cdb),
            data_out,
            read_len: task.read_len,
        }));
    }
}
