//! The acceptor: its own thread and ring; accepts connections on the portal, runs the login
//! phase, answers discovery sessions, and hands normal sessions to their target's thread.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::conn::Attach;
use super::framing::{PduReader, ReadError};
use super::outbox::Outbox;
use super::{Directory, TargetCmd};
use crate::iscsi::login::{self, Login, LoginOutcome};
use crate::iscsi::params::SessionType;
use crate::iscsi::pdu::Digests;
use crate::ring::{self, TcpListener, TcpStream};

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
pub fn spawn(listener: std::net::TcpListener, dir: Arc<Directory>) -> std::io::Result<AcceptorHandle> {
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
            rt.block_on(accept_loop(TcpListener::from_std(listener), dir, portal, stopped));
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

/// The directory as the login state machine sees it.
struct LoginDirectory<'a> {
    dir: &'a Directory,
    portal: SocketAddr,
}

impl login::TargetDirectory for LoginDirectory<'_> {
    fn lookup(&self, iqn: &str) -> Option<login::TargetAuth> {
        let e = self.dir.get(&iqn.to_ascii_lowercase())?;
        Some(super::directory::auth_of(&e.config))
    }

    fn discover(&self, initiator: &str) -> Vec<(String, Vec<String>)> {
        super::directory::discover(self.dir, initiator, self.portal)
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
    let mut reader = PduReader::new(stream.clone(), bytes::BytesMut::new());
    let ld = LoginDirectory { dir: &dir, portal };
    let mut machine = Login::new();
    let outbox = Rc::new(Outbox::default());
    let writer = ring::spawn(outbox.clone().run(stream.clone()));
    let done = loop {
        let pdu = reader
            .next(Digests::default(), login::MAX_LOGIN_DATA_SEGMENT)
            .await?;
        let step = machine.on_pdu(pdu, &ld);
        outbox.send(&step.response, Digests::default());
        match step.outcome {
            LoginOutcome::Continue => continue,
            LoginOutcome::Fail(why) => {
                crate::metrics::get().login_failures.inc();
                tracing::warn!(%peer, "login refused: {why}");
                outbox.close();
                let _ = writer.await;
                return Ok(());
            }
            LoginOutcome::FullFeature(done) => break done,
        }
    };
    if done.params.session_type == SessionType::Discovery {
        super::discovery::serve(reader, outbox.clone(), &ld, done).await;
        outbox.close();
        let _ = writer.await;
        return Ok(());
    }
    // Hand the socket over once the login response is on the wire.
    outbox.detach();
    let _ = writer.await;
    let target = done.params.target_name.to_ascii_lowercase();
    let Some(entry) = dir.get(&target) else {
        return Ok(());
    };
    let leftover = reader.into_leftover();
    let Ok(stream) = Rc::try_unwrap(stream) else {
        tracing::error!(%peer, "login connection still shared; closing it");
        return Ok(());
    };
    let attach = Attach {
        stream: stream.into_std()?,
        leftover,
        initiator_port: done.initiator_port(),
        start: done.start(),
        params: done.params,
    };
    if entry.handle.send(TargetCmd::Attach(attach)).is_err() {
        tracing::warn!(%peer, target = %entry.config.name, "target is shutting down; connection dropped");
    }
    Ok(())
}
