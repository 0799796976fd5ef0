//! Tables of cluster snapshots and what the agents should be told.

use super::*;
use crate::agents::LeaseView;
use serde_json::json;
use spindle_crds::ReclaimPolicy;

mod chap;

fn device(name: &str, node: &str) -> Device {
    serde_json::from_value(json!({
        "apiVersion": "spindle.dev/v1alpha1", "kind": "Device",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "generation": 3},
        "spec": {"nodeName": node, "source": {"file": {"path": format!("{name}.img"), "sizeBytes": 1048576}}},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Applied", "message": "ok"}],
                   "capacityBytes": 1048576}
    }))
    .expect("device")
}

fn not_ready(mut d: Device) -> Device {
    if let Some(s) = d.status.as_mut() {
        s.conditions[0].status = ConditionStatus::False;
        s.conditions[0].message = "the agent of node \"a\": refused".into();
        s.capacity_bytes = None;
    }
    d
}

/// Ready=False NoSpace: a growth the node had no room for; the old size is still served.
fn no_space(mut d: Device) -> Device {
    if let Some(s) = d.status.as_mut() {
        s.conditions[0].status = ConditionStatus::False;
        s.conditions[0].reason = reason::NO_SPACE.into();
    }
    d
}

/// Ready=False because the agent could not be called at the Device's last reconcile.
fn agent_was_away(mut d: Device, why: &str) -> Device {
    if let Some(s) = d.status.as_mut() {
        s.conditions[0].status = ConditionStatus::False;
        s.conditions[0].reason = why.into();
    }
    d
}

fn deleting(mut d: Device, flushed: bool) -> Device {
    d.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-30T10:00:00Z".parse().expect("time"),
    ));
    if flushed && let Some(s) = d.status.as_mut() {
        s.conditions.push(spindle_crds::Condition {
            type_: "Flushed".into(),
            status: ConditionStatus::True,
            reason: "FlushAcknowledged".into(),
            message: String::new(),
            last_transition_time: None,
            observed_generation: None,
        });
    }
    d
}

fn target(name: &str, created: &str, luns: &[(u64, &str)]) -> Target {
    let luns: Vec<_> = luns
        .iter()
        .map(|(l, d)| json!({"lun": l, "deviceRef": d}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "spindle.dev/v1alpha1", "kind": "Target",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "generation": 2,
                     "creationTimestamp": created},
        "spec": {"luns": luns, "acl": {"allowAll": true}}
    }))
    .expect("target")
}

fn agents(entries: &[(&str, bool, Option<bool>)]) -> Agents {
    entries
        .iter()
        .map(|(node, exists, lease)| {
            (
                (*node).to_owned(),
                AgentView {
                    node_exists: *exists,
                    lease: lease.map(|reachable| LeaseView {
                        endpoint: format!("{node}:9443"),
                        portal: format!("{node}:3260"),
                        reachable,
                        expires: "2026-11-30T10:00:15Z".into(),
                        acquired: "2026-11-30T09:00:00Z".into(),
                        api_key: String::new(),
                    }),
                },
            )
        })
        .collect()
}

fn healthy() -> Agents {
    agents(&[("a", true, Some(true)), ("b", true, Some(true))])
}

fn secret(pairs: &[(&str, &str)]) -> ChapInput {
    ChapInput::Secret(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect(),
    )
}

