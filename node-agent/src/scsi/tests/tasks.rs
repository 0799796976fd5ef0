//! The task set across I_T nexuses: task attributes, aborts with TASK ABORTED, PREEMPT AND
//! ABORT completing only after the preempted nexuses' commands.

use std::rc::Rc;

use crate::scsi::testing::*;
use crate::scsi::{LogicalUnit, NexusId, Response, Status, TaskAttr, TaskKey};

type Lu = Rc<LogicalUnit<MemBackend>>;

fn two_nexuses() -> Lu {
    let lu = lu(config(64));
    lu.nexus_named(N1, "iqn.2026-11.test:one,i,0x000000000001");
    lu.nexus_named(N2, "iqn.2026-11.test:two,i,0x000000000002");
    clear_ua(&lu, N1);
    clear_ua(&lu, N2);
    Rc::new(lu)
}

fn key(nexus: NexusId, tag: u64, attr: TaskAttr) -> TaskKey {
    TaskKey { nexus, tag, attr }
}

/// Starts a command as its own task; its response arrives on the returned handle.
fn spawn(lu: &Lu, k: TaskKey, cdb: Vec<u8>, data: Vec<u8>) -> tokio::task::JoinHandle<Response> {
    let lu = lu.clone();
    tokio::task::spawn_local(async move { lu.execute_task(k, &lu.decode(&cdb), data).await })
}

fn prout_params(key: u64, sa_key: u64) -> Vec<u8> {
    let mut d = key.to_be_bytes().to_vec();
    d.extend_from_slice(&sa_key.to_be_bytes());
    d.extend_from_slice(&[0; 8]);
    d
}

fn prout_cdb(sa: u8, kind: u8) -> Vec<u8> {
    vec![0x5F, sa, kind, 0, 0, 0, 0, 0, 24, 0]
}

fn on_local<F: std::future::Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f);
}

async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

#[test]
fn preempt_and_abort_completes_only_after_the_preempted_writes_ended() {
    let lu = two_nexuses();
    on_local(async move {
        // N1 and N2 register; N2 holds a WRITE EXCLUSIVE reservation.
        for (n, k) in [(N1, 1u64), (N2, 2)] {
            let r = spawn(
                &lu,
                key(n, 0, TaskAttr::Simple),
                prout_cdb(0, 0),
                prout_params(0, k),
            );
            assert_eq!(r.await.unwrap().status, Status::Good);
        }
        let r = spawn(
            &lu,
            key(N2, 0, TaskAttr::Simple),
            prout_cdb(1, 1),
            prout_params(2, 0),
        );
        assert_eq!(r.await.unwrap().status, Status::Good);
        // A write of N2 is in flight (the store holds it), another waits behind an ORDERED one.
        lu.backend().hold_writes.set(true);
        let in_flight = spawn(
            &lu,
            key(N2, 10, TaskAttr::Simple),
            cdb10(0x2A, 0, 5, 1),
            vec![0xAA; 512],
        );
        settle().await;
        let ordered = spawn(
            &lu,
            key(N2, 11, TaskAttr::Ordered),
            cdb10(0x2A, 0, 6, 1),
            vec![0xBB; 512],
        );
        settle().await;
        // N1 preempts N2's key and aborts its tasks (HEAD OF QUEUE: as SIMPLE it would wait
        // for the ORDERED task to end first).
        let paa = spawn(
            &lu,
            key(N1, 20, TaskAttr::HeadOfQueue),
            prout_cdb(5, 1),
            prout_params(1, 2),
        );
        settle().await;
        assert!(
            !paa.is_finished(),
            "PREEMPT AND ABORT waits for the preempted write"
        );
        lu.backend().release_writes();
        let r = paa.await.unwrap();
        assert_eq!(r.status, Status::Good);
        assert_eq!(
            r.preempted,
            vec![N2],
            "the engine is told whose tasks to end"
        );
        // TAS=1: the preempted nexus's commands end with TASK ABORTED. The one in flight
        // finished its I/O; the waiting one never ran.
        assert_eq!(in_flight.await.unwrap().status, Status::TaskAborted);
        assert_eq!(ordered.await.unwrap().status, Status::TaskAborted);
        assert_eq!(
            lu.backend().data.borrow()[6 * 512],
            0,
            "the waiting write never landed"
        );
        assert_eq!(lu.tasks_in_set(), 0);
        // N2 learns it was preempted, and may not write any more.
        assert_eq!(
            sense_of(&lu.execute(N2, &[0; 6], Vec::new()).await),
            (6, 0x2A, 0x05)
        );
        let w = lu.execute(N2, &cdb10(0x2A, 0, 7, 1), vec![1; 512]).await;
        assert_eq!(w.status, Status::ReservationConflict);
        let w = lu.execute(N1, &cdb10(0x2A, 0, 7, 1), vec![1; 512]).await;
        assert_eq!(
            w.status,
            Status::Good,
            "the preempter holds the reservation now"
        );
    });
}

