//! RESERVE/RELEASE and PERSISTENT RESERVE IN/OUT.

use crate::scsi::testing::*;
use crate::scsi::{LogicalUnit, NexusId, Response, Status};

fn two_nexuses() -> LogicalUnit<MemBackend> {
    named_pair(config(64))
}

/// A unit of `cfg` with nexuses N1 and N2 named, their unit attentions cleared.
pub(super) fn named_pair(cfg: crate::scsi::LuConfig) -> LogicalUnit<MemBackend> {
    let lu = lu(cfg);
    lu.nexus_named(N1, "iqn.2026-11.test:one,i,0x000000000001");
    lu.nexus_named(N2, "iqn.2026-11.test:two,i,0x000000000002");
    clear_ua(&lu, N1);
    clear_ua(&lu, N2);
    lu
}

fn prout(
    lu: &LogicalUnit<MemBackend>,
    n: NexusId,
    sa: u8,
    kind: u8,
    key: u64,
    sa_key: u64,
) -> Response {
    let mut d = key.to_be_bytes().to_vec();
    d.extend_from_slice(&sa_key.to_be_bytes());
    d.extend_from_slice(&[0; 8]);
    exec(lu, n, &[0x5F, sa, kind, 0, 0, 0, 0, 0, 24, 0], d)
}

fn prin(lu: &LogicalUnit<MemBackend>, n: NexusId, sa: u8) -> Vec<u8> {
    let r = exec(lu, n, &[0x5E, sa, 0, 0, 0, 0, 0, 0x10, 0, 0], Vec::new());
    assert_eq!(r.status, Status::Good);
    r.data_in.to_vec()
}

fn keys(lu: &LogicalUnit<MemBackend>) -> (u32, Vec<u64>) {
    let d = prin(lu, N2, 0);
    let generation = u32::from_be_bytes(d[0..4].try_into().unwrap());
    let n = u32::from_be_bytes(d[4..8].try_into().unwrap()) as usize / 8;
    (
        generation,
        (0..n)
            .map(|i| u64::from_be_bytes(d[8 + 8 * i..16 + 8 * i].try_into().unwrap()))
            .collect(),
    )
}

fn read(lu: &LogicalUnit<MemBackend>, n: NexusId) -> Status {
    exec(lu, n, &cdb10(0x28, 0, 1, 1), Vec::new()).status
}

fn write(lu: &LogicalUnit<MemBackend>, n: NexusId) -> Status {
    exec(lu, n, &cdb10(0x2A, 0, 1, 1), vec![0; 512]).status
}

const GOOD: Status = Status::Good;
const CONFLICT: Status = Status::ReservationConflict;

#[test]
fn reserve6_blocks_other_nexus_until_released() {
    let lu = two_nexuses();
    assert_eq!(
        exec(&lu, N1, &[0x16, 0, 0, 0, 0, 0], Vec::new()).status,
        GOOD
    );
    assert_eq!(
        exec(&lu, N1, &[0x16, 0, 0, 0, 0, 0], Vec::new()).status,
        GOOD
    );
    assert_eq!(
        exec(&lu, N2, &[0x16, 0, 0, 0, 0, 0], Vec::new()).status,
        CONFLICT
    );
    // RELEASE from a non-holder is GOOD and changes nothing.
    assert_eq!(
        exec(&lu, N2, &[0x17, 0, 0, 0, 0, 0], Vec::new()).status,
        GOOD
    );
    assert_eq!(
        exec(&lu, N2, &[0x1A, 0, 0x3F, 0, 255, 0], Vec::new()).status,
        CONFLICT
    );
    assert_eq!(
        exec(&lu, N2, &[0x12, 0, 0, 0, 36, 0], Vec::new()).status,
        GOOD
    );
    assert_eq!(read(&lu, N2), CONFLICT);
    assert_eq!(read(&lu, N1), GOOD);
    assert_eq!(
        exec(&lu, N1, &[0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0], Vec::new()).status,
        GOOD
    );
    assert_eq!(
        exec(&lu, N2, &[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0], Vec::new()).status,
        GOOD
    );
    // Nexus loss and LUN reset release it.
    lu.nexus_lost(N2);
    assert_eq!(
        exec(&lu, N1, &[0x16, 0, 0, 0, 0, 0], Vec::new()).status,
        GOOD
    );
    lu.reset();
    clear_ua(&lu, N2);
    assert_eq!(
        exec(&lu, N2, &[0x16, 0, 0, 0, 0, 0], Vec::new()).status,
        GOOD
    );
}