#[test]
fn device_request_carries_every_field() {
    let mut d = device("d0", "a");
    d.spec.read_only = true;
    d.spec.direct_io = true;
    d.spec.thin_provisioning = true;
    d.spec.block_size = 4096;
    d.spec.write_cache = WriteCache::Writethrough;
    d.spec.reclaim_policy = ReclaimPolicy::Retain;
    let r = device_request(&d);
    let meta = r.meta.expect("meta");
    assert_eq!(
        (
            meta.namespace.as_str(),
            meta.name.as_str(),
            meta.uid.as_str(),
            meta.generation
        ),
        ("ns", "d0", "uid-d0", 3)
    );
    let s = r.spec.expect("spec");
    assert_eq!(
        s.source,
        Some(api::device_spec::Source::File(api::FileSource {
            path: "d0.img".into(),
            size_bytes: 1048576
        }))
    );
    assert_eq!(s.block_size, 4096);
    assert!(s.read_only && s.direct_io && s.thin_provisioning);
    assert_eq!(s.write_cache(), api::WriteCache::Writethrough);
    assert_eq!(s.reclaim_policy(), api::ReclaimPolicy::Retain);

    d.spec.source.file = None;
    d.spec.source.block = Some(spindle_crds::BlockSource {
        path: "/dev/loop7".into(),
    });
    assert_eq!(
        device_request(&d).spec.expect("spec").source,
        Some(api::device_spec::Source::Block(api::BlockSource {
            path: "/dev/loop7".into()
        }))
    );
}

#[test]
fn a_device_served_before_is_asked_for_with_its_naa() {
    let mut d = device("d0", "a");
    assert_eq!(
        device_request(&d).served_naa,
        "",
        "never served: may be created"
    );
    d.status.as_mut().expect("status").naa = Some("3a1b2c3d4e5f6071".into());
    assert_eq!(
        device_request(&d).served_naa,
        "3a1b2c3d4e5f6071",
        "served before: its store must exist"
    );
}

#[test]
fn device_goes_to_the_agent_of_its_node() {
    // (agents, expected reason or None when the request is made)
    let cases: [(Agents, Option<&str>); 4] = [
        (healthy(), None),
        (
            agents(&[("a", true, Some(false))]),
            Some(reason::AGENT_UNREACHABLE),
        ),
        (agents(&[("a", true, None)]), Some(reason::NO_AGENT)),
        (agents(&[]), Some(reason::NODE_NOT_FOUND)),
    ];
    for (agents, want) in cases {
        let plan = plan_device(&device("d0", "a"), &agents);
        assert_eq!(plan.problems.first().map(|p| p.reason), want, "{agents:?}");
        assert_eq!(plan.request.is_some(), want.is_none());
    }
    let plan = plan_device(&device("d0", "zz"), &agents(&[]));
    assert!(
        plan.problems[0]
            .message
            .contains("spec.nodeName: node \"zz\" does not exist"),
        "{:?}",
        plan.problems
    );
    let plan = plan_device(&device("d0", "a"), &agents(&[("a", true, None)]));
    assert!(plan.problems[0].message.contains("has no Spindle agent"));
}

/// One row: the Target's namespace (`devices`, other `targets`), the agents and the CHAP input;
/// what is expected: node, mapped LUNs (None: no call) and problem reasons in order.
struct Row {
    name: &'static str,
    target: Target,
    devices: Vec<Device>,
    others: Vec<Target>,
    agents: Agents,
    chap: ChapInput,
    tenancy: Tenancy,
    node: Option<&'static str>,
    luns: Option<Vec<u64>>,
    reasons: Vec<&'static str>,
}

fn row(name: &'static str, target: Target, devices: Vec<Device>) -> Row {
    Row {
        name,
        target,
        devices,
        others: Vec::new(),
        agents: healthy(),
        chap: ChapInput::NotUsed,
        tenancy: Tenancy::default(),
        node: Some("a"),
        luns: Some(vec![0]),
        reasons: Vec::new(),
    }
}

fn with_name(mut t: Target, iqn: Option<&str>, port: u16) -> Target {
    t.spec.iqn = iqn.map(str::to_owned);
    t.spec.port = port;
    t
}

fn t1() -> Target {
    target("t1", "2026-11-30T09:00:00Z", &[(0, "d0")])
}

fn with_chap(mut t: Target, mutual: bool) -> Target {
    t.spec.chap = Some(spindle_crds::ChapSpec {
        secret_ref: "chap".into(),
        mutual,
        algorithms: spindle_crds::chap::ChapAlgorithm::default_allowed(),
    });
    t
}

