//! Task attributes within a session, and tasks that another nexus aborts.

use super::*;

fn params() -> SessionParams {
    SessionParams {
        initial_r2t: true,
        immediate_data: false,
        ..SessionParams::default()
    }
}

fn with_attr(c: ScsiCommand, attr: TaskAttr) -> ScsiCommand {
    ScsiCommand { attr, ..c }
}

/// The commands handed to the engine among `actions`, by ITT.
fn executed(actions: &[Action]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Execute(c) => Some(c.itt),
            _ => None,
        })
        .collect()
}

#[test]
fn an_ordered_command_waits_until_older_ones_reach_the_engine_and_holds_younger_ones() {
    let mut h = Harness::new(params(), 8);
    // A write waiting for its Data-Out, then an ORDERED read, a SIMPLE read, a HEAD OF QUEUE.
    let r2t = as_r2t(only(&h.command(write_cmd(1, 512, &[], true))));
    assert!(
        h.command(with_attr(read_cmd(2, 512), TaskAttr::Ordered))
            .is_empty()
    );
    assert!(
        h.command(read_cmd(3, 512)).is_empty(),
        "held behind ORDERED"
    );
    let hoq = h.command(with_attr(read_cmd(4, 512), TaskAttr::HeadOfQueue));
    assert_eq!(executed(&hoq), vec![4], "HEAD OF QUEUE goes at once");
    // A command on another LUN is not held: one task set per logical unit.
    let other_lun = h.command(ScsiCommand {
        lun: 1 << 48,
        ..read_cmd(5, 512)
    });
    assert_eq!(executed(&other_lun), vec![5]);
    // Once the write's data is in, all three go, in order.
    let actions = h.feed(data_out(1, r2t.ttt, 0, 0, &[7; 512], true));
    assert_eq!(executed(&actions), vec![1, 2, 3]);
    match &actions[0] {
        Action::Execute(c) => assert_eq!(c.task_attr(), crate::scsi::TaskAttr::Simple),
        other => panic!("{other:?}"),
    }
    match &actions[1] {
        Action::Execute(c) => assert_eq!(c.task_attr(), crate::scsi::TaskAttr::Ordered),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_ordered_write_holds_younger_commands_until_its_own_data_is_in() {
    let mut h = Harness::new(params(), 8);
    let r2t = as_r2t(only(
        &h.command(with_attr(write_cmd(1, 512, &[], true), TaskAttr::Ordered)),
    ));
    assert!(h.command(read_cmd(2, 512)).is_empty());
    let actions = h.feed(data_out(1, r2t.ttt, 0, 0, &[7; 512], true));
    assert_eq!(executed(&actions), vec![1, 2]);
}

#[test]
fn aca_and_reserved_task_attributes_are_refused() {
    let mut h = Harness::new(params(), 8);
    for (itt, attr) in [(1, TaskAttr::Aca), (2, TaskAttr::Reserved(6))] {
        let r = as_response(only(&h.command(with_attr(read_cmd(itt, 512), attr))));
        assert_eq!(r.status, 0x02);
        // ILLEGAL REQUEST, INVALID FIELD IN COMMAND INFORMATION UNIT.
        assert_eq!(
            (r.sense[2] & 0x0F, r.sense[12], r.sense[13]),
            (5, 0x0E, 0x03)
        );
    }
    assert_eq!(h.s.counts().total(), 0);
}

#[test]
fn another_nexus_aborting_ends_waiting_tasks_with_task_aborted() {
    let mut h = Harness::new(params(), 8);
    let r2t = as_r2t(only(&h.command(write_cmd(1, 1024, &[], true))));
    let running = h.execute(read_cmd(2, 512));
    let mut out = Vec::new();
    h.s.abort_third_party(|lun| lun == 0, &mut out);
    let r = as_response(only(&out));
    assert_eq!(
        (r.itt, r.status),
        (1, 0x40),
        "TASK ABORTED for the write still collecting"
    );
    // Its late Data-Out is dropped quietly; the running read answers when the engine does
    // (with the status the logical unit gives it).
    assert!(
        h.feed(data_out(1, r2t.ttt, 0, 0, &[1; 1024], true))
            .is_empty()
    );
    let done = h.done(
        running.task,
        ScsiOutcome {
            status: 0x40,
            ..ScsiOutcome::default()
        },
    );
    assert_eq!(as_response(only(&done)).status, 0x40);
    assert_eq!(h.s.counts().total(), 0);
    assert!(!h.s.is_closed());
}
