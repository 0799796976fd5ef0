//! The live sessions of one target and the state each connection's tasks share: the
//! registry the target stops and closes them through, and [`Conn`], which carries out what a
//! session asks for (PDUs out, SCSI commands on the target's LUNs). The pump that feeds a
//! connection (`super::conn`), its write memory waiter (`super::memory`) and task management
//! (`super::tmf`) are all built on this module.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use super::outbox::Outbox;
use super::target::TargetState;
use crate::iscsi::discovery::{self, Asker, DiscoveryEntry};
use crate::iscsi::login::AclPolicy;
use crate::iscsi::pdu::{Digests, TaskFunction};
use crate::iscsi::session::{Action, Command, ScsiOutcome, Session, TmfId};
use crate::iscsi::text;
use crate::metrics::stages::{self, CommandClock};
use crate::ring::{self, TcpStream};
use crate::scsi::{NexusId, TaskKey};

/// What serves the session's requests.
#[derive(Clone)]
pub enum Host {
    /// A normal session of this target.
    Target(Rc<TargetState>),
    /// A discovery session: SendTargets over these entries.
    Discovery(Rc<Vec<DiscoveryEntry>>),
}

impl Host {
    pub(super) fn name(&self) -> &str {
        match self {
            Host::Target(t) => &t.name,
            Host::Discovery(_) => "discovery",
        }
    }

    /// What SendTargets shows: every target for a discovery session; inside a normal session
    /// only its own target (as its ACL stands now).
    fn entries(&self) -> Vec<DiscoveryEntry> {
        match self {
            Host::Target(t) => vec![DiscoveryEntry {
                iqn: t.iqn.clone(),
                portals: Vec::new(),
                acl: t.acl(),
            }],
            Host::Discovery(e) => e.to_vec(),
        }
    }
}

/// One logged-in session, as the agent's status shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub initiator_name: String,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub peer: Option<SocketAddr>,
}

pub(super) struct LiveSession {
    pub(super) stream: Rc<TcpStream>,
    pub(super) info: SessionInfo,
}

/// How long a connection may be idle before the target pings it (NOP-In); a ping still
/// unanswered at the next one closes the connection.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);

/// Live connections of one target, so shutdown can close them and wait.
pub struct Sessions {
    pub(super) live: RefCell<BTreeMap<u64, LiveSession>>,
    /// The target is stopping: pumps stop reading new PDUs.
    stopping: Cell<bool>,
    stop: Notify,
    /// The connections' state, for task management across sessions (`super::tmf`).
    pub(super) conns: RefCell<BTreeMap<u64, Weak<Conn>>>,
    next: Cell<u64>,
    gone: Notify,
    pub(super) keepalive: Duration,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(DEFAULT_KEEPALIVE)
    }
}

impl Sessions {
    /// No live session yet; idle connections are pinged every `keepalive`.
    pub fn new(keepalive: Duration) -> Self {
        Sessions {
            live: RefCell::default(),
            stopping: Cell::new(false),
            stop: Notify::new(),
            conns: RefCell::default(),
            next: Cell::new(0),
            gone: Notify::new(),
            keepalive,
        }
    }

    pub(super) fn add(&self, stream: Rc<TcpStream>, info: SessionInfo) -> u64 {
        let id = self.next.get() + 1;
        self.next.set(id);
        self.live
            .borrow_mut()
            .insert(id, LiveSession { stream, info });
        id
    }

    /// The live sessions.
    pub fn infos(&self) -> Vec<SessionInfo> {
        self.live
            .borrow()
            .values()
            .map(|s| s.info.clone())
            .collect()
    }

    /// Waits until session `id` has ended.
    pub(super) async fn wait_gone(&self, id: u64) {
        loop {
            let gone = self.gone.notified();
            if !self.live.borrow().contains_key(&id) {
                return;
            }
            gone.await;
        }
    }

    pub(super) fn remove(&self, id: u64) {
        self.live.borrow_mut().remove(&id);
        self.conns.borrow_mut().remove(&id);
        self.gone.notify_waiters();
    }

    /// Number of live sessions.
    pub fn count(&self) -> usize {
        self.live.borrow().len()
    }

    /// Closes the sessions whose initiator `acl` no longer admits (an ACL change cuts access at
    /// once, not at the next login). Returns how many.
    pub fn close_disallowed(&self, acl: &AclPolicy) -> usize {
        let mut n = 0;
        for s in self.live.borrow().values() {
            if !acl.allows(&s.info.initiator_name) {
                tracing::warn!(
                    initiator = %s.info.initiator_name,
                    "the Target's ACL no longer admits this initiator: closing its session"
                );
                let _ = s.stream.shutdown();
                n += 1;
            }
        }
        n
    }