#[test]
fn target_plans() {
    let rows = vec![
        row("one LUN, all well", t1(), vec![device("d0", "a")]),
        Row {
            luns: Some(vec![0, 1]),
            ..row(
                "two LUNs on one node",
                target("t1", "2026-11-30T09:00:00Z", &[(0, "d0"), (1, "d1")]),
                vec![device("d0", "a"), device("d1", "a")],
            )
        },
        Row {
            node: None,
            luns: None,
            reasons: vec![reason::DEVICE_NOT_FOUND],
            ..row("missing Device", t1(), vec![])
        },
        Row {
            reasons: vec![reason::DEVICE_NOT_FOUND],
            ..row(
                "missing Device among good ones: the rest is served",
                target("t1", "2026-11-30T09:00:00Z", &[(0, "d0"), (1, "nope")]),
                vec![device("d0", "a")],
            )
        },
        Row {
            reasons: vec![reason::DEVICE_ON_OTHER_NODE],
            ..row(
                "Device on another node",
                target("t1", "2026-11-30T09:00:00Z", &[(0, "d0"), (1, "d1")]),
                vec![device("d0", "a"), device("d1", "b")],
            )
        },
        Row {
            luns: None,
            reasons: vec![reason::NO_AGENT],
            ..Row {
                agents: agents(&[("a", true, None)]),
                ..row("node without an agent", t1(), vec![device("d0", "a")])
            }
        },
        Row {
            luns: None,
            reasons: vec![reason::AGENT_UNREACHABLE],
            ..Row {
                agents: agents(&[("a", true, Some(false))]),
                ..row("agent unreachable", t1(), vec![device("d0", "a")])
            }
        },
        Row {
            luns: Some(vec![]),
            reasons: vec![reason::DEVICE_NOT_READY],
            ..row("Device not ready", t1(), vec![not_ready(device("d0", "a"))])
        },
        row(
            "Device that could not grow (NoSpace): its LUN stays mapped at the old size",
            t1(),
            vec![no_space(device("d0", "a"))],
        ),
        Row {
            luns: Some(vec![]),
            reasons: vec![reason::DEVICE_NOT_READY],
            ..row(
                "NoSpace on a Device never served: not mapped",
                t1(),
                vec![not_ready(no_space(device("d0", "a")))],
            )
        },
        row(
            "Device served, its agent unreachable at its last reconcile: its LUN stays mapped",
            t1(),
            vec![agent_was_away(device("d0", "a"), reason::AGENT_UNREACHABLE)],
        ),
        row(
            "Device served, its agent unverified at its last reconcile: its LUN stays mapped",
            t1(),
            vec![agent_was_away(device("d0", "a"), reason::AGENT_UNVERIFIED)],
        ),
        Row {
            luns: Some(vec![]),
            reasons: vec![reason::DEVICE_NOT_READY],
            ..row(
                "Device never served, its agent unreachable: not mapped",
                t1(),
                vec![not_ready(agent_was_away(
                    device("d0", "a"),
                    reason::AGENT_UNREACHABLE,
                ))],
            )
        },
        Row {
            reasons: vec![reason::DEVICE_DELETING],
            ..row(
                "Device draining: its LUN stays mapped (fenced)",
                t1(),
                vec![deleting(device("d0", "a"), false)],
            )
        },
        Row {
            luns: Some(vec![]),
            reasons: vec![reason::DEVICE_DELETING],
            ..row(
                "Device flushed: its LUN goes",
                t1(),
                vec![deleting(device("d0", "a"), true)],
            )
        },
        Row {
            luns: Some(vec![]),
            reasons: vec![reason::DEVICE_CLAIMED],
            others: vec![target("t0", "2026-11-30T08:00:00Z", &[(0, "d0")])],
            ..row(
                "an older Target owns the Device",
                t1(),
                vec![device("d0", "a")],
            )
        },
        Row {
            others: vec![target("t2", "2026-11-30T10:00:00Z", &[(0, "d0")])],
            ..row(
                "a newer Target is refused, not this one",
                t1(),
                vec![device("d0", "a")],
            )
        },
        Row {
            node: None,
            luns: None,
            reasons: vec![reason::NO_LUNS],
            ..row("no LUNs", target("t1", "2026-11-30T09:00:00Z", &[]), vec![])
        },
        Row {
            chap: ChapInput::Missing,
            luns: None,
            reasons: vec![reason::CHAP_SECRET_NOT_FOUND],
            ..row(
                "CHAP Secret missing",
                with_chap(t1(), false),
                vec![device("d0", "a")],
            )
        },
        Row {
            agents: agents(&[("a", true, None)]),
            chap: ChapInput::Missing,
            luns: None,
            reasons: vec![reason::NO_AGENT, reason::CHAP_SECRET_NOT_FOUND],
            ..row(
                "no agent and no CHAP Secret: both named",
                with_chap(t1(), false),
                vec![device("d0", "a")],
            )
        },
        Row {
            chap: secret(&[("username", "u"), ("password", "short")]),
            luns: None,
            reasons: vec![reason::CHAP_SECRET_INVALID],
            ..row(
                "CHAP secret too short",
                with_chap(t1(), false),
                vec![device("d0", "a")],
            )
        },
        Row {
            chap: secret(&[("username", "u"), ("password", &"x".repeat(256))]),
            luns: None,
            reasons: vec![reason::CHAP_SECRET_INVALID],
            ..row(
                "CHAP secret too long",
                with_chap(t1(), false),
                vec![device("d0", "a")],
            )
        },
        Row {
            chap: secret(&[("username", "u"), ("password", "0123456789ab")]),
            ..row(
                "CHAP secret of 12 bytes",
                with_chap(t1(), false),
                vec![device("d0", "a")],
            )
        },
        Row {
            chap: secret(&[("username", "u"), ("password", "0123456789ab")]),
            luns: None,
            reasons: vec![reason::CHAP_SECRET_INVALID],
            ..row(
                "mutual CHAP without the target's keys",
                with_chap(t1(), true),
                vec![device("d0", "a")],
            )
        },
        Row {
            chap: secret(&[
                ("username", "u"),
                ("password", "0123456789ab"),
                ("mutualUsername", "t"),
                ("mutualPassword", "0123456789abcdef"),
            ]),
            ..row(
                "mutual CHAP",
                with_chap(t1(), true),
                vec![device("d0", "a")],
            )
        },
        Row {
            luns: None,
            reasons: vec![reason::IQN_NOT_ALLOWED],
            ..row(
                "another namespace's IQN: not served",
                with_name(t1(), Some("iqn.2026-11.dev.spindle:default.db"), 3260),
                vec![device("d0", "a")],
            )
        },
        Row {
            luns: None,
            reasons: vec![reason::IQN_NOT_ALLOWED],
            ..row(
                "another authority's IQN without a grant: not served",
                with_name(t1(), Some("iqn.2001-04.com.example:db"), 3260),
                vec![device("d0", "a")],
            )
        },
        Row {
            tenancy: Tenancy::new(
                [("ns".to_owned(), "iqn.2001-04.com.example:".to_owned())],
                crate::tenancy::DEFAULT_PORTS,
            )
            .expect("grant"),
            ..row(
                "an IQN under a prefix granted to the namespace",
                with_name(t1(), Some("iqn.2001-04.com.example:db"), 3260),
                vec![device("d0", "a")],
            )
        },
        Row {
            ..row(
                "an IQN of its own namespace, another port of the range",
                with_name(t1(), Some("iqn.2026-11.dev.spindle:ns.other"), 3269),
                vec![device("d0", "a")],
            )
        },
        Row {
            luns: None,
            reasons: vec![reason::PORT_NOT_ALLOWED],
            ..row(
                "a port outside the range: not served",
                with_name(t1(), None, 3270),
                vec![device("d0", "a")],
            )
        },
        Row {
            agents: agents(&[("a", true, Some(false))]),
            luns: None,
            reasons: vec![
                reason::IQN_NOT_ALLOWED,
                reason::PORT_NOT_ALLOWED,
                reason::AGENT_UNREACHABLE,
            ],
            ..row(
                "refusals come first, other problems still named",
                with_name(t1(), Some("iqn.2026-11.dev.spindle:nsx.t1"), 22),
                vec![device("d0", "a")],
            )
        },
    ];
    for r in rows {
        let devices: Vec<&Device> = r.devices.iter().collect();
        let mut targets: Vec<&Target> = r.others.iter().collect();
        targets.push(&r.target);
        let world = TargetWorld {
            devices: &devices,
            targets: &targets,
            agents: &r.agents,
            chap: &r.chap,
            tenancy: &r.tenancy,
        };
        let plan = plan_target(&r.target, &world);
        let reasons: Vec<&str> = plan.problems.iter().map(|p| p.reason).collect();
        assert_eq!(reasons, r.reasons, "{}: {:?}", r.name, plan.problems);
        let refused = reasons
            .iter()
            .any(|r| [reason::IQN_NOT_ALLOWED, reason::PORT_NOT_ALLOWED].contains(r));
        assert_eq!(plan.withdraw, refused, "{}", r.name);
        assert_eq!(plan.node.as_deref(), r.node, "{}", r.name);
        let luns = plan.request.as_ref().map(|q| {
            q.spec
                .as_ref()
                .map(|s| s.luns.iter().map(|l| l.lun).collect::<Vec<_>>())
                .unwrap_or_default()
        });
        assert_eq!(luns, r.luns, "{}: {:?}", r.name, plan.problems);
        for p in &plan.problems {
            assert!(!p.message.is_empty(), "{}", r.name);
        }
    }
}

