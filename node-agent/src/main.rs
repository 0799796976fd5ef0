//! `spindle-agent`: Spindle's node agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use spindle_agent::{engine, metrics, ring, seccomp, standalone};

/// Spindle's node agent: serves Devices (files or block devices) as LUNs of iSCSI Targets, with
/// one io_uring SCSI engine per Target.
#[derive(Parser)]
#[command(version, about, long_about = None)]
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
    /// sparse files under --data-dir. On SIGTERM or Ctrl-C every target is drained (new
    /// commands refused, accepted ones finished) and flushed before the agent exits 0.
    Standalone(StandaloneArgs),
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
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
    /// A block device Devices may use (`spec.source.block.path`); repeat for several.
    #[arg(long = "allow-block", value_name = "PATH")]
    allow_block: Vec<PathBuf>,
    /// Seconds a connection may be idle before the target pings it with a NOP-In; a ping
    /// still unanswered at the next one closes the connection.
    #[arg(long, value_name = "SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    nop_interval: u64,
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SPINDLE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
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
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let manifests = standalone::manifest::load_dir(&args.manifests)?;
    let (targets, mut problems) = standalone::plan::plan(&manifests);
    problems.extend(manifests.problems.iter().cloned());
    for p in &problems {
        tracing::error!("{p}");
    }
    if targets.is_empty() {
        anyhow::bail!(
            "no Target in {} can be served ({} problem(s) above)",
            args.manifests.display(),
            problems.len()
        );
    }
    if let Some(addr) = args.metrics {
        let bound = metrics::serve(addr).with_context(|| format!("metrics on {addr}"))?;
        tracing::info!("metrics on http://{bound}/metrics");
    }
    let opts = engine::AgentOptions {
        listen: args.listen,
        data_dir: args.data_dir,
        allow_block: args.allow_block,
        keepalive: std::time::Duration::from_secs(args.nop_interval),
    };
    let agent = engine::Agent::start(opts, targets)?;
    wait_for_shutdown_signal()?;
    tracing::info!("shutting down: draining every target");
    agent.shutdown()?;
    tracing::info!("all targets drained and flushed; bye");
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

fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal runtime")?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            r = tokio::signal::ctrl_c() => { r?; tracing::info!("Ctrl-C received") }
        }
        Ok::<_, std::io::Error>(())
    })
    .context("waiting for signals")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Standalone(a) => standalone(a),
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
