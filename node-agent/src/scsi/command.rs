//! What a CDB asks for, decoded once: the typed [`Command`] with its parameters, and
//! [`Decoded`], the value the engine, its metrics and the logical unit all take (the opcode
//! table row, the command or the sense data a malformed CDB fails with).
//!
//! A command is looked up in the opcode table and decoded once, when it arrives; everything
//! after that (the Data-Out length the iSCSI layer compares with the Expected Data Transfer
//! Length, the unit attention and reservation checks, the dispatch, the metrics) reads the
//! decoded value.

use super::cdb;
use super::opcodes::{self, Access, Dir, Medium, OpInfo};
use super::sense::Sense;

/// A block-addressed data command (READ, WRITE, VERIFY, WRITE AND VERIFY, COMPARE AND WRITE,
/// ORWRITE, PRE-FETCH, SYNCHRONIZE CACHE): where, how much, and its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rw {
    /// First logical block.
    pub lba: u64,
    /// Number of logical blocks (already mapped: READ/WRITE(6) length 0 means 256).
    pub blocks: u32,
    /// Disable page out (a cache hint; accepted and ignored).
    pub dpo: bool,
    /// Force unit access.
    pub fua: bool,
    /// Byte check mode of VERIFY / WRITE AND VERIFY (0: none, 1: compare all, 3: one block).
    pub bytchk: u8,
    /// IMMED bit (SYNCHRONIZE CACHE, PRE-FETCH).
    pub immed: bool,
    /// Group number (accepted and ignored).
    pub group: u8,
}

/// WRITE SAME 10/16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WriteSame {
    /// First logical block.
    pub lba: u64,
    /// Number of blocks; 0 means "to the end of the medium" (limited by the block limits page).
    pub blocks: u32,
    /// Deallocate instead of writing, if possible.
    pub unmap: bool,
    /// ANCHOR bit.
    pub anchor: bool,
    /// No Data-Out buffer: the pattern is a block of zeros (WRITE SAME 16 only).
    pub ndob: bool,
    /// Group number.
    pub group: u8,
}

/// MODE SENSE 6/10.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModeSense {
    /// The 10-byte form (8-byte header).
    pub ten: bool,
    /// Disable block descriptors.
    pub dbd: bool,
    /// Long LBA block descriptors accepted (MODE SENSE 10).
    pub llbaa: bool,
    /// Page control: 0 current, 1 changeable, 2 default, 3 saved.
    pub pc: u8,
    /// Page code (3Fh = all).
    pub page: u8,
    /// Subpage code (FFh = all).
    pub subpage: u8,
    /// Allocation length.
    pub alloc: u16,
}

/// The commands this target decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    TestUnitReady,
    RequestSense {
        desc: bool,
        alloc: u8,
    },
    Inquiry {
        evpd: bool,
        page: u8,
        alloc: u16,
    },
    ModeSense(ModeSense),
    ModeSelect {
        ten: bool,
        pf: bool,
        sp: bool,
        len: u16,
    },
    StartStopUnit {
        immed: bool,
        power_condition: u8,
        no_flush: bool,
        loej: bool,
        start: bool,
    },
    PreventAllow {
        prevent: u8,
    },
    ReportLuns {
        select: u8,
        alloc: u32,
    },
    ReportOpcodes {
        rctd: bool,
        options: u8,
        opcode: u8,
        sa: u16,
        alloc: u32,
    },
    ReportTmf {
        repd: bool,
        alloc: u32,
    },
    ReportTargetPortGroups {
        format: u8,
        alloc: u32,
    },
    Reserve,
    Release,
    PrIn {
        sa: u8,
        alloc: u16,
    },
    PrOut {
        sa: u8,
        scope: u8,
        kind: u8,
        len: u32,
    },
    Read(Rw),
    Write(Rw),
    Verify(Rw),
    WriteVerify(Rw),
    CompareAndWrite(Rw),
    OrWrite(Rw),
    SyncCache(Rw),
    PreFetch(Rw),
    ReadCapacity10 {
        lba: u32,
        pmi: bool,
    },
    ReadCapacity16 {
        alloc: u32,
    },
    GetLbaStatus {
        lba: u64,
        alloc: u32,
    },
    Unmap {
        anchor: bool,
        len: u16,
    },
    WriteSame(WriteSame),
    ExtendedCopy {
        len: u32,
    },
    ReceiveCopyResults {
        sa: u8,
        list_id: u8,
        alloc: u32,
    },
    /// SANITIZE (SBC-4 5.30): the service action, IMMED, AUSE, parameter list length.
    Sanitize {
        sa: u8,
        immed: bool,
        ause: bool,
        len: u16,
    },
    ReadDefectData {
        twelve: bool,
        plist: bool,
        glist: bool,
        format: u8,
        alloc: u32,
    },
}