#[test]
fn target_request_carries_the_spec_and_resolved_references() {
    let mut t = with_chap(t1(), false);
    if let Some(c) = t.spec.chap.as_mut() {
        c.algorithms = vec![spindle_crds::chap::ChapAlgorithm::Sha256];
    }
    t.spec.iscsi.header_digest = spindle_crds::Digest::Crc32c;
    t.spec.iscsi.max_burst_length = 65536;
    t.spec.port = 3261;
    t.spec.qos = Some(spindle_crds::TargetQos {
        write_iops: Some(300),
        burst_seconds: Some(0),
        ..Default::default()
    });
    let d = device("d0", "a");
    let chap = secret(&[("username", "alice"), ("password", "0123456789abcd")]);
    let agents = healthy();
    let world = TargetWorld {
        devices: &[&d],
        targets: &[&t],
        agents: &agents,
        chap: &chap,
        tenancy: &Tenancy::default(),
    };
    let req = plan_target(&t, &world).request.expect("request");
    let s = req.spec.expect("spec");
    assert_eq!(s.iqn, "iqn.2026-11.dev.spindle:ns.t1");
    assert_eq!(s.port, 3261);
    assert_eq!(
        s.luns,
        [api::LunMapping {
            lun: 0,
            device_name: "d0".into(),
            device_uid: "uid-d0".into()
        }]
    );
    assert_eq!(
        s.acl,
        Some(api::Acl {
            allow_all: true,
            initiators: vec![]
        })
    );
    let chap = s.chap.expect("chap");
    assert_eq!(
        chap.initiator.as_ref().map(|c| c.user.as_str()),
        Some("alice")
    );
    assert_eq!(chap.target, None);
    assert_eq!(
        chap.algorithms().collect::<Vec<_>>(),
        [api::ChapAlgorithm::Sha256]
    );
    let p = s.iscsi.expect("iscsi");
    assert_eq!(p.header_digest(), api::Digest::Crc32c);
    assert_eq!(p.data_digest(), api::Digest::Optional);
    assert_eq!(p.max_burst_length, 65536);
    let q = s.qos.expect("qos");
    assert_eq!((q.write_iops, q.burst_seconds), (Some(300), Some(0)));
    assert_eq!((q.read_iops, q.weight), (None, None));
    assert_eq!(
        crate::desired::qos_from_api(q),
        t.spec.qos.clone().unwrap(),
        "what the agent reports back is the spec's QoS"
    );
    assert_eq!(req.meta.map(|m| m.uid), Some("uid-t1".into()));
}

