//! `spindle-agent`: Spindle's node agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use spindle_agent::engine::EngineOptions;
use spindle_agent::node::{Node, NodeOptions};
use spindle_agent::{api, engine, iscsi, metrics, ring, seccomp, standalone};

/// Spindle's node agent: serves Devices (files or block devices) as LUNs of iSCSI Targets, with
/// one io_uring SCSI engine per Target.
#[derive(Parser)]
#[command(
    version,
    about,
    long_about = None,
    after_help = "Environment: SPINDLE_RING_POLL_US=N: how long (µs) a ring thread about to \
                  sleep with 1-4 I/Os in flight polls for their completions first (default \
                  30; 0 turns polling off)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Device, Target and Secret manifests of a folder, without Kubernetes.
    ///
    /// Reads every *.yaml / *.yml file in --manifests (multi-document YAML, the same objects
    /// `kubectl apply` takes), reports each invalid object in one line naming the file, the
    /// object and the field, and serves the rest. Missing file-backed Devices are created as
    /// sparse files under --data-dir. SIGHUP reads the folder again: new and changed objects
    /// are applied, Targets no longer there are stopped, and Devices no longer there are
    /// deleted safely (fenced, drained, flushed, then released; the file is removed under
    /// reclaimPolicy: Delete). On SIGTERM or Ctrl-C the agent stops without fencing anything:
    /// each session answers the commands it accepted and closes (initiators reconnect when
    /// the agent is back), every store is flushed, and it exits 0.
    Standalone(StandaloneArgs),
    /// Serve as the node agent of a Kubernetes cluster: take orders from the operator.
    ///
    /// Registers with a Lease named after the node in --namespace (carrying the API endpoint,
    /// the iSCSI portal and the fingerprint of the serving key it made at start), serves the
    /// agent API (gRPC) on --api-listen with mutual TLS (only a client certificate signed by
    /// --tls-ca and naming --client-name is accepted), keeps
    /// what it is told under --data-dir/.spindle and serves it again after a restart, before
    /// any call. When the apiserver is unreachable it keeps serving and retries. On SIGTERM
    /// it stops as standalone mode does: accepted commands answered, sessions closed, stores
    /// flushed, nothing fenced (a restart is not a delete).
    Run(Box<RunArgs>),
    /// Check that this machine can run the data path (io_uring), print the verdict, and exit.
    Check,
    /// Print the seccomp profile the agent needs in a container (io_uring allowed), or install
    /// it where the kubelet looks for Localhost profiles (what the Helm chart's init container
    /// does).
    SeccompProfile(SeccompProfileArgs),
}

#[derive(clap::Args)]
struct SeccompProfileArgs {
    /// Write the profile to this file (atomically, creating its folder) instead of stdout.
    #[arg(long, value_name = "FILE")]
    install: Option<PathBuf>,
}

#[derive(clap::Args)]
struct StandaloneArgs {
    /// Folder with Device, Target and (for CHAP) Secret manifests.
    #[arg(long, value_name = "DIR")]
    manifests: PathBuf,
    /// Folder holding file-backed Devices (`spec.source.file.path` is relative to it).
    #[arg(long, value_name = "DIR", default_value = "./spindle-data")]
    data_dir: PathBuf,
    /// iSCSI portal to listen on.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:3260")]
    listen: SocketAddr,
    /// Address discovery (SendTargets) names; default: the address each connection arrived on.
    #[arg(long, value_name = "IP")]
    advertise_address: Option<std::net::IpAddr>,
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
    #[command(flatten)]
    data_path: DataPathArgs,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Name of this node (the agent serves the Devices whose spec.nodeName is this).
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    node_name: String,
    /// Kubeconfig to reach the apiserver (default: in-cluster config, or $KUBECONFIG).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Namespace of the operator, where the agent's Lease lives.
    #[arg(
        long,
        env = "SPINDLE_NAMESPACE",
        value_name = "NS",
        default_value = "spindle-system"
    )]
    namespace: String,
    /// Folder holding file-backed Devices and the agent's state (.spindle/).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/spindle")]
    data_dir: PathBuf,
    /// iSCSI address and default port (a Target with another spec.port gets a listener on
    /// the same address).
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:3260")]
    iscsi_listen: SocketAddr,
    /// Address of the agent API (gRPC, mutual TLS).
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:9443")]
    api_listen: SocketAddr,
    /// The node's address as initiators and the operator reach it: named by discovery, the
    /// Targets' status and the Lease. Default: the listen address, or (on a wildcard) the
    /// address each iSCSI connection arrived on.
    #[arg(long, env = "ADVERTISE_ADDRESS", value_name = "IP")]
    advertise_address: Option<std::net::IpAddr>,
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics (and /healthz).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
    /// Serve the API with this certificate (PEM) instead of a key of its own. By default the
    /// agent makes a new key at every start (in memory) and publishes its fingerprint in its
    /// Lease; the operator calls only the server holding the key the node's Lease names. A
    /// certificate given here is published the same way: each node needs its own (the operator
    /// refuses a key two nodes publish).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA certificate (PEM) that signs the operator's client certificate.
    #[arg(long, value_name = "FILE")]
    tls_ca: PathBuf,
    /// DNS name the caller's certificate must carry.
    #[arg(long, value_name = "NAME", default_value = spindle_agent_api::identity::OPERATOR_CLIENT_NAME)]
    client_name: String,
    #[command(flatten)]
    data_path: DataPathArgs,
}

