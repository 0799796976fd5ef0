//! READ, WRITE, SYNCHRONIZE CACHE and their error cases.

use crate::scsi::testing::*;
use crate::scsi::{LuConfig, Status};

fn ready(cfg: LuConfig) -> crate::scsi::LogicalUnit<MemBackend> {
    let lu = lu(cfg);
    clear_ua(&lu, N1);
    lu
}

#[test]
fn write_then_read_all_sizes() {
    let lu = ready(config(64));
    let data: Vec<u8> = (0..4 * 512).map(|i| (i % 251) as u8).collect();
    for (w, r) in [(0x0A, 0x08), (0x2A, 0x28), (0xAA, 0xA8), (0x8A, 0x88)] {
        let (wc, rc) = match w {
            0x0A => (vec![w, 0, 0, 5, 4, 0], vec![r, 0, 0, 5, 4, 0]),
            0x2A => (cdb10(w, 0, 5, 4), cdb10(r, 0, 5, 4)),
            0xAA => {
                let mut c = vec![w, 0, 0, 0, 0, 5, 0, 0, 0, 4, 0, 0];
                let rc = {
                    c[0] = r;
                    c.clone()
                };
                c[0] = w;
                (c, rc)
            }
            _ => (cdb16(w, 0, 5, 4), cdb16(r, 0, 5, 4)),
        };
        lu.backend().data.borrow_mut().fill(0);
        let res = exec(&lu, N1, &wc, data.clone());
        assert_eq!(res.status, Status::Good, "{w:#x}");
        assert!(res.data_in.is_empty());
        assert_eq!(&lu.backend().data.borrow()[5 * 512..9 * 512], &data[..]);
        let res = exec(&lu, N1, &rc, Vec::new());
        assert_eq!(res.status, Status::Good);
        assert_eq!(res.data_in, data, "{r:#x}");
    }
}

#[test]
fn rw6_zero_length_means_256_blocks() {
    let lu = ready(config(300));
    let r = exec(&lu, N1, &[0x08, 0, 0, 0, 0, 0], Vec::new());
    assert_eq!(r.data_in.len(), 256 * 512);
}

#[test]
fn fua_and_write_cache() {
    let lu = ready(config(64));
    let b = lu.backend();
    exec(&lu, N1, &cdb10(0x2A, 0, 0, 1), vec![1; 512]);
    assert_eq!(b.fua_writes.get(), 0);
    exec(&lu, N1, &cdb10(0x2A, 0x08, 0, 1), vec![1; 512]);
    assert_eq!(b.fua_writes.get(), 1);
    // With the write cache disabled every write is durable.
    let lu = ready(LuConfig {
        write_cache: false,
        ..config(64)
    });
    exec(&lu, N1, &cdb10(0x2A, 0, 0, 1), vec![1; 512]);
    assert_eq!(lu.backend().fua_writes.get(), 1);
}

#[test]
fn zero_length_transfers() {
    let lu = ready(config(64));
    let r = exec(&lu, N1, &cdb10(0x28, 0, 0, 0), Vec::new());
    assert_eq!((r.status, r.data_in.len()), (Status::Good, 0));
    let r = exec(&lu, N1, &cdb10(0x2A, 0, 63, 0), Vec::new());
    assert_eq!(r.status, Status::Good);
    assert_eq!(lu.backend().writes.get(), 0);
    // Still range-checked.
    let r = exec(&lu, N1, &cdb10(0x28, 0, 65, 0), Vec::new());
    assert_eq!(sense_of(&r), (5, 0x21, 0));
}

#[test]
fn out_of_range() {
    let lu = ready(config(64));
    for (lba, n) in [(64u64, 1u32), (63, 2), (u64::MAX, 1), (1 << 31, 1)] {
        let r = exec(&lu, N1, &cdb16(0x88, 0, lba, n), Vec::new());
        assert_eq!(sense_of(&r), (5, 0x21, 0), "{lba} {n}");
        let r = exec(&lu, N1, &cdb16(0x8A, 0, lba, n), vec![0; 512 * n as usize]);
        assert_eq!(sense_of(&r), (5, 0x21, 0), "{lba} {n}");
    }
    let r = exec(&lu, N1, &cdb10(0x28, 0, 0xFFFF_FFFF, 1), Vec::new());
    assert_eq!(sense_of(&r), (5, 0x21, 0));
}

#[test]
fn transfer_longer_than_block_limits_is_invalid() {
    let lu = ready(config(1 << 20));
    let too_many = (8 << 20) / 512 + 1;
    let r = exec(&lu, N1, &cdb16(0x88, 0, 0, too_many), Vec::new());
    assert_eq!(sense_of(&r), (5, 0x24, 0));
}

