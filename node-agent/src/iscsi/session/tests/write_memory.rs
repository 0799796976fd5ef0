//! Write memory: the window and R2Ts wait for it; nothing grows past the bounds.

use std::sync::Arc;

use super::*;
use crate::iscsi::session::WriteMemory;

const KIB: usize = 1024;

/// InitialR2T=No, FirstBurstLength 4 KiB: every window slot holds 4 KiB.
fn params() -> SessionParams {
    SessionParams {
        initial_r2t: false,
        immediate_data: true,
        first_burst_len: 4096,
        max_burst_len: 16384,
        max_recv_data_segment_len: 8192,
        max_send_data_segment_len: 8192,
        ..SessionParams::default()
    }
}

#[test]
fn the_window_grows_with_use_but_only_as_far_as_memory_allows() {
    // 40 KiB for the agent, 20 KiB per session: the login's two slots (8 KiB), growing with
    // the commands in flight up to five slots (20 KiB / 4 KiB).
    let pool = Arc::new(WriteMemory::new(40 * KIB, 20 * KIB));
    let mut h = Harness::with_memory(params(), 16, 2, pool.clone());
    assert_eq!(pool.used(), 8 * KIB, "the login window is held");
    let mut running = std::collections::VecDeque::new();
    let mut widest = 0;
    for itt in 1..=40 {
        if h.s.exp_cmd_sn() <= h.s.max_cmd_sn() {
            running.push_back(h.execute(read_cmd(itt, 0)));
        }
        if running.len() >= 4 || h.s.exp_cmd_sn() > h.s.max_cmd_sn() {
            let c = running.pop_front().unwrap();
            let r = as_response(only(&h.done(c.task, good(Vec::new()))));
            let free = r
                .sns
                .max_cmd_sn
                .wrapping_sub(r.sns.exp_cmd_sn)
                .wrapping_add(1);
            widest = widest.max(free);
            assert!(free <= 5, "20 KiB / 4 KiB per slot");
            assert!(h.s.memory_held() <= 20 * KIB);
        }
    }
    assert_eq!(widest, 5, "the window grew to what memory allows");
    // Another session takes more; it holds more than a quarter of its limit, so it may fill
    // only three quarters of the agent's 40 KiB.
    let mut other = Harness::with_memory(params(), 16, 1, pool.clone());
    let mut busy = Vec::new();
    for itt in 1..=8 {
        if other.s.exp_cmd_sn() <= other.s.max_cmd_sn() {
            busy.push(other.execute(read_cmd(itt, 0)));
        }
        if let Some(c) = busy.pop() {
            other.done(c.task, good(Vec::new()));
        }
        assert!(pool.used() <= 30 * KIB || other.s.memory_held() <= 5 * KIB);
    }
    assert!(pool.used() <= pool.limit());
    drop(other);
    drop(h);
    assert_eq!(
        pool.used(),
        0,
        "sessions give everything back when they end"
    );
}

