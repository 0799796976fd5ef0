//! SANITIZE: OVERWRITE and BLOCK ERASE over the whole unit, CRYPTO ERASE refused, the NOT
//! READY state (with progress) while one runs, failure mode and EXIT FAILURE MODE.

use std::rc::Rc;

use crate::scsi::testing::*;
use crate::scsi::{LogicalUnit, LuConfig, Status, TaskAttr, TaskKey};

fn sanitize_cdb(sa: u8, len: u16) -> Vec<u8> {
    let [hi, lo] = len.to_be_bytes();
    vec![0x48, sa, 0, 0, 0, 0, 0, hi, lo, 0]
}

fn overwrite_list(pattern: &[u8]) -> Vec<u8> {
    let mut v = vec![0x01, 0];
    v.extend_from_slice(&(pattern.len() as u16).to_be_bytes());
    v.extend_from_slice(pattern);
    v
}

fn thin(blocks: u64) -> LogicalUnit<MemBackend> {
    let lu = lu(LuConfig {
        thin: true,
        ..config(blocks)
    });
    clear_ua(&lu, N1);
    lu
}

#[test]
fn overwrite_writes_the_pattern_over_every_block() {
    let lu = thin(4096);
    let list = overwrite_list(&[1, 2, 3, 4]);
    let r = exec(&lu, N1, &sanitize_cdb(0x01, list.len() as u16), list);
    assert_eq!(r.status, Status::Good);
    let d = lu.backend().data.borrow();
    assert!(
        d.chunks(4).all(|c| c == [1, 2, 3, 4]),
        "every block holds the pattern"
    );
    assert!(
        lu.backend().flushes.get() >= 1,
        "the result is made durable"
    );
}

#[test]
fn block_erase_deallocates_every_block() {
    let lu = thin(4096);
    lu.backend().data.borrow_mut().fill(b'a');
    let r = exec(&lu, N1, &sanitize_cdb(0x02, 0), Vec::new());
    assert_eq!(r.status, Status::Good);
    assert!(lu.backend().data.borrow().iter().all(|b| *b == 0));
    assert!(lu.backend().mapped.borrow().iter().all(|m| !m));
    // A parameter list is an error for BLOCK ERASE and EXIT FAILURE MODE.
    for sa in [0x02, 0x1F] {
        let r = exec(&lu, N1, &sanitize_cdb(sa, 8), vec![0; 8]);
        assert_eq!(sense_of(&r), (5, 0x24, 0), "sa {sa:#x}");
    }
}

#[test]
fn crypto_erase_reserved_fields_and_write_protect_are_refused() {
    let lu = thin(64);
    lu.backend().data.borrow_mut().fill(b'a');
    for sa in [0x00, 0x03, 0x04, 0x1E] {
        let r = exec(&lu, N1, &sanitize_cdb(sa, 0), Vec::new());
        assert_eq!(sense_of(&r), (5, 0x24, 0), "sa {sa:#x}");
    }
    let mut znr = sanitize_cdb(0x02, 0);
    znr[1] |= 0x40;
    let mut reserved = sanitize_cdb(0x02, 0);
    reserved[4] = 1;
    for cdb in [znr, reserved] {
        assert_eq!(sense_of(&exec(&lu, N1, &cdb, Vec::new())), (5, 0x24, 0));
    }
    assert!(
        lu.backend().data.borrow().iter().all(|b| *b == b'a'),
        "nothing erased"
    );
    let ro = lu_with(LuConfig {
        read_only: true,
        ..config(64)
    });
    let r = exec(&ro, N1, &sanitize_cdb(0x02, 0), Vec::new());
    assert_eq!(sense_of(&r), (7, 0x27, 0));
}

fn lu_with(cfg: LuConfig) -> LogicalUnit<MemBackend> {
    let lu = lu(cfg);
    clear_ua(&lu, N1);
    lu
}

