//! What the agents should be told, as pure functions of a snapshot of the cluster: no I/O, no
//! clock. Each function also names every problem that keeps an object from being fully served,
//! as a [`Problem`] whose message says what to change. Table-tested below.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::ByteString;
use spindle_agent_api::v1 as api;
use spindle_crds::{ConditionStatus, Device, Digest, ReservationPersistence, Target, WriteCache};

use crate::agents::AgentView;
use crate::conditions::{Problem, condition_is, kind, reason};
use crate::objects::{key_of, object_meta, reclaim_policy};
use crate::tenancy::Tenancy;

use spindle_crds::chap::{
    MUTUAL_SECRET_KEY as CHAP_MUTUAL_SECRET_KEY, MUTUAL_USER_KEY as CHAP_MUTUAL_USER_KEY,
    SECRET_KEY as CHAP_SECRET_KEY, USER_KEY as CHAP_USER_KEY,
};

/// The agents known to the operator, by node name.
pub type Agents = BTreeMap<String, AgentView>;

/// `ApplyDevice` for a Device, field for field.
pub fn device_request(d: &Device) -> api::ApplyDeviceRequest {
    let s = &d.spec;
    let source = match (&s.source.file, &s.source.block) {
        (Some(f), _) => Some(api::device_spec::Source::File(api::FileSource {
            path: f.path.clone(),
            size_bytes: f.size_bytes,
        })),
        (None, Some(b)) => Some(api::device_spec::Source::Block(api::BlockSource {
            path: b.path.clone(),
        })),
        (None, None) => None,
    };
    let write_cache = match s.write_cache {
        WriteCache::Writeback => api::WriteCache::Writeback,
        WriteCache::Writethrough => api::WriteCache::Writethrough,
    };
    api::ApplyDeviceRequest {
        meta: Some(object_meta(d)),
        spec: Some(api::DeviceSpec {
            source,
            block_size: s.block_size,
            read_only: s.read_only,
            write_cache: write_cache.into(),
            thin_provisioning: s.thin_provisioning,
            direct_io: s.direct_io,
            physical_block_size: s.physical_block_size.unwrap_or(0),
            reclaim_policy: reclaim_policy(s.reclaim_policy).into(),
            reservation_persistence: match s.reservation_persistence {
                ReservationPersistence::Initiator => api::ReservationPersistence::Initiator,
                ReservationPersistence::Always => api::ReservationPersistence::Always,
            }
            .into(),
            // A clone's snapshot is resolved by the reconcile (it needs the snapshot's uid).
            snapshot: None,
        }),
        // The NAA the Device was served with (recorded in its status once the agent served
        // it): its store must exist from then on, never be created blank.
        served_naa: d
            .status
            .as_ref()
            .and_then(|st| st.naa.clone())
            .unwrap_or_default(),
    }
}

/// What to do for a Device that is not being deleted.
#[derive(Clone, Debug, PartialEq)]
pub struct DevicePlan {
    /// The call to make; `None` when the agent cannot be called (see `problems`).
    pub request: Option<api::ApplyDeviceRequest>,
    /// Why the Device cannot be served now.
    pub problems: Vec<Problem>,
}

/// Plans a Device: it goes to the agent of `spec.nodeName`, when there is one and it is reachable.
pub fn plan_device(d: &Device, agents: &Agents) -> DevicePlan {
    let node = &d.spec.node_name;
    match node_problem(node, agents.get(node), "spec.nodeName") {
        Some(p) => DevicePlan {
            request: None,
            problems: vec![p],
        },
        None => DevicePlan {
            request: Some(device_request(d)),
            problems: Vec::new(),
        },
    }
}

