//! iSCSI PDUs (RFC 7143 §11): the BHS framing the pump needs, a typed enum of every PDU, and
//! a pure codec between them.
//!
//! Receiving: read [`BHS_LEN`] bytes, [`BhsInfo::parse`] them, read
//! [`BhsInfo::frame_len`] more bytes, then [`Pdu::decode`]. Or keep a read buffer and call
//! [`Pdu::decode_from`] on it.
//!
//! Sending: [`Pdu::encode`] gives a [`Frame`]: header bytes, the data segment as the same
//! [`Bytes`] the PDU holds (no copy; a Data-In's data is a slice of the read buffer), and a short
//! trailer of padding and data digest. Write the three parts with a vectored write.

mod bhs;
mod from_initiator;
mod from_target;
#[cfg(test)]
mod tests;

use bytes::{Bytes, BytesMut};
use thiserror::Error;

use super::digest::{self, DIGEST_LEN};
use bhs::Header;

pub use bhs::{BHS_LEN, BhsInfo, MAX_AHS_LEN, MAX_DATA_SEGMENT_LEN, opcode, padded};
pub use from_initiator::{
    AHS_BIDI_READ_LEN, AHS_EXTENDED_CDB, DataOut, LoginRequest, LogoutReason, LogoutRequest,
    NopOut, ScsiCommand, SnackRequest, Stage, TaskAttr, TaskFunction, TaskMgmtRequest, TextRequest,
};
pub use from_target::{
    AsyncMessage, DataIn, LoginResponse, LogoutResponse, NopIn, R2t, RESERVED_TAG, Reject,
    Residual, ScsiResponse, Sns, TaskMgmtResponse, TextResponse, async_event, login_status,
    logout_response, reject_reason, scsi_response, tmf_response,
};

/// Which digests are on for a connection (both off during login).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digests {
    /// CRC32C over BHS and AHS.
    pub header: bool,
    /// CRC32C over each data segment and its padding.
    pub data: bool,
}