/// The data path's settings, the same in both modes: block devices allowed, keepalive, and
/// bounds on what it holds (write data, a drain's time).
#[derive(clap::Args)]
struct DataPathArgs {
    /// A block device Devices may use (`spec.source.block.path`); repeat for several.
    #[arg(long = "allow-block", value_name = "PATH")]
    allow_block: Vec<PathBuf>,
    /// Seconds a connection may be idle before the target pings it with a NOP-In; a ping
    /// still unanswered at the next one closes the connection.
    #[arg(long, value_name = "SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    nop_interval: u64,
    /// Most Data-Out (write data) the agent holds at once, over all sessions, e.g. 512MiB.
    /// Beyond it initiators are slowed down (CmdSN window, R2T), not served from more memory.
    #[arg(long, value_name = "BYTES", default_value = "512MiB", value_parser = parse_bytes)]
    max_write_memory: usize,
    /// Most Data-Out one session holds at once (at least 16MiB, the largest write).
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    max_session_write_memory: usize,
    /// Seconds a drain (a Device deleted, or the agent stopping) waits for the commands in
    /// flight, and then for the flush, before it fails: a store that hangs cannot hold a
    /// shutdown forever.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    drain_timeout: u64,
    /// Seconds a snapshot may copy a Device's store where the data dir's filesystem has no
    /// reflinks (ext4): the Device's writes are held for the whole copy, so this bounds how
    /// long initiators wait. Past it the snapshot fails, naming the filesystem. 0: such
    /// snapshots are refused at once (docs/snapshots.md).
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=600))]
    snapshot_copy_limit: u64,
}

impl DataPathArgs {
    /// Checks the bounds and sets them for the whole agent.
    fn apply(&self) -> anyhow::Result<()> {
        if self.max_session_write_memory < 16 << 20 {
            anyhow::bail!(
                "--max-session-write-memory must be at least 16MiB (the largest write a session takes)"
            );
        }
        if self.max_write_memory < self.max_session_write_memory {
            anyhow::bail!("--max-write-memory must be at least --max-session-write-memory");
        }
        engine::memory::tune_allocator();
        engine::device_drain::set_drain_timeout(std::time::Duration::from_secs(self.drain_timeout));
        spindle_agent::node::snapshots::set_copy_limit(std::time::Duration::from_secs(
            self.snapshot_copy_limit,
        ));
        iscsi::session::WriteMemory::configure(
            self.max_write_memory,
            self.max_session_write_memory,
        );
        Ok(())
    }
}