/// Why the agent of `node` cannot be called, if it cannot. `field` names where the node came from.
pub fn node_problem(node: &str, agent: Option<&AgentView>, field: &str) -> Option<Problem> {
    let agent = agent.cloned().unwrap_or_default();
    match &agent.lease {
        None if !agent.node_exists => Some(Problem::new(
            reason::NODE_NOT_FOUND,
            format!(
                "{field}: node {node:?} does not exist and no Spindle agent registered for it; \
                 fix {field} or start the agent on that node"
            ),
        )),
        None => Some(Problem::new(
            reason::NO_AGENT,
            format!(
                "node {node:?} has no Spindle agent (no agent Lease named {node:?}); run the \
                 agent there (the chart's DaemonSet) or fix {field}"
            ),
        )),
        Some(lease) if !lease.reachable => Some(Problem::new(
            reason::AGENT_UNREACHABLE,
            format!(
                "the agent of node {node:?} is unreachable: its Lease expired at {}",
                lease.expires
            ),
        )),
        Some(_) => None,
    }
}

/// The CHAP Secret of a Target, as read by the controller.
#[derive(Clone, Debug, PartialEq)]
pub enum ChapInput {
    /// `spec.chap` is not set.
    NotUsed,
    /// `spec.chap.secretRef` names a Secret that does not exist.
    Missing,
    /// The Secret's data.
    Secret(BTreeMap<String, ByteString>),
}

/// CHAP credentials from a Secret's data, or the problem with it.
pub fn chap_credentials(
    secret_name: &str,
    data: &BTreeMap<String, ByteString>,
    mutual: bool,
) -> Result<api::Chap, Problem> {
    let field = "spec.chap.secretRef";
    let value = |key: &str, secret: bool| -> Result<String, Problem> {
        let why = if mutual && key.starts_with("mutual") {
            " (spec.chap.mutual is true)"
        } else {
            ""
        };
        let bytes = data.get(key).map(|b| b.0.as_slice()).unwrap_or_default();
        if bytes.is_empty() {
            return Err(Problem::new(
                reason::CHAP_SECRET_INVALID,
                format!("{field}: Secret {secret_name:?} has no key {key:?}{why}; add it"),
            ));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| {
            Problem::new(
                reason::CHAP_SECRET_INVALID,
                format!("{field}: Secret {secret_name:?} key {key:?} is not UTF-8 text"),
            )
        })?;
        if let Some(p) = secret
            .then(|| spindle_crds::chap::secret_length_problem(bytes.len()))
            .flatten()
        {
            return Err(Problem::new(
                reason::CHAP_SECRET_INVALID,
                format!("{field}: Secret {secret_name:?} key {key:?} {p}"),
            ));
        }
        Ok(text.to_owned())
    };
    let initiator = api::ChapCredentials {
        user: value(CHAP_USER_KEY, false)?,
        secret: value(CHAP_SECRET_KEY, true)?,
    };
    let target = if mutual {
        let target = api::ChapCredentials {
            user: value(CHAP_MUTUAL_USER_KEY, false)?,
            secret: value(CHAP_MUTUAL_SECRET_KEY, true)?,
        };
        if let Some(p) = spindle_crds::chap::mutual_problem(&initiator.secret, &target.secret) {
            return Err(Problem::new(
                reason::CHAP_SECRET_INVALID,
                format!("{field}: Secret {secret_name:?}: {p}"),
            ));
        }
        Some(target)
    } else {
        None
    };
    Ok(api::Chap {
        initiator: Some(initiator),
        target,
        algorithms: Vec::new(),
    })
}

/// The Target (`namespace/name`) that owns `device` among `targets`: the oldest Target whose
/// LUNs name it (ties: by name). A Device belongs to one Target; the others are refused.
pub fn device_owner<'a>(device: &Device, targets: &[&'a Target]) -> Option<&'a Target> {
    let ns = device.metadata.namespace.as_deref();
    let name = device.metadata.name.as_deref()?;
    targets
        .iter()
        .copied()
        .filter(|t| t.metadata.namespace.as_deref() == ns)
        .filter(|t| t.spec.luns.iter().any(|l| l.device_ref == name))
        .min_by(|a, b| {
            let age = |t: &Target| t.metadata.creation_timestamp.as_ref().map(|c| c.0);
            age(a)
                .cmp(&age(b))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        })
}

