//! The engine: one thread with its own ring per Target, the acceptor that logs connections in
//! and hands them to their target's thread, the per-connection pump, and the drain.
//!
//! ```text
//!  acceptor thread (ring)            target thread "demo" (ring)       target thread "db" (ring)
//!  accept -> login -> lookup IQN --> Attach(conn) -> pump per session  ...
//!                  \-> discovery (SendTargets) answered here
//! ```

pub mod acceptor;
pub mod admission;
pub mod barrier;
pub mod config;
pub mod conn;
pub mod device_barrier;
pub mod device_drain;
pub mod drain;
pub mod framing;
pub mod identity;
pub mod logins;
pub mod memory;
pub mod outbox;
pub mod rings;
pub mod sessions;
pub mod share;
pub mod target_state;
mod thread;
pub mod throttle;
mod tmf;
pub mod token_bucket;

pub use device_barrier::{BarrierError, HoldAck};
pub use device_drain::DrainError;
pub use drain::{DrainAck, DrainState};
pub use sessions::SessionInfo;
pub use target_state::{LunCounters, LunSnapshot};
pub use thread::{ShutdownReport, TargetCmd, TargetGone, TargetHandle, TargetSnapshot, request};

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use acceptor::{Directory, DirectoryEntry, SharedDirectory};
use config::{LunSetup, TargetConfig};

/// How the engine serves.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// The iSCSI address and default port (a Target with another port gets a listener of its
    /// own on the same address).
    pub listen: SocketAddr,
    /// The address discovery and status name; default: the address each connection arrived
    /// on (status: the listen address unless it is a wildcard).
    pub advertise: Option<IpAddr>,
    /// Idle time after which a connection is pinged (NOP-In).
    pub keepalive: Duration,
}

/// Why the engine could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("starting a thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("Target {0} is already served")]
    AlreadyServed(String),
    #[error("IQN {iqn} is already served by Target {by}")]
    IqnTaken { iqn: String, by: String },
}

/// The running engine: the acceptor and one thread per Target. Targets are started, changed
/// and stopped while it runs; nothing here persists (the caller keeps what it was told).
pub struct Engine {
    opts: EngineOptions,
    acceptor: acceptor::AcceptorHandle,
    directory: SharedDirectory,
    targets: BTreeMap<String, TargetHandle>,
    /// Extra listening ports and how many targets use each.
    ports: BTreeMap<u16, usize>,
}

impl Engine {
    /// Binds the iSCSI portal and starts the acceptor; no target is served yet.
    pub fn start(mut opts: EngineOptions) -> Result<Engine, EngineError> {
        // A killed agent's port can take a moment to come back: wait for it at start.
        let listener = bind(opts.listen, BIND_PATIENCE)?;
        // Port 0 (tests): the port the kernel chose is the default port from now on.
        if let Ok(bound) = listener.local_addr() {
            opts.listen.set_port(bound.port());
        }
        let directory = SharedDirectory::default();
        let acceptor = acceptor::spawn(listener, directory.clone(), opts.advertise)
            .map_err(EngineError::Thread)?;
        Ok(Engine {
            opts,
            acceptor,
            directory,
            targets: BTreeMap::new(),
            ports: BTreeMap::new(),
        })
    }

    /// The address initiators are told to use: the advertised address, else the listen
    /// address unless it is a wildcard (then each connection learns its own).
    pub fn advertised_ip(&self) -> Option<IpAddr> {
        self.opts
            .advertise
            .or_else(|| Some(self.opts.listen.ip()).filter(|ip| !ip.is_unspecified()))
    }

    /// The default iSCSI port.
    pub fn default_port(&self) -> u16 {
        self.opts.listen.port()
    }

    /// The handle of a served target.
    pub fn target(&self, name: &str) -> Option<&TargetHandle> {
        self.targets.get(name)
    }

    /// Names of the served targets.
    pub fn target_names(&self) -> Vec<String> {
        self.targets.keys().cloned().collect()
    }

    /// Starts serving a target on its own thread, reachable for logins at once.
    pub fn start_target(
        &mut self,
        config: TargetConfig,
        luns: Vec<LunSetup>,
    ) -> Result<(), EngineError> {
        if self.targets.contains_key(&config.name) {
            return Err(EngineError::AlreadyServed(config.name));
        }
        self.check_iqn(&config)?;
        self.use_port(config.port)?;
        let config = Arc::new(config);
        let handle = match TargetHandle::spawn(config.clone(), luns, self.opts.keepalive) {
            Ok(h) => h,
            Err(e) => {
                self.drop_port(config.port);
                return Err(EngineError::Thread(e));
            }
        };
        self.write_directory().insert(
            config.iqn.to_ascii_lowercase(),
            DirectoryEntry {
                config: config.clone(),
                handle: handle.sender(),
            },
        );
        tracing::info!(
            target = %config.name, iqn = %config.iqn, port = config.port,
            luns = config.luns.len(), "Target ready"
        );
        self.targets.insert(config.name.clone(), handle);
        crate::metrics::get().targets.set(self.targets.len() as i64);
        Ok(())
    }