/// Parses a byte count: a number, optionally followed by KiB, MiB or GiB.
fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, shift) = [("GiB", 30), ("MiB", 20), ("KiB", 10)]
        .iter()
        .find_map(|(suffix, shift)| t.strip_suffix(suffix).map(|n| (n, *shift)))
        .unwrap_or((t, 0));
    let n: usize = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count like 4096, 64MiB or 1GiB"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    // The Kubernetes client logs every failed request itself; the agent reports an apiserver
    // outage once (api::lease), so the client's own lines stay out unless asked for.
    let filter = EnvFilter::try_from_env("SPINDLE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,kube_client=off,tower=off,hyper=off"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn standalone(args: StandaloneArgs) -> anyhow::Result<()> {
    ring::probe()?;
    args.data_path.apply()?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let manifests = standalone::manifest::load_dir(&args.manifests)?;
    let (plan, mut problems) = standalone::plan::plan(&manifests, args.listen.port());
    problems.extend(manifests.problems.iter().cloned());
    for p in &problems {
        tracing::error!("{p}");
    }
    let opts = NodeOptions {
        engine: EngineOptions {
            listen: args.listen,
            advertise: args.advertise_address,
            keepalive: std::time::Duration::from_secs(args.data_path.nop_interval),
        },
        data_dir: args.data_dir,
        allow_block: args.data_path.allow_block,
        persist: false,
        node_name: String::new(),
    };
    runtime()?.block_on(async {
        if let Some(addr) = args.metrics {
            let bound = metrics::serve(addr).with_context(|| format!("metrics on {addr}"))?;
            tracing::info!("metrics on http://{bound}/metrics");
        }
        let (node, _) = Node::start(opts).await?;
        let served = standalone::serve(&node, plan).await;
        if served == 0 {
            anyhow::bail!(
                "no Target in {} can be served (problems above)",
                args.manifests.display()
            );
        }
        // The portal listens from the start; this line says the manifests' Targets are served
        // (scripts wait for it rather than for the port).
        tracing::info!(targets = served, "{STANDALONE_READY}");
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("waiting for SIGHUP")?;
        loop {
            tokio::select! {
                r = wait_for_shutdown_signal() => { r?; break; }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reading {} again", args.manifests.display());
                    reload(&node, &args.manifests, args.listen.port()).await;
                }
            }
        }
        stop(&node).await
    })
}

/// Logged once the standalone agent serves every Target of its manifests it can.
const STANDALONE_READY: &str = "ready: the manifests' Targets are served";

fn run(args: RunArgs) -> anyhow::Result<()> {
    ring::probe()?;
    args.data_path.apply()?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let serving = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let (chain, key) = api::tls::read_key_files(cert, key)?;
            api::identity::ServingKey::new(chain, key).context("--tls-cert")?
        }
        _ => api::identity::ServingKey::generate(&args.node_name)?,
    };
    let api_key = serving.fingerprint.clone();
    let tls = api::tls::server_config(serving, &args.tls_ca, &args.client_name)?;
    let fence = std::sync::Arc::new(api::fence::Fence::open(&args.data_dir)?);
    tracing::info!(term = fence.highest(), "highest operator leader term seen");
    let endpoint_ip = args
        .advertise_address
        .or_else(|| Some(args.api_listen.ip()).filter(|ip| !ip.is_unspecified()))
        .context(
            "the API listens on a wildcard address: pass --advertise-address (the node's IP) \
             so the operator knows where to call",
        )?;
    let opts = NodeOptions {
        engine: EngineOptions {
            listen: args.iscsi_listen,
            advertise: args.advertise_address,
            keepalive: std::time::Duration::from_secs(args.data_path.nop_interval),
        },
        data_dir: args.data_dir.clone(),
        allow_block: args.data_path.allow_block.clone(),
        persist: true,
        node_name: args.node_name.clone(),
    };
    runtime()?.block_on(async move {
        if let Some(addr) = args.metrics {
            let bound = metrics::serve(addr).with_context(|| format!("metrics on {addr}"))?;
            tracing::info!("metrics on http://{bound}/metrics");
        }
        let client = kube_client(args.kubeconfig.as_deref()).await?;
        let (node, problems) = Node::start(opts).await?;
        for p in &problems {
            tracing::error!("not served again: {p}");
        }
        let node = std::sync::Arc::new(node);
        let listener = tokio::net::TcpListener::bind(args.api_listen)
            .await
            .with_context(|| format!("agent API on {}", args.api_listen))?;
        let api_port = listener.local_addr()?.port();
        let registration = api::lease::Registration {
            namespace: args.namespace.clone(),
            node: args.node_name.clone(),
            api_endpoint: SocketAddr::new(endpoint_ip, api_port).to_string(),
            iscsi_portal: node
                .advertised_portal()
                .await
                .map(|p| p.to_string())
                .unwrap_or_default(),
            api_key,
            started: k8s_openapi::jiff::Timestamp::now(),
            data_dir: Some(args.data_dir.clone()),
        };
        tracing::info!(
            node = %args.node_name, api = %registration.api_endpoint,
            portal = %registration.iscsi_portal, api_key = %registration.api_key, "agent serving"
        );
        let lease = tokio::spawn(api::lease::keep_renewed(client, registration));
        let calls = api::calls::Calls::new();
        let service = api::server::AgentService::new(
            node.clone(),
            args.node_name.clone(),
            calls.clone(),
            fence,
        );
        let (stop_api, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(api::server::serve(listener, tls, service, calls, async {
            let _ = stopped.await;
        }));
        wait_for_shutdown_signal().await?;
        let _ = stop_api.send(());
        if let Ok(Err(e)) = server.await {
            tracing::warn!("agent API: {e}");
        }
        lease.abort();
        stop(&node).await
    })
}