#[test]
fn write_protected_units() {
    let lu = ready(LuConfig {
        read_only: true,
        ..config(64)
    });
    let r = exec(&lu, N1, &cdb10(0x2A, 0, 0, 1), vec![0; 512]);
    assert_eq!(sense_of(&r), (7, 0x27, 0));
    assert_eq!(
        exec(&lu, N1, &cdb10(0x28, 0, 0, 1), Vec::new()).status,
        Status::Good
    );
    // MODE SENSE reports WP.
    let r = exec(&lu, N1, &[0x1A, 0, 0x3F, 0, 255, 0], Vec::new());
    assert_eq!(r.data_in[2] & 0x80, 0x80);
}

#[test]
fn data_out_shorter_or_longer_than_the_cdb() {
    let lu = ready(config(64));
    lu.backend().data.borrow_mut().fill(b'a');
    // Less than a block: nothing is written, the command completes (residual overflow).
    let r = exec(&lu, N1, &cdb10(0x2A, 0, 0, 1), vec![b'b'; 200]);
    assert_eq!(r.status, Status::Good);
    assert!(lu.backend().data.borrow()[..512].iter().all(|b| *b == b'a'));
    assert_eq!(lu.backend().writes.get(), 0);
    // Two blocks asked, one sent: only that block is written.
    let r = exec(&lu, N1, &cdb10(0x2A, 0, 0, 2), vec![b'b'; 512]);
    assert_eq!(r.status, Status::Good);
    {
        let d = lu.backend().data.borrow();
        assert!(d[..512].iter().all(|b| *b == b'b'));
        assert!(d[512..1024].iter().all(|b| *b == b'a'));
    }
    // More than asked: only the CDB's transfer length is written.
    let r = exec(&lu, N1, &cdb10(0x2A, 0, 2, 1), vec![b'c'; 10000]);
    assert_eq!(r.status, Status::Good);
    let d = lu.backend().data.borrow();
    assert!(d[1024..1536].iter().all(|b| *b == b'c'));
    assert!(d[1536..].iter().all(|b| *b == b'a'));
}

#[test]
fn protect_fields_rejected() {
    let lu = ready(config(64));
    for p in 1..8u8 {
        let r = exec(&lu, N1, &cdb10(0x28, p << 5, 0, 1), Vec::new());
        assert_eq!(sense_of(&r), (5, 0x24, 0));
    }
}

#[test]
fn dpo_fua_accepted_on_reads_and_writes() {
    let lu = ready(config(64));
    for flags in [0x10u8, 0x08, 0x18, 0x02] {
        assert_eq!(
            exec(&lu, N1, &cdb10(0x28, flags, 0, 1), Vec::new()).status,
            Status::Good
        );
        let r = exec(&lu, N1, &cdb10(0x2A, flags, 0, 1), vec![0; 512]);
        assert_eq!(r.status, Status::Good);
    }
}

#[test]
fn synchronize_cache_flushes_and_checks_range() {
    let lu = ready(config(64));
    let r = exec(&lu, N1, &cdb10(0x35, 0, 0, 0), Vec::new());
    assert_eq!(r.status, Status::Good);
    assert_eq!(lu.backend().flushes.get(), 1);
    let r = exec(&lu, N1, &cdb16(0x91, 0x02, 10, 5), Vec::new());
    assert_eq!(r.status, Status::Good);
    assert_eq!(lu.backend().flushes.get(), 2);
    let r = exec(&lu, N1, &cdb10(0x35, 0, 60, 5), Vec::new());
    assert_eq!(sense_of(&r), (5, 0x21, 0));
    assert_eq!(lu.backend().flushes.get(), 2);
}

#[test]
fn backend_errors_become_medium_errors() {
    let lu = ready(config(64));
    lu.backend().fail.set(true);
    let r = exec(&lu, N1, &cdb10(0x28, 0, 0, 1), Vec::new());
    assert_eq!(sense_of(&r), (3, 0x11, 0));
    let r = exec(&lu, N1, &cdb10(0x2A, 0, 0, 1), vec![0; 512]);
    assert_eq!(sense_of(&r), (3, 0x0C, 0));
    let r = exec(&lu, N1, &cdb10(0x35, 0, 0, 0), Vec::new());
    assert_eq!(sense_of(&r), (3, 0x0C, 0));
}

#[test]
fn writes_hand_back_their_data_out_allocation_for_reuse() {
    let lu = ready(config(64));
    let mut buf = Vec::with_capacity(4096);
    buf.resize(512, 7);
    let ptr = buf.as_ptr();
    let r = exec(&lu, N1, &cdb10(0x2A, 0, 0, 1), buf);
    assert_eq!(r.status, Status::Good);
    assert!(r.spare.is_empty() && r.spare.capacity() >= 4096);
    assert_eq!(r.spare.as_ptr(), ptr, "the same allocation comes back");
    // A read returns data, not a spare.
    let r = exec(&lu, N1, &cdb10(0x28, 0, 0, 1), Vec::new());
    assert_eq!(r.data_in.len(), 512);
    assert!(r.data_in.iter().all(|&b| b == 7));
}
