//! Reads, writes and residuals.

use super::*;
use crate::iscsi::pdu::Residual;

fn params() -> SessionParams {
    SessionParams {
        max_send_data_segment_len: 1000,
        max_recv_data_segment_len: 8192,
        max_burst_len: 2500,
        first_burst_len: 4096,
        initial_r2t: true,
        immediate_data: true,
        max_outstanding_r2t: 1,
        ..SessionParams::default()
    }
}

#[test]
fn read_is_split_into_data_in_with_status_in_the_last() {
    let mut h = Harness::new(params(), 8);
    let cmd = h.execute(read_cmd(0x10, 5000));
    assert_eq!(cmd.read_len, 5000);
    assert!(cmd.data_out.is_empty());
    assert_eq!(&cmd.cdb[..], &[0x28; 16]);

    let data = pattern(5000);
    let actions = h.done(cmd.task, good(data.clone()));
    let pdus: Vec<DataIn> = sent(&actions).into_iter().map(as_data_in).collect();
    // MaxRecvDataSegmentLength 1000, MaxBurstLength 2500: two sequences of 1000+1000+500.
    let layout: Vec<(u32, u32, usize, bool)> = pdus
        .iter()
        .map(|d| (d.data_sn, d.buffer_offset, d.data.len(), d.final_))
        .collect();
    assert_eq!(
        layout,
        vec![
            (0, 0, 1000, false),
            (1, 1000, 1000, false),
            (2, 2000, 500, true),
            (3, 2500, 1000, false),
            (4, 3500, 1000, false),
            (5, 4500, 500, true),
        ]
    );
    let mut joined = Vec::new();
    for d in &pdus {
        assert_eq!(d.itt, 0x10);
        assert_eq!(d.ttt, RESERVED_TAG);
        assert!(!d.ack);
        joined.extend_from_slice(&d.data);
    }
    assert_eq!(joined, data);
    // Only the last carries status, with the StatSN it consumes.
    assert!(pdus[..5].iter().all(|d| d.status.is_none()));
    let last = &pdus[5];
    assert_eq!(last.status, Some(0));
    assert_eq!(last.residual, Residual::None);
    assert_eq!(last.sns.stat_sn, STAT_SN);
    assert_eq!(last.sns.exp_cmd_sn, CMD_SN + 1);
    // Queue depth 8, nothing running any more: MaxCmdSN = ExpCmdSN + 7.
    assert_eq!(last.sns.max_cmd_sn, CMD_SN + 1 + 7);
    assert_eq!(h.s.stat_sn(), STAT_SN + 1);
    assert_eq!(h.s.counts().total(), 0);
}

#[test]
fn read_with_sense_gets_a_separate_response() {
    let mut h = Harness::new(params(), 8);
    let cmd = h.execute(read_cmd(1, 512));
    let sense = vec![0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0];
    let outcome = ScsiOutcome {
        status: 2,
        sense: sense.clone(),
        ..ScsiOutcome::default()
    };
    let actions = h.done(cmd.task, outcome);
    let r = as_response(only(&actions));
    assert_eq!((r.itt, r.status, r.response), (1, 2, 0));
    assert_eq!(&r.sense[..], &sense[..]);
    assert_eq!(r.residual, Residual::Underflow(512));
    assert_eq!(r.exp_data_sn, 0);
    assert_eq!(r.sns.stat_sn, STAT_SN);
}

#[test]
fn read_data_and_sense_go_as_data_in_then_response() {
    let mut p = params();
    p.max_send_data_segment_len = 8192;
    let mut h = Harness::new(p, 8);
    let cmd = h.execute(read_cmd(1, 100));
    let outcome = ScsiOutcome {
        status: 2,
        data_in: pattern(100).into(),
        sense: vec![0x70; 18],
        data_out_len: None,
    };
    let actions = h.done(cmd.task, outcome);
    let pdus = sent(&actions);
    assert_eq!(pdus.len(), 2);
    let d = as_data_in(pdus[0]);
    assert!(d.final_ && d.status.is_none());
    // StatSN is not consumed by a Data-In without status.
    assert_eq!(d.sns.stat_sn, STAT_SN);
    let r = as_response(pdus[1]);
    assert_eq!((r.status, r.exp_data_sn, r.sns.stat_sn), (2, 1, STAT_SN));
}

