//! NOP-Out / NOP-In (RFC 7143 §11.18, §11.19) and the target's asynchronous messages
//! (§11.9).

use bytes::Bytes;

use super::{Action, Session, State};
use crate::iscsi::pdu::{AsyncMessage, NopIn, NopOut, Pdu, RESERVED_TAG, async_event};

impl Session {
    pub(super) fn on_nop_out(&mut self, n: NopOut, out: &mut Vec<Action>) {
        if !self.admit(n.cmd_sn, n.immediate, n.exp_stat_sn, out) {
            return;
        }
        if n.ttt != RESERVED_TAG && self.ping == Some(n.ttt) {
            // The answer to our ping.
            self.ping = None;
        }
        if n.itt == RESERVED_TAG {
            // An answer to a NOP-In, or a one-way ping: nothing to send back.
            return;
        }
        let max = usize::try_from(self.params.max_send_data_segment_len).unwrap_or(usize::MAX);
        let data = n.data.slice(..n.data.len().min(max));
        let sns = self.sns(true);
        let rsp = NopIn {
            lun: n.lun,
            itt: n.itt,
            ttt: RESERVED_TAG,
            sns,
            data,
        };
        self.send(Pdu::NopIn(rsp), out);
    }

    /// Sends a NOP-In that asks the initiator for an answer (a keepalive). Returns whether
    /// the previous ping was answered; if not, the engine may consider the connection dead.
    pub fn ping(&mut self, out: &mut Vec<Action>) -> bool {
        if self.state != State::Open {
            return true;
        }
        let answered = self.ping.is_none();
        let ttt = self.new_ttt();
        self.ping = Some(ttt);
        // An unsolicited NOP-In does not consume a StatSN.
        let sns = self.sns(false);
        let ping = NopIn {
            lun: 0,
            itt: RESERVED_TAG,
            ttt,
            sns,
            data: Bytes::new(),
        };
        self.send(Pdu::NopIn(ping), out);
        answered
    }

    /// Whether a ping sent with [`Session::ping`] is still unanswered.
    pub fn ping_outstanding(&self) -> bool {
        self.ping.is_some()
    }

    /// Asks the initiator to log out within `within_secs` seconds (Async Message, event 1),
    /// e.g. before the target goes away.
    pub fn request_logout(&mut self, within_secs: u16, out: &mut Vec<Action>) {
        self.send_async(
            0,
            async_event::LOGOUT_REQUEST,
            within_secs,
            Bytes::new(),
            out,
        );
    }

    /// Reports a SCSI asynchronous event with `sense` for `lun` (Async Message, event 0).
    pub fn scsi_event(&mut self, lun: u64, sense: Bytes, out: &mut Vec<Action>) {
        self.send_async(lun, async_event::SCSI_EVENT, 0, sense, out);
    }

    fn send_async(
        &mut self,
        lun: u64,
        event: u8,
        param3: u16,
        sense: Bytes,
        out: &mut Vec<Action>,
    ) {
        if self.state != State::Open {
            return;
        }
        let sns = self.sns(true);
        let msg = AsyncMessage {
            lun,
            sns,
            event,
            vcode: 0,
            param1: 0,
            param2: 0,
            param3,
            sense,
            event_data: Bytes::new(),
        };
        self.send(Pdu::AsyncMessage(msg), out);
    }
}
