//! Names and ports belong to namespaces, and the operator's smaller trust holes, end to end: a
//! real etcd + kube-apiserver, the operator (started with an IQN grant) and node-a's agent as
//! processes, real initiators (iscsi-ls, qemu-io). Node-c exists without an agent; the skew
//! check plays its agent's Lease. Each check uses its own namespace; they run in order on one
//! cluster and each is reported (`-- NAME` or SPINDLE_E2E_ONLY=NAME runs some).

use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use spindle_agent_api::lease as agent_lease;
use spindle_e2e::checks::{self, Check};
use spindle_e2e::initiator;
use spindle_e2e::manifest::{device_yaml, target_yaml};
use spindle_e2e::spindle::{OPERATOR, Spindle, condition, default_iqn};

const READY: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;
/// The namespace the operator grants [`GRANTED_PREFIX`].
const GRANTED_NS: &str = "e2e-names-granted";
const GRANTED_PREFIX: &str = "iqn.2001-04.com.example:granted.";
/// The initiator name the checks log in with.
const INITIATOR: &str = "iqn.2026-11.dev.spindle:e2e-names";
/// Where the agents' Leases live (e2e/cluster/spindle).
const AGENT_NS: &str = "spindle-system";

fn main() -> ExitCode {
    let checks: &[(&str, &str, Check)] = &[
        (
            "another namespace's IQN is refused, the owner's Target serves",
            "e2e-names-thief",
            foreign_iqn_refused,
        ),
        ("a granted IQN prefix is served", GRANTED_NS, granted_prefix),
        (
            "a port outside the allowed range is refused",
            "e2e-names-port",
            port_outside_range,
        ),
        (
            "skip-flush still removes the Target from a reachable agent",
            "e2e-names-skip",
            skip_flush_reachable,
        ),
        (
            "agent reachability is timed on the operator's clock",
            "e2e-names-skew",
            reachability_under_skew,
        ),
    ];
    checks::run_in_namespaces(
        start,
        checks
            .iter()
            .map(|(name, ns, check)| (*name, ns.to_string(), *check)),
        &[OPERATOR],
    )
}

/// The cluster, with the operator as the chart runs it with operator.iqnPrefixes set.
fn start() -> Result<Spindle> {
    let s = Spindle::start(&["node-a"], &["node-c"])?;
    let grant = format!("--iqn-prefix={GRANTED_NS}={GRANTED_PREFIX}");
    s.rt.kill_operator(OPERATOR).context("operator stops")?;
    s.rt.start_operator_with(OPERATOR, &[&grant])
        .context("operator starts with a grant")?;
    Ok(s)
}

/// The targets a portal lists in discovery, asked as this suite's initiator.
fn discover(portal: std::net::SocketAddr) -> Result<Vec<String>> {
    initiator::discover(portal, INITIATOR)
}

/// Waits until the Target's Ready condition is False with `reason` and a message naming `field`.
fn refused(s: &Spindle, ns: &str, name: &str, reason: &str, field: &str) -> Result<()> {
    let c = s.wait_condition("target", ns, name, "Ready", "False", READY)?;
    let c = s
        .wait_for(
            &format!("target {ns}/{name} Ready reason {reason}"),
            READY,
            || {
                let c = s
                    .get("target", ns, name)?
                    .and_then(|o| condition(&o, "Ready"));
                Ok(c.filter(|c| c.reason == reason))
            },
        )
        .with_context(|| format!("Ready was {c:?}"))?;
    ensure!(
        c.message.starts_with(&format!("{field}: ")),
        "the message does not name {field}: {}",
        c.message
    );
    Ok(())
}