/// libiscsi's iSCSIResiduals READ cases: the CDB asks for one 512-byte block.
#[test]
fn read_residuals_follow_the_expected_length() {
    let cases = [
        // (EDTL, bytes sent, residual)
        (0, 0, Residual::Overflow(512)),
        (10000, 512, Residual::Underflow(10000 - 512)),
        (200, 200, Residual::Overflow(312)),
        (512, 512, Residual::None),
    ];
    for (itt, (edtl, sent_len, residual)) in (1..).zip(cases) {
        let mut h = Harness::new(params(), 8);
        let cmd = h.execute(read_cmd(itt, edtl));
        let actions = h.done(cmd.task, good(pattern(512)));
        let pdus = sent(&actions);
        let got: usize = pdus
            .iter()
            .filter_map(|p| match p {
                Pdu::DataIn(d) => Some(d.data.len()),
                _ => None,
            })
            .sum();
        assert_eq!(got, sent_len, "EDTL {edtl}");
        let (status, res) = match pdus.last().copied() {
            Some(Pdu::DataIn(d)) => (d.status, d.residual),
            Some(Pdu::ScsiResponse(r)) => (Some(r.status), r.residual),
            other => panic!("EDTL {edtl}: unexpected {other:?}"),
        };
        assert_eq!(status, Some(0), "EDTL {edtl}");
        assert_eq!(res, residual, "EDTL {edtl}");
    }
}

#[test]
fn command_without_data_gets_a_plain_response() {
    let mut h = Harness::new(params(), 8);
    let mut c = read_cmd(3, 0);
    c.read = false;
    let cmd = h.execute(c);
    let r = as_response(only(&h.done(cmd.task, good(Vec::new()))));
    assert_eq!((r.itt, r.status, r.residual), (3, 0, Residual::None));
}

/// One write, checked for each way its data can arrive.
#[derive(Clone, Copy)]
struct WriteCase {
    immediate_data: bool,
    initial_r2t: bool,
    first_burst: u32,
    max_burst: u32,
    max_r2t: u32,
    edtl: u32,
    /// Bytes of immediate data the initiator sends.
    immediate: u32,
    /// Unsolicited Data-Out PDU size (the initiator's view of our MaxRecvDataSegmentLength).
    pdu: u32,
}

