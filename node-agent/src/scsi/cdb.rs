//! Pure CDB decoding: bytes of a command descriptor block become a typed [`Command`].
//!
//! Each decoder here checks the fields of one CDB layout and answers ILLEGAL REQUEST,
//! INVALID FIELD IN CDB (with a field pointer) for values this target does not support. The
//! opcode table in [`super::opcodes`] says which decoder handles which opcode and service
//! action, and checks the CDB length before a decoder runs.

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
    ReadDefectData {
        twelve: bool,
        plist: bool,
        glist: bool,
        format: u8,
        alloc: u32,
    },
}

/// The result of a decoder.
pub type Decoded = Result<Command, Sense>;

/// Panic-free big-endian field access on a CDB (out-of-range bytes read as zero; the opcode
/// table has already checked the length).
#[derive(Clone, Copy)]
struct C<'a>(&'a [u8]);

impl C<'_> {
    fn b(self, i: usize) -> u8 {
        self.0.get(i).copied().unwrap_or(0)
    }
    fn bit(self, i: usize, bit: u8) -> bool {
        self.b(i) & (1 << bit) != 0
    }
    fn be(self, at: usize, n: usize) -> u64 {
        (at..at + n).fold(0u64, |acc, i| (acc << 8) | u64::from(self.b(i)))
    }
    fn be16(self, at: usize) -> u16 {
        self.be(at, 2) as u16
    }
    fn be32(self, at: usize) -> u32 {
        self.be(at, 4) as u32
    }
    fn be64(self, at: usize) -> u64 {
        self.be(at, 8)
    }
    fn group(self, at: usize) -> u8 {
        self.b(at) & 0x1F
    }
}

