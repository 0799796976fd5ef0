//! The full-feature phase of one iSCSI session on its single connection, at
//! ErrorRecoveryLevel 0, as a state machine with no I/O.
//!
//! The engine reads PDUs from the socket and feeds them to [`Session::on_pdu`]; the session
//! answers with [`Action`]s: PDUs to write, SCSI commands to execute (with all their Data-Out
//! collected), tasks to abort, task management effects beyond this session, text requests to
//! answer, and when to close the connection. The engine reports back with
//! [`Session::on_scsi_done`] (exactly once per [`Action::Execute`], aborted or not),
//! [`Session::on_tmf_done`] and [`Session::on_text_reply`].
//!
//! What the session takes care of (RFC 7143): the CmdSN window (commands outside it are
//! ignored, MaxCmdSN = ExpCmdSN + queue depth − 1 − tasks in flight, never decreasing),
//! StatSN numbering, immediate/unsolicited/solicited (R2T) Data-Out with DataSN and offset
//! checks, Data-In split at the initiator's MaxRecvDataSegmentLength and MaxBurstLength with
//! status in the last one when there is no sense, residuals, NOP-Out/NOP-In, task management,
//! logout, Reject for malformed PDUs.

mod buffer_pool;
mod collect;
mod command;
mod flow;
mod logout;
mod nop;
mod respond;
mod seq;
mod tasks;
mod text_request;
mod tmf;
mod write_memory;

#[cfg(test)]
mod tests;

use bytes::Bytes;
use tracing::{debug, warn};

use super::login::Established;
use super::params::{SessionParams, SessionType};
use super::pdu::{
    BHS_LEN, Digests, Pdu, PduError, RESERVED_TAG, Reject, Sns, TaskAttr, TaskFunction, opcode,
    reject_reason,
};
use super::text::Pairs;
use buffer_pool::BufferPool;
use seq::{Admission, Sequencer};
pub use tasks::TaskCounts;
use tasks::Tasks;
pub use write_memory::WriteMemory;

/// Identifies one SCSI command of a session between the session and the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u64);

/// Identifies one task management request the engine must carry out ([`Action::TaskMgmt`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TmfId(pub u64);

/// How a session starts and what it allows, besides the negotiated [`SessionParams`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// The connection's CID (from its login), for Logout "close the connection".
    pub cid: u16,
    /// The next CmdSN expected: the CmdSN of the last Login Request (login commands are
    /// immediate and do not advance it).
    pub exp_cmd_sn: u32,
    /// The next StatSN to send: one past the StatSN of the final Login Response.
    pub stat_sn: u32,
    /// Commands the session may have in flight: the CmdSN window opens up to this many
    /// while write memory allows it.
    pub queue_depth: u32,
    /// The window the final Login Response advertised (MaxCmdSN = ExpCmdSN + login_window
    /// − 1); the session opens it further as memory allows.
    pub login_window: u32,
    /// Largest Expected Data Transfer Length of a write the session buffers; larger writes
    /// fail with iSCSI response "target failure". Advertise it in the Block Limits VPD page.
    pub max_write_len: u32,
    /// Data-Out buffers kept for reuse.
    pub pooled_buffers: usize,
    /// Most bytes of capacity the pooled buffers may hold together (what an idle session
    /// keeps after a burst of writes).
    pub pooled_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cid: 0,
            exp_cmd_sn: 0,
            stat_sn: 0,
            queue_depth: 64,
            login_window: 64,
            max_write_len: 16 << 20,
            pooled_buffers: 32,
            pooled_bytes: 1 << 20,
        }
    }
}

impl SessionConfig {
    /// The start of a session whose login just completed with window `login_window` (the
    /// `cmd_window` login advertised), growing up to `queue_depth`.
    pub fn after_login(login: &Established, login_window: u32, queue_depth: u32) -> Self {
        Self {
            cid: login.cid,
            exp_cmd_sn: login.exp_cmd_sn,
            stat_sn: login.next_stat_sn,
            queue_depth,
            login_window,
            ..Self::default()
        }
    }
}

