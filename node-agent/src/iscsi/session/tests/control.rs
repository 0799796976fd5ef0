//! NOP, task management, logout, text, async messages and malformed input.

use super::*;
use crate::iscsi::pdu::{
    LogoutReason, LogoutRequest, PduError, SnackRequest, TextRequest, async_event, logout_response,
    reject_reason, tmf_response,
};
use crate::iscsi::session::TmfId;

fn small_params() -> SessionParams {
    SessionParams {
        max_send_data_segment_len: 16,
        initial_r2t: true,
        immediate_data: false,
        ..SessionParams::default()
    }
}

#[test]
fn nop_out_ping_is_echoed() {
    let mut h = Harness::new(small_params(), 4);
    let n = as_nop_in(only(&h.feed(Pdu::NopOut(nop_out(
        9,
        RESERVED_TAG,
        b"nopping\0",
    )))));
    assert_eq!((n.itt, n.ttt), (9, RESERVED_TAG));
    assert_eq!(&n.data[..], b"nopping\0");
    assert_eq!(n.sns.stat_sn, STAT_SN);
    // Without data too, and each answer consumes a StatSN.
    let n = as_nop_in(only(&h.feed(Pdu::NopOut(nop_out(10, RESERVED_TAG, b"")))));
    assert!(n.data.is_empty());
    assert_eq!(n.sns.stat_sn, STAT_SN + 1);
    // Echoed data is cut to the initiator's MaxRecvDataSegmentLength.
    let n = as_nop_in(only(&h.feed(Pdu::NopOut(nop_out(
        11,
        RESERVED_TAG,
        &[7; 40],
    )))));
    assert_eq!(n.data.len(), 16);
    // A one-way NOP-Out (ITT 0xffffffff) gets nothing.
    assert!(
        h.feed(Pdu::NopOut(nop_out(RESERVED_TAG, RESERVED_TAG, b"")))
            .is_empty()
    );
}

#[test]
fn target_ping_and_its_answer() {
    let mut h = Harness::new(small_params(), 4);
    let mut out = Vec::new();
    assert!(h.s.ping(&mut out), "no earlier ping outstanding");
    let n = as_nop_in(only(&out));
    assert_eq!(n.itt, RESERVED_TAG);
    assert_ne!(n.ttt, RESERVED_TAG);
    assert_eq!(h.s.stat_sn(), STAT_SN, "a ping consumes no StatSN");
    assert!(h.s.ping_outstanding());
    assert!(
        h.feed(Pdu::NopOut(nop_out(RESERVED_TAG, n.ttt, b"")))
            .is_empty()
    );
    assert!(!h.s.ping_outstanding());
    out.clear();
    h.s.ping(&mut out);
    let second = as_nop_in(only(&out));
    out.clear();
    assert!(!h.s.ping(&mut out), "the previous ping was not answered");
    let third = as_nop_in(only(&out));
    assert_ne!(second.ttt, third.ttt, "each ping has its own tag");
    // An answer that also asks for a ping back (valid ITT) gets its NOP-In.
    let n = as_nop_in(only(&h.feed(Pdu::NopOut(nop_out(12, third.ttt, b"")))));
    assert_eq!(n.itt, 12);
    assert!(!h.s.ping_outstanding());
}

#[test]
fn abort_task_of_a_running_task_answers_after_it_ends() {
    let mut h = Harness::new(small_params(), 4);
    let cmd = h.execute(read_cmd(0x21, 512));
    let actions = h.tmf(TaskFunction::AbortTask, 0, 0x21, 0x99);
    assert_eq!(
        actions,
        vec![Action::Abort {
            tasks: vec![cmd.task]
        }]
    );
    assert_eq!(h.s.counts().aborting, 1);
    // The task's own response is suppressed; the TMF response follows its end.
    let r = as_tmf_response(only(&h.done(cmd.task, good(pattern(512)))));
    assert_eq!((r.itt, r.response), (0x99, tmf_response::COMPLETE));
    assert_eq!(r.sns.stat_sn, STAT_SN);
    assert_eq!(h.s.counts().total(), 0);
}

#[test]
fn abort_task_of_an_unknown_task_says_it_does_not_exist() {
    // libiscsi's AbortTaskSimpleAsync accepts "does not exist" when the write completed.
    let mut h = Harness::new(small_params(), 4);
    let cmd = h.execute(read_cmd(0x21, 0));
    h.done(cmd.task, good(Vec::new()));
    let r = as_tmf_response(only(&h.tmf(TaskFunction::AbortTask, 0, 0x21, 0x99)));
    assert_eq!(r.response, tmf_response::TASK_DOES_NOT_EXIST);
}