    /// New login settings (ACL, CHAP, parameters), weight and QoS limits for a served target:
    /// new logins see them at once, and SendTargets inside its sessions follows the new ACL;
    /// the weight and limits apply to its sessions at once, none closed. The IQN and port must be
    /// unchanged (stop and start the target to change those).
    pub fn update_target(&mut self, config: TargetConfig) {
        let Some(handle) = self.targets.get(&config.name) else {
            return;
        };
        let _ = handle.sender().send(TargetCmd::SetAcl(config.acl.clone()));
        let _ = handle.sender().send(TargetCmd::SetWeight(config.weight));
        let _ = handle.sender().send(TargetCmd::SetQos(config.qos));
        let key = config.iqn.to_ascii_lowercase();
        let sender = handle.sender();
        self.write_directory().insert(
            key,
            DirectoryEntry {
                config: Arc::new(config),
                handle: sender,
            },
        );
    }

    /// Stops accepting logins for a target and hands back its thread (the caller awaits
    /// [`TargetHandle::shutdown`], which finishes commands in flight and closes sessions).
    pub fn take_target(&mut self, name: &str) -> Option<TargetHandle> {
        let handle = self.targets.remove(name)?;
        let port = {
            let mut dir = self.write_directory();
            let key = dir
                .iter()
                .find(|(_, e)| e.config.name == name)
                .map(|(k, e)| (k.clone(), e.config.port));
            key.map(|(k, port)| {
                dir.remove(&k);
                port
            })
        };
        if let Some(port) = port {
            self.drop_port(port);
        }
        crate::metrics::get().targets.set(self.targets.len() as i64);
        Some(handle)
    }

    /// Stops accepting, then stops every target (drain, flush, close sessions).
    pub async fn shutdown(mut self) -> Vec<(String, Result<ShutdownReport, TargetGone>)> {
        let names = self.target_names();
        let handles: Vec<_> = names.iter().filter_map(|n| self.take_target(n)).collect();
        drop(self.acceptor);
        let mut out = Vec::new();
        for h in handles {
            let name = h.name().to_string();
            out.push((name, h.shutdown().await));
        }
        out
    }

    fn write_directory(&self) -> std::sync::RwLockWriteGuard<'_, Directory> {
        self.directory.write().unwrap_or_else(|e| e.into_inner())
    }

    fn check_iqn(&self, config: &TargetConfig) -> Result<(), EngineError> {
        let dir = self.directory.read().unwrap_or_else(|e| e.into_inner());
        match dir.get(&config.iqn.to_ascii_lowercase()) {
            Some(e) if e.config.name != config.name => Err(EngineError::IqnTaken {
                iqn: config.iqn.clone(),
                by: e.config.name.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Makes sure something accepts on `port` (the default port always does).
    fn use_port(&mut self, port: u16) -> Result<(), EngineError> {
        if port == self.default_port() {
            return Ok(());
        }
        if let Some(n) = self.ports.get_mut(&port) {
            *n += 1;
            return Ok(());
        }
        let listener = bind(SocketAddr::new(self.opts.listen.ip(), port), Duration::ZERO)?;
        self.acceptor.listen(listener);
        self.ports.insert(port, 1);
        Ok(())
    }

    fn drop_port(&mut self, port: u16) {
        if let Some(n) = self.ports.get_mut(&port) {
            *n -= 1;
            if *n == 0 {
                self.ports.remove(&port);
                self.acceptor.unlisten(port);
            }
        }
    }
}

/// How long a bind waits for its address to be given back. A killed agent's listening socket
/// stays bound until the kernel has torn down its ring (the pending accept holds it), which
/// happens shortly after the process is gone: a restarted agent waits for it.
const BIND_PATIENCE: Duration = Duration::from_secs(10);

fn bind(addr: SocketAddr, patience: Duration) -> Result<std::net::TcpListener, EngineError> {
    let deadline = std::time::Instant::now() + patience;
    let mut logged = false;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                if !logged {
                    tracing::info!(%addr, "address in use; waiting for it to be given back");
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(source) => return Err(EngineError::Bind { addr, source }),
        }
    }
}