#[test]
fn register_reregister_and_unregister() {
    let lu = two_nexuses();
    let (g0, k) = keys(&lu);
    assert!(k.is_empty());
    assert_eq!(prout(&lu, N1, 0x06, 0, 0, 0xAA).status, GOOD);
    let (g1, k) = keys(&lu);
    assert_eq!((g1, k), (g0 + 1, vec![0xAA]));
    // REGISTER with the wrong current key conflicts.
    assert_eq!(prout(&lu, N1, 0x00, 0, 0xAB, 0xAC).status, CONFLICT);
    assert_eq!(prout(&lu, N1, 0x00, 0, 0xAA, 0xAC).status, GOOD);
    assert_eq!(keys(&lu).1, vec![0xAC]);
    // Unregistered nexus with a non-zero key conflicts; with zero keys it is a no-op.
    assert_eq!(prout(&lu, N2, 0x00, 0, 5, 6).status, CONFLICT);
    let g = keys(&lu).0;
    assert_eq!(prout(&lu, N2, 0x00, 0, 0, 0).status, GOOD);
    assert_eq!(keys(&lu).0, g);
    assert_eq!(prout(&lu, N1, 0x00, 0, 0xAC, 0).status, GOOD);
    assert!(keys(&lu).1.is_empty());
    // Truncated READ KEYS still reports the full length.
    prout(&lu, N1, 0x06, 0, 0, 1);
    let r = exec(&lu, N1, &[0x5E, 0, 0, 0, 0, 0, 0, 0, 8, 0], Vec::new());
    assert_eq!(r.data_in.len(), 8);
    assert_eq!(&r.data_in[4..8], &8u32.to_be_bytes());
}

#[test]
fn access_by_reservation_type() {
    // (type, registered N2 read, write, unregistered N2 read, write)
    let table = [
        (1u8, GOOD, CONFLICT, GOOD, CONFLICT),
        (3, CONFLICT, CONFLICT, CONFLICT, CONFLICT),
        (5, GOOD, GOOD, GOOD, CONFLICT),
        (6, GOOD, GOOD, CONFLICT, CONFLICT),
        (7, GOOD, GOOD, GOOD, CONFLICT),
        (8, GOOD, GOOD, CONFLICT, CONFLICT),
    ];
    for (kind, rr, rw, ur, uw) in table {
        let lu = two_nexuses();
        assert_eq!(prout(&lu, N1, 0x06, 0, 0, 1).status, GOOD);
        assert_eq!(prout(&lu, N2, 0x06, 0, 0, 2).status, GOOD);
        assert_eq!(prout(&lu, N1, 0x01, kind, 1, 0).status, GOOD, "type {kind}");
        let res = prin(&lu, N1, 1);
        assert_eq!(&res[4..8], &16u32.to_be_bytes());
        let holder_key = u64::from_be_bytes(res[8..16].try_into().unwrap());
        assert_eq!(holder_key, if kind >= 7 { 0 } else { 1 });
        assert_eq!(res[21] & 0x0F, kind);
        assert_eq!((read(&lu, N1), write(&lu, N1)), (GOOD, GOOD));
        assert_eq!(
            (read(&lu, N2), write(&lu, N2)),
            (rr, rw),
            "type {kind} registered"
        );
        assert_eq!(prout(&lu, N2, 0x00, 0, 2, 0).status, GOOD);
        assert_eq!(
            (read(&lu, N2), write(&lu, N2)),
            (ur, uw),
            "type {kind} unregistered"
        );
        // INQUIRY, TEST UNIT READY, PR IN are never blocked.
        assert_eq!(
            exec(&lu, N2, &[0x12, 0, 0, 0, 36, 0], Vec::new()).status,
            GOOD
        );
        assert_eq!(exec(&lu, N2, &[0; 6], Vec::new()).status, GOOD);
        // RESERVE(6) conflicts with a persistent reservation.
        assert_eq!(
            exec(&lu, N2, &[0x16, 0, 0, 0, 0, 0], Vec::new()).status,
            CONFLICT
        );
        assert_eq!(prout(&lu, N1, 0x02, kind, 1, 0).status, GOOD);
        assert_eq!(&prin(&lu, N1, 1)[4..8], &0u32.to_be_bytes());
    }
}