/// Plays the initiator for `case`, answering R2Ts in the order they come, and checks what
/// the target asks for and what it finally executes.
fn run_write(case: &WriteCase) {
    let p = SessionParams {
        immediate_data: case.immediate_data,
        initial_r2t: case.initial_r2t,
        first_burst_len: case.first_burst,
        max_burst_len: case.max_burst,
        max_outstanding_r2t: case.max_r2t,
        max_recv_data_segment_len: 8192,
        ..SessionParams::default()
    };
    let mut h = Harness::new(p, 8);
    let itt = 0x55;
    let data = pattern(case.edtl as usize);
    let imm = &data[..case.immediate as usize];
    let unsolicited_end = if case.initial_r2t {
        case.immediate
    } else {
        case.first_burst.min(case.edtl)
    };
    let final_ = unsolicited_end == case.immediate;
    let mut pending = h.command(write_cmd(itt, case.edtl, imm, final_));

    // Unsolicited Data-Out up to the first burst.
    let mut offset = case.immediate;
    let mut data_sn = 0;
    while offset < unsolicited_end {
        assert!(
            pending.is_empty(),
            "nothing before the unsolicited data is in: {pending:?}"
        );
        let end = (offset + case.pdu).min(unsolicited_end);
        let chunk = &data[offset as usize..end as usize];
        pending = h.feed(data_out(
            itt,
            RESERVED_TAG,
            data_sn,
            offset,
            chunk,
            end == unsolicited_end,
        ));
        data_sn += 1;
        offset = end;
    }

    // Solicited data: answer each R2T, checking it continues where the last one ended.
    let mut next_offset = unsolicited_end;
    let mut r2t_sn = 0;
    let mut outstanding: Vec<R2t> = Vec::new();
    loop {
        let mut executed = None;
        for a in pending.drain(..) {
            match a {
                Action::Send(Pdu::R2t(r)) => {
                    assert_eq!(
                        (r.itt, r.r2t_sn, r.buffer_offset),
                        (itt, r2t_sn, next_offset)
                    );
                    assert_ne!(r.ttt, RESERVED_TAG);
                    let want = (case.edtl - next_offset).min(case.max_burst);
                    assert_eq!(r.desired_len, want);
                    // R2Ts do not consume StatSN.
                    assert_eq!(r.sns.stat_sn, STAT_SN);
                    r2t_sn += 1;
                    next_offset += want;
                    outstanding.push(r);
                }
                Action::Execute(cmd) => executed = Some(cmd),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            outstanding.len() <= case.max_r2t as usize,
            "MaxOutstandingR2T honoured"
        );
        if let Some(cmd) = executed {
            assert!(outstanding.is_empty());
            assert_eq!(next_offset, case.edtl, "all data asked for");
            assert_eq!(cmd.data_out, data, "data assembled in place");
            let r = as_response(only(&h.done(cmd.task, good(Vec::new()))));
            assert_eq!((r.itt, r.status, r.residual), (itt, 0, Residual::None));
            assert_eq!(r.exp_data_sn, r2t_sn, "ExpDataSN counts the R2Ts");
            return;
        }
        assert!(!outstanding.is_empty(), "neither an R2T nor execution");
        // Answer the oldest R2T in PDUs of at most 1000 bytes.
        let r = outstanding.remove(0);
        let end = r.buffer_offset + r.desired_len;
        let (mut off, mut sn) = (r.buffer_offset, 0);
        while off < end {
            let stop = (off + 1000).min(end);
            let chunk = &data[off as usize..stop as usize];
            let got = h.feed(data_out(itt, r.ttt, sn, off, chunk, stop == end));
            if stop < end {
                assert!(got.is_empty(), "mid-sequence Data-Out answers nothing");
            } else {
                pending = got;
            }
            sn += 1;
            off = stop;
        }
    }
}

#[test]
fn writes_collect_immediate_unsolicited_and_solicited_data() {
    let base = WriteCase {
        immediate_data: true,
        initial_r2t: false,
        first_burst: 4096,
        max_burst: 8192,
        max_r2t: 1,
        edtl: 20000,
        immediate: 1024,
        pdu: 1024,
    };
    let cases = [
        base,
        WriteCase { max_r2t: 2, ..base },
        WriteCase {
            max_r2t: 4,
            max_burst: 3000,
            ..base
        },
        WriteCase {
            initial_r2t: true,
            ..base
        },
        WriteCase {
            initial_r2t: true,
            immediate: 0,
            ..base
        },
        WriteCase {
            immediate_data: false,
            immediate: 0,
            ..base
        },
        // Everything fits in the first burst: no R2T at all.
        WriteCase { edtl: 3000, ..base },
        WriteCase { edtl: 1024, ..base },
        // Immediate data only, the rest by R2T.
        WriteCase {
            initial_r2t: true,
            edtl: 2048,
            max_burst: 512,
            ..base
        },
    ];
    for case in &cases {
        run_write(case);
    }
}

#[test]
fn write_residuals_come_from_what_the_cdb_wanted() {
    // (EDTL, bytes the CDB asks for, residual): libiscsi's WRITE10 residual cases.
    let cases = [
        (1024, 512, Residual::Underflow(512)),
        (200, 512, Residual::Overflow(312)),
        (512, 1024, Residual::Overflow(512)),
        (10000, 512, Residual::Underflow(10000 - 512)),
    ];
    let p = SessionParams {
        first_burst_len: 65536,
        max_recv_data_segment_len: 65536,
        ..params()
    };
    for (itt, (edtl, wanted, residual)) in (1..).zip(cases) {
        let mut h = Harness::new(p.clone(), 8);
        let data = pattern(edtl as usize);
        let cmd = h.execute(write_cmd(itt, edtl, &data, true));
        assert_eq!(cmd.data_out, data);
        let outcome = ScsiOutcome {
            data_out_len: Some(wanted),
            ..good(Vec::new())
        };
        let r = as_response(only(&h.done(cmd.task, outcome)));
        assert_eq!(r.residual, residual, "EDTL {edtl}");
        assert_eq!(r.bidi_residual, Residual::None);
    }
}

#[test]
fn write_with_zero_expected_length_executes_at_once() {
    let mut h = Harness::new(params(), 8);
    let cmd = h.execute(write_cmd(9, 0, &[], true));
    assert!(cmd.data_out.is_empty());
    let outcome = ScsiOutcome {
        data_out_len: Some(512),
        ..good(Vec::new())
    };
    let r = as_response(only(&h.done(cmd.task, outcome)));
    assert_eq!(r.residual, Residual::Overflow(512));
}

#[test]
fn bidirectional_command_reports_both_residuals_in_a_response() {
    let mut p = params();
    p.max_send_data_segment_len = 8192;
    p.first_burst_len = 65536;
    let mut h = Harness::new(p, 8);
    let mut c = write_cmd(4, 512, &pattern(512), true);
    c.read = true;
    c.bidi_read_len = Some(1024);
    let cmd = h.execute(c);
    assert_eq!(cmd.read_len, 1024);
    let outcome = ScsiOutcome {
        data_out_len: Some(512),
        ..good(pattern(512))
    };
    let actions = h.done(cmd.task, outcome);
    let pdus = sent(&actions);
    assert_eq!(pdus.len(), 2);
    let d = as_data_in(pdus[0]);
    assert!(d.status.is_none() && d.data.len() == 512);
    let r = as_response(pdus[1]);
    assert_eq!(r.residual, Residual::None);
    assert_eq!(r.bidi_residual, Residual::Underflow(512));
    assert_eq!(r.exp_data_sn, 1);
}

#[test]
fn read_flagged_as_write_answers_without_data_in() {
    // libiscsi's Read10Invalid: a READ CDB sent with the W bit and one block of data.
    let mut p = params();
    p.first_burst_len = 65536;
    let mut h = Harness::new(p, 8);
    let cmd = h.execute(write_cmd(5, 512, &pattern(512), true));
    let outcome = ScsiOutcome {
        data_out_len: Some(0),
        ..good(pattern(512))
    };
    let r = as_response(only(&h.done(cmd.task, outcome)));
    assert_eq!((r.status, r.residual), (0, Residual::Underflow(512)));
}

#[test]
fn data_out_buffers_are_reused() {
    let mut p = params();
    p.initial_r2t = true;
    let mut h = Harness::new(p, 8);
    let cmd = h.execute(write_cmd(1, 512, &pattern(512), true));
    let ptr = cmd.data_out.as_ptr();
    h.s.recycle(cmd.data_out);
    h.done(cmd.task, good(Vec::new()));
    let again = h.execute(write_cmd(2, 256, &pattern(256), true));
    assert_eq!(
        again.data_out.as_ptr(),
        ptr,
        "the recycled buffer came back"
    );
    assert_eq!(again.data_out, pattern(256));
}

#[test]
fn oversized_write_fails_without_buffering() {
    let mut h = Harness::new(params(), 8);
    let actions = h.command(write_cmd(8, (1 << 20) + 1, &[], true));
    let r = as_response(only(&actions));
    assert_eq!((r.itt, r.response), (8, 1));
    assert_eq!(h.s.counts().total(), 0);
}
