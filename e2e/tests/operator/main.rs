//! The operator end to end: a real etcd + kube-apiserver, the operator and one agent per node
//! (as processes by default; see `spindle_e2e::runtime`), real initiators (iscsi-ls, qemu-io,
//! libiscsi). Node-a and node-b have agents; node-c exists but has none until a check starts one.
//! Each check uses its own namespace; they run in order on one cluster and each is reported.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use spindle_e2e::checks::{Check, run_table};
use spindle_e2e::initiator::{self, Writer};
use spindle_e2e::manifest::{device_yaml, target_yaml};
use spindle_e2e::spindle::{OPERATOR, Spindle, default_iqn};

mod agent_away;
mod delete;
mod leader;
mod serving;
mod specs;

const READY: Duration = Duration::from_secs(30);
/// The agents' Lease duration (15 s) plus the operator's clock tick and some slack.
const LEASE: Duration = Duration::from_secs(25);
const MIB: u64 = 1 << 20;

fn main() -> ExitCode {
    let checks: &[(&str, Check)] = &[
        ("apply, connect, read and write", serving::apply_connect_io),
        (
            "delete under I/O with Retain",
            delete::delete_under_io_retain,
        ),
        (
            "delete with reclaimPolicy Delete removes the file",
            delete::delete_removes_file,
        ),
        ("agent killed mid-drain", agent_away::agent_killed_mid_drain),
        (
            "operator killed mid-delete",
            delete::operator_killed_mid_delete,
        ),
        (
            "agent stopped: the delete waits, then completes",
            agent_away::agent_stopped_delete_waits,
        ),
        (
            "agent back after a failed reconcile: the Target keeps its LUN",
            agent_away::agent_back_keeps_lun,
        ),
        (
            "node deleted: the delete proceeds",
            agent_away::node_deleted,
        ),
        (
            "skip-flush annotation: the delete proceeds",
            agent_away::skip_flush,
        ),
        ("bad specs say what to change and recover", specs::bad_specs),
        (
            "CHAP Secret rotation reaches the agent",
            serving::chap_rotation,
        ),
        (
            "orphans are released, their data kept",
            delete::orphan_sweep,
        ),
        (
            "apiserver paused: the operator carries on",
            leader::apiserver_paused,
        ),
        ("two replicas: only the leader acts", leader::two_replicas),
    ];
    run_table(
        || Spindle::start(&["node-a", "node-b"], &["node-c"]),
        "e2e-op",
        checks,
        &[OPERATOR],
    )
}

/// The initiator name the checks log in with.
const INITIATOR: &str = "iqn.2026-11.dev.spindle:e2e-operator";

/// Starts the libiscsi writer (16 in flight) on LUN 0 of `iqn` at `portal` and waits until
/// `good` writes were answered GOOD.
fn writer(portal: std::net::SocketAddr, iqn: &str, tag: &str, good: usize) -> Result<Writer> {
    let dir = std::env::temp_dir().join(format!("spindle-e2e-op-{}", std::process::id()));
    let tool = initiator::writer_tool(&dir)?;
    let w = Writer::start(
        &tool,
        &initiator::lun_url(portal, iqn, 0),
        16_000,
        16,
        &dir.join(format!("{tag}.txt")),
    )?;
    for _ in 0..600 {
        if w.results()?.good.len() >= good {
            return Ok(w);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "fewer than {good} GOOD writes after 30 s: {:?}",
        w.results()?.other
    )
}

/// The targets a portal lists in discovery, asked as this suite's initiator.
fn discover(portal: std::net::SocketAddr) -> Result<Vec<String>> {
    initiator::discover(portal, INITIATOR)
}

/// Applies a Device (1 MiB file on `node`) and a Target over it; waits for both Ready.
fn device_and_target(s: &Spindle, ns: &str, name: &str, node: &str, extra: &str) -> Result<String> {
    s.apply(ns, &device_yaml(name, node, 64 * MIB, extra))?;
    s.apply(ns, &target_yaml(name, &[(0, name)], ""))?;
    s.wait_condition("device", ns, name, "Ready", "True", READY)?;
    s.wait_condition("target", ns, name, "Ready", "True", READY)?;
    Ok(default_iqn(ns, name))
}
