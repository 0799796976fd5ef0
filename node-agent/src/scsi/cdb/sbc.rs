//! Decoders of the block commands (SBC-3): READ, WRITE, VERIFY, WRITE AND VERIFY, COMPARE
//! AND WRITE, ORWRITE, PRE-FETCH, SYNCHRONIZE CACHE, READ CAPACITY, GET LBA STATUS, UNMAP,
//! WRITE SAME, READ DEFECT DATA.

use super::{C, Parsed, no_protect};
use crate::scsi::command::{Command, Rw, WriteSame};
use crate::scsi::sense::Sense;

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

pub fn read6(cdb: &[u8]) -> Parsed {
    Ok(Command::Read(rw6(cdb)))
}
pub fn write6(cdb: &[u8]) -> Parsed {
    Ok(Command::Write(rw6(cdb)))
}
pub fn read10(cdb: &[u8]) -> Parsed {
    Ok(Command::Read(plain(rw10(cdb)?)))
}
pub fn write10(cdb: &[u8]) -> Parsed {
    Ok(Command::Write(plain(rw10(cdb)?)))
}
pub fn read12(cdb: &[u8]) -> Parsed {
    Ok(Command::Read(plain(rw12(cdb)?)))
}
pub fn write12(cdb: &[u8]) -> Parsed {
    Ok(Command::Write(plain(rw12(cdb)?)))
}
pub fn read16(cdb: &[u8]) -> Parsed {
    Ok(Command::Read(plain(rw16(cdb)?)))
}
pub fn write16(cdb: &[u8]) -> Parsed {
    Ok(Command::Write(plain(rw16(cdb)?)))
}

/// VERIFY: BYTCHK 0 (medium check), 1 (compare all) or 3 (compare each block with one).
fn verify(rw: Rw) -> Parsed {
    if rw.bytchk == 2 {
        return Err(Sense::invalid_cdb_field(1, Some(2)));
    }
    Ok(Command::Verify(Rw {
        fua: false,
        immed: false,
        ..rw
    }))
}
pub fn verify10(cdb: &[u8]) -> Parsed {
    verify(rw10(cdb)?)
}
pub fn verify12(cdb: &[u8]) -> Parsed {
    verify(rw12(cdb)?)
}
pub fn verify16(cdb: &[u8]) -> Parsed {
    verify(rw16(cdb)?)
}

/// WRITE AND VERIFY: BYTCHK 0 or 1 only.
fn write_verify(rw: Rw) -> Parsed {
    if rw.bytchk > 1 {
        return Err(Sense::invalid_cdb_field(1, Some(2)));
    }
    Ok(Command::WriteVerify(Rw {
        fua: false,
        immed: false,
        ..rw
    }))
}
pub fn write_verify10(cdb: &[u8]) -> Parsed {
    write_verify(rw10(cdb)?)
}
pub fn write_verify12(cdb: &[u8]) -> Parsed {
    write_verify(rw12(cdb)?)
}
pub fn write_verify16(cdb: &[u8]) -> Parsed {
    write_verify(rw16(cdb)?)
}

pub fn sync_cache10(cdb: &[u8]) -> Parsed {
    let rw = rw10(cdb)?;
    Ok(Command::SyncCache(Rw {
        dpo: false,
        fua: false,
        bytchk: 0,
        ..rw
    }))
}
pub fn sync_cache16(cdb: &[u8]) -> Parsed {
    let rw = rw16(cdb)?;
    Ok(Command::SyncCache(Rw {
        dpo: false,
        fua: false,
        bytchk: 0,
        ..rw
    }))
}
pub fn prefetch10(cdb: &[u8]) -> Parsed {
    let rw = rw10(cdb)?;
    Ok(Command::PreFetch(Rw {
        dpo: false,
        fua: false,
        bytchk: 0,
        ..rw
    }))
}
pub fn prefetch16(cdb: &[u8]) -> Parsed {
    let rw = rw16(cdb)?;
    Ok(Command::PreFetch(Rw {
        dpo: false,
        fua: false,
        bytchk: 0,
        ..rw
    }))
}

pub fn compare_and_write(cdb: &[u8]) -> Parsed {
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

pub fn orwrite16(cdb: &[u8]) -> Parsed {
    Ok(Command::OrWrite(plain(rw16(cdb)?)))
}

pub fn read_capacity10(cdb: &[u8]) -> Parsed {
    let c = C(cdb);
    let pmi = c.bit(8, 0);
    let lba = c.be32(2);
    if !pmi && lba != 0 {
        return Err(Sense::invalid_cdb_field(2, None));
    }
    Ok(Command::ReadCapacity10 { lba, pmi })
}

pub fn read_capacity16(cdb: &[u8]) -> Parsed {
    Ok(Command::ReadCapacity16 {
        alloc: C(cdb).be32(10),
    })
}

pub fn get_lba_status(cdb: &[u8]) -> Parsed {
    let c = C(cdb);
    Ok(Command::GetLbaStatus {
        lba: c.be64(2),
        alloc: c.be32(10),
    })
}

pub fn unmap(cdb: &[u8]) -> Parsed {
    let c = C(cdb);
    Ok(Command::Unmap {
        anchor: c.bit(1, 0),
        len: c.be16(7),
    })
}

pub fn write_same10(cdb: &[u8]) -> Parsed {
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

pub fn write_same16(cdb: &[u8]) -> Parsed {
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

pub fn read_defect10(cdb: &[u8]) -> Parsed {
    let c = C(cdb);
    Ok(Command::ReadDefectData {
        twelve: false,
        plist: c.bit(2, 4),
        glist: c.bit(2, 3),
        format: c.b(2) & 0x07,
        alloc: u32::from(c.be16(7)),
    })
}

pub fn read_defect12(cdb: &[u8]) -> Parsed {
    let c = C(cdb);
    Ok(Command::ReadDefectData {
        twelve: true,
        plist: c.bit(1, 4),
        glist: c.bit(1, 3),
        format: c.b(1) & 0x07,
        alloc: c.be32(6),
    })
}

/// SANITIZE (SBC-4 5.30). Byte 1 bit 6 (ZNR) and bytes 2-6 are reserved here (no zoned
/// storage); the service action was matched by the opcode table.
pub fn sanitize(cdb: &[u8]) -> Parsed {
    let c = C(cdb);
    if c.bit(1, 6) {
        return Err(Sense::invalid_cdb_field(1, Some(6)));
    }
    if let Some(i) = (2..=6).find(|&i| c.b(i) != 0) {
        return Err(Sense::invalid_cdb_field(i as u16, None));
    }
    Ok(Command::Sanitize {
        sa: c.b(1) & 0x1F,
        immed: c.bit(1, 7),
        ause: c.bit(1, 5),
        len: c.be16(7),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::cdb::tests::field;

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
}
