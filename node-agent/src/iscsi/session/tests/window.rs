//! The CmdSN window and the numbers every response carries.

use super::*;

fn tur(itt: u32, cmd_sn: u32) -> Pdu {
    let mut c = read_cmd(itt, 0);
    c.read = false;
    c.cmd_sn = cmd_sn;
    Pdu::ScsiCommand(c)
}

#[test]
fn commands_outside_the_window_are_ignored() {
    // libiscsi's iSCSIcmdsn tests: CmdSN = MaxCmdSN + 1 and ExpCmdSN - 1 get no reply, and
    // the next command with CmdSN = ExpCmdSN works.
    let mut h = Harness::new(SessionParams::default(), 4);
    let max = h.s.max_cmd_sn();
    assert_eq!(max, CMD_SN + 3);
    assert!(h.feed(tur(1, max + 1)).is_empty());
    assert!(h.feed(tur(2, CMD_SN - 1)).is_empty());
    assert_eq!(h.s.exp_cmd_sn(), CMD_SN, "ignored commands use no CmdSN");
    assert!(!h.s.is_closed());
    let actions = h.feed(tur(3, CMD_SN));
    assert!(matches!(&actions[..], [Action::Execute(c)] if c.itt == 3));
    assert_eq!(h.s.exp_cmd_sn(), CMD_SN + 1);
}

#[test]
fn a_gap_in_cmdsn_closes_the_connection() {
    let mut h = Harness::new(SessionParams::default(), 4);
    assert_eq!(h.feed(tur(1, CMD_SN + 1)), vec![Action::Close]);
    assert!(h.s.is_closed());
    assert!(h.feed(tur(2, CMD_SN)).is_empty(), "nothing after Close");
}

#[test]
fn max_cmd_sn_tracks_running_commands() {
    let mut h = Harness::new(SessionParams::default(), 2);
    let a = h.execute(read_cmd(1, 0));
    let b = h.execute(read_cmd(2, 0));
    // Both slots taken: the third is beyond MaxCmdSN (= CMD_SN + 1) and ignored.
    let sn = h.cmd_sn;
    assert!(h.feed(tur(3, sn)).is_empty());
    let r = as_response(only(&h.done(a.task, good(Vec::new()))));
    // ExpCmdSN is CMD_SN + 2, one command still runs: one free slot.
    assert_eq!(r.sns.exp_cmd_sn, CMD_SN + 2);
    assert_eq!(r.sns.max_cmd_sn, CMD_SN + 2);
    assert_eq!(h.s.counts().executing, 1);
    // Now the third fits.
    assert!(matches!(&h.feed(tur(3, sn))[..], [Action::Execute(_)]));
    let r = as_response(only(&h.done(b.task, good(Vec::new()))));
    assert_eq!(
        (r.sns.exp_cmd_sn, r.sns.max_cmd_sn),
        (CMD_SN + 3, CMD_SN + 3)
    );
    assert_eq!(r.sns.stat_sn, STAT_SN + 1, "one StatSN per response");
}

#[test]
fn immediate_commands_bypass_the_window_but_not_the_queue_depth() {
    let mut h = Harness::new(SessionParams::default(), 1);
    let mut c = read_cmd(1, 0);
    c.immediate = true;
    c.cmd_sn = CMD_SN;
    assert!(matches!(
        &h.feed(Pdu::ScsiCommand(c.clone()))[..],
        [Action::Execute(_)]
    ));
    assert_eq!(h.s.exp_cmd_sn(), CMD_SN, "immediate commands use no CmdSN");
    c.itt = 2;
    let r = as_reject(only(&h.feed(Pdu::ScsiCommand(c))));
    assert_eq!(
        r.reason,
        crate::iscsi::pdu::reject_reason::IMMEDIATE_COMMAND_REJECT
    );
    assert_eq!(rejected_itt(&r), 2);
}

#[test]
fn exp_stat_sn_is_recorded_up_to_what_was_sent() {
    let mut h = Harness::new(SessionParams::default(), 4);
    let cmd = h.execute(read_cmd(1, 0));
    h.done(cmd.task, good(Vec::new()));
    let mut c = read_cmd(2, 0);
    c.read = false;
    c.exp_stat_sn = STAT_SN + 1;
    h.command(c.clone());
    assert_eq!(h.s.exp_stat_sn(), STAT_SN + 1);
    c.itt = 3;
    c.exp_stat_sn = STAT_SN + 50;
    h.command(c);
    assert_eq!(h.s.exp_stat_sn(), STAT_SN + 1, "beyond StatSN: ignored");
}

#[test]
fn a_session_starts_where_login_left_off() {
    use crate::iscsi::login::Established;
    use crate::iscsi::params::SessionType;
    let login = Established {
        session_type: SessionType::Normal,
        target_iqn: Some("iqn.2024-01.io.spindle:t".to_owned()),
        initiator_name: "iqn.i".to_owned(),
        initiator_alias: None,
        isid: [0; 6],
        tsih: 1,
        cid: 3,
        params: SessionParams::default(),
        exp_cmd_sn: 0xffff_fffe,
        next_stat_sn: 41,
    };
    let config = SessionConfig::after_login(&login, 16, 16);
    let mut s = Session::new(login.params.clone(), config);
    // The same window login advertised: ExpCmdSN + 16 - 1, across the wrap.
    assert_eq!(s.max_cmd_sn(), 0xffff_fffe_u32.wrapping_add(15));
    let mut out = Vec::new();
    s.on_pdu(tur(1, 0xffff_fffe), &mut out);
    let [Action::Execute(cmd)] = &out[..] else {
        panic!("expected Execute, got {out:?}")
    };
    let task = cmd.task;
    out.clear();
    s.on_scsi_done(task, good(Vec::new()), &mut out);
    let r = as_response(only(&out));
    assert_eq!((r.sns.stat_sn, r.sns.exp_cmd_sn), (41, 0xffff_ffff));
}

#[test]
fn a_window_cap_stops_the_window_opening_but_never_takes_back_what_was_granted() {
    let mut h = Harness::new(SessionParams::default(), 8);
    let running: Vec<_> = (1..=4).map(|i| h.execute(read_cmd(i, 0))).collect();
    let granted = h.s.max_cmd_sn();
    assert_eq!(granted, CMD_SN + 7, "the login window of 8");
    h.s.set_window_cap(2);
    let mut last = granted;
    for (n, t) in running.into_iter().enumerate() {
        let r = as_response(only(&h.done(t.task, good(Vec::new()))));
        assert!(
            r.sns.max_cmd_sn >= last,
            "MaxCmdSN went back: {} after {last}",
            r.sns.max_cmd_sn
        );
        last = r.sns.max_cmd_sn;
        assert_eq!(last, granted, "response {n}: no slot opens beyond the cap");
    }
    // Everything granted is used up: with nothing running the cap still leaves a slot open.
    let used: Vec<_> = (5..=8).map(|i| h.execute(read_cmd(i, 0))).collect();
    assert_eq!(h.s.exp_cmd_sn(), granted + 1, "window closed");
    h.s.set_window_cap(0);
    let mut max = granted;
    for t in used {
        max = as_response(only(&h.done(t.task, good(Vec::new()))))
            .sns
            .max_cmd_sn;
    }
    assert_eq!(
        max,
        granted + 1,
        "a cap of 0 counts as 1: one command may come"
    );
    let _ = h.execute(read_cmd(9, 0));
}