/// Why bytes are not a valid PDU.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PduError {
    #[error("data segment of {len} bytes exceeds the limit of {max}")]
    DataSegmentTooLong { len: usize, max: usize },
    #[error("AHS of {0} bytes is too long or not a multiple of 4")]
    AhsTooLong(usize),
    #[error("PDU needs {expected} bytes after the BHS, got {got}")]
    FrameLength { expected: usize, got: usize },
    #[error("header digest mismatch")]
    HeaderDigest,
    #[error("data digest mismatch")]
    DataDigest,
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    #[error("malformed AHS: {0}")]
    BadAhs(&'static str),
    #[error("opcode {0:#04x} carries no AHS")]
    UnexpectedAhs(u8),
    #[error("opcode {0:#04x} carries no data segment")]
    UnexpectedData(u8),
    #[error("malformed data segment: {0}")]
    BadDataSegment(&'static str),
    #[error("invalid field: {0}")]
    BadField(&'static str),
}

impl PduError {
    /// Whether the PDU was framed correctly and only its content is bad, so the connection can
    /// go on after a Reject (for a data digest error, the Reject reason is "data digest error").
    /// Framing and header digest errors leave the stream position unknown: close the
    /// connection.
    pub fn is_rejectable(&self) -> bool {
        !matches!(
            self,
            Self::DataSegmentTooLong { .. } | Self::FrameLength { .. } | Self::HeaderDigest
        )
    }
}

/// Header-side and data-side parts of an encoded PDU.
#[derive(Default)]
pub(crate) struct Encoded {
    pub(crate) ahs: Bytes,
    pub(crate) data: Bytes,
}

impl Encoded {
    pub(crate) fn data(data: Bytes) -> Self {
        Self {
            ahs: Bytes::new(),
            data,
        }
    }
}

/// One PDU type's fields and codec.
pub(crate) trait Body: Sized {
    const OPCODE: u8;
    /// Reads the fields from a header whose opcode is `OPCODE`.
    fn decode(h: &Header, ahs: &[u8], data: Bytes) -> Result<Self, PduError>;
    /// Writes flags and fields into `h` (opcode, I bit and lengths are the caller's).
    fn encode(&self, h: &mut Header) -> Encoded;
    /// The I bit.
    fn immediate(&self) -> bool {
        false
    }
}

pub(crate) fn expect_no_data(opcode: u8, data: &Bytes) -> Result<(), PduError> {
    if data.is_empty() {
        Ok(())
    } else {
        Err(PduError::UnexpectedData(opcode))
    }
}

/// Every PDU of RFC 7143 that Spindle sends or receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pdu {
    // Initiator to target.
    NopOut(NopOut),
    ScsiCommand(ScsiCommand),
    TaskMgmtRequest(TaskMgmtRequest),
    LoginRequest(LoginRequest),
    TextRequest(TextRequest),
    DataOut(DataOut),
    LogoutRequest(LogoutRequest),
    Snack(SnackRequest),
    // Target to initiator.
    NopIn(NopIn),
    ScsiResponse(ScsiResponse),
    TaskMgmtResponse(TaskMgmtResponse),
    LoginResponse(LoginResponse),
    TextResponse(TextResponse),
    DataIn(DataIn),
    LogoutResponse(LogoutResponse),
    R2t(R2t),
    AsyncMessage(AsyncMessage),
    Reject(Reject),
}

/// Applies `$f` to the inner struct of every variant, with its type in scope as `$t`.
macro_rules! each_variant {
    ($pdu:expr, $v:ident => $body:expr) => {
        match $pdu {
            Pdu::NopOut($v) => $body,
            Pdu::ScsiCommand($v) => $body,
            Pdu::TaskMgmtRequest($v) => $body,
            Pdu::LoginRequest($v) => $body,
            Pdu::TextRequest($v) => $body,
            Pdu::DataOut($v) => $body,
            Pdu::LogoutRequest($v) => $body,
            Pdu::Snack($v) => $body,
            Pdu::NopIn($v) => $body,
            Pdu::ScsiResponse($v) => $body,
            Pdu::TaskMgmtResponse($v) => $body,
            Pdu::LoginResponse($v) => $body,
            Pdu::TextResponse($v) => $body,
            Pdu::DataIn($v) => $body,
            Pdu::LogoutResponse($v) => $body,
            Pdu::R2t($v) => $body,
            Pdu::AsyncMessage($v) => $body,
            Pdu::Reject($v) => $body,
        }
    };
}

fn body_opcode<B: Body>(_: &B) -> u8 {
    B::OPCODE
}

impl Pdu {
    /// Decodes a PDU from its BHS and the [`BhsInfo::frame_len`] bytes that followed it,
    /// checking the digests that are on. The data segment is a slice of `rest` (no copy).
    pub fn decode(bhs: &[u8; BHS_LEN], rest: Bytes, digests: Digests) -> Result<Self, PduError> {
        let h = Header::from_bytes(bhs);
        let info = BhsInfo {
            opcode: h.opcode(),
            immediate: h.immediate(),
            total_ahs_len: h.total_ahs_len(),
            data_segment_len: h.data_segment_len(),
        };
        let expected = info.frame_len(digests);
        if rest.len() != expected {
            return Err(PduError::FrameLength {
                expected,
                got: rest.len(),
            });
        }
        let ahs_end = info.total_ahs_len;
        let ahs = rest.get(..ahs_end).unwrap_or_default();
        let mut pos = ahs_end;
        if digests.header {
            let received = rest.get(pos..pos + DIGEST_LEN).unwrap_or_default();
            if !digest::verify(&[bhs, ahs], received) {
                return Err(PduError::HeaderDigest);
            }
            pos += DIGEST_LEN;
        }
        let data_end = pos + info.data_segment_len;
        let data = rest.slice(pos..data_end);
        if digests.data && info.data_segment_len > 0 {
            let padded_end = pos + padded(info.data_segment_len);
            let with_pad = rest.get(pos..padded_end).unwrap_or_default();
            let received = rest.get(padded_end..).unwrap_or_default();
            if !digest::verify(&[with_pad], received) {
                return Err(PduError::DataDigest);
            }
        }
        if !ahs.is_empty() && info.opcode != opcode::SCSI_COMMAND {
            return Err(PduError::UnexpectedAhs(info.opcode));
        }
        Self::decode_body(&h, ahs, data)
    }

    fn decode_body(h: &Header, ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        Ok(match h.opcode() {
            opcode::NOP_OUT => Self::NopOut(NopOut::decode(h, ahs, data)?),
            opcode::SCSI_COMMAND => Self::ScsiCommand(ScsiCommand::decode(h, ahs, data)?),
            opcode::TASK_MGMT_REQUEST => {
                Self::TaskMgmtRequest(TaskMgmtRequest::decode(h, ahs, data)?)
            }
            opcode::LOGIN_REQUEST => Self::LoginRequest(LoginRequest::decode(h, ahs, data)?),
            opcode::TEXT_REQUEST => Self::TextRequest(TextRequest::decode(h, ahs, data)?),
            opcode::DATA_OUT => Self::DataOut(DataOut::decode(h, ahs, data)?),
            opcode::LOGOUT_REQUEST => Self::LogoutRequest(LogoutRequest::decode(h, ahs, data)?),
            opcode::SNACK_REQUEST => Self::Snack(SnackRequest::decode(h, ahs, data)?),
            opcode::NOP_IN => Self::NopIn(NopIn::decode(h, ahs, data)?),
            opcode::SCSI_RESPONSE => Self::ScsiResponse(ScsiResponse::decode(h, ahs, data)?),
            opcode::TASK_MGMT_RESPONSE => {
                Self::TaskMgmtResponse(TaskMgmtResponse::decode(h, ahs, data)?)
            }
            opcode::LOGIN_RESPONSE => Self::LoginResponse(LoginResponse::decode(h, ahs, data)?),
            opcode::TEXT_RESPONSE => Self::TextResponse(TextResponse::decode(h, ahs, data)?),
            opcode::DATA_IN => Self::DataIn(DataIn::decode(h, ahs, data)?),
            opcode::LOGOUT_RESPONSE => Self::LogoutResponse(LogoutResponse::decode(h, ahs, data)?),
            opcode::R2T => Self::R2t(R2t::decode(h, ahs, data)?),
            opcode::ASYNC_MESSAGE => Self::AsyncMessage(AsyncMessage::decode(h, ahs, data)?),
            opcode::REJECT => Self::Reject(Reject::decode(h, ahs, data)?),
            other => return Err(PduError::UnknownOpcode(other)),
        })
    }

    /// Decodes the first PDU of `buf` and removes its bytes, or returns `Ok(None)` (leaving
    /// `buf` alone) when `buf` does not yet hold a whole PDU. `max_data_segment_len` is the
    /// MaxRecvDataSegmentLength this side declared.
    pub fn decode_from(
        buf: &mut BytesMut,
        digests: Digests,
        max_data_segment_len: usize,
    ) -> Result<Option<Self>, PduError> {
        let Some(bhs) = buf.get(..BHS_LEN) else {
            return Ok(None);
        };
        let mut header = [0u8; BHS_LEN];
        header.copy_from_slice(bhs);
        let info = BhsInfo::parse(&header, max_data_segment_len)?;
        let total = BHS_LEN + info.frame_len(digests);
        if buf.len() < total {
            return Ok(None);
        }
        let mut frame = buf.split_to(total).freeze();
        let rest = frame.split_off(BHS_LEN);
        Self::decode(&header, rest, digests).map(Some)
    }

    /// The opcode of this PDU.
    pub fn opcode(&self) -> u8 {
        each_variant!(self, b => body_opcode(b))
    }

    /// The Initiator Task Tag ([`RESERVED_TAG`] for Async Message and Reject).
    pub fn itt(&self) -> u32 {
        self.encode_header_only().itt()
    }

    fn encode_header_only(&self) -> Header {
        let mut h = Header::new(self.opcode(), each_variant!(self, b => b.immediate()));
        each_variant!(self, b => { b.encode(&mut h); });
        h
    }

    /// Encodes the PDU. Fails only if the data segment is longer than 2^24 - 1 bytes or the
    /// CDB too long for an AHS.
    pub fn encode(&self, digests: Digests) -> Result<Frame, PduError> {
        let mut h = Header::new(self.opcode(), each_variant!(self, b => b.immediate()));
        let Encoded { ahs, data } = each_variant!(self, b => b.encode(&mut h));
        h.set_lengths(ahs.len(), data.len())?;
        let mut header = BytesMut::with_capacity(BHS_LEN + ahs.len() + DIGEST_LEN);
        header.extend_from_slice(&h.0);
        header.extend_from_slice(&ahs);
        if digests.header {
            let d = digest::digest(&[&header]);
            header.extend_from_slice(&d);
        }
        let pad_len = padded(data.len()) - data.len();
        let mut trailer = [0u8; 3 + DIGEST_LEN];
        let mut trailer_len = pad_len;
        if digests.data && !data.is_empty() {
            let pad = [0u8; 3];
            let d = digest::digest(&[&data, pad.get(..pad_len).unwrap_or_default()]);
            if let Some(dst) = trailer.get_mut(pad_len..pad_len + DIGEST_LEN) {
                dst.copy_from_slice(&d);
            }
            trailer_len += DIGEST_LEN;
        }
        Ok(Frame {
            header: header.freeze(),
            data,
            trailer,
            trailer_len,
        })
    }
}

/// An encoded PDU, in three parts for a vectored write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// BHS, AHS and header digest.
    pub header: Bytes,
    /// The data segment, unpadded (shares memory with the PDU's data).
    pub data: Bytes,
    trailer: [u8; 3 + DIGEST_LEN],
    trailer_len: usize,
}

impl Frame {
    /// Padding and data digest that follow the data segment.
    pub fn trailer(&self) -> &[u8] {
        self.trailer.get(..self.trailer_len).unwrap_or_default()
    }

    /// Total bytes on the wire.
    pub fn len(&self) -> usize {
        self.header.len() + self.data.len() + self.trailer_len
    }

    /// Always false: a frame holds at least a BHS.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The three parts in wire order, for `writev`.
    pub fn parts(&self) -> [&[u8]; 3] {
        [&self.header, &self.data, self.trailer()]
    }

    /// Appends the whole frame to `out` (copies the data; for small PDUs and tests).
    pub fn write_to(&self, out: &mut BytesMut) {
        out.reserve(self.len());
        for part in self.parts() {
            out.extend_from_slice(part);
        }
    }
}
