//! The pump of one full-feature-phase connection: PDUs from the socket go into the pure
//! session state machine (`iscsi::session`), the SCSI commands it hands out run on the target's
//! LUNs as concurrent tasks, and every PDU it emits goes out through the [`Outbox`].

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::BytesMut;
use tokio::sync::Notify;

use super::framing::{PduReader, ReadError};
use super::outbox::Outbox;
use super::target::TargetState;
use crate::iscsi::params::SessionParams;
use crate::iscsi::pdu::Digests;
use crate::iscsi::session::{Action, Session, SessionStart};
use crate::metrics;
use crate::ring::{self, TcpStream};
use crate::scsi::NexusId;

/// A connection that completed login to this target, handed over by the acceptor.
pub struct Attach {
    pub stream: std::net::TcpStream,
    /// Bytes the acceptor read past the last login PDU.
    pub leftover: BytesMut,
    pub params: SessionParams,
    /// Where the session's sequence numbers start, as login left them.
    pub start: SessionStart,
    /// `InitiatorName,i,0x<ISID>`: the SCSI initiator port name (for reservations).
    pub initiator_port: String,
}

/// Live connections of one target, so shutdown can close them and wait.
#[derive(Default)]
pub struct Sessions {
    live: RefCell<BTreeMap<u64, Rc<TcpStream>>>,
    next: Cell<u64>,
    gone: Notify,
}

impl Sessions {
    fn add(&self, stream: Rc<TcpStream>) -> u64 {
        let id = self.next.get() + 1;
        self.next.set(id);
        self.live.borrow_mut().insert(id, stream);
        id
    }

    fn remove(&self, id: u64) {
        self.live.borrow_mut().remove(&id);
        self.gone.notify_waiters();
    }

    /// Number of live sessions.
    pub fn count(&self) -> usize {
        self.live.borrow().len()
    }

    /// Shuts every connection down and waits until their pumps have ended.
    pub async fn close_all(&self) {
        for s in self.live.borrow().values() {
            let _ = s.shutdown();
        }
        loop {
            let gone = self.gone.notified();
            if self.live.borrow().is_empty() {
                return;
            }
            gone.await;
        }
    }
}

/// Everything a connection's tasks share.
struct Conn {
    state: Rc<TargetState>,
    session: RefCell<Session>,
    outbox: Rc<Outbox>,
    nexus: NexusId,
    digests: Digests,
}

impl Conn {
    /// Carries out what the session asked for. Returns false once the connection must close.
    fn run(self: &Rc<Self>, actions: Vec<Action>) -> bool {
        let mut open = true;
        for a in actions {
            match a {
                Action::Send(pdu) => self.outbox.send(&pdu, self.digests),
                Action::Execute {
                    task,
                    lun,
                    cdb,
                    data_out,
                } => {
                    let me = self.clone();
                    ring::spawn(async move {
                        let r = me.state.execute(me.nexus, lun, &cdb, data_out).await;
                        let mut out = Vec::new();
                        me.session.borrow_mut().on_scsi_done(
                            task,
                            r.status as u8,
                            r.data_in,
                            r.sense,
                            &mut out,
                        );
                        if !me.run(out) {
                            me.outbox.close();
                        }
                    });
                }
                Action::LunReset { lun } => self.state.lun_reset(lun),
                Action::TargetReset => self.state.target_reset(),
                Action::Close => open = false,
            }
        }
        open
    }
}

/// Starts serving `a` on the current (target) thread.
pub fn start(state: Rc<TargetState>, sessions: Rc<Sessions>, a: Attach) {
    ring::spawn(serve(state, sessions, a));
}

async fn serve(state: Rc<TargetState>, sessions: Rc<Sessions>, a: Attach) {
    let stream = Rc::new(TcpStream::from_std(a.stream));
    let _ = stream.set_nodelay(true);
    let id = sessions.add(stream.clone());
    let nexus = NexusId(id);
    state.nexus_named(nexus, &a.initiator_port);
    let gauge = metrics::get().sessions.with_label_values(&[&state.config.name]);
    gauge.inc();
    tracing::info!(
        target = %state.config.name, initiator = %a.initiator_port, session = id,
        "session logged in"
    );
    let digests = a.params.digests();
    let max_recv = a.params.max_recv_data_segment_len as usize;
    let outbox = Rc::new(Outbox::default());
    let writer = ring::spawn(outbox.clone().run(stream.clone()));
    let conn = Rc::new(Conn {
        state: state.clone(),
        session: RefCell::new(Session::new(a.params, a.start, state.config.queue_depth)),
        outbox: outbox.clone(),
        nexus,
        digests,
    });
    let mut reader = PduReader::new(stream.clone(), a.leftover);
    let why = loop {
        let pdu = match reader.next(digests, max_recv).await {
            Ok(p) => p,
            Err(ReadError::Closed) => break "closed by the initiator".to_string(),
            Err(e) => break e.to_string(),
        };
        let mut actions = Vec::new();
        conn.session.borrow_mut().on_pdu(pdu, &mut actions);
        if !conn.run(actions) || outbox.failed() {
            break "logged out".to_string();
        }
    };
    outbox.close();
    let _ = writer.await;
    state.nexus_lost(nexus);
    sessions.remove(id);
    gauge.dec();
    tracing::info!(target = %state.config.name, session = id, "session ended: {why}");
}
