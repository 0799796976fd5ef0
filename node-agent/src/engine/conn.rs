//! The pump of one full-feature-phase connection: PDUs from the socket go into the pure
//! session state machine (`iscsi::session`), the SCSI commands it hands out run on the target's
//! LUNs as concurrent tasks, and every PDU it emits goes out through the [`Outbox`].
//! Discovery sessions use the same pump with no LUNs behind it.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use super::framing::{PduReader, ReadError};
use super::outbox::Outbox;
use super::target_state::TargetState;
use crate::iscsi::discovery::{self, Asker, DiscoveryEntry};
use crate::iscsi::login::{AclPolicy, Established};
use crate::iscsi::pdu::Digests;
use crate::iscsi::session::{Action, Closed, Command, ScsiOutcome, Session, SessionConfig};
use crate::iscsi::text;
use crate::metrics;
use crate::metrics::stages::{self, CommandClock};
use crate::ring::{self, TcpStream};
use crate::scsi::{NexusId, TaskKey};

/// A connection that completed login, handed over by the acceptor.
pub struct Attach {
    pub stream: std::net::TcpStream,
    /// Bytes the acceptor read past the last login PDU.
    pub leftover: BytesMut,
    pub login: Established,
}

/// What serves the session's requests.
#[derive(Clone)]
pub enum Host {
    /// A normal session of this target.
    Target(Rc<TargetState>),
    /// A discovery session: SendTargets over these entries.
    Discovery(Rc<Vec<DiscoveryEntry>>),
}

