//! REPORT SUPPORTED OPERATION CODES / TASK MANAGEMENT FUNCTIONS, REPORT TARGET PORT GROUPS,
//! START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL, PRE-FETCH, READ DEFECT DATA.

use crate::scsi::opcodes::TABLE;
use crate::scsi::testing::*;
use crate::scsi::{LogicalUnit, LuConfig, Status};

fn ready(cfg: LuConfig) -> LogicalUnit<MemBackend> {
    let lu = lu(cfg);
    clear_ua(&lu, N1);
    lu
}

fn rsoc(rctd: bool, options: u8, opcode: u8, sa: u16, alloc: u32) -> Vec<u8> {
    let mut c = vec![0xA3, 0x0C, options | if rctd { 0x80 } else { 0 }, opcode];
    c.extend_from_slice(&sa.to_be_bytes());
    c.extend_from_slice(&alloc.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    c
}

#[test]
fn every_reported_opcode_is_executable() {
    // The report comes from the table, and every row decodes and dispatches: a minimal CDB
    // of each reported command never answers INVALID COMMAND OPERATION CODE.
    let lu = ready(LuConfig {
        thin: true,
        ..config(64)
    });
    let r = exec(&lu, N1, &rsoc(false, 0, 0, 0, 65535), Vec::new());
    assert_eq!(r.status, Status::Good);
    let len = u32::from_be_bytes(r.data_in[..4].try_into().unwrap()) as usize;
    assert_eq!(len, r.data_in.len() - 4);
    for d in r.data_in[4..].chunks(8) {
        let cdb_len = usize::from(u16::from_be_bytes([d[6], d[7]]));
        let mut cdb = vec![0u8; cdb_len];
        cdb[0] = d[0];
        if d[5] & 1 != 0 {
            cdb[1] = d[3];
        }
        let res = exec(&lu, N1, &cdb, Vec::new());
        if res.status == Status::CheckCondition {
            assert_ne!(
                sense_of(&res).1,
                0x20,
                "opcode {:#x} reported but unknown",
                d[0]
            );
        }
        // One-command reports agree with the list.
        let options = if d[5] & 1 != 0 { 2 } else { 1 };
        let one = exec(
            &lu,
            N1,
            &rsoc(false, options, d[0], u16::from_be_bytes([d[2], d[3]]), 512),
            Vec::new(),
        );
        assert_eq!(one.status, Status::Good);
        assert_eq!(one.data_in[1] & 7, 3);
        assert_eq!(one.data_in[4], d[0]);
        assert_eq!(one.data_in.len(), 4 + cdb_len);
    }
    assert_eq!(len / 8, TABLE.len());
}

#[test]
fn rsoc_options_errors_and_timeouts() {
    let lu = ready(config(64));
    let r = exec(&lu, N1, &rsoc(true, 0, 0, 0, 65535), Vec::new());
    assert!(
        r.data_in[4..]
            .chunks(20)
            .all(|d| d[5] & 2 == 2 && d[8..10] == [0, 0x0A])
    );
    let r = exec(&lu, N1, &rsoc(false, 1, 0x9E, 0x10, 512), Vec::new());
    assert_eq!(sense_of(&r), (5, 0x24, 0));
    let r = exec(&lu, N1, &rsoc(false, 2, 0x28, 0, 512), Vec::new());
    assert_eq!(sense_of(&r), (5, 0x24, 0));
    let r = exec(&lu, N1, &rsoc(false, 5, 0x28, 0, 512), Vec::new());
    assert_eq!(sense_of(&r), (5, 0x24, 0));
    let r = exec(&lu, N1, &rsoc(false, 1, 0x28, 0, 2), Vec::new());
    assert_eq!(r.data_in.len(), 2);
}

#[test]
fn report_tmf_and_target_port_groups() {
    let lu = ready(config(64));
    let r = exec(
        &lu,
        N1,
        &[0xA3, 0x0D, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0],
        Vec::new(),
    );
    assert_eq!(r.data_in.len(), 4);
    assert_eq!(
        r.data_in[0] & 0xC8,
        0xC8,
        "ABORT TASK, ABORT TASK SET, LU RESET"
    );
    let r = exec(
        &lu,
        N1,
        &[0xA3, 0x0D, 0x80, 0, 0, 0, 0, 0, 0, 64, 0, 0],
        Vec::new(),
    );
    assert_eq!((r.data_in.len(), r.data_in[3]), (16, 0x0C));
    let r = exec(
        &lu,
        N1,
        &[0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        Vec::new(),
    );
    let d = &r.data_in;
    assert_eq!(
        u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize,
        d.len() - 4
    );
    assert_eq!(d[4] & 0x0F, 0, "active/optimized");
    assert_eq!(&d[6..8], &1u16.to_be_bytes());
    assert_eq!(d[11], 1);
    assert_eq!(&d[14..16], &1u16.to_be_bytes());
}

#[test]
fn start_stop_unit_and_not_ready() {
    let lu = ready(config(64));
    let stop = [0x1B, 0, 0, 0, 0x00, 0];
    assert_eq!(exec(&lu, N1, &stop, Vec::new()).status, Status::Good);
    assert_eq!(lu.backend().flushes.get(), 1, "stopping flushes");
    assert_eq!(
        sense_of(&exec(&lu, N1, &[0; 6], Vec::new())),
        (2, 0x04, 0x02)
    );
    assert_eq!(
        sense_of(&exec(&lu, N1, &cdb10(0x28, 0, 0, 1), Vec::new())),
        (2, 0x04, 0x02)
    );
    // INQUIRY and REQUEST SENSE still answer.
    assert_eq!(
        exec(&lu, N1, &[0x12, 0, 0, 0, 36, 0], Vec::new()).status,
        Status::Good
    );
    let r = exec(&lu, N1, &[0x03, 0, 0, 0, 18, 0], Vec::new());
    assert_eq!(
        (r.data_in[2], r.data_in[12], r.data_in[13]),
        (2, 0x04, 0x02)
    );
    assert_eq!(
        exec(&lu, N1, &[0x1B, 0, 0, 0, 0x01, 0], Vec::new()).status,
        Status::Good
    );
    assert_eq!(exec(&lu, N1, &[0; 6], Vec::new()).status, Status::Good);
    // Reserved power condition.
    assert_eq!(
        sense_of(&exec(&lu, N1, &[0x1B, 0, 0, 0, 0x40, 0], Vec::new())),
        (5, 0x24, 0)
    );
}

#[test]
fn prevent_blocks_eject() {
    let lu = ready(config(64));
    assert_eq!(
        exec(&lu, N1, &[0x1E, 0, 0, 0, 1, 0], Vec::new()).status,
        Status::Good
    );
    let eject = [0x1B, 0, 0, 0, 0x02, 0];
    assert_eq!(
        sense_of(&exec(&lu, N1, &eject, Vec::new())),
        (5, 0x53, 0x02)
    );
    assert_eq!(
        exec(&lu, N1, &[0x1E, 0, 0, 0, 0, 0], Vec::new()).status,
        Status::Good
    );
    assert_eq!(exec(&lu, N1, &eject, Vec::new()).status, Status::Good);
    assert_eq!(
        sense_of(&exec(&lu, N1, &[0x1E, 0, 0, 0, 2, 0], Vec::new())),
        (5, 0x24, 0)
    );
    // A LUN reset clears PREVENT.
    exec(&lu, N1, &[0x1E, 0, 0, 0, 1, 0], Vec::new());
    lu.reset();
    clear_ua(&lu, N1);
    assert_eq!(
        exec(&lu, N1, &[0x1B, 0, 0, 0, 0x03, 0], Vec::new()).status,
        Status::Good
    );
}

#[test]
fn prefetch_and_read_defect_data() {
    let lu = ready(config(64));
    assert_eq!(
        exec(&lu, N1, &cdb10(0x34, 0x02, 60, 4), Vec::new()).status,
        Status::Good
    );
    assert_eq!(
        sense_of(&exec(&lu, N1, &cdb16(0x90, 0, 62, 4), Vec::new())),
        (5, 0x21, 0)
    );
    let r = exec(&lu, N1, &[0x37, 0, 0x18, 0, 0, 0, 0, 0, 32, 0], Vec::new());
    assert_eq!(r.data_in[..], [0, 0x18, 0, 0]);
    let r = exec(
        &lu,
        N1,
        &[0xB7, 0x08, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
        Vec::new(),
    );
    assert_eq!(r.data_in.len(), 8);
    assert_eq!(&r.data_in[4..8], &[0; 4]);
}
