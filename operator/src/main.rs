//! spindle-operator: the controller that will reconcile Devices and Targets into node agents.
//! Not implemented yet; this binary only documents its future interface and refuses to run.

use clap::Parser;

/// Spindle's Kubernetes operator (NOT IMPLEMENTED YET: exits with an error).
///
/// When implemented, it will watch Targets and Devices (spindle.dev/v1alpha1), the Secrets they
/// reference for CHAP, and the Leases node agents renew in the operator's namespace; push the
/// desired state of each Target and Device to the agent on its node over gRPC (idempotent
/// "apply" calls); write status and conditions (Ready, AgentReachable, Deleting, Flushed) back;
/// and run the Device deletion protocol through finalizers.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Namespace where agents register their Leases.
    #[arg(long, env = "SPINDLE_NAMESPACE", default_value = "spindle-system")]
    namespace: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    eprintln!(
        "spindle-operator: not implemented yet (would watch Targets and Devices and drive the \
         node agents registered in namespace {:?}); see docs/control-plane.md",
        args.namespace
    );
    std::process::ExitCode::from(2)
}