/// A SCSI command ready to execute, with all its Data-Out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub task: TaskId,
    /// The LUN field of the command, as its 8 raw bytes read big-endian.
    pub lun: u64,
    /// Initiator Task Tag (for logs).
    pub itt: u32,
    pub attr: TaskAttr,
    /// The whole CDB (at least 16 bytes; extended CDBs included).
    pub cdb: Bytes,
    /// The Data-Out, exactly the Expected Data Transfer Length long (empty for non-writes).
    /// Hand it back with [`Session::recycle`] when done, if convenient.
    pub data_out: Vec<u8>,
    /// How many bytes of Data-In the initiator expects (informational: return what the CDB
    /// asks for; the session truncates and computes the residual).
    pub read_len: u32,
}

impl Command {
    /// The command's task attribute as the logical unit honours it: untagged counts as
    /// SIMPLE, and the session refuses ACA and reserved values before they become commands.
    pub fn task_attr(&self) -> crate::scsi::TaskAttr {
        match self.attr {
            TaskAttr::Ordered => crate::scsi::TaskAttr::Ordered,
            TaskAttr::HeadOfQueue => crate::scsi::TaskAttr::HeadOfQueue,
            _ => crate::scsi::TaskAttr::Simple,
        }
    }
}

/// What the engine reports when a command it executed has ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScsiOutcome {
    /// SCSI status byte.
    pub status: u8,
    /// Data-In as the command produced it (what the CDB's allocation or transfer length asks
    /// for, not truncated to the initiator's expected length).
    pub data_in: Bytes,
    /// Sense data (non-empty only with CHECK CONDITION).
    pub sense: Vec<u8>,
    /// For commands with Data-Out: how many bytes of it the CDB asked for, if known. The
    /// difference to the Expected Data Transfer Length is the write residual.
    pub data_out_len: Option<u32>,
}

/// What the session asks the engine to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write this PDU to the connection.
    Send(Pdu),
    /// Execute this SCSI command; report with [`Session::on_scsi_done`].
    Execute(Command),
    /// Abort these executing tasks if possible. Each still gets its
    /// [`Session::on_scsi_done`] once it no longer runs (its outcome is not sent).
    Abort { tasks: Vec<TaskId> },
    /// Carry out a task management function's effects beyond this session's own tasks
    /// (other sessions' tasks, unit attentions, reservations, LUN existence), then report
    /// with [`Session::on_tmf_done`]. `function` is CLEAR TASK SET, LOGICAL UNIT RESET,
    /// TARGET WARM RESET or TARGET COLD RESET (after the cold reset's response the session
    /// closes the connection itself).
    TaskMgmt {
        id: TmfId,
        function: TaskFunction,
        lun: u64,
    },
    /// Answer this complete text request (e.g. `SendTargets=All`; see
    /// [`crate::iscsi::discovery::respond`]) with [`Session::on_text_reply`].
    Text { itt: u32, keys: Pairs },
    /// Close the connection (after writing what came before). Nothing follows.
    Close,
}

/// Takes the tag `counter` holds and moves it on, skipping the reserved value.
fn next_tag(counter: &mut u32) -> u32 {
    let tag = *counter;
    *counter = counter.wrapping_add(1);
    if *counter == RESERVED_TAG {
        *counter = 1;
    }
    tag
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    /// A logout was accepted: no new requests, the response waits for tasks to end.
    LoggingOut,
    Closed,
}

