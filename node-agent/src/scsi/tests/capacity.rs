//! Growing a logical unit live: READ CAPACITY follows, every I_T nexus sees CAPACITY DATA HAS
//! CHANGED once, commands in flight are not disturbed.

use crate::scsi::Status;
use crate::scsi::sense::CAPACITY_DATA_HAS_CHANGED;
use crate::scsi::testing::*;

const READ_CAPACITY10: [u8; 10] = [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const READ_CAPACITY16: [u8; 16] = [0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];

fn last_lba16(r: &crate::scsi::Response) -> u64 {
    u64::from_be_bytes(r.data_in[0..8].try_into().expect("8 bytes"))
}

#[test]
fn grow_raises_capacity_changed_once_per_nexus_and_read_capacity_follows() {
    let lu = lu(config(100));
    clear_ua(&lu, N1);
    clear_ua(&lu, N2);
    assert!(lu.grow(300));
    assert_eq!(lu.num_blocks(), 300);
    for n in [N1, N2] {
        let r = exec(&lu, n, &READ_CAPACITY16, Vec::new());
        assert_eq!(r.status, Status::CheckCondition, "{n:?}: {r:?}");
        let asc = CAPACITY_DATA_HAS_CHANGED;
        assert_eq!(sense_of(&r), (0x6, asc.0, asc.1), "{n:?}");
        // Once: the next command runs and sees the new size.
        let r = exec(&lu, n, &READ_CAPACITY16, Vec::new());
        assert_eq!(r.status, Status::Good, "{n:?}");
        assert_eq!(last_lba16(&r), 299);
        let r = exec(&lu, n, &READ_CAPACITY10, Vec::new());
        assert_eq!(r.status, Status::Good);
        assert_eq!(u32::from_be_bytes(r.data_in[0..4].try_into().unwrap()), 299);
    }
}

#[test]
fn the_new_blocks_are_readable_and_writable_the_old_data_stays() {
    let lu = lu(config(8));
    clear_ua(&lu, N1);
    let w = exec(&lu, N1, &cdb10(0x2A, 0, 7, 1), vec![0xAB; 512]);
    assert_eq!(w.status, Status::Good);
    // Past the end before the grow.
    let r = exec(&lu, N1, &cdb10(0x28, 0, 8, 1), Vec::new());
    assert_eq!(sense_of(&r), (0x5, 0x21, 0x00));
    assert!(lu.grow(16));
    clear_ua(&lu, N1);
    let w = exec(&lu, N1, &cdb16(0x8A, 0, 15, 1), vec![0xCD; 512]);
    assert_eq!(w.status, Status::Good, "{w:?}");
    let r = exec(&lu, N1, &cdb10(0x28, 0, 7, 9), Vec::new());
    assert_eq!(r.status, Status::Good);
    assert!(r.data_in[..512].iter().all(|b| *b == 0xAB));
    assert!(r.data_in[512..8 * 512].iter().all(|b| *b == 0));
    assert!(r.data_in[8 * 512..].iter().all(|b| *b == 0xCD));
}

#[test]
fn shrinking_or_overflowing_changes_nothing() {
    let lu = lu(config(100));
    clear_ua(&lu, N1);
    assert!(!lu.grow(100));
    assert!(!lu.grow(50));
    assert!(!lu.grow(u64::MAX));
    assert_eq!(lu.num_blocks(), 100);
    let r = exec(&lu, N1, &READ_CAPACITY16, Vec::new());
    assert_eq!(r.status, Status::Good, "no unit attention: {r:?}");
    assert_eq!(last_lba16(&r), 99);
}

#[test]
fn a_write_in_flight_during_the_grow_completes() {
    let lu = lu(config(8));
    clear_ua(&lu, N1);
    lu.backend().hold_writes.set(true);
    block_on(async {
        let cdb = cdb10(0x2A, 0, 0, 1);
        let write = lu.execute(N1, &cdb, vec![0x11; 512]);
        let grow = async {
            tokio::task::yield_now().await;
            assert!(lu.grow(32));
            lu.backend().release_writes();
        };
        let (r, ()) = tokio::join!(write, grow);
        assert_eq!(r.status, Status::Good, "{r:?}");
    });
    assert_eq!(lu.backend().data.borrow()[0], 0x11);
}
