//! Pure CDB decoding: bytes of a command descriptor block become a typed
//! [`Command`](super::command::Command).
//!
//! Each decoder checks the fields of one CDB layout and answers ILLEGAL REQUEST, INVALID
//! FIELD IN CDB (with a field pointer) for values this target does not support: [`spc`] the
//! primary commands (SPC-4), [`sbc`] the block commands (SBC-3). The opcode table in
//! [`super::opcodes`] says which decoder handles which opcode and service action, and
//! [`super::command::Decoded`] checks the CDB length and the control byte before a decoder
//! runs.

pub mod sbc;
pub mod spc;

use super::command::Command;
use super::sense::Sense;

/// The result of a decoder.
pub type Parsed = Result<Command, Sense>;

/// Panic-free big-endian field access on a CDB (out-of-range bytes read as zero; the opcode
/// table has already checked the length).
#[derive(Clone, Copy)]
pub(super) struct C<'a>(&'a [u8]);

impl C<'_> {
    pub(super) fn b(self, i: usize) -> u8 {
        self.0.get(i).copied().unwrap_or(0)
    }
    pub(super) fn bit(self, i: usize, bit: u8) -> bool {
        self.b(i) & (1 << bit) != 0
    }
    pub(super) fn be(self, at: usize, n: usize) -> u64 {
        (at..at + n).fold(0u64, |acc, i| (acc << 8) | u64::from(self.b(i)))
    }
    pub(super) fn be16(self, at: usize) -> u16 {
        self.be(at, 2) as u16
    }
    pub(super) fn be32(self, at: usize) -> u32 {
        self.be(at, 4) as u32
    }
    pub(super) fn be64(self, at: usize) -> u64 {
        self.be(at, 8)
    }
    pub(super) fn group(self, at: usize) -> u8 {
        self.b(at) & 0x1F
    }
}

/// Rejects a non-zero RDPROTECT/WRPROTECT/VRPROTECT/ORPROTECT field (byte 1, bits 7-5): this
/// target has no protection information.
pub(super) fn no_protect(c: C) -> Result<(), Sense> {
    if c.b(1) & 0xE0 != 0 {
        return Err(Sense::invalid_cdb_field(1, Some(7)));
    }
    Ok(())
}

/// Checks the control byte (the last byte): NACA and the obsolete LINK bit are unsupported.
pub fn check_control(cdb: &[u8], len: usize) -> Result<(), Sense> {
    let at = len.saturating_sub(1);
    let control = C(cdb).b(at);
    if control & 0x04 != 0 {
        return Err(Sense::invalid_cdb_field(at as u16, Some(2)));
    }
    if control & 0x01 != 0 {
        return Err(Sense::invalid_cdb_field(at as u16, Some(0)));
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::scsi::sense::{INVALID_FIELD_IN_CDB, Sks};

    /// The field pointer of an INVALID FIELD IN CDB.
    pub(in crate::scsi) fn field(e: Sense) -> (u16, Option<u8>) {
        assert_eq!(e.asc(), INVALID_FIELD_IN_CDB);
        match e.sks {
            Some(Sks::Field {
                cdb: true,
                byte,
                bit,
            }) => (byte, bit),
            other => panic!("no CDB field pointer: {other:?}"),
        }
    }

    #[test]
    fn control_byte_naca_and_link() {
        assert!(check_control(&[0, 0, 0, 0, 0, 0], 6).is_ok());
        assert_eq!(
            field(check_control(&[0, 0, 0, 0, 0, 4], 6).unwrap_err()),
            (5, Some(2))
        );
        assert_eq!(
            field(check_control(&[0, 0, 0, 0, 0, 1], 6).unwrap_err()),
            (5, Some(0))
        );
    }

    #[test]
    fn decoders_never_panic_on_short_input() {
        let all: &[fn(&[u8]) -> Parsed] = &[
            sbc::read6,
            sbc::read10,
            sbc::read12,
            sbc::read16,
            sbc::write16,
            sbc::verify16,
            sbc::write_verify12,
            spc::inquiry,
            spc::mode_sense10,
            spc::pr_out,
            spc::report_opcodes,
            sbc::get_lba_status,
            sbc::compare_and_write,
            sbc::read_defect12,
            sbc::write_same10,
            spc::start_stop_unit,
            sbc::sanitize,
        ];
        for d in all {
            for len in 0..4 {
                let _ = d(&[0xFFu8; 16][..len]);
            }
        }
    }
}
