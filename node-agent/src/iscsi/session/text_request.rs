//! Text requests in full feature phase (RFC 7143 §11.10, §11.11), e.g. SendTargets: the
//! request is gathered (it may span PDUs with the C bit), the engine answers it (with
//! [`crate::iscsi::discovery::respond`]), and a long answer goes out in pieces the initiator
//! asks for one by one.

use bytes::Bytes;
use tracing::debug;

use super::{Action, Session};
use crate::iscsi::pdu::{Pdu, RESERVED_TAG, TextRequest, TextResponse, reject_reason};
use crate::iscsi::text::{TextAssembler, TextError, TextReply};

/// A text exchange in progress.
#[derive(Debug, Default)]
pub(super) struct TextState {
    /// A request arriving in pieces: its ITT, the TTT we gave it, the text so far.
    request: Option<(u32, u32, TextAssembler)>,
    /// An answer going out in pieces: its ITT, the TTT of the next piece, the rest.
    reply: Option<(u32, u32, TextReply)>,
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
        self.gather_text(t, TextAssembler::default(), out);
    }

    fn on_text_continuation(&mut self, t: TextRequest, out: &mut Vec<Action>) {
        if let Some((itt, ttt, reply)) = self.text.reply.take()
            && itt == t.itt
            && ttt == t.ttt
        {
            self.send_text_piece(itt, reply, out);
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

    /// Adds a request piece; asks for the next one (C bit) or hands the keys to the engine.
    fn gather_text(&mut self, t: TextRequest, mut so_far: TextAssembler, out: &mut Vec<Action>) {
        match so_far.push(&t.data, t.cont) {
            Ok(Some(keys)) => {
                debug!(itt = t.itt, ?keys, "text request");
                out.push(Action::Text { itt: t.itt, keys });
            }
            Ok(None) => {
                let ttt = self.new_ttt();
                self.text.request = Some((t.itt, ttt, so_far));
                self.send_text(t.itt, ttt, false, false, Bytes::new(), out);
            }
            Err(err) => {
                debug!(itt = t.itt, %err, "bad text request");
                let reason = match err {
                    TextError::TooLong => reject_reason::OUT_OF_RESOURCES,
                    _ => reject_reason::PROTOCOL_ERROR,
                };
                self.reject(reason, &Pdu::TextRequest(t), out);
            }
        }
    }

    /// Sends the engine's answer to [`Action::Text`] `itt`: the Text Response data
    /// (`key=value\0`...). An answer longer than the initiator's MaxRecvDataSegmentLength
    /// goes out in pieces.
    pub fn on_text_reply(&mut self, itt: u32, reply: Bytes, out: &mut Vec<Action>) {
        if self.is_closed() {
            return;
        }
        let max = usize::try_from(self.params.max_send_data_segment_len).unwrap_or(usize::MAX);
        self.send_text_piece(itt, TextReply::new(reply, max), out);
    }

    fn send_text_piece(&mut self, itt: u32, mut reply: TextReply, out: &mut Vec<Action>) {
        let (piece, more) = reply.next_segment();
        if more {
            let ttt = self.new_ttt();
            self.text.reply = Some((itt, ttt, reply));
            self.send_text(itt, ttt, false, true, piece, out);
        } else {
            self.text.reply = None;
            self.send_text(itt, RESERVED_TAG, true, false, piece, out);
        }
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
