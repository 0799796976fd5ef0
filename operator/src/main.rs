//! spindle-operator: reconciles Devices and Targets into the node agents, and deletes a Device
//! only after its agent acknowledged the flush. See the README's "Operator" section.

mod agent_client;
mod agents;
mod claimants;
mod conditions;
mod context;
mod controller;
mod delete;
mod desired;
mod error;
mod leader;
mod metrics;
mod objects;
mod status;
mod sweep;
mod tenancy;
mod term;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Spindle's Kubernetes operator.
///
/// Watches Devices and Targets (spindle.dev/v1alpha1), the CHAP Secrets Targets name, the agent
/// Leases in --namespace and the Node objects; tells the agent of each node which Devices to
/// open and which Targets to serve (gRPC over mutual TLS); writes status, conditions (Ready,
/// AgentReachable, Deleting, Flushed) and Events; and runs the delete protocol behind the
/// finalizer spindle.dev/flush (drain, flush acknowledgement, release). With several replicas,
/// only the holder of the --leader-election-lease Lease acts.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Kubeconfig to use. Default: $KUBECONFIG, else the in-cluster service account.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Namespace of the agents' Leases and of the leader election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "spindle-system")]
    namespace: String,
    /// Client certificate (PEM) presented to the agents; must carry the DNS name
    /// spindle-operator and be signed by the CA the agents trust (their --tls-ca). The agents
    /// are not checked against a CA: each publishes the fingerprint of its own key in its
    /// node's Lease, and the operator calls only the server holding that key.
    #[arg(long, value_name = "FILE")]
    tls_cert: PathBuf,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE")]
    tls_key: PathBuf,
    /// Not used any more (agents are known by the key their Lease publishes); accepted so that
    /// older command lines still start.
    #[arg(long, value_name = "FILE", hide = true)]
    tls_ca: Option<PathBuf>,
    /// Where to serve /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:9561")]
    metrics: SocketAddr,
    /// This replica's name in the leader election. Default: the host name. Replicas must
    /// differ.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Name of the leader election Lease (in --namespace).
    #[arg(long, value_name = "NAME", default_value = "spindle-operator")]
    leader_election_lease: String,
    /// How long the leader's Lease holds without renewal: a standby takes over within this.
    #[arg(long, value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    leader_election_duration: u64,
    /// Reconciles running at once, per kind.
    #[arg(long, value_name = "N", default_value_t = 16)]
    concurrency: u16,
    /// Grants namespace NAMESPACE the iSCSI names starting with PREFIX (repeatable), besides
    /// the names every namespace has: iqn.2026-11.dev.spindle:<namespace>.<anything>. A Target
    /// with any other spec.iqn is not served (Ready=False, reason IqnNotAllowed). Grants of two
    /// namespaces must not overlap, and none may reach into iqn.2026-11.dev.spindle:.
    #[arg(long = "iqn-prefix", value_name = "NAMESPACE=PREFIX", value_parser = parse_grant)]
    iqn_prefixes: Vec<(String, String)>,
    /// Ports Targets may listen on (the agents run in the nodes' network): PORT or FIRST-LAST.
    /// A Target with another spec.port is not served (Ready=False, reason PortNotAllowed).
    #[arg(long, value_name = "FIRST-LAST", default_value = "3260-3269", value_parser = parse_ports)]
    target_ports: std::ops::RangeInclusive<u16>,
}

fn parse_grant(text: &str) -> Result<(String, String), String> {
    tenancy::parse_grant(text).map_err(|e| e.to_string())
}