#[test]
fn commands_during_a_sanitize_end_not_ready_with_progress() {
    let lu = Rc::new(thin(4096));
    clear_ua(&lu, N2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, async move {
        lu.backend().hold_writes.set(true);
        let list = overwrite_list(&[0xAA]);
        let running = {
            let lu = lu.clone();
            let cdb = sanitize_cdb(0x01, list.len() as u16);
            tokio::task::spawn_local(async move {
                let k = TaskKey {
                    nexus: N1,
                    tag: 1,
                    attr: TaskAttr::Simple,
                };
                lu.execute_task(k, &lu.decode(&cdb), list).await
            })
        };
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        // TEST UNIT READY, READ, START STOP UNIT: NOT READY, SANITIZE IN PROGRESS.
        for cdb in [
            vec![0, 0, 0, 0, 0, 0],
            cdb10(0x28, 0, 0, 1),
            vec![0x1B, 0, 0, 0, 1, 0],
        ] {
            let r = lu.execute(N2, &cdb, Vec::new()).await;
            assert_eq!(sense_of(&r), (2, 0x04, 0x1B), "{cdb:?}");
        }
        // INQUIRY runs; REQUEST SENSE reports the progress (SKSV, 0 of 65536 so far).
        let r = lu.execute(N2, &[0x12, 0, 0, 0, 36, 0], Vec::new()).await;
        assert_eq!(r.status, Status::Good);
        let r = lu.execute(N2, &[0x03, 0, 0, 0, 18, 0], Vec::new()).await;
        assert_eq!(r.status, Status::Good);
        assert_eq!(
            (r.data_in[2] & 0x0F, r.data_in[12], r.data_in[13]),
            (2, 0x04, 0x1B)
        );
        assert_eq!(r.data_in[15] & 0x80, 0x80, "SKSV: progress indication");
        lu.backend().release_writes();
        assert_eq!(running.await.unwrap().status, Status::Good);
        let r = lu.execute(N2, &[0, 0, 0, 0, 0, 0], Vec::new()).await;
        assert_eq!(r.status, Status::Good, "ready again");
    });
}

#[test]
fn a_failed_sanitize_leaves_failure_mode_until_exit_failure_mode() {
    let lu = thin(64);
    lu.backend().fail.set(true);
    let r = exec(&lu, N1, &sanitize_cdb(0x02, 0), Vec::new());
    assert_eq!(sense_of(&r), (3, 0x31, 0x03));
    lu.backend().fail.set(false);
    let r = exec(&lu, N1, &cdb10(0x28, 0, 0, 1), Vec::new());
    assert_eq!(sense_of(&r), (3, 0x31, 0x03), "medium access fails");
    let r = exec(&lu, N1, &[0x12, 0, 0, 0, 36, 0], Vec::new());
    assert_eq!(r.status, Status::Good, "INQUIRY does not");
    let r = exec(&lu, N1, &sanitize_cdb(0x1F, 0), Vec::new());
    assert_eq!(r.status, Status::Good);
    let r = exec(&lu, N1, &cdb10(0x28, 0, 0, 1), Vec::new());
    assert_eq!(r.status, Status::Good);
}

#[test]
fn with_immed_the_command_ends_first_and_the_sanitize_runs_in_the_background() {
    let lu = thin(64);
    lu.backend().data.borrow_mut().fill(b'a');
    let r = exec(&lu, N1, &sanitize_cdb(0x82, 0), Vec::new());
    assert_eq!(r.status, Status::Good);
    assert!(lu.has_background_sanitize());
    assert!(
        lu.backend().data.borrow().iter().all(|b| *b == b'a'),
        "not run yet"
    );
    let r = exec(&lu, N1, &[0, 0, 0, 0, 0, 0], Vec::new());
    assert_eq!(sense_of(&r), (2, 0x04, 0x1B), "NOT READY from the GOOD on");
    block_on(lu.run_background_sanitize());
    assert!(!lu.has_background_sanitize());
    assert!(lu.backend().data.borrow().iter().all(|b| *b == 0));
    let r = exec(&lu, N1, &[0, 0, 0, 0, 0, 0], Vec::new());
    assert_eq!(r.status, Status::Good);
    // One that cannot run (the LUN drains) leaves the failure mode.
    let r = exec(&lu, N1, &sanitize_cdb(0x82, 0), Vec::new());
    assert_eq!(r.status, Status::Good);
    lu.cancel_background_sanitize();
    let r = exec(&lu, N1, &cdb10(0x28, 0, 0, 1), Vec::new());
    assert_eq!(sense_of(&r), (3, 0x31, 0x03));
}