/// What to do for a Target that is not being deleted.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetPlan {
    /// The node the Target runs on: that of its Devices.
    pub node: Option<String>,
    /// The call to make; `None` when nothing can be applied now (see `problems`).
    pub request: Option<api::ApplyTargetRequest>,
    /// Why the Target is not fully served (it may still serve its other LUNs).
    pub problems: Vec<Problem>,
    /// The Target names an IQN or port its namespace may not use: no agent may serve it (the
    /// caller removes it from the node where it ran).
    pub withdraw: bool,
    /// The Targets (`namespace/name`) that export Devices this Target names and was refused.
    pub claimed_by: BTreeSet<String>,
}

/// The cluster as one Target's planning sees it.
pub struct TargetWorld<'a> {
    /// Devices of the Target's namespace.
    pub devices: &'a [&'a Device],
    /// Targets of the Target's namespace (the Target itself included), for Device ownership.
    pub targets: &'a [&'a Target],
    /// Agents by node.
    pub agents: &'a Agents,
    /// The CHAP Secret.
    pub chap: &'a ChapInput,
    /// Which IQNs and ports the Target's namespace may use.
    pub tenancy: &'a Tenancy,
}

/// Plans a Target: picks its node, maps every LUN whose Device can be served there, and names
/// every other LUN's problem. LUNs of a Device being deleted stay mapped (the agent keeps them
/// fenced) until the Device is flushed. A Target naming an IQN or port its namespace may not use
/// is not served at all (those problems come first).
pub fn plan_target(t: &Target, world: &TargetWorld<'_>) -> TargetPlan {
    let refused = world.tenancy.problems(t);
    let mut plan = plan_served_target(t, world);
    if !refused.is_empty() {
        plan.request = None;
        plan.withdraw = true;
        plan.problems.splice(0..0, refused);
    }
    plan
}

fn plan_served_target(t: &Target, world: &TargetWorld<'_>) -> TargetPlan {
    let mut problems = Vec::new();
    let ns = t.metadata.namespace.as_deref().unwrap_or_default();
    let find = |name: &str| {
        world
            .devices
            .iter()
            .copied()
            .find(|d| d.metadata.name.as_deref() == Some(name))
    };
    if t.spec.luns.is_empty() {
        problems.push(Problem::new(
            reason::NO_LUNS,
            "spec.luns is empty: a Target runs on the node of its Devices; add a LUN",
        ));
    }
    let node = pick_node(t, &find);
    let mut luns = Vec::new();
    let mut claimed_by = BTreeSet::new();
    for (i, lun) in t.spec.luns.iter().enumerate() {
        let field = format!("spec.luns[{i}].deviceRef");
        let Some(device) = find(&lun.device_ref) else {
            problems.push(Problem::new(
                reason::DEVICE_NOT_FOUND,
                format!(
                    "{field}: Device {:?} not found in namespace {ns}; create it or fix the reference",
                    lun.device_ref
                ),
            ));
            continue;
        };
        match lun_problem(t, lun.lun, &field, device, node.as_deref(), world.targets) {
            LunVerdict::Map(p) => {
                problems.extend(p);
                luns.push(api::LunMapping {
                    lun: lun.lun,
                    device_name: lun.device_ref.clone(),
                    device_uid: device.metadata.uid.clone().unwrap_or_default(),
                });
            }
            LunVerdict::Skip(p) => problems.push(p),
            LunVerdict::Claimed { owner, problem } => {
                problems.push(problem);
                claimed_by.insert(owner);
            }
        }
    }
    let node_blocked = match &node {
        None => true,
        Some(n) => node_problem(n, world.agents.get(n), "the node of its Devices")
            .map(|p| problems.push(p))
            .is_some(),
    };
    // A CHAP problem blocks the call too: a Target is never served without the CHAP it asks for.
    let chap = match chap_of(t, world.chap, ns) {
        Ok(chap) => chap,
        Err(p) => {
            problems.push(p);
            return TargetPlan {
                node,
                request: None,
                problems,
                withdraw: false,
                claimed_by,
            };
        }
    };
    if node_blocked {
        return TargetPlan {
            node,
            request: None,
            problems,
            withdraw: false,
            claimed_by,
        };
    }
    let request = api::ApplyTargetRequest {
        meta: Some(object_meta(t)),
        spec: Some(api::TargetSpec {
            iqn: t.effective_iqn(),
            port: u32::from(t.spec.port),
            luns,
            acl: Some(api::Acl {
                allow_all: t.spec.acl.allow_all,
                initiators: t.spec.acl.initiators.clone(),
            }),
            chap,
            iscsi: Some(iscsi_params(&t.spec.iscsi)),
            qos: t.spec.qos.as_ref().map(qos_to_api),
        }),
    };
    TargetPlan {
        node,
        request: Some(request),
        problems,
        withdraw: false,
        claimed_by,
    }
}

