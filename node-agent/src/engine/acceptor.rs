//! The acceptor: its own thread and ring; accepts connections on the portal, runs the login
//! phase, answers discovery sessions, and hands normal sessions to their target's thread.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use std::sync::atomic::{AtomicU16, Ordering};

use bytes::BytesMut;
use tokio::sync::mpsc;

use super::config::{LOGIN_WINDOW, TargetConfig};
use super::conn::{self, Attach};
use super::framing::{PduReader, ReadError};
use super::logins::{LOGIN_TIMEOUT, Logins};
use super::outbox::Outbox;
use super::sessions::{Host, Sessions};
use super::thread::TargetCmd;
use crate::iscsi::discovery::DiscoveryEntry;
use crate::iscsi::login::{self, LoginConfig, LoginMachine, LoginOutcome};
use crate::iscsi::params::{SessionType, TargetLimits};
use crate::iscsi::pdu::{Digests, Pdu};
use crate::ring::{self, TcpListener, TcpStream};

/// What the acceptor knows of a target: enough to log an initiator in and hand it over.
#[derive(Clone)]
pub struct DirectoryEntry {
    pub config: Arc<TargetConfig>,
    pub handle: tokio::sync::mpsc::UnboundedSender<TargetCmd>,
}

/// Targets by IQN (lower case: IQNs compare case-insensitively).
pub type Directory = BTreeMap<String, DirectoryEntry>;

/// The directory, shared with the acceptor (read at each login, written when targets change).
pub type SharedDirectory = Arc<RwLock<Directory>>;

/// TargetPortalGroupTag of the agent's single portal group.
const PORTAL_GROUP_TAG: u16 = 1;
/// Largest data segment accepted during login (RFC 7143: 8192 until negotiated).
const LOGIN_MAX_DATA: usize = 8192;

/// What the agent asks of the acceptor thread.
enum AcceptorCmd {
    /// Accept on one more port.
    Listen(std::net::TcpListener),
    /// Stop accepting on this port.
    Unlisten(u16),
}

/// Controls the acceptor thread.
pub struct AcceptorHandle {
    tx: mpsc::UnboundedSender<AcceptorCmd>,
    thread: Option<JoinHandle<()>>,
}

impl AcceptorHandle {
    /// Accepts on another bound listener (a Target with a port of its own).
    pub fn listen(&self, listener: std::net::TcpListener) {
        let _ = self.tx.send(AcceptorCmd::Listen(listener));
    }

    /// Stops accepting on `port`.
    pub fn unlisten(&self, port: u16) {
        let _ = self.tx.send(AcceptorCmd::Unlisten(port));
    }

    /// Stops accepting new connections (sessions already handed over are not affected).
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        // Closing the channel ends the acceptor's loop.
        let (tx, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AcceptorHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Starts the acceptor thread on a bound listener. Discovery answers with `advertise` when
/// set, else with the address each connection arrived on (never a wildcard).
pub fn spawn(
    listener: std::net::TcpListener,
    dir: SharedDirectory,
    advertise: Option<IpAddr>,
) -> std::io::Result<AcceptorHandle> {
    let (tx, rx) = mpsc::unbounded_channel();
    let thread = std::thread::Builder::new()
        .name("acceptor".into())
        .spawn(move || {
            let rt = match ring::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("acceptor: {e}");
                    return;
                }
            };
            rt.block_on(run(rx, listener, dir, advertise));
        })?;
    Ok(AcceptorHandle {
        tx,
        thread: Some(thread),
    })
}

/// One accepting task per listening port; commands add and remove ports.
async fn run(
    mut rx: mpsc::UnboundedReceiver<AcceptorCmd>,
    first: std::net::TcpListener,
    dir: SharedDirectory,
    advertise: Option<IpAddr>,
) {
    let mut ports: BTreeMap<u16, (Rc<TcpListener>, tokio::task::JoinHandle<()>)> = BTreeMap::new();
    let start =
        |l: std::net::TcpListener,
         ports: &mut BTreeMap<u16, (Rc<TcpListener>, tokio::task::JoinHandle<()>)>| {
            let Ok(addr) = l.local_addr() else { return };
            let listener = Rc::new(TcpListener::from_std(l));
            let task = ring::spawn(accept_loop(listener.clone(), dir.clone(), advertise));
            if let Some((old, t)) = ports.insert(addr.port(), (listener, task)) {
                old.shutdown();
                t.abort();
            }
        };
    start(first, &mut ports);
    while let Some(cmd) = rx.recv().await {
        match cmd {
            AcceptorCmd::Listen(l) => start(l, &mut ports),
            AcceptorCmd::Unlisten(port) => {
                if let Some((l, t)) = ports.remove(&port) {
                    l.shutdown();
                    t.abort();
                }
            }
        }
    }
    for (l, t) in ports.into_values() {
        l.shutdown();
        t.abort();
    }
}