#[test]
fn reserve_rules() {
    let lu = two_nexuses();
    // Not registered: conflict.
    assert_eq!(prout(&lu, N1, 0x01, 1, 0, 0).status, CONFLICT);
    prout(&lu, N1, 0x06, 0, 0, 1);
    prout(&lu, N2, 0x06, 0, 0, 2);
    assert_eq!(prout(&lu, N1, 0x01, 1, 1, 0).status, GOOD);
    // Same type again: fine; another type or another nexus: conflict.
    assert_eq!(prout(&lu, N1, 0x01, 1, 1, 0).status, GOOD);
    assert_eq!(prout(&lu, N1, 0x01, 3, 1, 0).status, CONFLICT);
    assert_eq!(prout(&lu, N2, 0x01, 1, 2, 0).status, CONFLICT);
    // RELEASE by a non-holder does nothing; with the wrong type it is an error.
    assert_eq!(prout(&lu, N2, 0x02, 1, 2, 0).status, GOOD);
    let r = prout(&lu, N1, 0x02, 3, 1, 0);
    assert_eq!(sense_of(&r), (5, 0x26, 0x04));
    // Invalid type and scope.
    assert_eq!(sense_of(&prout(&lu, N1, 0x01, 2, 1, 0)), (5, 0x24, 0));
    assert_eq!(sense_of(&prout(&lu, N1, 0x01, 0x11, 1, 0)), (5, 0x24, 0));
    // RESERVE does not bump the generation.
    let g = keys(&lu).0;
    prout(&lu, N1, 0x02, 1, 1, 0);
    prout(&lu, N1, 0x01, 3, 1, 0);
    assert_eq!(keys(&lu).0, g);
}

#[test]
fn unregistering_the_holder_releases() {
    for (kind, shared) in [
        (1u8, false),
        (3, false),
        (5, false),
        (6, false),
        (7, true),
        (8, true),
    ] {
        let lu = two_nexuses();
        prout(&lu, N1, 0x06, 0, 0, 1);
        prout(&lu, N2, 0x06, 0, 0, 2);
        prout(&lu, N1, 0x01, kind, 1, 0);
        assert_eq!(prout(&lu, N1, 0x00, 0, 1, 0).status, GOOD);
        let reserved = prin(&lu, N1, 1)[7] != 0;
        assert_eq!(reserved, shared, "type {kind}");
        if matches!(kind, 5 | 6) {
            assert_eq!(
                sense_of(&exec(&lu, N2, &[0; 6], Vec::new())),
                (6, 0x2A, 0x04)
            );
        }
    }
}

