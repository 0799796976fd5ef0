//! Persistent reservations through power loss: APTPL, a unit that always persists, the
//! file written before GOOD, restored into a new unit, and a save that fails.

use std::path::Path;

use super::reservations::named_pair;
use crate::scsi::pr_record;
use crate::scsi::testing::*;
use crate::scsi::{LogicalUnit, LuConfig, NexusId, Response, Status};

const ONE: &str = "iqn.2026-11.test:one,i,0x000000000001";

fn unit(file: &Path, always: bool) -> LogicalUnit<MemBackend> {
    let cfg = LuConfig {
        pr_file: Some(file.to_path_buf()),
        pr_always: always,
        target_iqn: "iqn.2026-11.dev.spindle:t".into(),
        ..config(64)
    };
    named_pair(cfg)
}

fn prout(
    lu: &LogicalUnit<MemBackend>,
    n: NexusId,
    sa: u8,
    kind: u8,
    keys: (u64, u64),
    aptpl: bool,
) -> Response {
    let mut d = keys.0.to_be_bytes().to_vec();
    d.extend_from_slice(&keys.1.to_be_bytes());
    d.extend_from_slice(&[0; 4]);
    d.extend_from_slice(&[u8::from(aptpl), 0, 0, 0]);
    exec(lu, n, &[0x5F, sa, kind, 0, 0, 0, 0, 0, 24, 0], d)
}

fn prin(lu: &LogicalUnit<MemBackend>, n: NexusId, sa: u8) -> Vec<u8> {
    let r = exec(lu, n, &[0x5E, sa, 0, 0, 0, 0, 0, 0x10, 0, 0], Vec::new());
    assert_eq!(r.status, Status::Good);
    r.data_in.to_vec()
}

fn write(lu: &LogicalUnit<MemBackend>, n: NexusId) -> Status {
    exec(lu, n, &cdb10(0x2A, 0, 1, 1), vec![0; 512]).status
}

/// REPORT CAPABILITIES: (PTPL_C, PTPL_A).
fn ptpl(lu: &LogicalUnit<MemBackend>) -> (bool, bool) {
    let d = prin(lu, N1, 2);
    (d[2] & 0x01 != 0, d[3] & 0x01 != 0)
}

fn restart(file: &Path, always: bool) -> LogicalUnit<MemBackend> {
    let restored = match std::fs::read(file) {
        Ok(b) => Some(pr_record::decode(&b).unwrap()),
        Err(_) => None,
    };
    let lu = unit(file, always);
    lu.restore_reservations(restored).unwrap();
    lu
}

#[test]
fn aptpl_persists_before_good_and_a_new_unit_serves_the_same_state() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("pr/dev.json");
    let lu = unit(&file, false);
    assert_eq!(ptpl(&lu), (true, false));
    // Without APTPL nothing is written.
    assert_eq!(prout(&lu, N1, 0, 0, (0, 0xA1), false).status, Status::Good);
    assert!(!file.exists());
    // APTPL=1: written before GOOD, PTPL_A set.
    assert_eq!(prout(&lu, N2, 0, 0, (0, 0xB2), true).status, Status::Good);
    assert!(file.exists());
    assert_eq!(ptpl(&lu), (true, true));
    // WRITE EXCLUSIVE - REGISTRANTS ONLY by one, then two preempts it.
    assert_eq!(prout(&lu, N1, 1, 5, (0xA1, 0), false).status, Status::Good);
    assert_eq!(
        prout(&lu, N2, 4, 5, (0xB2, 0xA1), false).status,
        Status::Good
    );
    clear_ua(&lu, N1); // REGISTRATIONS PREEMPTED
    let saved = pr_record::decode(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved, lu.reservations_record(), "each change is on disk");
    let full = prin(&lu, N1, 3);
    let keys = prin(&lu, N1, 0);
    let resv = prin(&lu, N1, 1);

    let again = restart(&file, false);
    assert_eq!(again.reservations_record(), lu.reservations_record());
    assert_eq!(prin(&again, N1, 3), full, "READ FULL STATUS is the same");
    assert_eq!(prin(&again, N1, 0), keys, "READ KEYS is the same");
    assert_eq!(prin(&again, N1, 1), resv, "READ RESERVATION is the same");
    // The preempted host is fenced after the restart; the holder writes.
    assert_eq!(write(&again, N1), Status::ReservationConflict);
    assert_eq!(write(&again, N2), Status::Good);
    assert_eq!(ptpl(&again), (true, true));
}

#[test]
fn aptpl_zero_afterwards_removes_the_file_unless_the_unit_always_persists() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("dev.json");
    let lu = unit(&file, false);
    prout(&lu, N1, 0, 0, (0, 1), true);
    assert!(file.exists());
    // REGISTER AND IGNORE EXISTING KEY with APTPL=0: the state no longer persists.
    assert_eq!(prout(&lu, N1, 6, 0, (0, 2), false).status, Status::Good);
    assert!(!file.exists());
    assert_eq!(ptpl(&lu), (true, false));
    let gone = restart(&file, false);
    assert!(gone.reservations_record().registrants.is_empty());

    let always = unit(&file, true);
    assert_eq!(ptpl(&always), (true, true));
    assert_eq!(prout(&always, N1, 0, 0, (0, 3), false).status, Status::Good);
    let back = restart(&file, true);
    assert_eq!(back.reservations_record().registrants[0].key, 3);
}

#[test]
fn a_unit_without_a_file_refuses_aptpl() {
    let lu = lu(config(64));
    lu.nexus_named(N1, ONE);
    clear_ua(&lu, N1);
    assert_eq!(ptpl(&lu), (false, false));
    assert_eq!(sense_of(&prout(&lu, N1, 0, 0, (0, 1), true)), (5, 0x26, 0));
}

#[test]
fn a_change_that_cannot_be_saved_fails_and_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    // The file's directory is a regular file: every save fails.
    let blocker = d.path().join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let lu = unit(&blocker.join("dev.json"), true);
    let r = prout(&lu, N1, 0, 0, (0, 1), true);
    assert_eq!(r.status, Status::CheckCondition);
    assert_eq!(sense_of(&r), (4, 0x44, 0));
    assert!(lu.reservations_record().registrants.is_empty());
    assert_eq!(
        u32::from_be_bytes(prin(&lu, N1, 0)[0..4].try_into().unwrap()),
        0
    );
}
