//! The acceptor: its own thread and ring; accepts connections on the portal, runs the login
//! phase, answers discovery sessions, and hands normal sessions to their target's thread.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;

use std::sync::atomic::{AtomicU16, Ordering};

use bytes::BytesMut;
use tokio::sync::oneshot;

use super::config::LOGIN_WINDOW;
use super::conn::{self, Attach, Host, Sessions};
use super::framing::{PduReader, ReadError};
use super::outbox::Outbox;
use super::{Directory, TargetCmd};
use crate::iscsi::discovery::DiscoveryEntry;
use crate::iscsi::login::{self, LoginConfig, LoginMachine, LoginOutcome};
use crate::iscsi::params::{SessionType, TargetLimits};
use crate::iscsi::pdu::{Digests, Pdu};
use crate::ring::{self, TcpListener, TcpStream};

/// TargetPortalGroupTag of the agent's single portal group.
const PORTAL_GROUP_TAG: u16 = 1;
/// Largest data segment accepted during login (RFC 7143: 8192 until negotiated).
const LOGIN_MAX_DATA: usize = 8192;

/// Stops the acceptor.
pub struct AcceptorHandle {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AcceptorHandle {
    /// Stops accepting new connections (sessions already handed over are not affected).
    pub fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the acceptor thread on a bound listener.
pub fn spawn(
    listener: std::net::TcpListener,
    dir: Arc<Directory>,
) -> std::io::Result<AcceptorHandle> {
    let (stop, stopped) = oneshot::channel();
    let portal = listener.local_addr()?;
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
            rt.block_on(accept_loop(
                TcpListener::from_std(listener),
                dir,
                portal,
                stopped,
            ));
        })?;
    Ok(AcceptorHandle {
        stop: Some(stop),
        thread: Some(thread),
    })
}

async fn accept_loop(
    listener: TcpListener,
    dir: Arc<Directory>,
    portal: SocketAddr,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let dir = dir.clone();
                    ring::spawn(async move {
                        if let Err(e) = handle(stream, peer, portal, dir).await {
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
}

/// Every target as discovery shows it, on this portal.
fn discovery_entries(dir: &Directory, portal: SocketAddr) -> Vec<DiscoveryEntry> {
    dir.values()
        .map(|e| DiscoveryEntry {
            iqn: e.config.iqn.clone(),
            portals: vec![format!("{portal},{PORTAL_GROUP_TAG}")],
            acl: e.config.acl.clone(),
        })
        .collect()
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
    portal: SocketAddr,
    dir: Arc<Directory>,
) -> Result<(), ReadError> {
    let _ = stream.set_nodelay(true);
    let stream = Rc::new(stream);
    let mut reader = PduReader::new(stream.clone(), BytesMut::new());
    let outbox = Rc::new(Outbox::default());
    let writer = ring::spawn(outbox.clone().run(stream.clone()));
    let config = LoginConfig {
        cmd_window: LOGIN_WINDOW,
        ..LoginConfig::default()
    };
    let mut machine = LoginMachine::new(config, next_tsih());
    let established = loop {
        let pdu = match reader.next(Digests::default(), LOGIN_MAX_DATA).await {
            Ok(p) => p,
            Err(e) => {
                outbox.close();
                let _ = writer.await;
                return Err(e);
            }
        };
        let Pdu::LoginRequest(req) = pdu else {
            tracing::info!(%peer, opcode = pdu.opcode(), "non-login PDU during login; closing");
            outbox.close();
            let _ = writer.await;
            return Ok(());
        };
        let reply = machine.handle(&req, &LoginDirectory(&dir));
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
        let entries = Rc::new(discovery_entries(&dir, portal));
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
    let Some(entry) = dir.get(&target) else {
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
