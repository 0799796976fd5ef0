//! `kubectl spindle`: a kubectl plugin for Spindle. It reads what the Kubernetes API holds
//! (Devices, Targets, their conditions and Events, the agents' Leases, Nodes) with the user's
//! kubeconfig and explains it; it never calls an agent (their API takes only the operator's
//! certificate) and never writes.

mod agent;
mod commands;
mod describe;
mod error;
mod events;
mod fetch;
#[cfg(test)]
mod fixtures;
mod nodes;
mod table;
mod why;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Inspect Spindle (iSCSI storage for Kubernetes) from its objects: the nodes and their agents,
/// a Device in detail, and why a Device's delete does not finish.
///
/// Reads the Kubernetes API with your kubeconfig ($KUBECONFIG, ~/.kube/config or in-cluster);
/// it needs get/list on devices and targets (spindle.dev), on Leases in the operator's namespace,
/// on Nodes and on Events. It never writes and never calls an agent.
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
    /// Output format.
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
    /// JSON for scripts.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every node with an agent (or a Device): whether its agent renews its Lease (reachable),
    /// when it last did, its version, the Targets, Devices and iSCSI sessions on it, and the
    /// free and total bytes of its data directory (from the Lease).
    Nodes,
    /// One object in detail. `describe device NAME`: its node and agent, source and settings,
    /// the Targets exporting it with their sessions, its conditions, the last drain the agent
    /// acknowledged, and its recent Events.
    Describe {
        #[command(subcommand)]
        what: Object,
    },
    /// Why an object's delete does not finish. `why device NAME`: whether it is being deleted,
    /// whether Spindle's finalizer holds it, and what the delete waits on (the agent unreachable,
    /// a drain in progress, a failed flush, the release), with what you can do about it.
    Why {
        #[command(subcommand)]
        what: Object,
    },
}

#[derive(Subcommand, Debug)]
enum Object {
    /// A Device.
    Device {
        /// The Device's name.
        name: String,
        /// Its namespace (default: the kubeconfig context's namespace).
        #[arg(short, long)]
        namespace: Option<String>,
    },
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
    let json = cli.output == Output::Json;
    Ok(match cli.command {
        Command::Nodes => commands::nodes(&reader, json).await?,
        Command::Describe {
            what: Object::Device { name, namespace },
        } => commands::describe_device(&reader, namespace, &name, json).await?,
        Command::Why {
            what: Object::Device { name, namespace },
        } => commands::why_device(&reader, namespace, &name, json).await?,
    })
}