#[test]
fn abort_task_waiting_for_data_drops_it_and_its_late_data() {
    let mut h = Harness::new(small_params(), 4);
    let actions = h.command(write_cmd(0x30, 1024, &[], true));
    let r2t = as_r2t(only(&actions));
    let r = as_tmf_response(only(&h.tmf(TaskFunction::AbortTask, 0, 0x30, 0x31)));
    assert_eq!(r.response, tmf_response::COMPLETE);
    assert_eq!(h.s.counts().total(), 0);
    // Data already on its way for it is discarded quietly.
    assert!(
        h.feed(data_out(0x30, r2t.ttt, 0, 0, &[1; 1024], true))
            .is_empty()
    );
    assert!(!h.s.is_closed());
}

#[test]
fn abort_task_set_ends_the_luns_tasks_only() {
    let mut h = Harness::new(small_params(), 8);
    let a = h.execute(read_cmd(1, 0));
    let mut other = read_cmd(2, 0);
    other.lun = 1 << 48;
    let b = h.execute(other);
    let actions = h.tmf(TaskFunction::AbortTaskSet, 0, RESERVED_TAG, 0x40);
    assert_eq!(
        actions,
        vec![Action::Abort {
            tasks: vec![a.task]
        }]
    );
    let r = as_tmf_response(only(&h.done(a.task, good(Vec::new()))));
    assert_eq!((r.itt, r.response), (0x40, tmf_response::COMPLETE));
    let r = as_response(only(&h.done(b.task, good(Vec::new()))));
    assert_eq!(r.itt, 2, "the other LUN's task answers normally");
}

#[test]
fn lun_reset_waits_for_the_engine_and_the_tasks() {
    let mut h = Harness::new(small_params(), 8);
    let a = h.execute(read_cmd(1, 0));
    let b = h.execute(read_cmd(2, 0));
    let actions = h.tmf(TaskFunction::LogicalUnitReset, 0, RESERVED_TAG, 0x50);
    assert_eq!(
        actions,
        vec![
            Action::Abort {
                tasks: vec![a.task, b.task]
            },
            Action::TaskMgmt {
                id: TmfId(0),
                function: TaskFunction::LogicalUnitReset,
                lun: 0
            }
        ]
    );
    let mut out = Vec::new();
    h.s.on_tmf_done(TmfId(0), tmf_response::COMPLETE, &mut out);
    assert!(out.is_empty(), "tasks still running");
    assert!(h.done(a.task, good(Vec::new())).is_empty());
    let r = as_tmf_response(only(&h.done(b.task, good(Vec::new()))));
    assert_eq!((r.itt, r.response), (0x50, tmf_response::COMPLETE));
}

#[test]
fn lun_reset_reports_the_engines_answer() {
    let mut h = Harness::new(small_params(), 8);
    let actions = h.tmf(TaskFunction::LogicalUnitReset, 5 << 48, RESERVED_TAG, 0x51);
    let [Action::TaskMgmt { id, .. }] = actions[..] else {
        panic!("expected TaskMgmt, got {actions:?}")
    };
    let mut out = Vec::new();
    h.s.on_tmf_done(id, tmf_response::LUN_DOES_NOT_EXIST, &mut out);
    let r = as_tmf_response(only(&out));
    assert_eq!(r.response, tmf_response::LUN_DOES_NOT_EXIST);
}

