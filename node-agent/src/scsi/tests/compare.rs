//! VERIFY, WRITE AND VERIFY, COMPARE AND WRITE, ORWRITE.

use crate::scsi::testing::*;
use crate::scsi::{LogicalUnit, LuConfig, Status};

fn ready(cfg: LuConfig) -> LogicalUnit<MemBackend> {
    let lu = lu(cfg);
    clear_ua(&lu, N1);
    lu
}

fn fill(lu: &LogicalUnit<MemBackend>, byte: u8) {
    lu.backend().data.borrow_mut().fill(byte);
}

/// The INFORMATION field of fixed-format sense data.
fn info(r: &crate::scsi::Response) -> Option<u32> {
    (r.sense[0] & 0x80 != 0).then(|| u32::from_be_bytes(r.sense[3..7].try_into().unwrap()))
}

#[test]
fn verify_bytchk_compares_and_reports_offset() {
    let lu = ready(config(64));
    fill(&lu, b'A');
    for op in [0x2F, 0xAF, 0x8F] {
        let cdb = match op {
            0x2F => cdb10(op, 0x02, 10, 4),
            0xAF => vec![op, 0x02, 0, 0, 0, 10, 0, 0, 0, 4, 0, 0],
            _ => cdb16(op, 0x02, 10, 4),
        };
        let r = exec(&lu, N1, &cdb, vec![b'A'; 2048]);
        assert_eq!(r.status, Status::Good, "{op:#x}");
        let mut data = vec![b'A'; 2048];
        data[1234] = b'X';
        let r = exec(&lu, N1, &cdb, data);
        assert_eq!(sense_of(&r), (0xE, 0x1D, 0x00));
        assert_eq!(info(&r), Some(1234));
    }
}

#[test]
fn verify_without_bytchk_and_one_block_mode() {
    let lu = ready(config(64));
    fill(&lu, b'A');
    let r = exec(&lu, N1, &cdb10(0x2F, 0, 0, 8), Vec::new());
    assert_eq!(r.status, Status::Good);
    // BYTCHK=11b: one block of Data-Out compared with every block.
    let r = exec(&lu, N1, &cdb10(0x2F, 0x06, 0, 8), vec![b'A'; 512]);
    assert_eq!(r.status, Status::Good);
    lu.backend().data.borrow_mut()[3 * 512 + 7] = b'Z';
    let r = exec(&lu, N1, &cdb10(0x2F, 0x06, 0, 8), vec![b'A'; 512]);
    assert_eq!(info(&r), Some(3 * 512 + 7));
    // Range and protection checks still apply.
    let r = exec(&lu, N1, &cdb10(0x2F, 0, 64, 0), Vec::new());
    assert_eq!(sense_of(&r), (5, 0x21, 0));
    let r = exec(&lu, N1, &cdb10(0x2F, 0x20, 0, 1), Vec::new());
    assert_eq!(sense_of(&r), (5, 0x24, 0));
}

#[test]
fn write_and_verify_writes_through() {
    let lu = ready(config(64));
    let r = exec(&lu, N1, &cdb10(0x2E, 0x02, 2, 2), vec![7; 1024]);
    assert_eq!(r.status, Status::Good);
    assert_eq!(&lu.backend().data.borrow()[1024..2048], &[7; 1024][..]);
    assert_eq!(lu.backend().fua_writes.get(), 1);
    let r = exec(&lu, N1, &cdb16(0x8E, 0, 63, 2), vec![7; 1024]);
    assert_eq!(sense_of(&r), (5, 0x21, 0));
    let lu = ready(LuConfig {
        read_only: true,
        ..config(64)
    });
    let r = exec(&lu, N1, &cdb10(0x2E, 0x02, 0, 1), vec![7; 512]);
    assert_eq!(sense_of(&r), (7, 0x27, 0));
}

fn caw(lba: u64, blocks: u8) -> Vec<u8> {
    let mut c = cdb16(0x89, 0, lba, 0);
    c[13] = blocks;
    c
}

#[test]
fn compare_and_write_success_and_miscompare() {
    let lu = ready(config(64));
    fill(&lu, b'A');
    let mut data = vec![b'A'; 1024];
    data.extend_from_slice(&[b'B'; 1024]);
    let r = exec(&lu, N1, &caw(4, 2), data.clone());
    assert_eq!(r.status, Status::Good);
    assert!(
        lu.backend().data.borrow()[2048..3072]
            .iter()
            .all(|b| *b == b'B')
    );
    // Now it no longer matches: nothing is written.
    data[1024..].fill(b'C');
    data[700] = b'A';
    let r = exec(&lu, N1, &caw(4, 2), data);
    assert_eq!(sense_of(&r), (0xE, 0x1D, 0));
    assert_eq!(info(&r), Some(0));
    assert!(
        lu.backend().data.borrow()[2048..3072]
            .iter()
            .all(|b| *b == b'B')
    );
}

#[test]
fn compare_and_write_rejects_bad_sizes_and_ranges() {
    let lu = ready(config(64));
    let r = exec(&lu, N1, &caw(0, 1), vec![0; 4 * 512]);
    assert_ne!(r.status, Status::Good);
    let r = exec(&lu, N1, &caw(0, 3), vec![0; 4 * 512]);
    assert_ne!(r.status, Status::Good);
    let r = exec(&lu, N1, &caw(63, 2), vec![0; 4 * 512]);
    assert_eq!(sense_of(&r), (5, 0x21, 0));
    let r = exec(&lu, N1, &caw(0, 0), Vec::new());
    assert_eq!(r.status, Status::Good);
    assert_eq!(lu.backend().writes.get(), 0);
    // Zero blocks in the CDB but Data-Out sent (256 truncated to one byte): invalid.
    let r = exec(&lu, N1, &caw(0, 0), vec![0; 512 * 512]);
    assert_eq!(sense_of(&r), (5, 0x24, 0));
    assert_eq!(&r.sense[15..18], &[0xC0, 0, 13]);
}

#[test]
fn compare_and_write_is_atomic_against_writes() {
    let lu = ready(config(64));
    fill(&lu, b'A');
    let mut data = vec![b'A'; 512];
    data.extend_from_slice(&[b'B'; 512]);
    let write_cdb = cdb10(0x2A, 0, 0, 1);
    let caw_cdb = caw(0, 1);
    let (w, c) = block_on(async {
        tokio::join!(
            lu.execute(N1, &write_cdb, vec![b'C'; 512]),
            lu.execute(N1, &caw_cdb, data)
        )
    });
    assert_eq!(w.status, Status::Good);
    let last = lu.backend().data.borrow()[0];
    // Serializable outcomes only: CAW first then the write (C), or the write first and
    // the CAW miscompares (C). A successful CAW whose B survives means it compared stale data.
    assert!(
        !(c.status == Status::Good && last == b'B'),
        "CAW interleaved with a write"
    );
}

#[test]
fn orwrite_ors_into_the_medium() {
    let lu = ready(config(64));
    fill(&lu, 0x0F);
    let r = exec(&lu, N1, &cdb16(0x8B, 0, 1, 1), vec![0xF0; 512]);
    assert_eq!(r.status, Status::Good);
    let d = lu.backend().data.borrow();
    assert!(d[512..1024].iter().all(|b| *b == 0xFF));
    assert!(d[..512].iter().all(|b| *b == 0x0F));
}