#[test]
fn clear_and_preempt() {
    let lu = two_nexuses();
    prout(&lu, N1, 0x06, 0, 0, 1);
    prout(&lu, N2, 0x06, 0, 0, 2);
    prout(&lu, N1, 0x01, 3, 1, 0);
    // PREEMPT the holder's key: N2 takes over with its own type.
    let g = keys(&lu).0;
    assert_eq!(prout(&lu, N2, 0x04, 1, 2, 1).status, GOOD);
    assert_eq!(keys(&lu), (g + 1, vec![2]));
    let res = prin(&lu, N2, 1);
    assert_eq!(u64::from_be_bytes(res[8..16].try_into().unwrap()), 2);
    assert_eq!(res[21], 1);
    assert_eq!(
        sense_of(&exec(&lu, N1, &[0; 6], Vec::new())),
        (6, 0x2A, 0x05)
    );
    // N1 is no longer registered.
    assert_eq!(prout(&lu, N1, 0x03, 0, 1, 0).status, CONFLICT);
    // PREEMPT of a non-holder key without a reservation just removes the registration.
    prout(&lu, N1, 0x06, 0, 0, 7);
    assert_eq!(prout(&lu, N2, 0x02, 1, 2, 0).status, GOOD);
    assert_eq!(prout(&lu, N2, 0x05, 3, 2, 7).status, GOOD);
    assert_eq!(keys(&lu).1, vec![2]);
    // Unknown key: conflict; zero key without a reservation: invalid parameter.
    assert_eq!(prout(&lu, N2, 0x04, 3, 2, 99).status, CONFLICT);
    assert_eq!(sense_of(&prout(&lu, N2, 0x04, 3, 2, 0)), (5, 0x26, 0));
    // CLEAR removes everything and tells the others.
    clear_ua(&lu, N1);
    assert_eq!(prout(&lu, N1, 0x06, 0, 0, 7).status, GOOD);
    let g = keys(&lu).0;
    assert_eq!(prout(&lu, N2, 0x03, 0, 2, 0).status, GOOD);
    assert_eq!(keys(&lu), (g + 1, vec![]));
    assert_eq!(
        sense_of(&exec(&lu, N1, &[0; 6], Vec::new())),
        (6, 0x2A, 0x03)
    );
}

#[test]
fn registrations_follow_the_initiator_port_name() {
    let lu = two_nexuses();
    prout(&lu, N1, 0x06, 0, 0, 1);
    prout(&lu, N1, 0x01, 3, 1, 0);
    // The session is re-established as a new nexus with the same initiator port name.
    lu.nexus_lost(N1);
    let n3 = NexusId(3);
    lu.nexus_named(n3, "iqn.2026-11.test:one,i,0x000000000001");
    clear_ua(&lu, n3);
    assert_eq!(read(&lu, n3), GOOD);
    assert_eq!(read(&lu, N2), CONFLICT);
}

#[test]
fn pr_in_capabilities_full_status_and_bad_service_actions() {
    let lu = two_nexuses();
    let caps = prin(&lu, N1, 2);
    assert_eq!(&caps[0..2], &[0, 8]);
    assert_eq!((caps[4], caps[5]), (0xEA, 0x01));
    prout(&lu, N1, 0x06, 0, 0, 1);
    prout(&lu, N2, 0x06, 0, 0, 2);
    prout(&lu, N2, 0x01, 1, 2, 0);
    let full = prin(&lu, N1, 3);
    assert_eq!(
        u32::from_be_bytes(full[4..8].try_into().unwrap()) as usize,
        full.len() - 8
    );
    let first_tid_len = u32::from_be_bytes(full[28..32].try_into().unwrap()) as usize;
    let second = 8 + 24 + first_tid_len;
    assert_eq!(
        u64::from_be_bytes(full[second..second + 8].try_into().unwrap()),
        2
    );
    assert_eq!(
        (full[second + 12], full[second + 13]),
        (1, 1),
        "holder, type"
    );
    let tid = &full[second + 24..];
    assert_eq!(tid[0], 0x45);
    assert!(tid[4..].starts_with(b"iqn.2026-11.test:two,i,0x000000000002\0"));
    for sa in 4..0x20u8 {
        let r = exec(&lu, N1, &[0x5E, sa, 0, 0, 0, 0, 0, 0x10, 0, 0], Vec::new());
        assert_eq!(r.status, Status::CheckCondition, "sa {sa}");
    }
    // PROUT parameter list length must be 24.
    let r = exec(&lu, N1, &[0x5F, 0, 0, 0, 0, 0, 0, 0, 20, 0], vec![0; 20]);
    assert_eq!(sense_of(&r), (5, 0x1A, 0));
}
