//! `spindle-agent`: Spindle's node agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use spindle_agent::{engine, iscsi, metrics, ring, standalone};

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
    /// Most Data-Out (write data) the agent holds at once, over all sessions, e.g. 512MiB.
    /// Beyond it initiators are slowed down (CmdSN window, R2T), not served from more memory.
    #[arg(long, value_name = "BYTES", default_value = "512MiB", value_parser = parse_bytes)]
    max_write_memory: usize,
    /// Most Data-Out one session holds at once (at least 16MiB, the largest write).
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    max_session_write_memory: usize,
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
    let min_session = 16 << 20;
    if args.max_session_write_memory < min_session {
        anyhow::bail!(
            "--max-session-write-memory must be at least 16MiB (the largest write a session takes)"
        );
    }
    if args.max_write_memory < args.max_session_write_memory {
        anyhow::bail!("--max-write-memory must be at least --max-session-write-memory");
    }
    engine::memory::tune_allocator();
    iscsi::session::WriteMemory::configure(args.max_write_memory, args.max_session_write_memory);
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spindle-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
