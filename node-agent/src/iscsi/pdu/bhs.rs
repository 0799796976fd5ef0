//! The Basic Header Segment: opcode and lengths for framing, and typed field access.

use super::{Digests, PduError};
use crate::iscsi::digest::DIGEST_LEN;

/// Length of the Basic Header Segment.
pub const BHS_LEN: usize = 48;
/// Largest AHS a BHS can announce (TotalAHSLength counts 4-byte words in one byte).
pub const MAX_AHS_LEN: usize = 255 * 4;
/// Largest data segment a BHS can announce (DataSegmentLength is 24 bits).
pub const MAX_DATA_SEGMENT_LEN: usize = (1 << 24) - 1;

/// Opcodes (RFC 7143 §11.2.1.2).
pub mod opcode {
    pub const NOP_OUT: u8 = 0x00;
    pub const SCSI_COMMAND: u8 = 0x01;
    pub const TASK_MGMT_REQUEST: u8 = 0x02;
    pub const LOGIN_REQUEST: u8 = 0x03;
    pub const TEXT_REQUEST: u8 = 0x04;
    pub const DATA_OUT: u8 = 0x05;
    pub const LOGOUT_REQUEST: u8 = 0x06;
    pub const SNACK_REQUEST: u8 = 0x10;
    pub const NOP_IN: u8 = 0x20;
    pub const SCSI_RESPONSE: u8 = 0x21;
    pub const TASK_MGMT_RESPONSE: u8 = 0x22;
    pub const LOGIN_RESPONSE: u8 = 0x23;
    pub const TEXT_RESPONSE: u8 = 0x24;
    pub const DATA_IN: u8 = 0x25;
    pub const LOGOUT_RESPONSE: u8 = 0x26;
    pub const R2T: u8 = 0x31;
    pub const ASYNC_MESSAGE: u8 = 0x32;
    pub const REJECT: u8 = 0x3f;
}

const IMMEDIATE_BIT: u8 = 0x40;
const OPCODE_MASK: u8 = 0x3f;

/// What the pump needs from a received BHS to read the rest of the PDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BhsInfo {
    /// The opcode (6 bits), known or not: an unknown one is reported by [`super::Pdu::decode`]
    /// so the PDU can be read whole and answered with a Reject.
    pub opcode: u8,
    /// The I bit (immediate delivery).
    pub immediate: bool,
    /// AHS length in bytes (a multiple of 4).
    pub total_ahs_len: usize,
    /// Data segment length in bytes, without padding.
    pub data_segment_len: usize,
}

impl BhsInfo {
    /// Reads opcode and lengths from a BHS. `max_data_segment_len` is the
    /// MaxRecvDataSegmentLength this side declared (8192 during login); a longer data segment
    /// is a protocol error.
    pub fn parse(bhs: &[u8; BHS_LEN], max_data_segment_len: usize) -> Result<Self, PduError> {
        let h = Header::from_bytes(bhs);
        let data_segment_len = h.data_segment_len();
        if data_segment_len > max_data_segment_len {
            return Err(PduError::DataSegmentTooLong {
                len: data_segment_len,
                max: max_data_segment_len,
            });
        }
        Ok(Self {
            opcode: h.opcode(),
            immediate: h.immediate(),
            total_ahs_len: h.total_ahs_len(),
            data_segment_len,
        })
    }

    /// Exact number of bytes that follow the BHS on the wire: AHS, header digest, data segment,
    /// padding and data digest.
    pub fn frame_len(&self, digests: Digests) -> usize {
        let header_digest = if digests.header { DIGEST_LEN } else { 0 };
        let data = if self.data_segment_len == 0 {
            0
        } else {
            padded(self.data_segment_len) + if digests.data { DIGEST_LEN } else { 0 }
        };
        self.total_ahs_len + header_digest + data
    }
}

/// `len` rounded up to a multiple of 4.
pub const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// A BHS as bytes, with typed access to its fields at fixed offsets. Offsets are checked at
/// compile time, so no access can panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header(pub(crate) [u8; BHS_LEN]);

impl Header {
    pub(crate) fn from_bytes(bytes: &[u8; BHS_LEN]) -> Self {
        Self(*bytes)
    }

    pub(crate) fn new(opcode: u8, immediate: bool) -> Self {
        let mut h = Self([0; BHS_LEN]);
        h.0[0] = (opcode & OPCODE_MASK) | if immediate { IMMEDIATE_BIT } else { 0 };
        h
    }