#[test]
fn ordered_tasks_are_ordered_across_nexuses_and_head_of_queue_jumps() {
    let lu = two_nexuses();
    on_local(async move {
        lu.backend().hold_writes.set(true);
        let first = spawn(
            &lu,
            key(N1, 1, TaskAttr::Simple),
            cdb10(0x2A, 0, 1, 1),
            vec![1; 512],
        );
        settle().await;
        // N2's ORDERED read of that block waits for N1's write, and N1's next SIMPLE write
        // waits for the ORDERED read.
        let ordered = spawn(
            &lu,
            key(N2, 1, TaskAttr::Ordered),
            cdb10(0x28, 0, 1, 1),
            Vec::new(),
        );
        let after = spawn(
            &lu,
            key(N1, 2, TaskAttr::Simple),
            cdb10(0x28, 0, 2, 1),
            Vec::new(),
        );
        let hoq = spawn(
            &lu,
            key(N1, 3, TaskAttr::HeadOfQueue),
            vec![0; 6],
            Vec::new(),
        );
        settle().await;
        assert!(hoq.is_finished(), "HEAD OF QUEUE does not wait");
        assert!(!ordered.is_finished() && !after.is_finished());
        lu.backend().release_writes();
        assert_eq!(first.await.unwrap().status, Status::Good);
        let r = ordered.await.unwrap();
        assert_eq!(r.status, Status::Good);
        assert_eq!(r.data_in[0], 1, "the ORDERED read saw the older write");
        assert_eq!(after.await.unwrap().status, Status::Good);
    });
}

#[test]
fn aborting_every_task_of_a_unit_waits_for_those_running() {
    let lu = two_nexuses();
    on_local(async move {
        lu.backend().hold_writes.set(true);
        let a = spawn(
            &lu,
            key(N1, 1, TaskAttr::Simple),
            cdb10(0x2A, 0, 1, 1),
            vec![1; 512],
        );
        let b = spawn(
            &lu,
            key(N2, 1, TaskAttr::Simple),
            cdb10(0x2A, 0, 2, 1),
            vec![2; 512],
        );
        settle().await;
        let aborted = lu.abort_tasks(|_| true);
        assert_eq!(aborted.len(), 2);
        let lu2 = lu.clone();
        let ended = tokio::task::spawn_local(async move { lu2.tasks_ended(aborted).await });
        settle().await;
        assert!(!ended.is_finished(), "both writes are still at the store");
        lu.backend().release_writes();
        ended.await.unwrap();
        assert_eq!(a.await.unwrap().status, Status::TaskAborted);
        assert_eq!(b.await.unwrap().status, Status::TaskAborted);
        // Later commands run normally.
        assert_eq!(
            lu.execute(N1, &[0; 6], Vec::new()).await.status,
            Status::Good
        );
    });
}