/// Rejects a non-zero RDPROTECT/WRPROTECT/VRPROTECT/ORPROTECT field (byte 1, bits 7-5): this
/// target has no protection information.
fn no_protect(c: C) -> Result<(), Sense> {
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

pub fn test_unit_ready(_: &[u8]) -> Decoded {
    Ok(Command::TestUnitReady)
}

pub fn request_sense(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    Ok(Command::RequestSense {
        desc: c.bit(1, 0),
        alloc: c.b(4),
    })
}

pub fn inquiry(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    if c.bit(1, 1) {
        // CMDDT is obsolete.
        return Err(Sense::invalid_cdb_field(1, Some(1)));
    }
    let evpd = c.bit(1, 0);
    let page = c.b(2);
    if !evpd && page != 0 {
        return Err(Sense::invalid_cdb_field(2, None));
    }
    Ok(Command::Inquiry {
        evpd,
        page,
        alloc: c.be16(3),
    })
}

pub fn mode_sense6(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    Ok(Command::ModeSense(ModeSense {
        ten: false,
        dbd: c.bit(1, 3),
        llbaa: false,
        pc: c.b(2) >> 6,
        page: c.b(2) & 0x3F,
        subpage: c.b(3),
        alloc: u16::from(c.b(4)),
    }))
}

pub fn mode_sense10(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    Ok(Command::ModeSense(ModeSense {
        ten: true,
        dbd: c.bit(1, 3),
        llbaa: c.bit(1, 4),
        pc: c.b(2) >> 6,
        page: c.b(2) & 0x3F,
        subpage: c.b(3),
        alloc: c.be16(7),
    }))
}

pub fn mode_select6(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    Ok(Command::ModeSelect {
        ten: false,
        pf: c.bit(1, 4),
        sp: c.bit(1, 0),
        len: u16::from(c.b(4)),
    })
}

pub fn mode_select10(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    Ok(Command::ModeSelect {
        ten: true,
        pf: c.bit(1, 4),
        sp: c.bit(1, 0),
        len: c.be16(7),
    })
}

pub fn start_stop_unit(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    let power_condition = c.b(4) >> 4;
    // Only ACTIVE/IDLE/STANDBY and their timers (0..=3, 7, 0Ah, 0Bh) exist; others reserved.
    if !matches!(power_condition, 0x0..=0x3 | 0x7 | 0xA | 0xB) {
        return Err(Sense::invalid_cdb_field(4, Some(7)));
    }
    Ok(Command::StartStopUnit {
        immed: c.bit(1, 0),
        power_condition,
        no_flush: c.bit(4, 2),
        loej: c.bit(4, 1),
        start: c.bit(4, 0),
    })
}

pub fn prevent_allow(cdb: &[u8]) -> Decoded {
    Ok(Command::PreventAllow {
        prevent: C(cdb).b(4) & 0x03,
    })
}

pub fn report_luns(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    Ok(Command::ReportLuns {
        select: c.b(2),
        alloc: c.be32(6),
    })
}

pub fn report_opcodes(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    let options = c.b(2) & 0x07;
    if options > 3 {
        return Err(Sense::invalid_cdb_field(2, Some(2)));
    }
    Ok(Command::ReportOpcodes {
        rctd: c.bit(2, 7),
        options,
        opcode: c.b(3),
        sa: c.be16(4),
        alloc: c.be32(6),
    })
}

pub fn report_tmf(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    Ok(Command::ReportTmf {
        repd: c.bit(2, 7),
        alloc: c.be32(6),
    })
}

pub fn report_target_port_groups(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    let format = c.b(1) >> 5;
    if format > 1 {
        return Err(Sense::invalid_cdb_field(1, Some(7)));
    }
    Ok(Command::ReportTargetPortGroups {
        format,
        alloc: c.be32(6),
    })
}

pub fn reserve(cdb: &[u8]) -> Decoded {
    third_party_check(cdb)?;
    Ok(Command::Reserve)
}

pub fn release(cdb: &[u8]) -> Decoded {
    third_party_check(cdb)?;
    Ok(Command::Release)
}

/// RESERVE/RELEASE: third-party and extent reservations are not supported.
fn third_party_check(cdb: &[u8]) -> Result<(), Sense> {
    let c = C(cdb);
    if c.b(0) & 0x40 != 0 {
        // 10-byte form: 3RDPTY (bit 4) and LONGID (bit 1).
        if c.bit(1, 4) {
            return Err(Sense::invalid_cdb_field(1, Some(4)));
        }
        if c.bit(1, 1) {
            return Err(Sense::invalid_cdb_field(1, Some(1)));
        }
    } else if c.b(1) & 0x1F != 0 {
        return Err(Sense::invalid_cdb_field(1, Some(4)));
    }
    Ok(())
}

pub fn pr_in(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    let sa = c.b(1) & 0x1F;
    if sa > 3 {
        return Err(Sense::invalid_cdb_field(1, Some(4)));
    }
    Ok(Command::PrIn {
        sa,
        alloc: c.be16(7),
    })
}

pub fn pr_out(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    let sa = c.b(1) & 0x1F;
    if sa > 7 {
        return Err(Sense::invalid_cdb_field(1, Some(4)));
    }
    Ok(Command::PrOut {
        sa,
        scope: c.b(2) >> 4,
        kind: c.b(2) & 0x0F,
        len: c.be32(5),
    })
}

/// READ(6)/WRITE(6): 21-bit LBA, length 0 means 256 blocks.
fn rw6(cdb: &[u8]) -> Rw {
    let c = C(cdb);
    let blocks = match c.b(4) {
        0 => 256,
        n => u32::from(n),
    };
    Rw {
        lba: c.be(1, 3) & 0x1F_FFFF,
        blocks,
        ..Rw::default()
    }
}

/// The 10-byte layout: flags in byte 1, LBA 2-5, group 6, length 7-8.
fn rw10(cdb: &[u8]) -> Result<Rw, Sense> {
    let c = C(cdb);
    no_protect(c)?;
    Ok(Rw {
        lba: u64::from(c.be32(2)),
        blocks: u32::from(c.be16(7)),
        dpo: c.bit(1, 4),
        fua: c.bit(1, 3),
        bytchk: (c.b(1) >> 1) & 0x03,
        immed: c.bit(1, 1),
        group: c.group(6),
    })
}

/// The 12-byte layout: LBA 2-5, length 6-9, group 10.
fn rw12(cdb: &[u8]) -> Result<Rw, Sense> {
    let c = C(cdb);
    no_protect(c)?;
    Ok(Rw {
        lba: u64::from(c.be32(2)),
        blocks: c.be32(6),
        dpo: c.bit(1, 4),
        fua: c.bit(1, 3),
        bytchk: (c.b(1) >> 1) & 0x03,
        immed: c.bit(1, 1),
        group: c.group(10),
    })
}

/// The 16-byte layout: LBA 2-9, length 10-13, group 14.
fn rw16(cdb: &[u8]) -> Result<Rw, Sense> {
    let c = C(cdb);
    no_protect(c)?;
    Ok(Rw {
        lba: c.be64(2),
        blocks: c.be32(10),
        dpo: c.bit(1, 4),
        fua: c.bit(1, 3),
        bytchk: (c.b(1) >> 1) & 0x03,
        immed: c.bit(1, 1),
        group: c.group(14),
    })
}

/// READ/WRITE flags: only DPO and FUA (and the obsolete FUA_NV) mean anything.
fn plain(mut rw: Rw) -> Rw {
    rw.bytchk = 0;
    rw.immed = false;
    rw
}

pub fn read6(cdb: &[u8]) -> Decoded {
    Ok(Command::Read(rw6(cdb)))
}
pub fn write6(cdb: &[u8]) -> Decoded {
    Ok(Command::Write(rw6(cdb)))
}
pub fn read10(cdb: &[u8]) -> Decoded {
    Ok(Command::Read(plain(rw10(cdb)?)))
}
pub fn write10(cdb: &[u8]) -> Decoded {
    Ok(Command::Write(plain(rw10(cdb)?)))
}
pub fn read12(cdb: &[u8]) -> Decoded {
    Ok(Command::Read(plain(rw12(cdb)?)))
}
pub fn write12(cdb: &[u8]) -> Decoded {
    Ok(Command::Write(plain(rw12(cdb)?)))
}
pub fn read16(cdb: &[u8]) -> Decoded {
    Ok(Command::Read(plain(rw16(cdb)?)))
}
pub fn write16(cdb: &[u8]) -> Decoded {
    Ok(Command::Write(plain(rw16(cdb)?)))
}

/// VERIFY: BYTCHK 0 (medium check), 1 (compare all) or 3 (compare each block with one).
fn verify(rw: Rw) -> Decoded {
    if rw.bytchk == 2 {
        return Err(Sense::invalid_cdb_field(1, Some(2)));
    }
    Ok(Command::Verify(Rw {
        fua: false,
        immed: false,
        ..rw
    }))
}
pub fn verify10(cdb: &[u8]) -> Decoded {
    verify(rw10(cdb)?)
}
pub fn verify12(cdb: &[u8]) -> Decoded {
    verify(rw12(cdb)?)
}
pub fn verify16(cdb: &[u8]) -> Decoded {
    verify(rw16(cdb)?)
}

/// WRITE AND VERIFY: BYTCHK 0 or 1 only.
fn write_verify(rw: Rw) -> Decoded {
    if rw.bytchk > 1 {
        return Err(Sense::invalid_cdb_field(1, Some(2)));
    }
    Ok(Command::WriteVerify(Rw {
        fua: false,
        immed: false,
        ..rw
    }))
}
pub fn write_verify10(cdb: &[u8]) -> Decoded {
    write_verify(rw10(cdb)?)
}
pub fn write_verify12(cdb: &[u8]) -> Decoded {
    write_verify(rw12(cdb)?)
}
pub fn write_verify16(cdb: &[u8]) -> Decoded {
    write_verify(rw16(cdb)?)
}

pub fn sync_cache10(cdb: &[u8]) -> Decoded {
    let rw = rw10(cdb)?;
    Ok(Command::SyncCache(Rw {
        dpo: false,
        fua: false,
        bytchk: 0,
        ..rw
    }))
}
pub fn sync_cache16(cdb: &[u8]) -> Decoded {
    let rw = rw16(cdb)?;
    Ok(Command::SyncCache(Rw {
        dpo: false,
        fua: false,
        bytchk: 0,
        ..rw
    }))
}
pub fn prefetch10(cdb: &[u8]) -> Decoded {
    let rw = rw10(cdb)?;
    Ok(Command::PreFetch(Rw {
        dpo: false,
        fua: false,
        bytchk: 0,
        ..rw
    }))
}
pub fn prefetch16(cdb: &[u8]) -> Decoded {
    let rw = rw16(cdb)?;
    Ok(Command::PreFetch(Rw {
        dpo: false,
        fua: false,
        bytchk: 0,
        ..rw
    }))
}

pub fn compare_and_write(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    no_protect(c)?;
    Ok(Command::CompareAndWrite(Rw {
        lba: c.be64(2),
        blocks: u32::from(c.b(13)),
        dpo: c.bit(1, 4),
        fua: c.bit(1, 3),
        group: c.group(14),
        ..Rw::default()
    }))
}

pub fn orwrite16(cdb: &[u8]) -> Decoded {
    Ok(Command::OrWrite(plain(rw16(cdb)?)))
}

pub fn read_capacity10(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    let pmi = c.bit(8, 0);
    let lba = c.be32(2);
    if !pmi && lba != 0 {
        return Err(Sense::invalid_cdb_field(2, None));
    }
    Ok(Command::ReadCapacity10 { lba, pmi })
}

pub fn read_capacity16(cdb: &[u8]) -> Decoded {
    Ok(Command::ReadCapacity16 {
        alloc: C(cdb).be32(10),
    })
}

pub fn get_lba_status(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    Ok(Command::GetLbaStatus {
        lba: c.be64(2),
        alloc: c.be32(10),
    })
}

pub fn unmap(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    Ok(Command::Unmap {
        anchor: c.bit(1, 0),
        len: c.be16(7),
    })
}

pub fn write_same10(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    no_protect(c)?;
    Ok(Command::WriteSame(WriteSame {
        lba: u64::from(c.be32(2)),
        blocks: u32::from(c.be16(7)),
        unmap: c.bit(1, 3),
        anchor: c.bit(1, 4),
        ndob: false,
        group: c.group(6),
    }))
}

pub fn write_same16(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    no_protect(c)?;
    Ok(Command::WriteSame(WriteSame {
        lba: c.be64(2),
        blocks: c.be32(10),
        unmap: c.bit(1, 3),
        anchor: c.bit(1, 4),
        ndob: c.bit(1, 0),
        group: c.group(14),
    }))
}

pub fn extended_copy(cdb: &[u8]) -> Decoded {
    Ok(Command::ExtendedCopy {
        len: C(cdb).be32(10),
    })
}

pub fn receive_copy_results(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    Ok(Command::ReceiveCopyResults {
        sa: c.b(1) & 0x1F,
        list_id: c.b(2),
        alloc: c.be32(10),
    })
}

pub fn read_defect10(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    Ok(Command::ReadDefectData {
        twelve: false,
        plist: c.bit(2, 4),
        glist: c.bit(2, 3),
        format: c.b(2) & 0x07,
        alloc: u32::from(c.be16(7)),
    })
}

pub fn read_defect12(cdb: &[u8]) -> Decoded {
    let c = C(cdb);
    Ok(Command::ReadDefectData {
        twelve: true,
        plist: c.bit(1, 4),
        glist: c.bit(1, 3),
        format: c.b(1) & 0x07,
        alloc: c.be32(6),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::sense::{INVALID_FIELD_IN_CDB, Sks};

    fn field(e: Sense) -> (u16, Option<u8>) {
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
    fn read10_fields() {
        let cdb = [0x28, 0x18, 0x01, 0x02, 0x03, 0x04, 0x05, 0x01, 0x00, 0x00];
        let Command::Read(rw) = read10(&cdb).unwrap() else {
            panic!()
        };
        assert_eq!(rw.lba, 0x0102_0304);
        assert_eq!(rw.blocks, 256);
        assert!(rw.dpo && rw.fua);
        assert_eq!(rw.group, 5);
    }

    #[test]
    fn rw16_and_12_fields() {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x8A;
        cdb[2..10].copy_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        cdb[10..14].copy_from_slice(&0x10_0000u32.to_be_bytes());
        cdb[14] = 0x3F;
        let Command::Write(rw) = write16(&cdb).unwrap() else {
            panic!()
        };
        assert_eq!(
            (rw.lba, rw.blocks, rw.group),
            (0x0102_0304_0506_0708, 0x10_0000, 0x1F)
        );
        let cdb = [0xA8, 0, 0, 0, 0, 9, 0, 0, 1, 0, 0, 0];
        assert_eq!(
            read12(&cdb).unwrap(),
            Command::Read(Rw {
                lba: 9,
                blocks: 256,
                ..Rw::default()
            })
        );
    }

    #[test]
    fn rw6_length_zero_is_256_and_lba_is_21_bits() {
        let cdb = [0x08, 0xFF, 0xFF, 0xFF, 0x00, 0x00];
        let Command::Read(rw) = read6(&cdb).unwrap() else {
            panic!()
        };
        assert_eq!(rw.lba, 0x1F_FFFF);
        assert_eq!(rw.blocks, 256);
    }

    #[test]
    fn protect_field_is_rejected_with_pointer() {
        for p in 1..8u8 {
            let cdb = [0x28, p << 5, 0, 0, 0, 0, 0, 0, 1, 0];
            assert_eq!(field(read10(&cdb).unwrap_err()), (1, Some(7)));
        }
        let mut cdb = [0u8; 16];
        cdb[1] = 0x20;
        assert_eq!(field(write_same16(&cdb).unwrap_err()), (1, Some(7)));
        assert_eq!(field(compare_and_write(&cdb).unwrap_err()), (1, Some(7)));
    }

    #[test]
    fn inquiry_page_without_evpd_is_invalid() {
        assert_eq!(
            field(inquiry(&[0x12, 0, 0x80, 0, 0xFF, 0]).unwrap_err()),
            (2, None)
        );
        assert_eq!(
            field(inquiry(&[0x12, 2, 0, 0, 0xFF, 0]).unwrap_err()),
            (1, Some(1))
        );
        assert_eq!(
            inquiry(&[0x12, 1, 0x83, 0x01, 0x00, 0]).unwrap(),
            Command::Inquiry {
                evpd: true,
                page: 0x83,
                alloc: 256
            }
        );
    }

    #[test]
    fn verify_bytchk_modes() {
        let mut cdb = [0x2F, 0, 0, 0, 0, 1, 0, 0, 2, 0];
        for (bits, ok) in [(0u8, true), (1, true), (2, false), (3, true)] {
            cdb[1] = bits << 1;
            match verify10(&cdb) {
                Ok(Command::Verify(rw)) => {
                    assert!(ok);
                    assert_eq!(rw.bytchk, bits);
                    assert_eq!((rw.lba, rw.blocks), (1, 2));
                }
                Err(e) => {
                    assert!(!ok);
                    assert_eq!(field(e), (1, Some(2)));
                }
                Ok(other) => panic!("{other:?}"),
            }
        }
        cdb[1] = 3 << 1;
        assert!(write_verify10(&cdb).is_err());
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
    fn read_capacity10_lba_without_pmi() {
        let mut cdb = [0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(field(read_capacity10(&cdb).unwrap_err()), (2, None));
        cdb[8] = 1;
        assert!(read_capacity10(&cdb).is_ok());
    }

    #[test]
    fn write_same_flags() {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x93;
        cdb[1] = 0x19;
        cdb[13] = 8;
        let Command::WriteSame(ws) = write_same16(&cdb).unwrap() else {
            panic!()
        };
        assert!(ws.unmap && ws.anchor && ws.ndob);
        assert_eq!(ws.blocks, 8);
    }

    #[test]
    fn decoders_never_panic_on_short_input() {
        let all: &[fn(&[u8]) -> Decoded] = &[
            read6,
            read10,
            read12,
            read16,
            write16,
            verify16,
            write_verify12,
            inquiry,
            mode_sense10,
            pr_out,
            report_opcodes,
            get_lba_status,
            compare_and_write,
            read_defect12,
            write_same10,
            start_stop_unit,
        ];
        for d in all {
            for len in 0..4 {
                let _ = d(&[0xFFu8; 16][..len]);
            }
        }
    }
}
