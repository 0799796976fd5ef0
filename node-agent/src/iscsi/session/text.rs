//! Text requests in full feature phase (RFC 7143 §11.10, §11.11), e.g. SendTargets: the
//! request is gathered (it may span PDUs with the C bit), the engine answers it, and a long
//! answer goes out in pieces the initiator asks for one by one.

use bytes::{Bytes, BytesMut};
use tracing::debug;

use super::{Action, Session};
use crate::iscsi::pdu::{Pdu, RESERVED_TAG, TextRequest, TextResponse, reject_reason};

/// Largest text request gathered over several PDUs.
const MAX_TEXT_REQUEST: usize = 64 * 1024;

/// A text exchange in progress.
#[derive(Debug, Default)]
pub(super) struct TextState {
    /// A request arriving in pieces: its ITT, the TTT we gave it and the text so far.
    request: Option<(u32, u32, BytesMut)>,
    /// An answer going out in pieces: its ITT, the TTT of the next piece and the rest.
    reply: Option<(u32, u32, Bytes)>,
}

impl Session {
    pub(super) fn on_text(&mut self, t: TextRequest, out: &mut Vec<Action>) {
        if !self.admit(t.cmd_sn, t.immediate, t.exp_stat_sn, out) {
            return;
        }
        if t.ttt != RESERVED_TAG {
            self.on_text_continuation(t, out);
            return;
        }
        // A new request replaces any exchange in progress.
        self.text = TextState::default();
        self.gather_text(t, BytesMut::new(), out);
    }

    fn on_text_continuation(&mut self, t: TextRequest, out: &mut Vec<Action>) {
        if let Some((itt, ttt, rest)) = self.text.reply.take()
            && itt == t.itt
            && ttt == t.ttt
        {
            self.send_text_piece(itt, rest, out);
            return;
        }
        if let Some((itt, ttt, so_far)) = self.text.request.take()
            && itt == t.itt
            && ttt == t.ttt
        {
            self.gather_text(t, so_far, out);
            return;
        }
        self.reject(reject_reason::INVALID_PDU_FIELD, &Pdu::TextRequest(t), out);
    }

    /// Adds a request piece; asks for the next one (C bit) or hands the whole to the engine.
    fn gather_text(&mut self, t: TextRequest, mut so_far: BytesMut, out: &mut Vec<Action>) {
        if so_far.len() + t.data.len() > MAX_TEXT_REQUEST {
            self.reject(reject_reason::OUT_OF_RESOURCES, &Pdu::TextRequest(t), out);
            return;
        }
        so_far.extend_from_slice(&t.data);
        if t.cont {
            let ttt = self.new_ttt();
            self.text.request = Some((t.itt, ttt, so_far));
            self.send_text(t.itt, ttt, false, false, Bytes::new(), out);
            return;
        }
        debug!(itt = t.itt, len = so_far.len(), "text request");
        out.push(Action::Text {
            itt: t.itt,
            request: so_far.freeze(),
        });
    }

    /// Sends the engine's answer to [`Action::Text`] `itt`: text keys (`key=value\0`...). An
    /// answer longer than the initiator's MaxRecvDataSegmentLength goes out in pieces.
    pub fn on_text_reply(&mut self, itt: u32, reply: Bytes, out: &mut Vec<Action>) {
        if self.is_closed() {
            return;
        }
        self.send_text_piece(itt, reply, out);
    }

    fn send_text_piece(&mut self, itt: u32, mut rest: Bytes, out: &mut Vec<Action>) {
        let max =
            usize::try_from(self.params.max_send_data_segment_len.max(1)).unwrap_or(usize::MAX);
        if rest.len() <= max {
            self.text.reply = None;
            self.send_text(itt, RESERVED_TAG, true, false, rest, out);
            return;
        }
        let piece = rest.split_to(max);
        let ttt = self.new_ttt();
        self.text.reply = Some((itt, ttt, rest));
        self.send_text(itt, ttt, false, true, piece, out);
    }

    fn send_text(
        &mut self,
        itt: u32,
        ttt: u32,
        final_: bool,
        cont: bool,
        data: Bytes,
        out: &mut Vec<Action>,
    ) {
        let sns = self.sns(true);
        let rsp = TextResponse {
            final_,
            cont,
            lun: 0,
            itt,
            ttt,
            sns,
            data,
        };
        self.send(Pdu::TextResponse(rsp), out);
    }
}