fn foreign_iqn_refused(s: &Spindle, ns: &str) -> Result<()> {
    let owner_ns = "e2e-names-owner";
    s.namespace(owner_ns)?;
    let stolen = default_iqn(owner_ns, "db");
    let portal = s.rt.portal("node-a")?;
    // The thief comes first, with a disk of another size.
    s.apply(ns, &device_yaml("x", "node-a", 16 * MIB, ""))?;
    s.wait_condition("device", ns, "x", "Ready", "True", READY)?;
    s.apply(
        ns,
        &target_yaml(
            "x",
            &[(0, "x")],
            &format!("  acl: {{allowAll: true}}\n  iqn: {stolen}\n"),
        ),
    )?;
    refused(s, ns, "x", "IqnNotAllowed", "spec.iqn")?;
    ensure!(
        !discover(portal)?.contains(&stolen),
        "{stolen} is served for {ns}/x"
    );
    // Someone else's granted prefix is no better.
    let granted = format!("{GRANTED_PREFIX}z1");
    s.apply(ns, &device_yaml("z1", "node-a", 16 * MIB, ""))?;
    s.apply(
        ns,
        &target_yaml(
            "z1",
            &[(0, "z1")],
            &format!("  acl: {{allowAll: true}}\n  iqn: {granted}\n"),
        ),
    )?;
    refused(s, ns, "z1", "IqnNotAllowed", "spec.iqn")?;
    // The owner's Target serves its own disk under its name.
    s.apply(owner_ns, &device_yaml("db", "node-a", 32 * MIB, ""))?;
    s.apply(owner_ns, &target_yaml("db", &[(0, "db")], ""))?;
    s.wait_condition("target", owner_ns, "db", "Ready", "True", READY)?;
    ensure!(
        discover(portal)?.contains(&stolen),
        "{stolen} is not in discovery"
    );
    let length = initiator::qemu_io(&initiator::lun_url(portal, &stolen, 0), &["length"])?;
    ensure!(
        length.contains("32 MiB"),
        "logged in to a disk that is not {owner_ns}/db's (32 MiB): {length}"
    );
    // The refusal holds after the owner's Target came.
    refused(s, ns, "x", "IqnNotAllowed", "spec.iqn")
}

fn granted_prefix(s: &Spindle, ns: &str) -> Result<()> {
    let iqn = format!("{GRANTED_PREFIX}g");
    s.apply(ns, &device_yaml("g", "node-a", 16 * MIB, ""))?;
    s.apply(
        ns,
        &target_yaml(
            "g",
            &[(0, "g")],
            &format!("  acl: {{allowAll: true}}\n  iqn: {iqn}\n"),
        ),
    )?;
    s.wait_condition("target", ns, "g", "Ready", "True", READY)?;
    ensure!(
        discover(s.rt.portal("node-a")?)?.contains(&iqn),
        "{iqn} is not in discovery"
    );
    Ok(())
}

fn port_outside_range(s: &Spindle, ns: &str) -> Result<()> {
    let portal = s.rt.portal("node-a")?;
    let at = |port: u16| SocketAddr::new(portal.ip(), port);
    s.apply(ns, &device_yaml("p", "node-a", 16 * MIB, ""))?;
    s.apply(
        ns,
        &target_yaml("p", &[(0, "p")], "  acl: {allowAll: true}\n  port: 3300\n"),
    )?;
    refused(s, ns, "p", "PortNotAllowed", "spec.port")?;
    ensure!(
        TcpStream::connect_timeout(&at(3300), Duration::from_secs(2)).is_err(),
        "something listens on {} for a refused Target",
        at(3300)
    );
    // A port of the range is served.
    s.apply(
        ns,
        &target_yaml("p", &[(0, "p")], "  acl: {allowAll: true}\n  port: 3261\n"),
    )?;
    s.wait_condition("target", ns, "p", "Ready", "True", READY)?;
    let iqn = default_iqn(ns, "p");
    ensure!(
        discover(at(3261))?.contains(&iqn),
        "{iqn} is not in discovery at {}",
        at(3261)
    );
    // Moved out of the range again: refused, and no longer served where it was.
    s.apply(
        ns,
        &target_yaml("p", &[(0, "p")], "  acl: {allowAll: true}\n  port: 3300\n"),
    )?;
    refused(s, ns, "p", "PortNotAllowed", "spec.port")?;
    s.wait_for(
        &format!("{iqn} gone from discovery at {}", at(3261)),
        READY,
        || {
            let served = TcpStream::connect_timeout(&at(3261), Duration::from_secs(2)).is_ok()
                && discover(at(3261))?.contains(&iqn);
            Ok((!served).then_some(()))
        },
    )?;
    ensure!(
        TcpStream::connect_timeout(&at(3300), Duration::from_secs(2)).is_err(),
        "something listens on {} for a refused Target",
        at(3300)
    );
    Ok(())
}

fn skip_flush_reachable(s: &Spindle, ns: &str) -> Result<()> {
    let portal = s.rt.portal("node-a")?;
    s.apply(ns, &device_yaml("s", "node-a", 16 * MIB, ""))?;
    s.apply(ns, &target_yaml("s", &[(0, "s")], ""))?;
    s.wait_condition("target", ns, "s", "Ready", "True", READY)?;
    let iqn = default_iqn(ns, "s");
    ensure!(discover(portal)?.contains(&iqn), "{iqn} not served");
    s.kubectl(&[
        "annotate",
        "target",
        "-n",
        ns,
        "s",
        "spindle.dev/skip-flush=true",
    ])?;
    s.kubectl(&["delete", "target", "-n", ns, "s", "--wait=false"])?;
    s.wait_gone("target", ns, "s", READY)?;
    // Removal is synchronous before the finalizer goes; a moment for a slow listing anyway.
    s.wait_for(
        &format!("{iqn} gone from discovery"),
        Duration::from_secs(5),
        || Ok((!discover(portal)?.contains(&iqn)).then_some(())),
    )
    .context("the agent still serves a Target deleted with skip-flush while it was reachable")
}

