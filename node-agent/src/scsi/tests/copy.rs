//! EXTENDED COPY (LID1) and RECEIVE COPY RESULTS through the logical unit.

use crate::scsi::testing::*;
use crate::scsi::{LogicalUnit, Response, Status};

fn ready() -> LogicalUnit<MemBackend> {
    let lu = lu(config(64));
    clear_ua(&lu, N1);
    lu
}

/// The logical unit's NAA designator, as VPD 83h reports it (first designator).
fn own_designator(lu: &LogicalUnit<MemBackend>) -> Vec<u8> {
    let r = exec(lu, N1, &[0x12, 1, 0x83, 0, 255, 0], Vec::new());
    let len = usize::from(r.data_in[7]);
    r.data_in[4..8 + len].to_vec()
}

fn target(designator: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 32];
    t[0] = 0xE4;
    t[4..4 + designator.len()].copy_from_slice(designator);
    t[29..32].copy_from_slice(&[0, 2, 0]);
    t
}

fn xcopy(
    lu: &LogicalUnit<MemBackend>,
    list_id: u8,
    targets: &[Vec<u8>],
    segs: &[Vec<u8>],
) -> Response {
    let t = targets.concat();
    let s = segs.concat();
    let mut d = vec![0u8; 16];
    d[0] = list_id;
    d[2..4].copy_from_slice(&(t.len() as u16).to_be_bytes());
    d[8..12].copy_from_slice(&(s.len() as u32).to_be_bytes());
    d.extend_from_slice(&t);
    d.extend_from_slice(&s);
    let mut cdb = vec![0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    cdb.extend_from_slice(&(d.len() as u32).to_be_bytes());
    cdb.extend_from_slice(&[0, 0]);
    exec(lu, N1, &cdb, d)
}

fn rcr(lu: &LogicalUnit<MemBackend>, sa: u8, list_id: u8) -> Response {
    exec(
        lu,
        N1,
        &[0x84, sa, list_id, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0],
        Vec::new(),
    )
}

#[test]
fn copies_blocks_within_the_unit_and_reports_status() {
    let lu = ready();
    {
        let mut d = lu.backend().data.borrow_mut();
        for (i, b) in d.iter_mut().enumerate() {
            *b = (i / 512) as u8;
        }
    }
    let me = target(&own_designator(&lu));
    assert_eq!(sense_of(&rcr(&lu, 0, 5)), (5, 0x24, 0), "no copy yet");
    let r = xcopy(&lu, 5, &[me], &[segment(0, 0, 4, 2, 40)]);
    assert_eq!(r.status, Status::Good, "{r:?}");
    let d = lu.backend().data.borrow();
    for b in 0..4 {
        assert!(
            d[(40 + b) * 512..(41 + b) * 512]
                .iter()
                .all(|x| *x == (2 + b) as u8)
        );
    }
    drop(d);
    let st = rcr(&lu, 0, 5);
    assert_eq!(st.status, Status::Good);
    assert_eq!(&st.data_in[0..4], &8u32.to_be_bytes());
    assert_eq!(st.data_in[4], 1, "completed successfully");
    assert_eq!(&st.data_in[5..7], &1u16.to_be_bytes());
    assert_eq!(&st.data_in[8..12], &2u32.to_be_bytes(), "2 KiB copied");
    // Results are handed out once.
    assert_eq!(sense_of(&rcr(&lu, 0, 5)), (5, 0x24, 0));
}

#[test]
fn overlapping_copy_moves_data_correctly() {
    let lu = ready();
    {
        let mut d = lu.backend().data.borrow_mut();
        for (i, b) in d.iter_mut().enumerate() {
            *b = (i / 512) as u8;
        }
    }
    let me = target(&own_designator(&lu));
    assert_eq!(
        xcopy(&lu, 1, std::slice::from_ref(&me), &[segment(0, 0, 8, 0, 4)]).status,
        Status::Good
    );
    let d = lu.backend().data.borrow();
    for b in 0..8 {
        assert_eq!(d[(4 + b) * 512], b as u8, "block {}", 4 + b);
    }
    drop(d);
    assert_eq!(
        xcopy(&lu, 2, &[me], &[segment(0, 0, 8, 4, 0)]).status,
        Status::Good
    );
    assert_eq!(lu.backend().data.borrow()[7 * 512], 7);
}

#[test]
fn copy_errors() {
    let lu = ready();
    let me = target(&own_designator(&lu));
    let mut other = me.clone();
    other[8] ^= 0xFF;
    // Unknown unit, missing target index, beyond the end: COPY ABORTED.
    let r = xcopy(&lu, 1, &[other], &[segment(0, 0, 1, 0, 1)]);
    assert_eq!(sense_of(&r), (0xA, 0x0D, 0x02));
    let r = xcopy(&lu, 1, std::slice::from_ref(&me), &[segment(0, 1, 1, 0, 1)]);
    assert_eq!(sense_of(&r), (0xA, 0x0D, 0x02));
    let r = xcopy(
        &lu,
        1,
        std::slice::from_ref(&me),
        &[segment(0, 0, 8, 0, 60)],
    );
    assert_eq!(sense_of(&r).0, 0xA);
    // The failure is held for COPY STATUS.
    assert_eq!(rcr(&lu, 0, 1).data_in[4], 2, "completed with error");
    // Zero-length parameter list: nothing to do.
    let r = exec(
        &lu,
        N1,
        &[0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        Vec::new(),
    );
    assert_eq!(r.status, Status::Good);
    // Parameter list longer than the Data-Out.
    let r = exec(
        &lu,
        N1,
        &[0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 76, 0, 0],
        vec![0; 40],
    );
    assert_eq!(sense_of(&r), (5, 0x1A, 0));
}

#[test]
fn operating_parameters_and_vpd() {
    let lu = ready();
    let r = rcr(&lu, 3, 0);
    let d = &r.data_in;
    assert_eq!(
        u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize,
        d.len() - 4
    );
    assert_eq!(&d[8..10], &2u16.to_be_bytes());
    assert_eq!(&d[10..12], &8u16.to_be_bytes());
    assert_eq!(&d[d.len() - 2..], &[0x02, 0xE4]);
    let inq = exec(&lu, N1, &[0x12, 0, 0, 0, 96, 0], Vec::new());
    assert_eq!(inq.data_in[5] & 0x08, 0x08, "3PC");
    let r = exec(&lu, N1, &[0x12, 1, 0x8F, 0, 255, 0], Vec::new());
    assert_eq!(r.status, Status::Good);
    assert_eq!(r.data_in[1], 0x8F);
}
