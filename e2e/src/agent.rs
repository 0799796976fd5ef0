//! A node agent (`spindle-agent run`) as a process of the test, and a client of its API over
//! mutual TLS.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use spindle_agent_api::identity::AGENT_SERVER_NAME;
use spindle_agent_api::v1::agent_client::AgentClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::cluster::{scripts_dir, workspace_dir};

/// The agent binary under test: `$SPINDLE_AGENT`, else the release build in
/// `$CARGO_TARGET_DIR` (default: the workspace's `target/`).
pub fn agent_binary() -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target"));
    let p = std::env::var_os("SPINDLE_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| target.join("release/spindle-agent"));
    if !p.is_file() {
        bail!(
            "no agent binary at {} (run `cargo build --release -p spindle-agent`, or set SPINDLE_AGENT)",
            p.display()
        );
    }
    Ok(p)
}

/// The certificates of the agent API, made by `e2e/cluster/certs --test` in `dir`.
#[derive(Clone, Debug)]
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    /// Makes (or reuses) the certificates in `dir`.
    pub fn make(dir: &Path) -> Result<Self> {
        let status = Command::new(scripts_dir().join("certs"))
            .arg("--test")
            .arg(dir)
            .status()
            .context("running e2e/cluster/certs")?;
        if !status.success() {
            bail!("e2e/cluster/certs failed ({status})");
        }
        Ok(Certs {
            dir: dir.to_path_buf(),
        })
    }

    /// `<dir>/<name>`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// How to start one agent.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node: String,
    /// The node's loopback address: iSCSI on `addr:iscsi_port`, the API on `addr:api_port`.
    pub addr: IpAddr,
    pub iscsi_port: u16,
    pub api_port: u16,
    /// Listen for iSCSI on the wildcard address (discovery must still name `addr`).
    pub iscsi_wildcard: bool,
    pub data_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub namespace: String,
    pub certs: Certs,
    pub allow_block: Vec<PathBuf>,
    /// Extra environment (e.g. `SPINDLE_LOG`).
    pub env: Vec<(String, String)>,
}

/// A running agent; killed when dropped.
pub struct AgentProcess {
    pub config: AgentConfig,
    child: Option<Child>,
    pub log: PathBuf,
    starts: u32,
}

impl AgentProcess {
    /// Starts the agent and waits until its API and iSCSI portal accept connections.
    pub fn start(config: AgentConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.data_dir)?;
        let mut a = AgentProcess {
            log: config.data_dir.with_extension("log"),
            config,
            child: None,
            starts: 0,
        };
        a.spawn()?;
        Ok(a)
    }

    /// The API endpoint.
    pub fn api(&self) -> SocketAddr {
        SocketAddr::new(self.config.addr, self.config.api_port)
    }

    /// The iSCSI portal initiators use.
    pub fn portal(&self) -> SocketAddr {
        SocketAddr::new(self.config.addr, self.config.iscsi_port)
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> Result<()> {
        let c = &self.config;
        let iscsi_ip = if c.iscsi_wildcard {
            IpAddr::from([0, 0, 0, 0])
        } else {
            c.addr
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(agent_binary()?);
        cmd.arg("run")
            .arg("--node-name")
            .arg(&c.node)
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            .arg("--namespace")
            .arg(&c.namespace)
            .arg("--data-dir")
            .arg(&c.data_dir)
            .arg("--iscsi-listen")
            .arg(SocketAddr::new(iscsi_ip, c.iscsi_port).to_string())
            .arg("--api-listen")
            .arg(self.api().to_string())
            .arg("--tls-cert")
            .arg(c.certs.file("agent.crt"))
            .arg("--tls-key")
            .arg(c.certs.file("agent.key"))
            .arg("--tls-ca")
            .arg(c.certs.file("ca.crt"));
        if c.iscsi_wildcard {
            // Discovery must answer the address each connection arrived on, not --advertise.
        } else {
            cmd.arg("--advertise-address").arg(c.addr.to_string());
        }
        for b in &c.allow_block {
            cmd.arg("--allow-block").arg(b);
        }
        cmd.envs(c.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().context("starting spindle-agent run")?;
        self.child = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(20);
        for addr in [self.api(), self.portal()] {
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Some(s) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    bail!("the agent exited at start ({s}):\n{}", self.log_text());
                }
                if Instant::now() > deadline {
                    bail!("the agent did not listen on {addr}:\n{}", self.log_text());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// SIGKILL (no drain, no flush: the page cache keeps what was written).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then the exit status (SIGKILL after 30 s).
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let Some(mut c) = self.child.take() else {
            bail!("the agent is not running");
        };
        signal(c.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                bail!("the agent did not exit 30 s after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the agent again with the same configuration.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// Everything the agent logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `sig` to process `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we started; a stale pid at worst fails with ESRCH.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Which client certificate to present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCert {
    /// The operator's (the only one the agent accepts).
    Operator,
    /// None at all.
    Anonymous,
    /// Names the operator, signed by another CA.
    OtherCa,
    /// Signed by the right CA, naming someone else.
    WrongName,
}

/// An API client presenting `who`, checking the agent's certificate for `spindle-agent`.
pub async fn client(
    api: SocketAddr,
    certs: &Certs,
    who: ClientCert,
) -> Result<AgentClient<Channel>> {
    let read = |n: &str| std::fs::read(certs.file(n)).with_context(|| format!("reading {n}"));
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")?))
        .domain_name(AGENT_SERVER_NAME);
    let pair = match who {
        ClientCert::Operator => Some(("operator.crt", "operator.key")),
        ClientCert::Anonymous => None,
        ClientCert::OtherCa => Some(("rogue.crt", "rogue.key")),
        ClientCert::WrongName => Some(("wrong-name.crt", "wrong-name.key")),
    };
    if let Some((c, k)) = pair {
        tls = tls.identity(Identity::from_pem(read(c)?, read(k)?));
    }
    let channel = Channel::from_shared(format!("https://{api}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .connect()
        .await?;
    Ok(AgentClient::new(channel))
}

/// A client of node `node`'s agent at `api` as the operator reaches it: the operator's
/// certificate, and only the server key `key` accepted (the fingerprint the node's Lease
/// publishes; agents started without `--tls-cert` make their own key at each start).
pub async fn pinned_client(
    api: SocketAddr,
    certs: &Certs,
    node: &str,
    key: &str,
) -> Result<AgentClient<Channel>> {
    use spindle_agent_api::pinning::{ClientIdentity, Dial, connect};
    let identity = ClientIdentity::read(&certs.file("operator.crt"), &certs.file("operator.key"))?;
    let endpoint = api.to_string();
    let dial = Dial {
        node,
        endpoint: &endpoint,
        key,
    };
    let channel = connect(&identity, dial, Duration::from_secs(5))
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the agent of {node} at {api}: {e:?}"))?;
    Ok(AgentClient::new(channel))
}