impl Host {
    fn name(&self) -> &str {
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
    keepalive: Duration,
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

    fn add(&self, stream: Rc<TcpStream>, info: SessionInfo) -> u64 {
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

    fn remove(&self, id: u64) {
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
    async fn stopped(&self) {
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
    last_rx: Cell<Instant>,
    pub(super) host: Host,
    pub(super) session: RefCell<Session>,
    pub(super) outbox: Rc<Outbox>,
    pub(super) nexus: NexusId,
    /// Signalled when the session starts waiting for write memory (`super::memory`).
    pub(super) memory_wanted: Notify,
    /// Commands executing now, and a signal when the last one ends (a stop waits for them).
    running: Cell<u32>,
    all_done: Notify,
    digests: Digests,
    initiator: String,
    target_iqn: Option<String>,
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
                    ring::spawn(super::tmf::carry_out(self.clone(), id, function, lun));
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
                    sense: crate::scsi::lun_inventory::absent_lun(&cmd.cdb, me.nexus).sense,
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
    async fn wait_idle(&self) {
        loop {
            let done = self.all_done.notified();
            if self.running.get() == 0 {
                return;
            }
            done.await;
        }
    }
}

/// Starts serving a logged-in connection on the current thread.
pub fn start(host: Host, sessions: Rc<Sessions>, a: Attach) {
    let stream = TcpStream::from_std(a.stream);
    ring::spawn(serve(host, sessions, stream, a.leftover, a.login));
}

/// Serves one connection until logout, error or shutdown.
pub async fn serve(
    host: Host,
    sessions: Rc<Sessions>,
    stream: TcpStream,
    leftover: BytesMut,
    login: Established,
) {
    let stream = Rc::new(stream);
    let _ = stream.set_nodelay(true);
    if let Host::Target(t) = &host {
        sessions
            .reinstate(t, &login.initiator_name, login.isid)
            .await;
    }
    let info = SessionInfo {
        initiator_name: login.initiator_name.clone(),
        isid: login.isid,
        tsih: login.tsih,
        peer: stream.peer_addr().ok(),
    };
    let id = sessions.add(stream.clone(), info);
    let nexus = NexusId(id);
    let port = format!("{},i,0x{}", login.initiator_name, hex::encode(login.isid));
    if let Host::Target(t) = &host {
        t.nexus_named(nexus, &port);
    }
    let gauge = metrics::get().sessions.with_label_values(&[host.name()]);
    gauge.inc();
    let params = login.params.clone();
    let digests = params.digests();
    tracing::info!(
        target = %host.name(), initiator = %port, session = id,
        header_digest = digests.header, data_digest = digests.data,
        max_burst = params.max_burst_len, "session started"
    );
    let max_recv = params.max_recv_data_segment_len as usize;
    let outbox = Rc::new(Outbox::default());
    let writer = ring::spawn(outbox.clone().run(stream.clone()));
    let config = SessionConfig::after_login(
        &login,
        super::config::LOGIN_WINDOW,
        super::config::QUEUE_DEPTH,
    );
    let conn = Rc::new(Conn {
        id,
        sessions: sessions.clone(),
        last_rx: Cell::new(Instant::now()),
        host: host.clone(),
        session: RefCell::new(Session::new(params, config)),
        outbox: outbox.clone(),
        nexus,
        memory_wanted: Notify::new(),
        running: Cell::new(0),
        all_done: Notify::new(),
        digests,
        initiator: login.initiator_name.clone(),
        target_iqn: login.target_iqn.clone(),
    });
    sessions.conns.borrow_mut().insert(id, Rc::downgrade(&conn));
    let mut reader = PduReader::new(stream.clone(), leftover);
    let pinger = ring::spawn(keepalive(conn.clone(), stream.clone(), sessions.keepalive));
    let memory = ring::spawn(super::memory::serve(conn.clone()));
    // Who ended the connection: the initiator (closed, logged out) or the agent (and why).
    let mut stopping = false;
    let (by_agent, why) = loop {
        let mut actions = Vec::new();
        let next = tokio::select! {
            biased;
            () = sessions.stopped() => {
                stopping = true;
                break (false, "the agent stopped serving the target; the initiator may reconnect".to_string());
            }
            next = reader.next(digests, max_recv) => next,
        };
        conn.last_rx.set(reader.received_at());
        match next {
            Ok(pdu) => conn.session.borrow_mut().on_pdu(pdu, &mut actions),
            Err(ReadError::Pdu { bhs, err, consumed }) => {
                tracing::debug!(session = id, "bad PDU: {err}");
                conn.session
                    .borrow_mut()
                    .on_decode_error(&bhs, &err, &mut actions);
                if !consumed {
                    let _ = conn.run(actions);
                    break (true, format!("undecodable PDU: {err}"));
                }
            }
            Err(ReadError::Closed) => break (false, "closed by the initiator".to_string()),
            Err(e) => break (true, format!("reading: {e}")),
        }
        if !conn.run(actions) {
            break match conn.session.borrow().closed() {
                Some(Closed::ByTarget(why)) => (true, why.to_string()),
                Some(Closed::ByInitiator(why)) => (false, why.to_string()),
                None => (false, "logged out".to_string()),
            };
        }
        if outbox.failed() {
            break (true, String::new());
        }
    };
    pinger.abort();
    memory.abort();
    if stopping {
        // Accepted commands finish and are answered before the connection closes.
        let limit = super::device_drain::drain_timeout();
        if tokio::time::timeout(limit, conn.wait_idle()).await.is_err() {
            tracing::warn!(
                target = %host.name(), session = id,
                "commands still running {} s into the stop are abandoned", limit.as_secs()
            );
        }
    }
    outbox.close();
    let _ = writer.await;
    // A failed send shuts the socket, which the reader then sees as a close: the send's error
    // is the real cause.
    let (by_agent, why) = match outbox.failure() {
        Some(e) => (true, format!("sending failed: {e}")),
        None => (by_agent, why),
    };
    if let Host::Target(t) = &host {
        t.nexus_lost(nexus);
    }
    sessions.remove(id);
    drop(conn);
    super::memory::trim();
    gauge.dec();
    if by_agent {
        tracing::warn!(target = %host.name(), session = id, initiator = %port, "connection dropped by the agent: {why}");
    } else {
        tracing::info!(target = %host.name(), session = id, "session ended: {why}");
    }
}

/// Pings the initiator (NOP-In) when the connection has been idle for `every`; closes the
/// connection when the previous ping is still unanswered (RFC 7143 §11.19).
async fn keepalive(conn: Rc<Conn>, stream: Rc<TcpStream>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if conn.last_rx.get().elapsed() < every {
            continue;
        }
        let mut out = Vec::new();
        let answered = conn.session.borrow_mut().ping(&mut out);
        if !answered {
            tracing::warn!("initiator did not answer a NOP-In ping; closing the connection");
            let _ = stream.shutdown();
            return;
        }
        metrics::get().nop_pings.inc();
        if !conn.run(out) {
            return;
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
