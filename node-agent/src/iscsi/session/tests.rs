//! Transcript tests of the session: feed PDUs and engine reports, check every action.

mod control;
mod io;
mod order;
mod window;
mod write_memory;

use bytes::Bytes;

use super::{Action, Command, ScsiOutcome, Session, SessionConfig, TaskId};
use crate::iscsi::params::SessionParams;
use crate::iscsi::pdu::{
    DataIn, DataOut, NopIn, NopOut, Pdu, R2t, RESERVED_TAG, Reject, ScsiCommand, ScsiResponse,
    TaskAttr, TaskFunction, TaskMgmtRequest, TaskMgmtResponse, TextResponse,
};

/// First CmdSN and StatSN of every test session.
const CMD_SN: u32 = 1;
const STAT_SN: u32 = 100;

/// A session with `params` and queue depth `qd`, and the actions it produced last.
struct Harness {
    s: Session,
    /// The CmdSN the next non-immediate request carries.
    cmd_sn: u32,
}

impl Harness {
    fn new(params: SessionParams, qd: u32) -> Self {
        // A pool of its own, so tests running in parallel do not share memory.
        let memory = std::sync::Arc::new(super::WriteMemory::new(1 << 30, 1 << 30));
        Self::with_memory(params, qd, qd, memory)
    }

    /// A session whose login advertised `login_window`, over write memory `memory`.
    fn with_memory(
        params: SessionParams,
        qd: u32,
        login_window: u32,
        memory: std::sync::Arc<super::WriteMemory>,
    ) -> Self {
        let config = SessionConfig {
            cid: 7,
            exp_cmd_sn: CMD_SN,
            stat_sn: STAT_SN,
            queue_depth: qd,
            login_window,
            max_write_len: 1 << 20,
            pooled_buffers: 2,
            pooled_bytes: 1 << 20,
        };
        Self {
            s: Session::with_memory(params, config, memory),
            cmd_sn: CMD_SN,
        }
    }

    fn feed(&mut self, pdu: Pdu) -> Vec<Action> {
        let mut out = Vec::new();
        self.s.on_pdu(pdu, &mut out);
        out
    }

    /// The CmdSN for the next non-immediate request, counted as used.
    fn next_cmd_sn(&mut self) -> u32 {
        let sn = self.cmd_sn;
        self.cmd_sn += 1;
        sn
    }

    /// Sends a non-immediate SCSI command.
    fn command(&mut self, c: ScsiCommand) -> Vec<Action> {
        let c = ScsiCommand {
            cmd_sn: self.next_cmd_sn(),
            ..c
        };
        self.feed(Pdu::ScsiCommand(c))
    }

    /// Sends a command that must be handed to the engine at once; returns it.
    fn execute(&mut self, c: ScsiCommand) -> Command {
        let mut actions = self.command(c);
        match (actions.pop(), actions.is_empty()) {
            (Some(Action::Execute(cmd)), true) => cmd,
            (last, _) => panic!("expected one Execute, got {actions:?} then {last:?}"),
        }
    }

    fn done(&mut self, task: TaskId, outcome: ScsiOutcome) -> Vec<Action> {
        let mut out = Vec::new();
        self.s.on_scsi_done(task, outcome, &mut out);
        out
    }

    fn tmf(&mut self, function: TaskFunction, lun: u64, ref_itt: u32, itt: u32) -> Vec<Action> {
        let cmd_sn = self.cmd_sn;
        self.feed(Pdu::TaskMgmtRequest(TaskMgmtRequest {
            immediate: true,
            function,
            lun,
            itt,
            ref_task_tag: ref_itt,
            cmd_sn,
            exp_stat_sn: 0,
            ref_cmd_sn: 0,
            exp_data_sn: 0,
        }))
    }
}

/// A READ-like command: `edtl` bytes expected back.
fn read_cmd(itt: u32, edtl: u32) -> ScsiCommand {
    ScsiCommand {
        immediate: false,
        final_: true,
        read: true,
        write: false,
        attr: TaskAttr::Simple,
        lun: 0,
        itt,
        expected_data_len: edtl,
        cmd_sn: 0,
        exp_stat_sn: 0,
        cdb: Bytes::from_static(&[0x28; 16]),
        bidi_read_len: None,
        data: Bytes::new(),
    }
}

/// A WRITE-like command of `edtl` bytes carrying `immediate` data; `final_` clear announces
/// unsolicited Data-Out.
fn write_cmd(itt: u32, edtl: u32, immediate: &[u8], final_: bool) -> ScsiCommand {
    ScsiCommand {
        read: false,
        write: true,
        final_,
        cdb: Bytes::from_static(&[0x2a; 16]),
        data: Bytes::copy_from_slice(immediate),
        ..read_cmd(itt, edtl)
    }
}

fn data_out(itt: u32, ttt: u32, data_sn: u32, offset: u32, data: &[u8], final_: bool) -> Pdu {
    Pdu::DataOut(DataOut {
        final_,
        lun: 0,
        itt,
        ttt,
        exp_stat_sn: 0,
        data_sn,
        buffer_offset: offset,
        data: Bytes::copy_from_slice(data),
    })
}

fn nop_out(itt: u32, ttt: u32, data: &[u8]) -> NopOut {
    NopOut {
        immediate: true,
        lun: 0,
        itt,
        ttt,
        cmd_sn: CMD_SN,
        exp_stat_sn: 0,
        data: Bytes::copy_from_slice(data),
    }
}

fn good(data_in: Vec<u8>) -> ScsiOutcome {
    ScsiOutcome {
        status: 0,
        data_in: data_in.into(),
        ..ScsiOutcome::default()
    }
}

/// `len` bytes of a pattern that shows misplaced offsets.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// The PDUs among `actions`, failing on anything else.
fn sent(actions: &[Action]) -> Vec<&Pdu> {
    actions
        .iter()
        .map(|a| match a {
            Action::Send(p) => p,
            other => panic!("expected only Send, got {other:?}"),
        })
        .collect()
}

/// Test extractors: `as_x(pdu)` is the PDU as that variant, or a panic naming what came.
macro_rules! extractors {
    ($($name:ident: $variant:ident($ty:ty), $what:literal;)*) => {$(
        fn $name(p: &Pdu) -> $ty {
            match p {
                Pdu::$variant(x) => x.clone(),
                other => panic!(concat!("expected ", $what, ", got {:?}"), other),
            }
        }
    )*};
}

extractors! {
    as_data_in: DataIn(DataIn), "Data-In";
    as_response: ScsiResponse(ScsiResponse), "SCSI Response";
    as_r2t: R2t(R2t), "R2T";
    as_tmf_response: TaskMgmtResponse(TaskMgmtResponse), "TMF response";
    as_reject: Reject(Reject), "Reject";
    as_nop_in: NopIn(NopIn), "NOP-In";
    as_text: TextResponse(TextResponse), "Text Response";
}

/// The one PDU of `actions`.
fn only(actions: &[Action]) -> &Pdu {
    match sent(actions)[..] {
        [p] => p,
        ref other => panic!("expected one PDU, got {other:?}"),
    }
}

/// The ITT quoted in a Reject's copy of the rejected header.
fn rejected_itt(r: &Reject) -> u32 {
    let h = &r.header;
    assert_eq!(h.len(), 48, "Reject quotes the whole BHS");
    u32::from_be_bytes([h[16], h[17], h[18], h[19]])
}
