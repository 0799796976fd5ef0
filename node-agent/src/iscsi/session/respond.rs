//! Answering a completed command: Data-In PDUs (split at the initiator's
//! MaxRecvDataSegmentLength, sequences of at most MaxBurstLength), status in the last Data-In
//! when there is no sense, else a SCSI Response; residuals per RFC 7143 §11.4.5.

use bytes::Bytes;

use super::tasks::{Phase, Task};
use super::{Action, ScsiOutcome, Session, State, TaskId};
use crate::iscsi::pdu::{DataIn, Pdu, RESERVED_TAG, Residual, ScsiResponse, scsi_response};

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

impl Session {
    /// Reports the end of a command handed out with [`Action::Execute`]. Its response is
    /// sent unless the task was aborted (or the connection is closed); an unknown id is
    /// ignored.
    pub fn on_scsi_done(&mut self, task: TaskId, outcome: ScsiOutcome, out: &mut Vec<Action>) {
        let Some(t) = self.tasks.remove(task) else {
            return;
        };
        match t.phase {
            Phase::Executing if self.state != State::Closed => self.respond(t, outcome, out),
            Phase::Collecting(asm) => self.pool.give(asm.into_spare()),
            Phase::Ready(buf) => self.pool.give(buf),
            Phase::Executing | Phase::Aborted => {}
        }
        self.task_ended(task, out);
        self.settle_memory();
        self.grant_waiting(out);
    }

    pub(super) fn respond(&mut self, mut task: Task, outcome: ScsiOutcome, out: &mut Vec<Action>) {
        let data = outcome.data_in;
        let sense = Bytes::from(outcome.sense);
        let bidi = task.read && task.write;
        // The read side: what the command produced against what the initiator expects.
        let read_residual = Residual::of(task.read_len, len_u32(data.len()));
        let write_residual = match outcome.data_out_len {
            Some(wanted) if task.write => Residual::of(task.edtl, wanted),
            _ => Residual::None,
        };
        let sent = if task.read {
            data.len()
                .min(usize::try_from(task.read_len).unwrap_or(usize::MAX))
        } else {
            0
        };
        let collapse = sense.is_empty() && !bidi && sent > 0;
        let status = collapse.then_some((outcome.status, read_residual));
        self.send_data_in(&mut task, data.slice(..sent), status, out);
        if collapse {
            return;
        }
        let (residual, bidi_residual) = match (task.read, task.write) {
            (true, true) => (write_residual, read_residual),
            (false, true) => (write_residual, Residual::None),
            _ => (read_residual, Residual::None),
        };
        let sns = self.sns(true);
        let rsp = ScsiResponse {
            response: scsi_response::COMPLETED,
            status: outcome.status,
            residual,
            bidi_residual,
            itt: task.itt,
            snack_tag: 0,
            sns,
            exp_data_sn: task.in_sn,
            sense,
            response_data: Bytes::new(),
        };
        self.send(Pdu::ScsiResponse(rsp), out);
    }

    /// Sends `data` as Data-In PDUs; with `status`, the last one carries it (S bit).
    fn send_data_in(
        &mut self,
        task: &mut Task,
        data: Bytes,
        status: Option<(u8, Residual)>,
        out: &mut Vec<Action>,
    ) {
        let segment =
            usize::try_from(self.params.max_send_data_segment_len.max(1)).unwrap_or(usize::MAX);
        let burst = usize::try_from(self.params.max_burst_len.max(1)).unwrap_or(usize::MAX);
        let total = data.len();
        let mut offset = 0;
        let mut burst_left = burst;
        while offset < total {
            let len = segment.min(burst_left).min(total - offset);
            let end = offset + len;
            burst_left -= len;
            let last = end == total;
            let pdu_status = if last { status } else { None };
            let final_ = last || burst_left == 0;
            if burst_left == 0 {
                burst_left = burst;
            }
            let sns = self.sns(pdu_status.is_some());
            let (status, residual) = match pdu_status {
                Some((s, r)) => (Some(s), r),
                None => (None, Residual::None),
            };
            let pdu = DataIn {
                final_,
                ack: false,
                status,
                residual,
                lun: task.lun,
                itt: task.itt,
                ttt: RESERVED_TAG,
                sns,
                data_sn: task.next_in_sn(),
                buffer_offset: len_u32(offset),
                data: data.slice(offset..end),
            };
            self.send(Pdu::DataIn(pdu), out);
            offset = end;
        }
    }
}