/// A CDB looked up in the opcode table and decoded, once.
#[derive(Clone, Copy, Debug)]
pub struct Decoded {
    /// The opcode table row, or the sense an unknown opcode or service action fails with.
    pub op: Result<&'static OpInfo, Sense>,
    /// The typed command, or the sense data the CDB fails with (the lookup's, when `op` is
    /// an error).
    pub command: Result<Command, Sense>,
}

impl Decoded {
    /// Looks up and decodes `cdb` for a unit that is `thin` or not. An unknown opcode fails
    /// INVALID COMMAND OPERATION CODE, an unknown service action or a CDB shorter than its
    /// opcode's length INVALID FIELD IN CDB, as do the fields each decoder checks.
    pub fn new(cdb: &[u8], thin: bool) -> Self {
        let op = opcodes::lookup(cdb, thin);
        let command = op.and_then(|op| decode_row(op, cdb));
        Decoded { op, command }
    }

    /// The command's name, for logs and metrics (`UNKNOWN` without a table row).
    pub fn name(&self) -> &'static str {
        self.op.map_or("UNKNOWN", |op| op.name)
    }

    /// Which way the command's data flows.
    pub fn dir(&self) -> Dir {
        self.op.map_or(Dir::None, |op| op.dir)
    }

    /// Whether the command reads or writes logical blocks as its data (READ, WRITE): its
    /// bytes count as the LUN's traffic.
    pub fn medium_io(&self) -> bool {
        self.op.is_ok_and(|op| op.medium == Medium::Io)
    }

    /// Whether the command may change the medium or the unit's state (the opcode table's
    /// write access): a snapshot's barrier holds these and lets the others run.
    pub fn may_write(&self) -> bool {
        self.op.is_ok_and(|op| op.access == Access::Write)
    }

    /// How many bytes of Data-Out the command asks for, per its CDB, on a unit with blocks of
    /// `block_size` bytes (None: the command takes no Data-Out or does not decode).
    pub fn data_out_len(&self, block_size: u32) -> Option<u32> {
        use Command as C;
        let bs = block_size;
        let blocks = |n: u32| n.checked_mul(bs);
        match self.command.as_ref().ok()? {
            C::Write(rw) | C::OrWrite(rw) | C::WriteVerify(rw) => blocks(rw.blocks),
            C::Verify(rw) => match rw.bytchk {
                0 => Some(0),
                3 => Some(bs),
                _ => blocks(rw.blocks),
            },
            C::CompareAndWrite(rw) => blocks(rw.blocks.checked_mul(2)?),
            C::WriteSame(ws) => Some(if ws.ndob { 0 } else { bs }),
            C::ModeSelect { len, .. } => Some((*len).into()),
            C::Unmap { len, .. } | C::Sanitize { len, .. } => Some((*len).into()),
            C::PrOut { len, .. } | C::ExtendedCopy { len } => Some(*len),
            _ => None,
        }
    }
}