    pub(crate) fn opcode(&self) -> u8 {
        self.0[0] & OPCODE_MASK
    }

    pub(crate) fn immediate(&self) -> bool {
        self.0[0] & IMMEDIATE_BIT != 0
    }

    pub(crate) fn flags(&self) -> u8 {
        self.0[1]
    }

    pub(crate) fn set_flags(&mut self, flags: u8) {
        self.0[1] = flags;
    }

    pub(crate) fn total_ahs_len(&self) -> usize {
        usize::from(self.0[4]) * 4
    }

    pub(crate) fn data_segment_len(&self) -> usize {
        (usize::from(self.0[5]) << 16) | (usize::from(self.0[6]) << 8) | usize::from(self.0[7])
    }

    /// Sets TotalAHSLength (`ahs_len` bytes, a multiple of 4, at most [`MAX_AHS_LEN`]) and
    /// DataSegmentLength (at most [`MAX_DATA_SEGMENT_LEN`]).
    pub(crate) fn set_lengths(&mut self, ahs_len: usize, data_len: usize) -> Result<(), PduError> {
        if ahs_len > MAX_AHS_LEN || !ahs_len.is_multiple_of(4) {
            return Err(PduError::AhsTooLong(ahs_len));
        }
        if data_len > MAX_DATA_SEGMENT_LEN {
            return Err(PduError::DataSegmentTooLong {
                len: data_len,
                max: MAX_DATA_SEGMENT_LEN,
            });
        }
        self.0[4] = u8::try_from(ahs_len / 4).unwrap_or(u8::MAX);
        let [_, a, b, c] = u32::try_from(data_len).unwrap_or(0).to_be_bytes();
        self.0[5] = a;
        self.0[6] = b;
        self.0[7] = c;
        Ok(())
    }

    pub(crate) fn u8_at<const OFF: usize>(&self) -> u8 {
        const { assert!(OFF < BHS_LEN) };
        self.0[OFF]
    }

    pub(crate) fn set_u8_at<const OFF: usize>(&mut self, v: u8) {
        const { assert!(OFF < BHS_LEN) };
        self.0[OFF] = v;
    }

    pub(crate) fn u16_at<const OFF: usize>(&self) -> u16 {
        const { assert!(OFF + 2 <= BHS_LEN) };
        u16::from_be_bytes([self.0[OFF], self.0[OFF + 1]])
    }

    pub(crate) fn set_u16_at<const OFF: usize>(&mut self, v: u16) {
        const { assert!(OFF + 2 <= BHS_LEN) };
        self.0[OFF..OFF + 2].copy_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u32_at<const OFF: usize>(&self) -> u32 {
        const { assert!(OFF + 4 <= BHS_LEN) };
        u32::from_be_bytes([
            self.0[OFF],
            self.0[OFF + 1],
            self.0[OFF + 2],
            self.0[OFF + 3],
        ])
    }

    pub(crate) fn set_u32_at<const OFF: usize>(&mut self, v: u32) {
        const { assert!(OFF + 4 <= BHS_LEN) };
        self.0[OFF..OFF + 4].copy_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn bytes_at<const OFF: usize, const N: usize>(&self) -> [u8; N] {
        const { assert!(OFF + N <= BHS_LEN) };
        let mut out = [0u8; N];
        out.copy_from_slice(&self.0[OFF..OFF + N]);
        out
    }

    pub(crate) fn set_bytes_at<const OFF: usize, const N: usize>(&mut self, v: &[u8; N]) {
        const { assert!(OFF + N <= BHS_LEN) };
        self.0[OFF..OFF + N].copy_from_slice(v);
    }

    /// The LUN field (bytes 8..16) as a big-endian number of its 8 raw bytes.
    pub(crate) fn lun(&self) -> u64 {
        u64::from_be_bytes(self.bytes_at::<8, 8>())
    }

    pub(crate) fn set_lun(&mut self, lun: u64) {
        self.set_bytes_at::<8, 8>(&lun.to_be_bytes());
    }

    /// Initiator Task Tag (bytes 16..20), the same place in every PDU.
    pub(crate) fn itt(&self) -> u32 {
        self.u32_at::<16>()
    }

    pub(crate) fn set_itt(&mut self, itt: u32) {
        self.set_u32_at::<16>(itt);
    }
}