#[test]
fn problems_say_what_to_change() {
    let t = target(
        "t1",
        "2026-11-30T09:00:00Z",
        &[(0, "d0"), (3, "gone"), (5, "far")],
    );
    let (d0, far) = (device("d0", "a"), device("far", "b"));
    let other = target("t0", "2026-11-30T08:00:00Z", &[(0, "d0")]);
    let agents = healthy();
    let world = TargetWorld {
        devices: &[&d0, &far],
        targets: &[&t, &other],
        agents: &agents,
        chap: &ChapInput::NotUsed,
        tenancy: &Tenancy::default(),
    };
    let plan = plan_target(&t, &world);
    assert_eq!(
        plan.claimed_by,
        ["ns/t0".to_owned()].into(),
        "the Target that holds d0, by type, not by message"
    );
    let msgs: Vec<String> = plan.problems.into_iter().map(|p| p.message).collect();
    assert_eq!(
        msgs,
        [
            "spec.luns[0].deviceRef: Device \"d0\" is already exported by Target ns/t0; a Device belongs to one Target: remove it from one of them",
            "spec.luns[1].deviceRef: Device \"gone\" not found in namespace ns; create it or fix the reference",
            "spec.luns[2].deviceRef: Device \"far\" is on node \"b\" but this Target runs on \"a\"; all Devices of a Target must be on one node",
        ]
    );
}