    /// Resolves once the target is stopping.
    pub(super) async fn stopped(&self) {
        loop {
            let n = self.stop.notified();
            if self.stopping.get() {
                return;
            }
            n.await;
        }
    }

    /// Stops every session gracefully and waits until they have ended: no new PDU is read,
    /// commands already accepted run to the end and are answered, then the connection closes
    /// (the initiator reconnects and sends what was not answered again). A command that does
    /// not finish within the drain timeout is abandoned with its connection.
    pub async fn stop_all(&self) {
        self.stopping.set(true);
        self.stop.notify_waiters();
        self.wait_all_gone().await;
    }

    async fn wait_all_gone(&self) {
        loop {
            let gone = self.gone.notified();
            if self.live.borrow().is_empty() {
                return;
            }
            gone.await;
        }
    }

    /// Shuts every connection down and waits until their pumps have ended.
    pub async fn close_all(&self) {
        self.cut_all();
        self.wait_all_gone().await;
    }

    /// Shuts every connection's socket down without waiting for anything.
    pub fn cut_all(&self) {
        for s in self.live.borrow().values() {
            let _ = s.stream.shutdown();
        }
    }
}

/// Decodes the 8-byte LUN field (SAM-5 single level: peripheral or flat addressing).
pub fn decode_lun(raw: u64) -> u64 {
    let b = raw.to_be_bytes();
    match b[0] >> 6 {
        0b00 => u64::from(b[1]),
        0b01 => (u64::from(b[0] & 0x3F) << 8) | u64::from(b[1]),
        // Other methods: keep the raw value, which matches no configured LUN.
        _ => raw,
    }
}

/// Everything a connection's tasks share.
pub(super) struct Conn {
    /// Its id among the target's [`Sessions`].
    pub(super) id: u64,
    pub(super) sessions: Rc<Sessions>,
    /// When the last PDU arrived (the keepalive pings only idle connections; the stage
    /// clock of a command starts there).
    pub(super) last_rx: Cell<Instant>,
    pub(super) host: Host,
    pub(super) session: RefCell<Session>,
    pub(super) outbox: Rc<Outbox>,
    pub(super) nexus: NexusId,
    /// Signalled when the session starts waiting for write memory (`super::memory`).
    pub(super) memory_wanted: Notify,
    /// Commands executing now, and a signal when the last one ends (a stop waits for them).
    pub(super) running: Cell<u32>,
    pub(super) all_done: Notify,
    pub(super) digests: Digests,
    pub(super) initiator: String,
    pub(super) target_iqn: Option<String>,
    /// Carries out a task management function the session handed over. Task management
    /// reaches every connection of the target, so it is built on this module
    /// (`super::tmf::start`); the pump hands it in rather than this module calling up to it.
    pub(super) task_mgmt: fn(Rc<Conn>, TmfId, TaskFunction, u64),
}

impl Conn {
    /// Carries out what the session asked for. Returns false once the connection must close.
    pub(super) fn run(self: &Rc<Self>, actions: Vec<Action>) -> bool {
        let mut open = true;
        for a in actions {
            match a {
                Action::Send(pdu) => self.outbox.send(&pdu, self.digests),
                Action::Execute(cmd) => self.execute(cmd),
                // Commands waiting in a logical unit never start; those already on the ring
                // run to the end (no accepted write is cut in half). The session suppresses
                // their responses.
                Action::Abort { tasks } => {
                    if let Host::Target(t) = &self.host {
                        t.abort_tasks(self.nexus, &tasks);
                    }
                }
                Action::TaskMgmt { id, function, lun } => {
                    (self.task_mgmt)(self.clone(), id, function, lun);
                }
                Action::Text { itt, keys } => {
                    let reply = self.answer_text(&keys);
                    let mut out = Vec::new();
                    self.session
                        .borrow_mut()
                        .on_text_reply(itt, reply, &mut out);
                    open &= self.run(out);
                }
                Action::Close => open = false,
            }
        }
        if open && self.session.borrow().wants_memory() {
            self.memory_wanted.notify_one();
        }
        open
    }

    fn answer_text(&self, pairs: &text::Pairs) -> Bytes {
        let params = self.session.borrow().params().clone();
        let asker = Asker {
            initiator_name: &self.initiator,
            session_type: params.session_type,
            current_target: self.target_iqn.as_deref(),
        };
        discovery::respond(pairs, &asker, &self.host.entries())
    }

