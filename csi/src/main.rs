//! `spindle-csi`: Spindle's CSI driver, in controller or node mode.

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Spindle's CSI driver. `controller` runs beside the external-provisioner, -attacher and
/// -resizer sidecars and turns volumes into Spindle Devices and Targets; `node` runs on every
/// node that consumes volumes and attaches them with the host's open-iscsi.
#[derive(Debug, Parser)]
#[command(name = "spindle-csi", version)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Serve the CSI Identity and Controller services.
    Controller(spindle_csi::controller::Settings),
    /// Serve the CSI Identity and Node services (and kubelet's plugin registration).
    Node(Box<spindle_csi::node::Settings>),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    match cli.mode {
        Mode::Controller(s) => spindle_csi::controller::serve(s, shutdown)
            .await
            .context("controller mode"),
        Mode::Node(s) => spindle_csi::node::serve(*s, shutdown)
            .await
            .context("node mode"),
    }
}