async fn accept_loop(listener: Rc<TcpListener>, dir: SharedDirectory, advertise: Option<IpAddr>) {
    let logins = Rc::new(Logins::default());
    loop {
        // A full table of fresh logins: leave new connections in the backlog for a moment.
        logins.room().await;
        match listener.accept().await {
            Ok((stream, peer)) => {
                let dir = dir.clone();
                let logins = logins.clone();
                ring::spawn(async move {
                    if let Err(e) = handle(stream, peer, dir, advertise, logins).await {
                        tracing::info!(%peer, "connection ended during login: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Every target as discovery shows it: its port on the address `ip`.
fn discovery_entries(dir: &Directory, ip: IpAddr) -> Vec<DiscoveryEntry> {
    dir.values()
        .map(|e| DiscoveryEntry {
            iqn: e.config.iqn.clone(),
            portals: vec![format!(
                "{},{PORTAL_GROUP_TAG}",
                SocketAddr::new(ip, e.config.port)
            )],
            acl: e.config.acl.clone(),
        })
        .collect()
}

/// Reads the directory (a panic elsewhere while holding the lock does not stop logins).
fn read(dir: &SharedDirectory) -> std::sync::RwLockReadGuard<'_, Directory> {
    dir.read().unwrap_or_else(|e| e.into_inner())
}

/// The directory as the login state machine sees it.
struct LoginDirectory<'a>(&'a Directory);

impl login::TargetDirectory for LoginDirectory<'_> {
    fn lookup(&self, iqn: &str) -> Option<login::TargetAuth> {
        let e = self.0.get(&iqn.to_ascii_lowercase())?;
        Some(login::TargetAuth {
            acl: e.config.acl.clone(),
            chap: e.config.chap.clone(),
            limits: TargetLimits {
                portal_group_tag: PORTAL_GROUP_TAG,
                ..e.config.limits.clone()
            },
        })
    }
}

/// Session handles (TSIH) of this agent: non-zero, wrapping.
fn next_tsih() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(1);
    loop {
        let t = NEXT.fetch_add(1, Ordering::Relaxed);
        if t != 0 {
            return t;
        }
    }
}

/// Runs one connection's login; a normal session is handed to its target.
async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    dir: SharedDirectory,
    advertise: Option<IpAddr>,
    logins: Rc<Logins>,
) -> Result<(), ReadError> {
    let _ = stream.set_nodelay(true);
    let portal_ip = match advertise {
        Some(ip) => ip,
        None => stream.local_addr()?.ip(),
    };
    let stream = Rc::new(stream);
    let ticket = logins.admit(&stream, peer);
    let mut reader = PduReader::new(stream.clone(), BytesMut::new());
    let outbox = Rc::new(Outbox::default());
    let writer = ring::spawn(outbox.clone().run(stream.clone()));
    let config = LoginConfig {
        cmd_window: LOGIN_WINDOW,
        ..LoginConfig::default()
    };
    let mut machine = LoginMachine::new(config, next_tsih());
    let deadline = tokio::time::Instant::now() + LOGIN_TIMEOUT;
    let established = loop {
        let next =
            tokio::time::timeout_at(deadline, reader.next(Digests::default(), LOGIN_MAX_DATA));
        let pdu = match next.await {
            Ok(Ok(p)) => {
                ticket.talking();
                p
            }
            Ok(Err(e)) => {
                outbox.close();
                let _ = writer.await;
                return Err(e);
            }
            Err(_) => {
                tracing::warn!(
                    %peer, "login not complete after {} s; closing the connection",
                    LOGIN_TIMEOUT.as_secs()
                );
                outbox.close();
                let _ = writer.await;
                return Ok(());
            }
        };
        let Pdu::LoginRequest(req) = pdu else {
            tracing::info!(%peer, opcode = pdu.opcode(), "non-login PDU during login; closing");
            outbox.close();
            let _ = writer.await;
            return Ok(());
        };
        let reply = machine.handle(&req, &LoginDirectory(&read(&dir)));
        outbox.send(&Pdu::LoginResponse(reply.response), Digests::default());
        match reply.outcome {
            LoginOutcome::Continue => continue,
            LoginOutcome::Fail { status, reason } => {
                crate::metrics::get().login_failures.inc();
                tracing::warn!(%peer, status = format!("{status:04x}"), "login refused: {reason}");
                outbox.close();
                let _ = writer.await;
                return Ok(());
            }
            LoginOutcome::FullFeature(est) => break *est,
        }
    };
    // Pushed out of the login table while its last PDU was read: its connection is shut down,
    // and the initiator's retry (same ISID) may be logged in by now. Otherwise the login is
    // over: it leaves the table before anything else can push it out.
    if ticket.evicted() {
        tracing::info!(%peer, "login completed after it was pushed out of the login table; dropped");
        outbox.close();
        let _ = writer.await;
        return Ok(());
    }
    drop(ticket);
    // The login response is on the wire: the connection (and any bytes already read past the
    // last login PDU) now belongs to the full feature phase.
    outbox.detach();
    let _ = writer.await;
    let leftover = reader.into_leftover();
    let Ok(stream) = Rc::try_unwrap(stream) else {
        tracing::error!(%peer, "login connection still shared; closing it");
        return Ok(());
    };
    if established.session_type == SessionType::Discovery {
        // Discovery sessions are short; serve them right here.
        let entries = Rc::new(discovery_entries(&read(&dir), portal_ip));
        let sessions = Rc::new(Sessions::default());
        conn::serve(
            Host::Discovery(entries),
            sessions,
            stream,
            leftover,
            established,
        )
        .await;
        return Ok(());
    }
    let target = established
        .target_iqn
        .as_deref()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let Some(entry) = read(&dir).get(&target).cloned() else {
        return Ok(());
    };
    let attach = Attach {
        stream: stream.into_std()?,
        leftover,
        login: established,
    };
    if entry
        .handle
        .send(TargetCmd::Attach(Box::new(attach)))
        .is_err()
    {
        tracing::warn!(%peer, target = %entry.config.name, "target is shutting down; connection dropped");
    }
    Ok(())
}
