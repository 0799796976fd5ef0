//! MODE SENSE and MODE SELECT.

use crate::scsi::testing::*;
use crate::scsi::{LogicalUnit, LuConfig, Status};

fn ready(cfg: LuConfig) -> LogicalUnit<MemBackend> {
    let lu = lu(cfg);
    clear_ua(&lu, N1);
    lu
}

/// (page code, page bytes) of the pages in MODE SENSE data after `skip` header bytes.
fn pages(d: &[u8], skip: usize) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = skip;
    while at < d.len() {
        let len = usize::from(d[at + 1]) + 2;
        out.push((d[at] & 0x3F, d[at..at + len].to_vec()));
        at += len;
    }
    out
}

#[test]
fn mode_sense6_all_pages_with_block_descriptor() {
    let lu = ready(config(1000));
    let r = exec(&lu, N1, &[0x1A, 0, 0x3F, 0, 255, 0], Vec::new());
    assert_eq!(r.status, Status::Good);
    let d = &r.data_in;
    assert_eq!(usize::from(d[0]), d.len() - 1);
    assert_eq!(d[2], 0x10, "DPOFUA, not write protected");
    assert_eq!(d[3], 8);
    assert_eq!(&d[4..8], &1000u32.to_be_bytes());
    assert_eq!(&d[9..12], &[0, 2, 0]);
    let p = pages(d, 12);
    assert_eq!(
        p.iter().map(|x| x.0).collect::<Vec<_>>(),
        [0x08, 0x0A, 0x1C]
    );
    assert_eq!(p[0].1[2] & 0x04, 0x04, "WCE");
    // Truncated to the allocation length.
    let r = exec(&lu, N1, &[0x1A, 0, 0x3F, 0, 4, 0], Vec::new());
    assert_eq!(r.data_in.len(), 4);
}

#[test]
fn mode_sense10_long_lba_and_dbd() {
    let lu = ready(config(1000));
    let r = exec(
        &lu,
        N1,
        &[0x5A, 0x10, 0x08, 0, 0, 0, 0, 1, 0, 0],
        Vec::new(),
    );
    let d = &r.data_in;
    assert_eq!(usize::from(u16::from_be_bytes([d[0], d[1]])), d.len() - 2);
    assert_eq!(d[4] & 1, 1, "LONGLBA");
    assert_eq!(&d[6..8], &[0, 16]);
    assert_eq!(u64::from_be_bytes(d[8..16].try_into().unwrap()), 1000);
    assert_eq!(&d[20..24], &512u32.to_be_bytes());
    assert_eq!(d[24], 0x08);
    let r = exec(
        &lu,
        N1,
        &[0x5A, 0x08, 0x0A, 0, 0, 0, 0, 1, 0, 0],
        Vec::new(),
    );
    assert_eq!(&r.data_in[6..8], &[0, 0]);
    assert_eq!(r.data_in[8], 0x0A);
}

#[test]
fn mode_sense_page_controls_and_errors() {
    let lu = ready(config(100));
    let r = exec(&lu, N1, &[0x1A, 0x08, 0x40 | 0x0A, 0, 255, 0], Vec::new());
    let p = &r.data_in[4..];
    assert_eq!(p[2], 0x04, "D_SENSE changeable");
    assert_eq!(p[4], 0x08, "SWP changeable");
    let r = exec(&lu, N1, &[0x1A, 0x08, 0x80 | 0x08, 0, 255, 0], Vec::new());
    assert_eq!(r.data_in[4 + 2] & 0x04, 0x04, "default WCE from config");
    let r = exec(&lu, N1, &[0x1A, 0x08, 0xC0 | 0x08, 0, 255, 0], Vec::new());
    assert_eq!(sense_of(&r), (5, 0x39, 0));
    let r = exec(&lu, N1, &[0x1A, 0x08, 0x19, 0, 255, 0], Vec::new());
    assert_eq!(sense_of(&r), (5, 0x24, 0));
    let r = exec(&lu, N1, &[0x1A, 0x08, 0x0A, 0x01, 255, 0], Vec::new());
    assert_eq!(sense_of(&r), (5, 0x24, 0));
    // Subpage FFh (all subpages) of a page without subpages is the page itself.
    let r = exec(&lu, N1, &[0x1A, 0x08, 0x3F, 0xFF, 255, 0], Vec::new());
    assert_eq!(r.status, Status::Good);
}

fn select6(
    lu: &LogicalUnit<MemBackend>,
    nexus: crate::scsi::NexusId,
    page: &[u8],
) -> crate::scsi::Response {
    let mut list = vec![0, 0, 0, 0];
    list.extend_from_slice(page);
    exec(lu, nexus, &[0x15, 0x10, 0, 0, list.len() as u8, 0], list)
}