#[test]
fn target_cold_reset_answers_then_closes() {
    let mut h = Harness::new(small_params(), 8);
    let actions = h.tmf(TaskFunction::TargetColdReset, 0, RESERVED_TAG, 0x60);
    let [Action::TaskMgmt { id, function, .. }] = actions[..] else {
        panic!("expected TaskMgmt, got {actions:?}")
    };
    assert_eq!(function, TaskFunction::TargetColdReset);
    let mut out = Vec::new();
    h.s.on_tmf_done(id, tmf_response::COMPLETE, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(
        as_tmf_response(only(&out[..1])).response,
        tmf_response::COMPLETE
    );
    assert_eq!(out[1], Action::Close);
}

#[test]
fn unsupported_task_functions_are_refused() {
    let mut h = Harness::new(small_params(), 8);
    let r = as_tmf_response(only(&h.tmf(TaskFunction::ClearAca, 0, RESERVED_TAG, 1)));
    assert_eq!(r.response, tmf_response::NOT_SUPPORTED);
    let r = as_tmf_response(only(&h.tmf(TaskFunction::Other(20), 0, RESERVED_TAG, 2)));
    assert_eq!(r.response, tmf_response::NOT_SUPPORTED);
    let r = as_tmf_response(only(&h.tmf(TaskFunction::TaskReassign, 0, 7, 3)));
    assert_eq!(r.response, tmf_response::REASSIGNMENT_NOT_SUPPORTED);
}

fn logout(reason: LogoutReason, cid: u16, cmd_sn: u32) -> Pdu {
    Pdu::LogoutRequest(LogoutRequest {
        immediate: true,
        reason,
        itt: 0x70,
        cid,
        cmd_sn,
        exp_stat_sn: 0,
    })
}

#[test]
fn logout_ends_tasks_then_answers_and_closes() {
    // libiscsi's LogoutDuringIOAsync: a logout while writes are in flight.
    let mut h = Harness::new(small_params(), 8);
    let running = h.execute(read_cmd(1, 0));
    let collecting = h.command(write_cmd(2, 4096, &[], true));
    assert!(matches!(only(&collecting), Pdu::R2t(_)));
    let actions = h.feed(logout(LogoutReason::CloseSession, 7, h.cmd_sn));
    assert_eq!(
        actions,
        vec![Action::Abort {
            tasks: vec![running.task]
        }]
    );
    // Nothing else is accepted now.
    assert!(
        h.feed(Pdu::NopOut(nop_out(5, RESERVED_TAG, b"")))
            .is_empty()
    );
    let actions = h.done(running.task, good(Vec::new()));
    assert_eq!(actions.len(), 2);
    match &actions[0] {
        Action::Send(Pdu::LogoutResponse(r)) => {
            assert_eq!((r.itt, r.response), (0x70, logout_response::CLOSED));
            assert_eq!(r.sns.stat_sn, STAT_SN);
        }
        other => panic!("expected Logout Response, got {other:?}"),
    }
    assert_eq!(actions[1], Action::Close);
    assert!(h.s.is_closed());
}

#[test]
fn logout_of_another_connection_or_for_recovery_is_refused() {
    let mut h = Harness::new(small_params(), 8);
    for (reason, code) in [
        (
            LogoutReason::CloseConnection,
            logout_response::CID_NOT_FOUND,
        ),
        (
            LogoutReason::RemoveConnectionForRecovery,
            logout_response::RECOVERY_NOT_SUPPORTED,
        ),
    ] {
        match only(&h.feed(logout(reason, 8, CMD_SN))) {
            Pdu::LogoutResponse(r) => assert_eq!(r.response, code),
            other => panic!("expected Logout Response, got {other:?}"),
        }
    }
    assert!(!h.s.is_closed());
    // Closing this connection (CID 7) works.
    let actions = h.feed(logout(LogoutReason::CloseConnection, 7, CMD_SN));
    assert_eq!(actions.last(), Some(&Action::Close));
}

/// The command of a Data-Out with a bad DataSN ends with CHECK CONDITION, ABORTED COMMAND,
/// DATA PHASE ERROR; the connection stays up and later Data-Out of that task is discarded.
fn assert_failed_with_data_phase_error(actions: &[Action]) {
    match actions {
        [Action::Send(Pdu::ScsiResponse(r))] => {
            assert_eq!(r.itt, 1);
            assert_eq!(r.status, 2, "CHECK CONDITION");
            // Fixed-format sense: key at byte 2, ASC/ASCQ at 12/13.
            assert_eq!(r.sense[2] & 0x0F, 0x0B, "ABORTED COMMAND");
            assert_eq!((r.sense[12], r.sense[13]), (0x4B, 0x00));
        }
        other => panic!("expected one SCSI Response, got {other:?}"),
    }
}

#[test]
fn bad_data_sn_fails_the_command_and_keeps_the_connection() {
    // libiscsi's iSCSIdatasn: two Data-Out with DataSN 0, DataSN 27, DataSN -1.
    for bad_sn in [27, u32::MAX] {
        let mut h = Harness::new(small_params(), 8);
        let r2t = as_r2t(only(&h.command(write_cmd(1, 1024, &[], true))));
        let actions = h.feed(data_out(1, r2t.ttt, bad_sn, 0, &[0; 512], false));
        assert_failed_with_data_phase_error(&actions);
        assert!(!h.s.is_closed());
        assert!(
            h.feed(data_out(1, r2t.ttt, 1, 512, &[0; 512], true))
                .is_empty(),
            "the rest of the failed command's data is discarded"
        );
    }
    let mut h = Harness::new(small_params(), 8);
    let r2t = as_r2t(only(&h.command(write_cmd(1, 1024, &[], true))));
    assert!(
        h.feed(data_out(1, r2t.ttt, 0, 0, &[0; 512], false))
            .is_empty()
    );
    let actions = h.feed(data_out(1, r2t.ttt, 0, 512, &[0; 512], true));
    assert_failed_with_data_phase_error(&actions);
    assert!(!h.s.is_closed());
}

#[test]
fn data_out_for_an_unknown_task_is_rejected() {
    let mut h = Harness::new(small_params(), 8);
    let r = as_reject(only(&h.feed(data_out(0x77, 5, 0, 0, &[0; 4], true))));
    assert_eq!(r.reason, reject_reason::INVALID_PDU_FIELD);
    assert_eq!(rejected_itt(&r), 0x77);
    assert_eq!(r.sns.stat_sn, STAT_SN, "a Reject consumes a StatSN");
    assert_eq!(h.s.stat_sn(), STAT_SN + 1);
    // And for a known task but a TTT it never got.
    h.command(write_cmd(1, 1024, &[], true));
    let r = as_reject(only(&h.feed(data_out(1, 0x1234, 0, 0, &[0; 4], true))));
    assert_eq!(r.reason, reject_reason::INVALID_PDU_FIELD);
}

#[test]
fn malformed_commands_are_rejected_and_use_their_cmdsn() {
    let mut h = Harness::new(small_params(), 8);
    // Immediate data while ImmediateData=No.
    let r = as_reject(only(&h.command(write_cmd(1, 512, &[1; 512], true))));
    assert_eq!(r.reason, reject_reason::PROTOCOL_ERROR);
    assert_eq!(h.s.exp_cmd_sn(), CMD_SN + 1);
    // Unsolicited data announced while InitialR2T=Yes.
    let r = as_reject(only(&h.command(write_cmd(2, 512, &[], false))));
    assert_eq!(r.reason, reject_reason::PROTOCOL_ERROR);
    // A reused ITT.
    h.execute(read_cmd(3, 0));
    let r = as_reject(only(&h.command(read_cmd(3, 0))));
    assert_eq!(r.reason, reject_reason::TASK_IN_PROGRESS);
    // The reserved ITT.
    let r = as_reject(only(&h.command(read_cmd(RESERVED_TAG, 0))));
    assert_eq!(r.reason, reject_reason::INVALID_PDU_FIELD);
    assert_eq!(h.s.counts().total(), 1);
}

#[test]
fn undecodable_pdus_are_rejected_or_close_the_connection() {
    let mut h = Harness::new(small_params(), 8);
    let mut bhs = [0u8; 48];
    bhs[0] = 0x1c; // an opcode no one defined
    bhs[16..20].copy_from_slice(&0xabcd_u32.to_be_bytes());
    let mut out = Vec::new();
    h.s.on_decode_error(&bhs, &PduError::UnknownOpcode(0x1c), &mut out);
    let r = as_reject(only(&out));
    assert_eq!(r.reason, reject_reason::COMMAND_NOT_SUPPORTED);
    assert_eq!(&r.header[..], &bhs[..]);
    // A data digest error on a command: rejected, and its CmdSN counts as used.
    bhs[0] = 0x01;
    bhs[24..28].copy_from_slice(&CMD_SN.to_be_bytes());
    out.clear();
    h.s.on_decode_error(&bhs, &PduError::DataDigest, &mut out);
    assert_eq!(
        as_reject(only(&out)).reason,
        reject_reason::DATA_DIGEST_ERROR
    );
    assert_eq!(h.s.exp_cmd_sn(), CMD_SN + 1);
    // A header digest error leaves the stream unusable.
    out.clear();
    h.s.on_decode_error(&bhs, &PduError::HeaderDigest, &mut out);
    assert_eq!(out, vec![Action::Close]);
}

#[test]
fn snack_and_target_pdus_are_rejected() {
    let mut h = Harness::new(small_params(), 8);
    let snack = Pdu::Snack(SnackRequest {
        kind: 0,
        lun: 0,
        itt: 4,
        ttt: RESERVED_TAG,
        exp_stat_sn: 0,
        beg_run: 0,
        run_length: 0,
    });
    assert_eq!(
        as_reject(only(&h.feed(snack))).reason,
        reject_reason::SNACK_REJECT
    );
    let nop_in = Pdu::NopIn(NopIn {
        lun: 0,
        itt: 4,
        ttt: RESERVED_TAG,
        sns: Default::default(),
        data: Bytes::new(),
    });
    assert_eq!(
        as_reject(only(&h.feed(nop_in))).reason,
        reject_reason::PROTOCOL_ERROR
    );
}

fn text_request(itt: u32, ttt: u32, cont: bool, data: &[u8]) -> Pdu {
    Pdu::TextRequest(TextRequest {
        immediate: true,
        final_: !cont,
        cont,
        lun: 0,
        itt,
        ttt,
        cmd_sn: CMD_SN,
        exp_stat_sn: 0,
        data: Bytes::copy_from_slice(data),
    })
}

#[test]
fn text_request_is_answered_in_pieces() {
    let mut h = Harness::new(small_params(), 8);
    let actions = h.feed(text_request(3, RESERVED_TAG, false, b"SendTargets=All\0"));
    assert_eq!(
        actions,
        vec![Action::Text {
            itt: 3,
            keys: vec![("SendTargets".to_owned(), "All".to_owned())]
        }]
    );
    // 40 bytes with MaxRecvDataSegmentLength 16: three pieces, the initiator asks for each.
    let reply: Vec<u8> = (0..40u8).collect();
    let mut out = Vec::new();
    h.s.on_text_reply(3, Bytes::from(reply.clone()), &mut out);
    let mut got = Vec::new();
    let mut t = as_text(only(&out));
    loop {
        assert_eq!(t.itt, 3);
        got.extend_from_slice(&t.data);
        if t.final_ {
            assert!(!t.cont);
            assert_eq!(t.ttt, RESERVED_TAG);
            break;
        }
        assert!(t.cont && t.ttt != RESERVED_TAG);
        t = as_text(only(&h.feed(text_request(3, t.ttt, false, b""))));
    }
    assert_eq!(got, reply);
}

#[test]
fn text_request_in_pieces_is_gathered() {
    let mut h = Harness::new(small_params(), 8);
    let t = as_text(only(&h.feed(text_request(
        4,
        RESERVED_TAG,
        true,
        b"SendTar",
    ))));
    assert!(!t.final_ && t.data.is_empty() && t.ttt != RESERVED_TAG);
    let actions = h.feed(text_request(4, t.ttt, false, b"gets=All\0"));
    assert_eq!(
        actions,
        vec![Action::Text {
            itt: 4,
            keys: vec![("SendTargets".to_owned(), "All".to_owned())]
        }]
    );
    // Text that is not key=value is rejected.
    let r = as_reject(only(&h.feed(text_request(
        5,
        RESERVED_TAG,
        false,
        b"junk\0",
    ))));
    assert_eq!(r.reason, reject_reason::PROTOCOL_ERROR);
    // A continuation nobody asked for is rejected.
    let r = as_reject(only(&h.feed(text_request(4, 0x4242, false, b""))));
    assert_eq!(r.reason, reject_reason::INVALID_PDU_FIELD);
}

#[test]
fn async_messages() {
    let mut h = Harness::new(small_params(), 8);
    let mut out = Vec::new();
    h.s.request_logout(5, &mut out);
    h.s.scsi_event(2 << 48, Bytes::from_static(&[0x70, 0, 6]), &mut out);
    let pdus = sent(&out);
    let [Pdu::AsyncMessage(a), Pdu::AsyncMessage(b)] = pdus[..] else {
        panic!("expected two Async Messages, got {pdus:?}")
    };
    assert_eq!(
        (a.event, a.param3, a.sns.stat_sn),
        (async_event::LOGOUT_REQUEST, 5, STAT_SN)
    );
    assert_eq!(
        (b.event, b.lun, b.sns.stat_sn),
        (async_event::SCSI_EVENT, 2 << 48, STAT_SN + 1)
    );
    assert_eq!(&b.sense[..], &[0x70, 0, 6]);
}

#[test]
fn discovery_sessions_take_no_scsi_commands() {
    let p = SessionParams {
        session_type: crate::iscsi::params::SessionType::Discovery,
        ..small_params()
    };
    let mut h = Harness::new(p, 8);
    let r = as_reject(only(&h.command(read_cmd(1, 0))));
    assert_eq!(r.reason, reject_reason::COMMAND_NOT_SUPPORTED);
    let r = as_reject(only(&h.tmf(TaskFunction::AbortTaskSet, 0, RESERVED_TAG, 2)));
    assert_eq!(r.reason, reject_reason::COMMAND_NOT_SUPPORTED);
    // Text and NOP still work.
    let actions = h.feed(text_request(3, RESERVED_TAG, false, b"SendTargets=All\0"));
    assert!(matches!(&actions[..], [Action::Text { itt: 3, .. }]));
    assert!(matches!(
        only(&h.feed(Pdu::NopOut(nop_out(4, RESERVED_TAG, b"")))),
        Pdu::NopIn(_)
    ));
}