#[test]
fn a_write_waits_for_memory_before_its_r2t_and_gets_it_when_some_comes_back() {
    // 24 KiB per session: the 2-slot login window (8 KiB) and one 16 KiB write at a time.
    let pool = Arc::new(WriteMemory::new(1 << 20, 24 * KIB));
    let mut h = Harness::with_memory(params(), 4, 2, pool.clone());
    // Two writes of 16 KiB, each with 4 KiB immediate data: the first gets its R2T for the
    // other 12 KiB, the second waits.
    let first = h.command(write_cmd(1, 16 * KIB as u32, &[1; 4096], true));
    let r2t = as_r2t(only(&first));
    assert_eq!((r2t.buffer_offset, r2t.desired_len), (4096, 12 * 1024));
    assert!(
        h.command(write_cmd(2, 16 * KIB as u32, &[2; 4096], true))
            .is_empty()
    );
    assert!(h.s.wants_memory());
    assert!(h.s.memory_held() <= 24 * KIB);
    let mut out = Vec::new();
    h.s.on_memory(&mut out);
    assert!(out.is_empty(), "nothing was given back yet");
    // The first write's data comes in and it ends: its memory goes back.
    let actions = h.feed(data_out(1, r2t.ttt, 0, 4096, &[1; 12 * 1024], true));
    let cmd = match &actions[..] {
        [Action::Execute(c)] => c.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(cmd.data_out.len(), 16 * KIB);
    // Its response goes out, and the waiting write gets its R2T at once.
    let out = h.done(cmd.task, good(Vec::new()));
    assert_eq!(as_response(sent(&out)[0]).itt, 1);
    let r2t = as_r2t(sent(&out)[1]);
    assert_eq!((r2t.itt, r2t.buffer_offset), (2, 4096));
    assert!(!h.s.wants_memory());
}

#[test]
fn stalled_writes_hold_at_most_the_session_limit_and_memory_goes_to_waiting_writes_first() {
    let pool = Arc::new(WriteMemory::new(64 * KIB, 32 * KIB));
    let mut h = Harness::with_memory(params(), 8, 4, pool.clone());
    // A hostile initiator: 16 KiB writes, each answered but for its last 512 bytes.
    let mut stalled = Vec::new();
    for itt in 1..=8 {
        let sn = h.cmd_sn;
        if sn > h.s.max_cmd_sn() {
            break;
        }
        let actions = h.command(write_cmd(itt, 16 * KIB as u32, &[0; 4096], true));
        if let [Action::Send(Pdu::R2t(r2t))] = &actions[..] {
            let len = r2t.desired_len as usize - 512;
            assert!(
                h.feed(data_out(itt, r2t.ttt, 0, 4096, &vec![0; len], false))
                    .is_empty()
            );
        }
        stalled.push(itt);
        assert!(
            h.s.memory_held() <= 32 * KIB,
            "never past the session limit"
        );
        assert!(pool.used() <= 64 * KIB);
    }
    assert!(
        stalled.len() < 8,
        "the window closed before the queue depth was reached"
    );
    assert_eq!(h.s.max_cmd_sn(), h.s.exp_cmd_sn() - 1, "closed");
    // Data for the first stalled write completes it; once it ends, its memory goes to the
    // oldest write waiting for an R2T, not to new commands.
    let cmd = match &h.feed(data_out(1, 1, 1, 16 * 1024 - 512, &[0; 512], true))[..] {
        [Action::Execute(c)] => c.clone(),
        other => panic!("{other:?}"),
    };
    let done = h.done(cmd.task, good(Vec::new()));
    let pdus = sent(&done);
    assert_eq!(as_response(pdus[0]).itt, 1);
    assert_eq!(as_r2t(pdus[1]).itt, 2);
    assert!(h.s.memory_held() <= 32 * KIB);
    drop(h);
    assert_eq!(pool.used(), 0, "a session that ends gives everything back");
}

#[test]
fn a_reopened_window_is_announced_with_a_nop_in() {
    let pool = Arc::new(WriteMemory::new(64 * KIB, 32 * KIB));
    // Another holder takes everything but one slot's worth... of a session limit.
    let mut h = Harness::with_memory(params(), 4, 1, pool.clone());
    // Fill the agent: a second session with stalled writes takes the heavy share.
    let other = Harness::with_memory(params(), 16, 16, pool.clone());
    assert_eq!(
        pool.used(),
        64 * KIB + 4 * KIB,
        "login windows are promised memory"
    );
    // This session's only slot is used by a read that ends: the window cannot reopen.
    let a = h.execute(read_cmd(1, 0));
    let r = as_response(only(&h.done(a.task, good(Vec::new()))));
    assert_eq!(
        r.sns.max_cmd_sn,
        r.sns.exp_cmd_sn - 1,
        "no memory: window closed"
    );
    assert!(h.s.wants_memory());
    // The other session ends: memory comes back, and the reopened window is announced.
    drop(other.s);
    let mut out = Vec::new();
    h.s.on_memory(&mut out);
    let nop = as_nop_in(only(&out));
    assert_eq!((nop.itt, nop.ttt), (RESERVED_TAG, RESERVED_TAG));
    assert!(nop.sns.max_cmd_sn >= nop.sns.exp_cmd_sn);
    assert!(!h.s.wants_memory());
}
