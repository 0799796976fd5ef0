//! The pump of one full-feature-phase connection: PDUs from the socket go into the pure
//! session state machine (`iscsi::session`), and what it asks for is carried out by the
//! connection's [`Conn`] (`super::sessions`): SCSI commands run on the target's LUNs as
//! concurrent tasks, every PDU it emits goes out through the [`Outbox`]. The pump also starts
//! the connection's keepalive and write memory waiter (`super::memory`) and hands task
//! management to `super::tmf`. Discovery sessions use the same pump with no LUNs behind it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::Notify;

use super::framing::{PduReader, ReadError};
use super::outbox::Outbox;
use super::sessions::{Conn, Host, SessionInfo, Sessions};
use crate::iscsi::login::Established;
use crate::iscsi::session::{Closed, Session, SessionConfig};
use crate::metrics;
use crate::ring::{self, TcpStream};
use crate::scsi::NexusId;

/// A connection that completed login, handed over by the acceptor.
pub struct Attach {
    pub stream: std::net::TcpStream,
    /// Bytes the acceptor read past the last login PDU.
    pub leftover: BytesMut,
    pub login: Established,
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
        task_mgmt: super::tmf::start,
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
        if let Host::Target(t) = &host {
            // The window this PDU's answers may open follows the target's share now.
            let cap = t
                .share
                .window(u32::try_from(sessions.count()).unwrap_or(u32::MAX));
            conn.session.borrow_mut().set_window_cap(cap);
        }
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
