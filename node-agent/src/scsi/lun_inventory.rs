//! Target-level answers the engine gives without a logical unit: REPORT LUNS (only the
//! engine knows which LUNs are live), commands to LUNs that do not exist, and commands to LUNs
//! being drained (fenced).
//!
//! The engine should answer REPORT LUNS with [`report_luns`] whichever LUN it is addressed to.
//! Sense data here is fixed format (there is no logical unit whose control page could ask
//! for descriptors).

use super::cdb::spc as decode;
use super::command::Command;
use super::sense::{INVALID_COMMAND_OPERATION_CODE, LOGICAL_UNIT_NOT_SUPPORTED, Sense};
use super::{NexusId, Response, spc, truncate};

/// The 8-byte LUN field for a single-level LUN (SAM-5 4.7): peripheral device addressing
/// below 256, flat space addressing below 16384, otherwise the value as already encoded.
pub fn encode_lun(lun: u64) -> [u8; 8] {
    let mut b = [0u8; 8];
    if lun < 256 {
        b[1] = lun as u8;
    } else if lun < 0x4000 {
        b[0] = 0x40 | (lun >> 8) as u8;
        b[1] = (lun & 0xFF) as u8;
    } else {
        b = lun.to_be_bytes();
    }
    b
}

/// REPORT LUNS parameter data for `luns`, or the sense for an invalid SELECT REPORT or an
/// allocation length below 16.
pub fn report_luns_data(luns: &[u64], select: u8, alloc: u32) -> Result<Vec<u8>, Sense> {
    if alloc < 16 {
        return Err(Sense::invalid_cdb_field(6, None));
    }
    let listed: &[u64] = match select {
        // All logical units (we have no well-known LUs).
        0x00 | 0x02 | 0x11 => luns,
        // Well-known logical units only / administrative LUs: none.
        0x01 | 0x10 | 0x12 => &[],
        _ => return Err(Sense::invalid_cdb_field(2, None)),
    };
    let mut d = Vec::with_capacity(8 + 8 * listed.len());
    d.extend_from_slice(&((listed.len() * 8) as u32).to_be_bytes());
    d.extend_from_slice(&[0; 4]);
    for lun in listed {
        d.extend_from_slice(&encode_lun(*lun));
    }
    Ok(truncate(d, alloc as usize))
}

/// Answers REPORT LUNS (`cdb`) with the live LUNs. Any other CDB gets INVALID COMMAND
/// OPERATION CODE.
pub fn report_luns(luns: &[u64], cdb: &[u8]) -> Response {
    let decoded = match cdb.first() {
        Some(0xA0) if cdb.len() >= 12 => decode::report_luns(cdb),
        Some(0xA0) => Err(Sense::invalid_cdb_field(0, None)),
        _ => Err(Sense::illegal(INVALID_COMMAND_OPERATION_CODE)),
    };
    let result = decoded.and_then(|c| match c {
        Command::ReportLuns { select, alloc } => report_luns_data(luns, select, alloc),
        _ => Err(Sense::illegal(INVALID_COMMAND_OPERATION_CODE)),
    });
    match result {
        Ok(d) => Response::good(d),
        Err(s) => Response::check(&s, false),
    }
}

/// Answers a command to a LUN that does not exist (SPC-4 4.6.4 / SAM-5 5.9.7): INQUIRY
/// reports peripheral qualifier 011b, device type 1Fh; REQUEST SENSE returns LOGICAL UNIT
/// NOT SUPPORTED as data; everything else is CHECK CONDITION, ILLEGAL REQUEST, LOGICAL UNIT
/// NOT SUPPORTED.
pub fn absent_lun(cdb: &[u8], _nexus: NexusId) -> Response {
    let not_supported = Sense::illegal(LOGICAL_UNIT_NOT_SUPPORTED);
    match cdb.first() {
        Some(0x12) if cdb.len() >= 6 => match decode::inquiry(cdb) {
            Ok(Command::Inquiry {
                evpd: false, alloc, ..
            }) => Response::good(truncate(
                spc::standard_inquiry(0x3, 0x1F, "", "", ""),
                usize::from(alloc),
            )),
            Ok(Command::Inquiry {
                evpd: true,
                page: 0,
                alloc,
            }) => Response::good(truncate(vec![0x7F, 0x00, 0x00, 0x01, 0x00], alloc.into())),
            Ok(_) => Response::check(&Sense::invalid_cdb_field(2, None), false),
            Err(s) => Response::check(&s, false),
        },
        Some(0x03) if cdb.len() >= 6 => {
            let desc = cdb[1] & 0x01 != 0;
            Response::good(truncate(not_supported.to_bytes(desc), usize::from(cdb[4])))
        }
        _ => Response::check(&not_supported, false),
    }
}