fn current_page(lu: &LogicalUnit<MemBackend>, code: u8) -> Vec<u8> {
    exec(lu, N1, &[0x1A, 0x08, code, 0, 255, 0], Vec::new()).data_in[4..].to_vec()
}

#[test]
fn mode_select_changes_wce_and_tells_other_nexuses() {
    let lu = ready(config(100));
    clear_ua(&lu, N2);
    let mut caching = current_page(&lu, 0x08);
    caching[2] &= !0x04;
    assert_eq!(select6(&lu, N1, &caching).status, Status::Good);
    assert_eq!(current_page(&lu, 0x08)[2] & 0x04, 0);
    exec(&lu, N1, &cdb10(0x2A, 0, 0, 1), vec![0; 512]);
    assert_eq!(
        lu.backend().fua_writes.get(),
        1,
        "write-through without WCE"
    );
    assert_eq!(exec(&lu, N1, &[0; 6], Vec::new()).status, Status::Good);
    assert_eq!(
        sense_of(&exec(&lu, N2, &[0; 6], Vec::new())),
        (6, 0x2A, 0x01)
    );
    // Selecting the same values again changes nothing and raises nothing.
    assert_eq!(select6(&lu, N1, &caching).status, Status::Good);
    assert_eq!(exec(&lu, N2, &[0; 6], Vec::new()).status, Status::Good);
}

#[test]
fn mode_select_swp_write_protects() {
    let lu = ready(config(100));
    let mut control = current_page(&lu, 0x0A);
    control[4] |= 0x08;
    assert_eq!(select6(&lu, N1, &control).status, Status::Good);
    let r = exec(&lu, N1, &cdb10(0x2A, 0, 0, 1), vec![0; 512]);
    assert_eq!(sense_of(&r), (7, 0x27, 0));
    assert_eq!(
        exec(&lu, N1, &cdb10(0x28, 0, 0, 1), Vec::new()).status,
        Status::Good
    );
    control[4] &= !0x08;
    assert_eq!(select6(&lu, N1, &control).status, Status::Good);
    assert_eq!(
        exec(&lu, N1, &cdb10(0x2A, 0, 0, 1), vec![0; 512]).status,
        Status::Good
    );
}

#[test]
fn mode_select_rejects_unchangeable_fields() {
    let lu = ready(config(100));
    let mut control = current_page(&lu, 0x0A);
    control[3] ^= 0x10; // queue algorithm modifier
    let r = select6(&lu, N1, &control);
    assert_eq!(sense_of(&r), (5, 0x26, 0));
    // Field pointer: byte 4 (header) + 3, bit 4.
    assert_eq!(&r.sense[15..18], &[0x80 | 0x08 | 4, 0, 7]);
    // Wrong page length.
    let mut caching = current_page(&lu, 0x08);
    caching[1] = 0x10;
    assert_eq!(sense_of(&select6(&lu, N1, &caching[..18])), (5, 0x26, 0));
    // Unknown page.
    assert_eq!(sense_of(&select6(&lu, N1, &[0x19, 2, 0, 0])), (5, 0x26, 0));
    // SP is not supported.
    let list = vec![0, 0, 0, 0];
    let r = exec(&lu, N1, &[0x15, 0x11, 0, 0, 4, 0], list);
    assert_eq!(sense_of(&r), (5, 0x24, 0));
    // Truncated parameter list.
    let r = exec(&lu, N1, &[0x15, 0x10, 0, 0, 12, 0], vec![0; 6]);
    assert_eq!(sense_of(&r), (5, 0x1A, 0));
    // A block descriptor may only restate the geometry.
    let mut list = vec![0, 0, 0, 8, 0, 0, 0, 100, 0, 0, 2, 0];
    assert_eq!(
        exec(&lu, N1, &[0x15, 0x10, 0, 0, 12, 0], list.clone()).status,
        Status::Good
    );
    list[10] = 0x10;
    assert_eq!(
        sense_of(&exec(&lu, N1, &[0x15, 0x10, 0, 0, 12, 0], list)),
        (5, 0x26, 0)
    );
}

#[test]
fn mode_select10_works_too() {
    let lu = ready(config(100));
    let mut control = current_page(&lu, 0x0A);
    control[2] |= 0x04;
    let mut list = vec![0u8; 8];
    list.extend_from_slice(&control);
    let len = list.len() as u8;
    let r = exec(&lu, N1, &[0x55, 0x10, 0, 0, 0, 0, 0, 0, len, 0], list);
    assert_eq!(r.status, Status::Good);
    let r = exec(&lu, N1, &[0xC7, 0, 0, 0, 0, 0], Vec::new());
    assert_eq!(r.sense[0], 0x72, "descriptor sense now");
}