    fn execute(self: &Rc<Self>, cmd: Command) {
        let me = self.clone();
        let running = Running::new(self.clone());
        let clock = Rc::new(CommandClock::new(self.last_rx.get(), Instant::now()));
        ring::spawn(async move {
            let _running = running;
            let outcome = match &me.host {
                Host::Target(t) => {
                    let lun = decode_lun(cmd.lun);
                    let key = TaskKey {
                        nexus: me.nexus,
                        tag: cmd.task.0,
                        attr: cmd.task_attr(),
                    };
                    let run = t.execute_transfer(key, lun, &cmd.cdb, cmd.data_out);
                    let (r, data_out_len) = stages::timed(clock.clone(), run).await;
                    me.session.borrow_mut().recycle(r.spare);
                    // PREEMPT AND ABORT: the preempted nexuses' tasks still receiving data
                    // end before its response goes out.
                    me.sessions.abort_third_party(&r.preempted, lun);
                    ScsiOutcome {
                        status: r.status as u8,
                        data_in: r.data_in,
                        sense: r.sense,
                        data_out_len,
                    }
                }
                // A discovery session has no LUNs; the session never asks, but answer safely.
                Host::Discovery(_) => ScsiOutcome {
                    status: crate::scsi::Status::CheckCondition as u8,
                    sense: crate::scsi::target::absent_lun(&cmd.cdb, me.nexus).sense,
                    ..ScsiOutcome::default()
                },
            };
            let mut out = Vec::new();
            me.session
                .borrow_mut()
                .on_scsi_done(cmd.task, outcome, &mut out);
            let answered = out.iter().any(|a| matches!(a, Action::Send(_)));
            let open = me.run(out);
            if answered {
                clock.queued(Instant::now());
                me.outbox.stamp(clock);
            }
            if !open {
                me.outbox.close();
            }
        });
    }
}

/// One executing command of a connection; its end is counted when dropped.
struct Running(Rc<Conn>);

impl Running {
    fn new(conn: Rc<Conn>) -> Self {
        conn.running.set(conn.running.get() + 1);
        Running(conn)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let n = self.0.running.get() - 1;
        self.0.running.set(n);
        if n == 0 {
            self.0.all_done.notify_waiters();
        }
    }
}

impl Conn {
    /// Waits until no command of this connection is executing (their answers are queued).
    pub(super) async fn wait_idle(&self) {
        loop {
            let done = self.all_done.notified();
            if self.running.get() == 0 {
                return;
            }
            done.await;
        }
    }
}

impl Sessions {
    /// Ends, with TASK ABORTED, the tasks on LUN `lun` of the sessions of `nexuses` that
    /// have not reached the logical unit yet (PREEMPT AND ABORT).
    pub(super) fn abort_third_party(&self, nexuses: &[NexusId], lun: u64) {
        if nexuses.is_empty() {
            return;
        }
        for conn in self.live_conns() {
            if nexuses.contains(&conn.nexus) {
                conn.abort_third_party(|raw| decode_lun(raw) == lun);
            }
        }
    }

    /// Every live connection's state except that of connection `except`.
    pub(super) fn others(&self, except: u64) -> Vec<Rc<Conn>> {
        self.live_conns()
            .into_iter()
            .filter(|c| c.id != except)
            .collect()
    }

    fn live_conns(&self) -> Vec<Rc<Conn>> {
        self.conns
            .borrow()
            .values()
            .filter_map(|w| w.upgrade())
            .collect()
    }
}

impl Conn {
    /// Ends this session's tasks that another nexus aborted and that are not with a logical
    /// unit yet (receiving Data-Out, or held back by an ORDERED task).
    pub(super) fn abort_third_party(self: &Rc<Self>, on_lun: impl Fn(u64) -> bool) {
        let mut out = Vec::new();
        self.session
            .borrow_mut()
            .abort_third_party(on_lun, &mut out);
        if !self.run(out) {
            self.outbox.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::decode_lun;

    #[test]
    fn lun_fields_decode_for_peripheral_and_flat_addressing() {
        assert_eq!(decode_lun(0), 0);
        assert_eq!(decode_lun(0x0005_0000_0000_0000), 5);
        assert_eq!(decode_lun(0x4123_0000_0000_0000), 0x0123);
        assert_ne!(decode_lun(0xC000_0000_0000_0000), 0);
    }
}