/// The CHAP credentials a Target asks for (None: no CHAP), or the problem with its Secret.
fn chap_of(t: &Target, input: &ChapInput, ns: &str) -> Result<Option<api::Chap>, Problem> {
    match (&t.spec.chap, input) {
        (None, _) | (_, ChapInput::NotUsed) => Ok(None),
        (Some(c), ChapInput::Missing) => Err(Problem::new(
            reason::CHAP_SECRET_NOT_FOUND,
            format!(
                "spec.chap.secretRef: Secret {:?} not found in namespace {ns}; create it with \
                 keys {CHAP_USER_KEY:?} and {CHAP_SECRET_KEY:?}",
                c.secret_ref
            ),
        )),
        (Some(c), ChapInput::Secret(data)) => {
            let mut chap = chap_credentials(&c.secret_ref, data, c.mutual)?;
            // The proto's enum values are the CHAP_A numbers.
            chap.algorithms = c.algorithms.iter().map(|a| a.code() as i32).collect();
            Ok(Some(chap))
        }
    }
}

/// The node a Target runs on: where it already runs, if one of its Devices is still there;
/// otherwise the node of its first LUN's Device.
fn pick_node<'a>(t: &Target, find: &impl Fn(&str) -> Option<&'a Device>) -> Option<String> {
    let nodes: Vec<&str> = t
        .spec
        .luns
        .iter()
        .filter_map(|l| find(&l.device_ref))
        .map(|d| d.spec.node_name.as_str())
        .collect();
    let current = t.status.as_ref().and_then(|s| s.node.as_deref());
    match current {
        Some(n) if nodes.contains(&n) || nodes.is_empty() => Some(n.to_owned()),
        _ => nodes.first().map(|n| (*n).to_owned()),
    }
}

enum LunVerdict {
    /// Map the LUN (with a problem to report, when the Device is being deleted).
    Map(Option<Problem>),
    /// Leave the LUN out.
    Skip(Problem),
    /// Leave the LUN out: its Device is exported by another Target (`owner`, `namespace/name`).
    Claimed {
        /// The Target that exports the Device.
        owner: String,
        /// What to report.
        problem: Problem,
    },
}