/// Decodes a CDB with its table row: a CDB shorter than the opcode's length is an INVALID
/// FIELD IN CDB, then the control byte and the row's decoder are checked.
fn decode_row(op: &OpInfo, cdb: &[u8]) -> Result<Command, Sense> {
    let len = op.cdb_len();
    if cdb.len() < len {
        return Err(Sense::invalid_cdb_field(0, None));
    }
    cdb::check_control(cdb, len)?;
    (op.decode)(cdb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::cdb::tests::field;
    use crate::scsi::sense::INVALID_COMMAND_OPERATION_CODE;

    #[test]
    fn a_read_carries_its_row_and_fields() {
        let d = Decoded::new(&[0x28, 0x08, 0, 0, 0, 7, 0, 0, 2, 0], false);
        assert_eq!(d.name(), "READ(10)");
        assert_eq!(d.dir(), Dir::In);
        assert!(d.medium_io());
        assert_eq!(
            d.command,
            Ok(Command::Read(Rw {
                lba: 7,
                blocks: 2,
                fua: true,
                ..Rw::default()
            }))
        );
        assert_eq!(d.data_out_len(512), None);
        let w = Decoded::new(&[0x2A, 0, 0, 0, 0, 7, 0, 0, 2, 0], false);
        assert_eq!((w.dir(), w.medium_io()), (Dir::Out, true));
        assert_eq!(w.data_out_len(4096), Some(8192));
        // Writes that are not plain WRITEs are not counted as the LUN's traffic.
        let wv = Decoded::new(&[0x2E, 0, 0, 0, 0, 7, 0, 0, 2, 0], false);
        assert_eq!((wv.name(), wv.medium_io()), ("WRITE AND VERIFY(10)", false));
        assert_eq!(wv.data_out_len(512), Some(1024));
    }

    #[test]
    fn an_unknown_opcode_has_no_row_and_fails_with_the_lookup_sense() {
        for cdb in [&[0xC7u8, 0, 0, 0, 0, 0][..], &[]] {
            let d = Decoded::new(cdb, true);
            assert_eq!(d.op.unwrap_err().asc(), INVALID_COMMAND_OPERATION_CODE);
            assert_eq!(d.command.unwrap_err(), d.op.unwrap_err());
            assert_eq!(
                (d.name(), d.dir(), d.medium_io()),
                ("UNKNOWN", Dir::None, false)
            );
            assert_eq!(d.data_out_len(512), None);
        }
        // UNMAP exists on a thin unit only.
        let unmap = [0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0];
        assert!(Decoded::new(&unmap, false).op.is_err());
        assert_eq!(Decoded::new(&unmap, true).data_out_len(512), Some(24));
    }

    #[test]
    fn a_malformed_cdb_keeps_its_row_and_fails_with_a_field_pointer() {
        // Unknown service action of a known opcode.
        let d = Decoded::new(
            &[0x9E, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            true,
        );
        assert_eq!(field(d.op.unwrap_err()), (1, Some(4)));
        // Short CDB: the row is known, the command fails at byte 0.
        let d = Decoded::new(&[0x2A, 0, 0], false);
        assert_eq!(d.name(), "WRITE(10)");
        assert_eq!(field(d.command.unwrap_err()), (0, None));
        assert_eq!(d.data_out_len(512), None);
        // NACA and LINK in the control byte.
        let d = Decoded::new(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0x04], false);
        assert_eq!(field(d.command.unwrap_err()), (9, Some(2)));
        let d = Decoded::new(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0x01], false);
        assert_eq!(field(d.command.unwrap_err()), (9, Some(0)));
        // A field the decoder refuses (RDPROTECT).
        let d = Decoded::new(&[0x28, 0x20, 0, 0, 0, 0, 0, 0, 1, 0], false);
        assert_eq!(d.dir(), Dir::In);
        assert_eq!(field(d.command.unwrap_err()), (1, Some(7)));
    }
}
