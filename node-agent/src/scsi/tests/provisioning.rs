//! UNMAP, WRITE SAME, GET LBA STATUS.

use crate::scsi::testing::*;
use crate::scsi::{LogicalUnit, LuConfig, Status};

fn thin(blocks: u64) -> LogicalUnit<MemBackend> {
    let lu = lu(LuConfig {
        thin: true,
        ..config(blocks)
    });
    clear_ua(&lu, N1);
    lu
}

fn unmap_cdb(len: usize) -> Vec<u8> {
    vec![0x42, 0, 0, 0, 0, 0, 0, (len >> 8) as u8, len as u8, 0]
}

fn lba_status(lba: u64, alloc: u32) -> Vec<u8> {
    let mut c = vec![0x9E, 0x12];
    c.extend_from_slice(&lba.to_be_bytes());
    c.extend_from_slice(&alloc.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    c
}

#[test]
fn unmap_deallocates_and_reads_zero() {
    let lu = thin(64);
    lu.backend().data.borrow_mut().fill(b'a');
    let list = unmap_list(&[(2, 3), (10, 1), (20, 0)]);
    let r = exec(&lu, N1, &unmap_cdb(list.len()), list);
    assert_eq!(r.status, Status::Good);
    let d = lu.backend().data.borrow();
    assert!(d[1024..2560].iter().all(|b| *b == 0));
    assert!(d[5120..5632].iter().all(|b| *b == 0));
    assert_eq!(d[1023], b'a');
    assert_eq!(d[2560], b'a');
    drop(d);
    let r = exec(&lu, N1, &lba_status(2, 24), Vec::new());
    assert_eq!(&r.data_in[0..4], &20u32.to_be_bytes());
    assert_eq!(u64::from_be_bytes(r.data_in[8..16].try_into().unwrap()), 2);
    assert_eq!(&r.data_in[16..20], &3u32.to_be_bytes());
    assert_eq!(r.data_in[20], 1, "deallocated");
    let r = exec(&lu, N1, &lba_status(5, 24), Vec::new());
    assert_eq!(u64::from_be_bytes(r.data_in[8..16].try_into().unwrap()), 5);
    assert_eq!(&r.data_in[16..20], &5u32.to_be_bytes());
    assert_eq!(r.data_in[20], 0, "mapped");
}

#[test]
fn unmap_errors() {
    let lu = thin(64);
    let list = unmap_list(&[(60, 5)]);
    let r = exec(&lu, N1, &unmap_cdb(list.len()), list);
    assert_eq!(sense_of(&r), (5, 0x21, 0));
    let r = exec(&lu, N1, &unmap_cdb(4), vec![0; 4]);
    assert_eq!(sense_of(&r), (5, 0x1A, 0));
    // Parameter list length larger than the Data-Out.
    let r = exec(&lu, N1, &unmap_cdb(24), vec![0; 8]);
    assert_eq!(sense_of(&r), (5, 0x1A, 0));
    let mut cdb = unmap_cdb(8);
    cdb[1] = 1; // ANCHOR
    let r = exec(&lu, N1, &cdb, unmap_list(&[]));
    assert_eq!(sense_of(&r), (5, 0x24, 0));
    // Empty list and zero length are fine.
    assert_eq!(
        exec(&lu, N1, &unmap_cdb(0), Vec::new()).status,
        Status::Good
    );
    let list = unmap_list(&[(64, 0)]);
    assert_eq!(
        exec(&lu, N1, &unmap_cdb(list.len()), list).status,
        Status::Good
    );
}

#[test]
fn unmap_needs_thin_provisioning_and_a_writable_unit() {
    let lu = lu(config(64));
    clear_ua(&lu, N1);
    let list = unmap_list(&[(0, 1)]);
    let r = exec(&lu, N1, &unmap_cdb(list.len()), list);
    assert_eq!(sense_of(&r), (5, 0x20, 0));
    let lu = lu_ro();
    let list = unmap_list(&[(0, 1)]);
    let r = exec(&lu, N1, &unmap_cdb(list.len()), list);
    assert_eq!(sense_of(&r), (7, 0x27, 0));
}

fn lu_ro() -> LogicalUnit<MemBackend> {
    let lu = lu(LuConfig {
        thin: true,
        read_only: true,
        ..config(64)
    });
    clear_ua(&lu, N1);
    lu
}

fn ws10(flags: u8, lba: u32, blocks: u16) -> Vec<u8> {
    cdb10(0x41, flags, lba, blocks)
}

#[test]
fn write_same_writes_the_pattern_everywhere() {
    let lu = thin(4096);
    let pattern: Vec<u8> = (0..512).map(|i| (i % 13) as u8).collect();
    // 3000 blocks = more than one chunk of 1 MiB.
    let r = exec(&lu, N1, &ws10(0, 7, 3000), pattern.clone());
    assert_eq!(r.status, Status::Good);
    let d = lu.backend().data.borrow();
    for b in 7..3007 {
        assert_eq!(&d[b * 512..(b + 1) * 512], &pattern[..], "block {b}");
    }
    assert!(d[..7 * 512].iter().all(|x| *x == 0));
    assert!(d[3007 * 512..].iter().all(|x| *x == 0));
}

#[test]
fn write_same_zero_blocks_means_to_the_end() {
    let lu = thin(64);
    let r = exec(&lu, N1, &ws10(0, 60, 0), vec![9; 512]);
    assert_eq!(r.status, Status::Good);
    let d = lu.backend().data.borrow();
    assert!(d[60 * 512..].iter().all(|x| *x == 9));
    assert_eq!(d[60 * 512 - 1], 0);
}

#[test]
fn write_same_unmap_and_ndob() {
    let lu = thin(64);
    lu.backend().data.borrow_mut().fill(0xFF);
    let r = exec(&lu, N1, &ws10(0x08, 4, 8), vec![0; 512]);
    assert_eq!(r.status, Status::Good);
    assert!(!lu.backend().mapped.borrow()[4]);
    assert!(
        lu.backend().data.borrow()[2048..6144]
            .iter()
            .all(|x| *x == 0)
    );
    // UNMAP deallocates even with a non-zero pattern (the blocks then read as zeros).
    let r = exec(&lu, N1, &ws10(0x08, 20, 1), vec![5; 512]);
    assert_eq!(r.status, Status::Good);
    assert!(
        lu.backend().data.borrow()[20 * 512..21 * 512]
            .iter()
            .all(|x| *x == 0)
    );
    // WRITE SAME(16) with NDOB: zeros without Data-Out.
    let r = exec(&lu, N1, &cdb16(0x93, 0x09, 30, 2), Vec::new());
    assert_eq!(r.status, Status::Good);
    assert!(
        lu.backend().data.borrow()[30 * 512..32 * 512]
            .iter()
            .all(|x| *x == 0)
    );
}

#[test]
fn write_same_errors() {
    let lu = thin(64);
    // ANCHOR is not supported, with or without UNMAP.
    assert_eq!(
        sense_of(&exec(&lu, N1, &ws10(0x10, 0, 1), vec![0; 512])),
        (5, 0x24, 0)
    );
    assert_eq!(
        sense_of(&exec(&lu, N1, &ws10(0x18, 0, 1), vec![0; 512])),
        (5, 0x24, 0)
    );
    // Data-Out must be exactly one block.
    assert_eq!(
        sense_of(&exec(&lu, N1, &ws10(0, 0, 1), vec![0; 256])),
        (5, 0x0E, 0x03)
    );
    assert_eq!(
        sense_of(&exec(&lu, N1, &ws10(0, 0, 1), vec![0; 1024])),
        (5, 0x0E, 0x03)
    );
    for (lba, n) in [(64u32, 1u16), (63, 2), (65, 0), (u32::MAX, 1)] {
        let r = exec(&lu, N1, &ws10(0, lba, n), vec![0; 512]);
        assert_eq!(sense_of(&r), (5, 0x21, 0), "{lba} {n}");
    }
    // UNMAP on a fully provisioned unit is an invalid field.
    let thick = lu_plain();
    assert_eq!(
        sense_of(&exec(&thick, N1, &ws10(0x08, 0, 1), vec![0; 512])),
        (5, 0x24, 0)
    );
    let ro = lu_ro();
    assert_eq!(
        sense_of(&exec(&ro, N1, &ws10(0, 0, 1), vec![0; 512])),
        (7, 0x27, 0)
    );
}

#[test]
fn write_same_longer_than_the_limit_is_invalid() {
    let blocks = 0x10000 + 10;
    let lu = LogicalUnit::new(
        LuConfig {
            thin: true,
            ..config(blocks)
        },
        MemBackend::new(0),
    );
    clear_ua(&lu, N1);
    let r = exec(&lu, N1, &ws10(0, 0, 0), vec![0; 512]);
    assert_eq!(sense_of(&r), (5, 0x24, 0));
    let r = exec(&lu, N1, &cdb16(0x93, 0x08, 0, 0x10000), vec![0; 512]);
    assert_eq!(sense_of(&r), (5, 0x24, 0));
}

fn lu_plain() -> LogicalUnit<MemBackend> {
    let lu = lu(config(64));
    clear_ua(&lu, N1);
    lu
}

#[test]
fn get_lba_status_range_and_thick_units() {
    let lu = thin(64);
    for lba in [64u64, 65, u64::MAX, 1 << 63] {
        assert_eq!(
            sense_of(&exec(&lu, N1, &lba_status(lba, 24), Vec::new())),
            (5, 0x21, 0)
        );
    }
    let r = exec(&lu, N1, &lba_status(63, 24), Vec::new());
    assert_eq!(&r.data_in[16..20], &1u32.to_be_bytes());
    let thick = lu_plain();
    let r = exec(&thick, N1, &lba_status(10, 1024), Vec::new());
    assert_eq!(r.data_in.len(), 24);
    assert_eq!(&r.data_in[16..20], &54u32.to_be_bytes());
    assert_eq!(r.data_in[20], 0);
}

#[test]
fn get_lba_status_lists_several_extents() {
    let lu = thin(64);
    let list = unmap_list(&[(8, 8), (24, 8)]);
    exec(&lu, N1, &unmap_cdb(list.len()), list);
    let r = exec(&lu, N1, &lba_status(0, 1024), Vec::new());
    let n = (r.data_in.len() - 8) / 16;
    assert_eq!(n, 5);
    let ext: Vec<(u64, u32, u8)> = r.data_in[8..]
        .chunks(16)
        .map(|c| {
            (
                u64::from_be_bytes(c[0..8].try_into().unwrap()),
                u32::from_be_bytes(c[8..12].try_into().unwrap()),
                c[12],
            )
        })
        .collect();
    assert_eq!(
        ext,
        [(0, 8, 0), (8, 8, 1), (16, 8, 0), (24, 8, 1), (32, 32, 0)]
    );
}

#[test]
fn without_the_write_cache_a_deallocation_is_flushed_before_good() {
    for (wce, flushes) in [(true, 0), (false, 2)] {
        let lu = lu(LuConfig {
            thin: true,
            write_cache: wce,
            ..config(64)
        });
        clear_ua(&lu, N1);
        let list = unmap_list(&[(2, 3)]);
        assert_eq!(
            exec(&lu, N1, &unmap_cdb(list.len()), list).status,
            Status::Good
        );
        let r = exec(&lu, N1, &ws10(0x08, 10, 4), vec![0; 512]);
        assert_eq!(r.status, Status::Good);
        assert_eq!(lu.backend().flushes.get(), flushes, "write cache {wce}");
    }
}