fn lun_problem(
    t: &Target,
    lun: u64,
    field: &str,
    device: &Device,
    node: Option<&str>,
    targets: &[&Target],
) -> LunVerdict {
    let name = device.metadata.name.as_deref().unwrap_or_default();
    if let Some(node) = node
        && device.spec.node_name != node
    {
        return LunVerdict::Skip(Problem::new(
            reason::DEVICE_ON_OTHER_NODE,
            format!(
                "{field}: Device {name:?} is on node {:?} but this Target runs on {node:?}; all \
                 Devices of a Target must be on one node",
                device.spec.node_name
            ),
        ));
    }
    if let Some(owner) = device_owner(device, targets)
        && owner.metadata.uid != t.metadata.uid
    {
        let owner = key_of(owner);
        let problem = Problem::new(
            reason::DEVICE_CLAIMED,
            format!(
                "{field}: Device {name:?} is already exported by Target {owner}; a Device belongs \
                 to one Target: remove it from one of them"
            ),
        );
        return LunVerdict::Claimed { owner, problem };
    }
    if device.metadata.deletion_timestamp.is_some() {
        let flushed = condition_is(
            device_conditions(device),
            kind::FLUSHED,
            ConditionStatus::True,
        );
        let served = device
            .status
            .as_ref()
            .is_some_and(|s| s.capacity_bytes.is_some());
        let p = |what: &str| {
            Problem::new(
                reason::DEVICE_DELETING,
                format!(
                    "LUN {lun} is going away: Device {name:?} {what}; the other LUNs keep serving"
                ),
            )
        };
        return if flushed || !served {
            LunVerdict::Skip(p("is deleted"))
        } else {
            LunVerdict::Map(Some(p("is being deleted (fenced, draining)")))
        };
    }
    if !condition_is(
        device_conditions(device),
        kind::READY,
        ConditionStatus::True,
    ) && !still_served(device)
    {
        let why = device_conditions(device)
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| format!(" ({}; see its Ready condition)", c.reason))
            .unwrap_or_default();
        return LunVerdict::Skip(Problem::new(
            reason::DEVICE_NOT_READY,
            format!("{field}: Device {name:?} is not ready{why}"),
        ));
    }
    LunVerdict::Map(None)
}

/// Ready=False on a Device the agent served, for a reason that does not stop the agent serving
/// it: so its LUN stays mapped. NoSpace: only a growth failed, the old size is served. The agent
/// could not be called or verified when the Device was last reconciled (it restarted, a network
/// blip): the Device's status is only stale, and unmapping the LUN would answer the initiators
/// LOGICAL UNIT NOT SUPPORTED, which makes a Linux initiator take the disk offline. An agent
/// that no longer holds the Device refuses the whole Target call, changing nothing.
fn still_served(d: &Device) -> bool {
    let served = d
        .status
        .as_ref()
        .is_some_and(|s| s.capacity_bytes.is_some());
    served
        && device_conditions(d).iter().any(|c| {
            c.type_ == kind::READY
                && [
                    reason::NO_SPACE,
                    reason::AGENT_UNREACHABLE,
                    reason::AGENT_UNVERIFIED,
                    reason::NO_AGENT,
                ]
                .contains(&c.reason.as_str())
        })
}

fn device_conditions(d: &Device) -> &[spindle_crds::Condition] {
    d.status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default()
}

fn digest(d: Digest) -> api::Digest {
    match d {
        Digest::None => api::Digest::None,
        Digest::Crc32c => api::Digest::Crc32c,
        Digest::Optional => api::Digest::Optional,
    }
}

fn qos_to_api(q: &spindle_crds::TargetQos) -> api::Qos {
    api::Qos {
        weight: q.weight,
        read_iops: q.read_iops,
        write_iops: q.write_iops,
        read_bytes_per_second: q.read_bytes_per_second,
        write_bytes_per_second: q.write_bytes_per_second,
        burst_seconds: q.burst_seconds,
    }
}

/// The QoS an agent reports in force, for the Target's status.
pub fn qos_from_api(q: api::Qos) -> spindle_crds::TargetQos {
    spindle_crds::TargetQos {
        weight: q.weight,
        read_iops: q.read_iops,
        write_iops: q.write_iops,
        read_bytes_per_second: q.read_bytes_per_second,
        write_bytes_per_second: q.write_bytes_per_second,
        burst_seconds: q.burst_seconds,
    }
}

fn iscsi_params(p: &spindle_crds::IscsiParams) -> api::IscsiParams {
    api::IscsiParams {
        max_recv_data_segment_length: p.max_recv_data_segment_length,
        max_burst_length: p.max_burst_length,
        first_burst_length: p.first_burst_length,
        initial_r2t: p.initial_r2t,
        immediate_data: p.immediate_data,
        max_outstanding_r2t: p.max_outstanding_r2t,
        header_digest: digest(p.header_digest).into(),
        data_digest: digest(p.data_digest).into(),
    }
}

#[cfg(test)]
mod tests;