/// Answers a command to a LUN that is being drained: CHECK CONDITION, ILLEGAL REQUEST,
/// LOGICAL UNIT NOT SUPPORTED, for every command.
pub fn fenced_lun(_cdb: &[u8]) -> Response {
    Response::check(&Sense::illegal(LOGICAL_UNIT_NOT_SUPPORTED), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::Status;

    fn rl(select: u8, alloc: u32) -> Vec<u8> {
        let mut c = vec![0xA0, 0, select, 0, 0, 0];
        c.extend_from_slice(&alloc.to_be_bytes());
        c.extend_from_slice(&[0, 0]);
        c
    }

    #[test]
    fn report_luns_lists_and_truncates() {
        let r = report_luns(&[0, 1, 300], &rl(0, 4096));
        assert_eq!(r.status, Status::Good);
        assert_eq!(&r.data_in[0..4], &24u32.to_be_bytes());
        assert_eq!(&r.data_in[8..16], &[0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&r.data_in[16..24], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&r.data_in[24..32], &[0x41, 0x2C, 0, 0, 0, 0, 0, 0]);
        let r = report_luns(&[0, 1, 300], &rl(0, 16));
        assert_eq!(r.data_in.len(), 16);
        assert_eq!(
            &r.data_in[0..4],
            &24u32.to_be_bytes(),
            "length is the full list"
        );
        let r = report_luns(&[0, 1], &rl(1, 16));
        assert_eq!(&r.data_in[0..8], &[0; 8]);
    }

    #[test]
    fn report_luns_errors() {
        let r = report_luns(&[0], &rl(0, 15));
        assert_eq!(r.status, Status::CheckCondition);
        assert_eq!((r.sense[12], r.sense[13]), (0x24, 0));
        let r = report_luns(&[0], &rl(0x05, 64));
        assert_eq!((r.sense[12], r.sense[13]), (0x24, 0));
        assert_eq!(&r.sense[15..18], &[0xC0, 0, 2]);
        let r = report_luns(&[0], &[0xA0, 0, 0]);
        assert_eq!(r.status, Status::CheckCondition);
    }

    #[test]
    fn absent_lun_answers() {
        let r = absent_lun(&[0x12, 0, 0, 0, 96, 0], NexusId(1));
        assert_eq!(r.status, Status::Good);
        assert_eq!(r.data_in[0], 0x7F);
        assert_eq!(r.data_in.len(), 96);
        let r = absent_lun(&[0x03, 0, 0, 0, 18, 0], NexusId(1));
        assert_eq!(r.status, Status::Good);
        assert_eq!(
            (r.data_in[2], r.data_in[12], r.data_in[13]),
            (0x05, 0x25, 0x00)
        );
        let r = absent_lun(&[0x00, 0, 0, 0, 0, 0], NexusId(1));
        assert_eq!(r.status, Status::CheckCondition);
        assert_eq!((r.sense[2], r.sense[12]), (0x05, 0x25));
        let r = absent_lun(&[0x12, 1, 0x83, 0, 96, 0], NexusId(1));
        assert_eq!(r.status, Status::CheckCondition);
    }

    #[test]
    fn fenced_lun_refuses_everything() {
        for cdb in [
            &[0x12u8, 0, 0, 0, 96, 0][..],
            &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        ] {
            let r = fenced_lun(cdb);
            assert_eq!(r.status, Status::CheckCondition);
            assert_eq!((r.sense[2], r.sense[12], r.sense[13]), (0x05, 0x25, 0x00));
        }
    }
}