/// Why the session closed its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The initiator asked for it (logout, TARGET COLD RESET).
    ByInitiator(&'static str),
    /// The target gave up on the connection (a protocol error it cannot recover from at
    /// ErrorRecoveryLevel 0).
    ByTarget(&'static str),
}

/// The full-feature phase of one session (one connection, ErrorRecoveryLevel 0).
#[derive(Debug)]
pub struct Session {
    params: SessionParams,
    config: SessionConfig,
    seq: Sequencer,
    tasks: Tasks,
    pool: BufferPool,
    waiters: tmf::Waiters,
    text: text_request::TextState,
    next_ttt: u32,
    /// TTT of our NOP-In ping that has not been answered yet.
    ping: Option<u32>,
    state: State,
    closed: Option<Closed>,
    /// The write memory this session holds ([`memory`]).
    mem: write_memory::Budget,
    /// Unsolicited bytes one command may bring (immediate data and unsolicited Data-Out):
    /// what each open window slot holds.
    unsolicited: usize,
    /// Writes waiting for memory before their first R2T, oldest first.
    awaiting: std::collections::VecDeque<TaskId>,
    /// Most commands the window may cover (running ones included) by the engine's fair
    /// share between targets ([`Session::set_window_cap`]); at least 1.
    window_cap: u32,
}

impl Session {
    /// A session right after a successful login, holding write memory of the agent's pool.
    pub fn new(params: SessionParams, config: SessionConfig) -> Self {
        Self::with_memory(params, config, WriteMemory::global())
    }

    /// A session right after a successful login, holding write memory of `memory`.
    pub fn with_memory(
        params: SessionParams,
        config: SessionConfig,
        memory: std::sync::Arc<WriteMemory>,
    ) -> Self {
        let unsolicited = flow::unsolicited_per_command(&params);
        let window = config.login_window.clamp(1, config.queue_depth.max(1));
        let mut mem = write_memory::Budget::new(memory);
        // The login already promised this window: its memory is taken whatever the limits.
        mem.force_take(unsolicited.saturating_mul(window as usize));
        Self {
            seq: Sequencer::new(config.exp_cmd_sn, config.stat_sn, window),
            pool: BufferPool::new(config.pooled_buffers, config.pooled_bytes),
            mem,
            unsolicited,
            awaiting: std::collections::VecDeque::new(),
            window_cap: u32::MAX,
            tasks: Tasks::default(),
            waiters: tmf::Waiters::default(),
            text: text_request::TextState::default(),
            next_ttt: 1,
            ping: None,
            state: State::Open,
            closed: None,
            params,
            config,
        }
    }

    /// Handles one PDU from the initiator.
    pub fn on_pdu(&mut self, pdu: Pdu, out: &mut Vec<Action>) {
        self.handle_pdu(pdu, out);
        self.settle_memory();
    }

    fn handle_pdu(&mut self, pdu: Pdu, out: &mut Vec<Action>) {
        match self.state {
            State::Open => {}
            State::LoggingOut => {
                debug!(opcode = pdu.opcode(), "PDU after logout ignored");
                return;
            }
            State::Closed => return,
        }
        match pdu {
            Pdu::NopOut(p) => self.on_nop_out(p, out),
            Pdu::ScsiCommand(c) => self.on_command(c, out),
            Pdu::TaskMgmtRequest(t) => self.on_tmf(t, out),
            Pdu::TextRequest(t) => self.on_text(t, out),
            Pdu::DataOut(d) => self.on_data_out(d, out),
            Pdu::LogoutRequest(l) => self.on_logout(l, out),
            Pdu::Snack(_) => self.reject(reject_reason::SNACK_REJECT, &pdu, out),
            other => self.reject(reject_reason::PROTOCOL_ERROR, &other, out),
        }
    }

    /// Handles bytes that did not decode as a PDU: `bhs` is the received header. Framing and
    /// header digest errors close the connection; otherwise the PDU is rejected (a command's
    /// CmdSN counts as used, since the initiator fails the task rather than resend it).
    pub fn on_decode_error(&mut self, bhs: &[u8; BHS_LEN], err: &PduError, out: &mut Vec<Action>) {
        if !err.is_rejectable() {
            warn!(%err, "undecodable PDU; closing the connection");
            self.close(Closed::ByTarget("undecodable PDU"), out);
            return;
        }
        if self.state != State::Open {
            return;
        }
        let op = bhs[0] & 0x3f;
        let immediate = bhs[0] & 0x40 != 0;
        let is_command = matches!(
            op,
            opcode::NOP_OUT
                | opcode::SCSI_COMMAND
                | opcode::TASK_MGMT_REQUEST
                | opcode::TEXT_REQUEST
                | opcode::LOGOUT_REQUEST
        );
        if is_command && !immediate {
            let cmd_sn = u32::from_be_bytes([bhs[24], bhs[25], bhs[26], bhs[27]]);
            self.seq.consume_rejected(cmd_sn);
        }
        let reason = match err {
            PduError::DataDigest => reject_reason::DATA_DIGEST_ERROR,
            PduError::UnknownOpcode(_) => reject_reason::COMMAND_NOT_SUPPORTED,
            PduError::UnexpectedAhs(_) | PduError::UnexpectedData(_) => {
                reject_reason::PROTOCOL_ERROR
            }
            _ => reject_reason::INVALID_PDU_FIELD,
        };
        debug!(%err, reason, "rejecting PDU");
        self.send_reject(reason, Bytes::copy_from_slice(bhs), out);
        if op == opcode::DATA_OUT {
            // The data is lost and ErrorRecoveryLevel 0 cannot ask for it again.
            self.close(
                Closed::ByTarget("a Data-Out was lost to a digest error"),
                out,
            );
        }
    }

    /// Returns a Data-Out buffer (from [`Command::data_out`]) for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.pool.give(buf);
    }

    /// Tasks in flight by phase.
    pub fn counts(&self) -> TaskCounts {
        self.tasks.counts()
    }

    /// The next CmdSN expected.
    pub fn exp_cmd_sn(&self) -> u32 {
        self.seq.exp_cmd_sn()
    }

    /// The largest MaxCmdSN advertised so far.
    pub fn max_cmd_sn(&self) -> u32 {
        self.seq.max_cmd_sn()
    }

    /// The StatSN of the next response.
    pub fn stat_sn(&self) -> u32 {
        self.seq.stat_sn()
    }

    /// The newest ExpStatSN the initiator sent (responses before it were received).
    pub fn exp_stat_sn(&self) -> u32 {
        self.seq.exp_stat_sn()
    }

    /// Whether the session asked for the connection to close.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Why the session closed the connection, once it has.
    pub fn closed(&self) -> Option<Closed> {
        self.closed
    }

    /// The negotiated parameters.
    pub fn params(&self) -> &SessionParams {
        &self.params
    }

    fn is_discovery(&self) -> bool {
        self.params.session_type == SessionType::Discovery
    }

    /// Sequence numbers for an outgoing PDU; `response` consumes a StatSN.
    fn sns(&mut self, response: bool) -> Sns {
        self.open_window();
        self.seq.sns(response)
    }

    fn send(&mut self, pdu: Pdu, out: &mut Vec<Action>) {
        out.push(Action::Send(pdu));
    }

    /// A fresh Target Transfer Tag (never the reserved value).
    fn new_ttt(&mut self) -> u32 {
        next_tag(&mut self.next_ttt)
    }

    /// Checks a request's CmdSN: `false` when it must not be processed (ignored, or the
    /// connection is being closed for a gap).
    fn admit(
        &mut self,
        cmd_sn: u32,
        immediate: bool,
        exp_stat_sn: u32,
        out: &mut Vec<Action>,
    ) -> bool {
        self.seq.acknowledge(exp_stat_sn);
        match self.seq.admit(cmd_sn, immediate) {
            Admission::Accept => true,
            Admission::OutOfWindow => {
                debug!(
                    cmd_sn,
                    exp_cmd_sn = self.seq.exp_cmd_sn(),
                    max_cmd_sn = self.seq.max_cmd_sn(),
                    "CmdSN outside the window; ignored"
                );
                false
            }
            Admission::Gap => {
                warn!(
                    cmd_sn,
                    exp_cmd_sn = self.seq.exp_cmd_sn(),
                    "CmdSN gap on a single connection; closing"
                );
                self.close(Closed::ByTarget("a gap in CmdSN"), out);
                false
            }
        }
    }

    /// Rejects a decoded PDU, quoting its header.
    fn reject(&mut self, reason: u8, pdu: &Pdu, out: &mut Vec<Action>) {
        let header = pdu
            .encode(Digests::default())
            .map(|f| f.header.slice(..BHS_LEN.min(f.header.len())))
            .unwrap_or_default();
        debug!(opcode = pdu.opcode(), reason, "rejecting PDU");
        self.send_reject(reason, header, out);
    }

    fn send_reject(&mut self, reason: u8, header: Bytes, out: &mut Vec<Action>) {
        let sns = self.sns(true);
        self.send(
            Pdu::Reject(Reject {
                reason,
                sns,
                data_sn: 0,
                header,
            }),
            out,
        );
    }

    fn close(&mut self, why: Closed, out: &mut Vec<Action>) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.closed = Some(why);
            out.push(Action::Close);
        }
    }
}