/// A Kubernetes client from `kubeconfig`, or the in-cluster config (or $KUBECONFIG), with
/// timeouts short enough that an unreachable apiserver is noticed and retried.
async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration (in-cluster or $KUBECONFIG); pass --kubeconfig",
        )?,
    };
    config.connect_timeout = Some(std::time::Duration::from_secs(5));
    config.read_timeout = Some(std::time::Duration::from_secs(10));
    config.write_timeout = Some(std::time::Duration::from_secs(10));
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// Re-reads the manifests and makes the node serve what they say now.
async fn reload(node: &Node, dir: &std::path::Path, port: u16) {
    let manifests = match standalone::manifest::load_dir(dir) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("{e}; nothing changed");
            return;
        }
    };
    let (plan, mut problems) = standalone::plan::plan(&manifests, port);
    problems.extend(manifests.problems.iter().cloned());
    for p in &problems {
        tracing::error!("{p}");
    }
    let served = standalone::reconcile(node, plan).await;
    tracing::info!(targets = served, "manifests applied");
}

/// Stops every target: sessions answer what they accepted and close (initiators reconnect
/// once the agent is back), stores are flushed. Nothing is fenced: a restart is not a delete.
async fn stop(node: &Node) -> anyhow::Result<()> {
    tracing::info!("stopping: every session answers what it accepted, then closes");
    node.shutdown().await?;
    tracing::info!("every store flushed; bye");
    Ok(())
}

/// The runtime of the agent's control side (API, signals); the data path runs on its own
/// threads and rings.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control runtime")
}

async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("waiting for signals")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        r = tokio::signal::ctrl_c() => { r.context("waiting for signals")?; tracing::info!("Ctrl-C received") }
    }
    Ok(())
}

fn seccomp_profile(args: SeccompProfileArgs) -> anyhow::Result<()> {
    match args.install {
        None => print!("{}", seccomp::profile_json()),
        Some(path) => {
            seccomp::install(&path)
                .with_context(|| format!("installing the seccomp profile as {}", path.display()))?;
            println!("seccomp profile installed: {}", path.display());
        }
    }
    Ok(())
}

/// Every Device holds a descriptor while it is served: lift the soft open-file limit to the
/// hard one, and say what the agent can hold.
fn raise_file_limit() {
    use spindle_agent::store::fdlimit;
    match fdlimit::raise() {
        Ok((before, after)) if before != after => {
            tracing::info!(before, after, "open-file limit (RLIMIT_NOFILE) raised")
        }
        Ok((_, limit)) => tracing::info!(limit, "open-file limit (RLIMIT_NOFILE)"),
        Err(e) => tracing::warn!(
            "cannot raise the open-file limit (RLIMIT_NOFILE): {e}; Devices beyond it are refused"
        ),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    if matches!(cli.command, Command::Standalone(_) | Command::Run(_)) {
        raise_file_limit();
    }
    let result = match cli.command {
        Command::Standalone(a) => standalone(a),
        Command::Run(a) => run(*a),
        Command::Check => ring::probe()
            .map(|()| println!("io_uring works: this machine can run Spindle's data path"))
            .map_err(Into::into),
        Command::SeccompProfile(a) => seccomp_profile(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spindle-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
