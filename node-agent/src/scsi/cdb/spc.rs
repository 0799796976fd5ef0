//! Decoders of the primary commands (SPC-4): INQUIRY, REQUEST SENSE, MODE SENSE/SELECT,
//! REPORT LUNS and the other REPORTs, RESERVE/RELEASE, PERSISTENT RESERVE IN/OUT, EXTENDED
//! COPY and RECEIVE COPY RESULTS.

use super::{C, Parsed};
use crate::scsi::command::{Command, ModeSense};
use crate::scsi::sense::Sense;

pub fn test_unit_ready(_: &[u8]) -> Parsed {
    Ok(Command::TestUnitReady)
}

pub fn request_sense(cdb: &[u8]) -> Parsed {
    let c = C(cdb);
    Ok(Command::RequestSense {
        desc: c.bit(1, 0),
        alloc: c.b(4),
    })
}

pub fn inquiry(cdb: &[u8]) -> Parsed {
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

pub fn mode_sense6(cdb: &[u8]) -> Parsed {
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

pub fn mode_sense10(cdb: &[u8]) -> Parsed {
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

pub fn mode_select6(cdb: &[u8]) -> Parsed {
    let c = C(cdb);
    Ok(Command::ModeSelect {
        ten: false,
        pf: c.bit(1, 4),
        sp: c.bit(1, 0),
        len: u16::from(c.b(4)),
    })
}

pub fn mode_select10(cdb: &[u8]) -> Parsed {
    let c = C(cdb);
    Ok(Command::ModeSelect {
        ten: true,
        pf: c.bit(1, 4),
        sp: c.bit(1, 0),
        len: c.be16(7),
    })
}

pub fn start_stop_unit(cdb: &[u8]) -> Parsed {
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

pub fn prevent_allow(cdb: &[u8]) -> Parsed {
    Ok(Command::PreventAllow {
        prevent: C(cdb).b(4) & 0x03,
    })
}

pub fn report_luns(cdb: &[u8]) -> Parsed {
    let c = C(cdb);
    Ok(Command::ReportLuns {
        select: c.b(2),
        alloc: c.be32(6),
    })
}

pub fn report_opcodes(cdb: &[u8]) -> Parsed {
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

pub fn report_tmf(cdb: &[u8]) -> Parsed {
    let c = C(cdb);
    Ok(Command::ReportTmf {
        repd: c.bit(2, 7),
        alloc: c.be32(6),
    })
}

pub fn report_target_port_groups(cdb: &[u8]) -> Parsed {
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

pub fn reserve(cdb: &[u8]) -> Parsed {
    third_party_check(cdb)?;
    Ok(Command::Reserve)
}

pub fn release(cdb: &[u8]) -> Parsed {
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

pub fn pr_in(cdb: &[u8]) -> Parsed {
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

pub fn pr_out(cdb: &[u8]) -> Parsed {
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

pub fn extended_copy(cdb: &[u8]) -> Parsed {
    Ok(Command::ExtendedCopy {
        len: C(cdb).be32(10),
    })
}

pub fn receive_copy_results(cdb: &[u8]) -> Parsed {
    let c = C(cdb);
    Ok(Command::ReceiveCopyResults {
        sa: c.b(1) & 0x1F,
        list_id: c.b(2),
        alloc: c.be32(10),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::cdb::tests::field;

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
}