#[test]
fn a_placed_target_stays_on_its_node() {
    let mut t = target("t1", "2026-11-30T09:00:00Z", &[(0, "db"), (1, "da")]);
    t.status = Some(spindle_crds::TargetStatus {
        node: Some("a".into()),
        ..Default::default()
    });
    let (db, da) = (device("db", "b"), device("da", "a"));
    let agents = healthy();
    let world = TargetWorld {
        devices: &[&db, &da],
        targets: &[&t],
        agents: &agents,
        chap: &ChapInput::NotUsed,
        tenancy: &Tenancy::default(),
    };
    let plan = plan_target(&t, &world);
    assert_eq!(plan.node.as_deref(), Some("a"));
    assert_eq!(plan.problems[0].reason, reason::DEVICE_ON_OTHER_NODE);
    // Without a placement, the first LUN decides.
    let mut unplaced = t.clone();
    unplaced.status = None;
    let world = TargetWorld {
        targets: &[&unplaced],
        ..world
    };
    assert_eq!(plan_target(&unplaced, &world).node.as_deref(), Some("b"));
}

#[test]
fn oldest_target_owns_a_device_ties_by_name() {
    let d = device("d0", "a");
    let a = target("a", "2026-11-30T09:00:00Z", &[(0, "d0")]);
    let b = target("b", "2026-11-30T09:00:00Z", &[(0, "d0")]);
    let old = target("z", "2026-11-30T08:00:00Z", &[(1, "d0")]);
    let unrelated = target("c", "2026-11-30T07:00:00Z", &[(0, "other")]);
    let name = |t: Option<&Target>| t.and_then(|t| t.metadata.name.clone());
    assert_eq!(name(device_owner(&d, &[&b, &a])), Some("a".into()));
    assert_eq!(name(device_owner(&d, &[&b, &a, &old])), Some("z".into()));
    assert_eq!(name(device_owner(&d, &[&unrelated])), None);
}
