//! `kubectl spindle`: a kubectl plugin for Spindle. It reads what the Kubernetes API holds
//! (Devices, Targets, their conditions and Events, the agents' Leases, Nodes) with the user's
//! kubeconfig and explains it; it never calls the agent API (it takes only the operator's
//! certificate) and never writes. `drain` may read an agent's Prometheus endpoint when asked.

mod agent;
mod commands;
mod describe;
mod drain;
mod error;
mod events;
mod fetch;
#[cfg(test)]
mod fixtures;
mod nodes;
mod scrape;
mod table;
mod why;
mod why_target;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Inspect Spindle (iSCSI storage for Kubernetes) from its objects: the nodes and their agents,
/// a Device in detail, why a Device's delete does not finish or a Target does not serve, and
/// what a Device's drain waits for.
///
/// Reads the Kubernetes API with your kubeconfig ($KUBECONFIG, ~/.kube/config or in-cluster);
/// it needs get/list on devices and targets (spindle.dev), on Leases in the operator's namespace,
/// on Nodes and on Events. It never writes and never calls the agent API (only `drain
/// --agent-metrics` reads an agent's Prometheus endpoint).
#[derive(Parser, Debug)]
#[command(name = "kubectl spindle", version, bin_name = "kubectl spindle")]
pub struct Cli {
    /// Kubeconfig file to use instead of $KUBECONFIG or ~/.kube/config.
    #[arg(long, global = true, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use instead of the current one.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Namespace of the operator, where the agents register their Leases (the Helm release's
    /// namespace).
    #[arg(
        long,
        global = true,
        env = "SPINDLE_NAMESPACE",
        default_value = "spindle-system"
    )]
    spindle_namespace: String,
    /// Output format (`wide`: `nodes` adds each agent's endpoints, Lease timing and Target names;
    /// the other commands print text).
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned text for people.
    Text,
    /// Text with more columns.
    Wide,
    /// JSON for scripts.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every node with an agent (or a Device): whether its agent renews its Lease (reachable),
    /// when it last did, its version, the Targets, Devices and iSCSI sessions on it, and the
    /// free and total bytes of its data directory (from the Lease). `-o wide` adds the agent
    /// API endpoint, the iSCSI portal, the Lease's duration and the Targets' names.
    Nodes,
    /// One object in detail. `describe device NAME`: its node and agent, source and settings,
    /// the Targets exporting it with their sessions, its conditions, the last drain the agent
    /// acknowledged, and its recent Events.
    Describe {
        #[command(subcommand)]
        what: DescribeObject,
    },
    /// Why an object is stuck. `why device NAME`: whether it is being deleted, whether Spindle's
    /// finalizer holds it, and what the delete waits on (the agent unreachable, a drain in
    /// progress, a failed flush, the release), with what you can do about it. `why target NAME`:
    /// whether it serves, and if not why (its Devices missing, not Ready, deleted or on another
    /// node; its node's agent unreachable; what the operator's Ready condition says).
    Why {
        #[command(subcommand)]
        what: WhyObject,
    },
    /// What a Device's drain (the first step of its delete) has to get through.
    /// `drain device NAME`: the iSCSI sessions on the Targets exporting it, the commands in
    /// flight on its LUNs (with --agent-metrics), the flush state the agent acknowledged, and
    /// what the delete waits on. Sessions do not hold the delete: the drain fences the LUN (new
    /// commands fail), lets accepted ones finish and flushes. It only reads: to end the sessions,
    /// delete or edit the Target (the operator then closes them through the agent); the command
    /// is printed, never run.
    Drain {
        #[command(subcommand)]
        what: DrainObject,
    },
}

#[derive(Subcommand, Debug)]
enum DescribeObject {
    /// A Device.
    Device(Named),
}

#[derive(Subcommand, Debug)]
enum WhyObject {
    /// A Device: what its delete waits on.
    Device(Named),
    /// A Target: why it does not serve.
    Target(Named),
}

#[derive(Subcommand, Debug)]
enum DrainObject {
    /// A Device: its sessions, commands in flight and flush state.
    Device {
        #[command(flatten)]
        named: Named,
        /// The Prometheus endpoint (HOST:PORT, the agent's --metrics) of the Device's node's
        /// agent: live sessions and commands in flight per LUN are read from it
        /// (spindle_iscsi_sessions, spindle_scsi_inflight). Without it, the sessions are the
        /// Targets' status (refreshed by the operator) and in-flight commands are not shown.
        #[arg(long, value_name = "HOST:PORT")]
        agent_metrics: Option<String>,
    },
}

/// An object named on the command line.
#[derive(clap::Args, Debug)]
struct Named {
    /// The object's name.
    name: String,
    /// Its namespace (default: the kubeconfig context's namespace).
    #[arg(short, long)]
    namespace: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<String> {
    let reader = commands::connect(
        cli.kubeconfig.as_deref(),
        cli.context.as_deref(),
        &cli.spindle_namespace,
    )
    .await?;
    let out = cli.output;
    Ok(match cli.command {
        Command::Nodes => commands::nodes(&reader, out).await?,
        Command::Describe {
            what: DescribeObject::Device(n),
        } => commands::describe_device(&reader, n.namespace, &n.name, out).await?,
        Command::Why {
            what: WhyObject::Device(n),
        } => commands::why_device(&reader, n.namespace, &n.name, out).await?,
        Command::Why {
            what: WhyObject::Target(n),
        } => commands::why_target(&reader, n.namespace, &n.name, out).await?,
        Command::Drain {
            what:
                DrainObject::Device {
                    named,
                    agent_metrics,
                },
        } => {
            commands::drain_device(
                &reader,
                named.namespace,
                &named.name,
                agent_metrics.as_deref(),
                out,
            )
            .await?
        }
    })
}