fn parse_ports(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    tenancy::parse_ports(text).map_err(|e| e.to_string())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SPINDLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("spindle-operator: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spindle-operator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Connecting to the apiserver gives up after this.
const APISERVER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A request (not a watch) gives up when the apiserver sends nothing for this long, or does not
/// take the request's bytes for this long.
const APISERVER_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The operator's two apiserver clients.
struct KubeClients {
    /// For requests (gets, writes, the leader Lease): connect, read and write timeouts, so a
    /// half-open connection is a failed request, not a wait.
    calls: kube::Client,
    /// For watches, which stay quiet for minutes: connect and write timeouts; a quiet stream is
    /// the watcher's own idle timeout's business (server-side timeout plus a margin).
    watches: kube::Client,
}

async fn kube_clients(path: Option<&PathBuf>) -> anyhow::Result<KubeClients> {
    let mut config = kube_config(path).await?;
    config.connect_timeout = Some(APISERVER_CONNECT_TIMEOUT);
    config.write_timeout = Some(APISERVER_IO_TIMEOUT);
    config.read_timeout = None;
    let watches =
        kube::Client::try_from(config.clone()).context("building the Kubernetes client")?;
    config.read_timeout = Some(APISERVER_IO_TIMEOUT);
    // Count the read timeout from each request, not from when its pooled connection went idle.
    config.reset_reader_on_write = true;
    let calls = kube::Client::try_from(config).context("building the Kubernetes client")?;
    Ok(KubeClients { calls, watches })
}

async fn kube_config(path: Option<&PathBuf>) -> anyhow::Result<kube::Config> {
    let config = match path {
        Some(p) => {
            let kc = Kubeconfig::read_from(p)
                .with_context(|| format!("--kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("--kubeconfig {}", p.display()))?
        }
        None if std::env::var_os("KUBECONFIG").is_some_and(|k| !k.is_empty()) => {
            kube::Config::infer().await.context("KUBECONFIG")?
        }
        None => match kube::Config::incluster() {
            Ok(c) => c,
            Err(_) => kube::Config::infer()
                .await
                .context("not in a cluster and no usable kubeconfig; pass --kubeconfig")?,
        },
    };
    Ok(config)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "spindle-operator".to_owned())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let metrics = metrics::Metrics::new();
    let (bound, server) = metrics::serve(args.metrics, metrics.clone())
        .await
        .with_context(|| format!("--metrics {}", args.metrics))?;
    tokio::spawn(server);
    let agents = Arc::new(
        agent_client::AgentClients::new(&args.tls_cert, &args.tls_key, args.tls_ca.as_deref())
            .context("agent TLS (--tls-cert, --tls-key)")?,
    );
    let tenancy = Arc::new(
        tenancy::Tenancy::new(args.iqn_prefixes.clone(), args.target_ports.clone())
            .context("--iqn-prefix")?,
    );
    let clients = kube_clients(args.kubeconfig.as_ref()).await?;
    let identity = args.identity.clone().unwrap_or_else(hostname);
    tracing::info!(
        identity,
        namespace = args.namespace,
        metrics = %bound,
        "spindle-operator {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let mut elector = leader::Elector::new(
        Api::<Lease>::namespaced(clients.calls.clone(), &args.namespace),
        &args.leader_election_lease,
        &identity,
        Duration::from_secs(args.leader_election_duration),
    );
    let mut shutdown = pin!(shutdown_signal());
    loop {
        let beat = |ok| metrics.beat(ok);
        let term = tokio::select! {
            term = elector.acquire(beat) => term,
            () = &mut shutdown => return Ok(()),
        };
        metrics.leader.set(1);
        tracing::info!(
            identity,
            term = term.number(),
            "leading: reconciling Devices and Targets"
        );
        let work = async {
            let (registry, drive) =
                agents::Registry::new(clients.watches.clone(), &args.namespace, metrics.clone());
            tokio::join!(
                drive,
                controller::run(
                    &clients.calls,
                    &clients.watches,
                    registry,
                    Arc::new(agents.for_term(term.clone())),
                    metrics.clone(),
                    controller::Settings {
                        identity: &identity,
                        concurrency: args.concurrency,
                        tenancy: tenancy.clone(),
                    },
                )
            );
        };
        // Biased: once the term has ended, the reconciles are dropped before they are polled
        // again (a replica resumed after a freeze sends nothing more).
        tokio::select! {
            biased;
            () = term.ended() => {}
            () = elector.hold(&term, |ok| metrics.beat(ok)) => {}
            () = &mut shutdown => {
                elector.release().await;
                tracing::info!("shutting down; leader Lease released");
                return Ok(());
            }
            () = work => tracing::error!("the controllers stopped; standing for election again"),
        }
        let why = if term.deposed() {
            "another replica leads, or an agent has obeyed a newer leader"
        } else {
            "the leader Lease could not be renewed before the renew deadline"
        };
        term.depose();
        tracing::warn!(
            term = term.number(),
            "leader term ended ({why}): every reconcile in progress cancelled, no agent call \
             sent any more; standing by"
        );
        metrics.leader.set(0);
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