/// Node-c's agent Lease, as this test plays it: endpoint on node-c's address (nothing answers),
/// renewed at `renewed` (RFC 3339, on a clock far from ours).
fn fake_lease(s: &Spindle, renewed: &str) -> Result<()> {
    let ip =
        s.rt.portal("node-a")?
            .ip()
            .to_string()
            .rsplit_once('.')
            .map(|(base, _)| format!("{base}.250"))
            .context("IPv4 portal")?;
    let yaml = format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: node-c\n  \
         namespace: {AGENT_NS}\n  labels: {{{label}: \"true\"}}\n  annotations:\n    \
         {endpoint}: \"{ip}:9443\"\n    {portal}: \"{ip}:3260\"\nspec:\n  holderIdentity: \
         node-c\n  leaseDurationSeconds: {secs}\n  acquireTime: \"2020-01-01T00:00:00.000000Z\"\n  \
         renewTime: \"{renewed}\"\n",
        label = agent_lease::AGENT_LABEL,
        endpoint = agent_lease::API_ENDPOINT_ANNOTATION,
        portal = agent_lease::ISCSI_PORTAL_ANNOTATION,
        secs = agent_lease::DURATION_SECONDS,
    );
    s.apply(AGENT_NS, &yaml)
}

/// A MicroTime `offset_s` seconds from now (wall clock of this machine).
fn micro_time(offset_s: i64) -> Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let t = i64::try_from(now)? + offset_s;
    let out = initiator::run_ok(std::process::Command::new("date").args([
        "-u",
        "-d",
        &format!("@{t}"),
        "+%Y-%m-%dT%H:%M:%S.000000Z",
    ]))?;
    Ok(out.trim().to_owned())
}

fn agent_reachable(s: &Spindle, ns: &str, name: &str) -> Result<Option<String>> {
    Ok(s.get("device", ns, name)?
        .and_then(|o| condition(&o, "AgentReachable"))
        .map(|c| c.status))
}

fn reachability_under_skew(s: &Spindle, ns: &str) -> Result<()> {
    const HOUR: i64 = 3600;
    s.apply(ns, &device_yaml("c0", "node-c", 16 * MIB, ""))?;
    let result = (|| -> Result<()> {
        // Renewing every 3 s, on a clock an hour behind: reachable.
        fake_lease(s, &micro_time(-HOUR)?)?;
        let stop = AtomicBool::new(false);
        let (held, renewed) = std::thread::scope(|scope| {
            let renewer = scope.spawn(|| -> Result<()> {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(3));
                    i += 3;
                    let patch = format!(
                        "{{\"spec\":{{\"renewTime\":\"{}\"}}}}",
                        micro_time(-HOUR + i)?
                    );
                    s.kubectl(&[
                        "patch",
                        "lease",
                        "-n",
                        AGENT_NS,
                        "node-c",
                        "--type=merge",
                        "-p",
                        &patch,
                    ])?;
                }
                Ok(())
            });
            let held = s
                .wait_condition("device", ns, "c0", "AgentReachable", "True", READY)
                .and_then(|_| {
                    // Still reachable a whole lease duration later (renewals keep coming).
                    std::thread::sleep(Duration::from_secs(20));
                    match agent_reachable(s, ns, "c0")? {
                        Some(s) if s == "True" => Ok(()),
                        other => bail!("AgentReachable went {other:?} while the Lease was renewed"),
                    }
                });
            stop.store(true, Ordering::Relaxed);
            let renewed = renewer
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the renewer panicked")));
            (held, renewed)
        });
        held.context("a Lease renewed on a clock an hour behind")?;
        renewed?;
        // No longer renewed, stamped an hour ahead: unreachable once the duration passed.
        fake_lease(s, &micro_time(HOUR)?)?;
        let started = Instant::now();
        s.wait_condition(
            "device",
            ns,
            "c0",
            "AgentReachable",
            "False",
            Duration::from_secs(40),
        )
        .context("a Lease stamped an hour ahead but no longer renewed")?;
        let took = started.elapsed();
        ensure!(
            took >= Duration::from_secs(10),
            "unreachable after only {took:?}: the Lease duration is 15 s"
        );
        Ok(())
    })();
    // Node-c has no agent again, whatever happened.
    let _ = s.kubectl(&[
        "delete",
        "lease",
        "-n",
        AGENT_NS,
        "node-c",
        "--ignore-not-found",
    ]);
    result
}
