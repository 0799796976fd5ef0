use std::collections::HashMap;

use super::*;
use crate::iscsi::chap::{ChapAlgorithm, Credentials};
use crate::iscsi::params::DigestKind;

const TARGET: &str = "iqn.2026-11.dev.spindle:default.disk1";
const INITIATOR: &str = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test";
const ISID: [u8; 6] = [0x80, 0x12, 0x34, 0x56, 0x78, 0x9a];
const TSIH: u16 = 0x2a;
const CMD_SN: u32 = 1000;

mod chap;

struct Dir(HashMap<String, TargetAuth>);

impl TargetDirectory for Dir {
    fn lookup(&self, iqn: &str) -> Option<TargetAuth> {
        self.0.get(iqn).cloned()
    }
    fn session_exists(&self, tsih: u16) -> bool {
        tsih == 7
    }
}

fn dir(acl: AclPolicy, chap: Option<ChapSecrets>) -> Dir {
    let auth = TargetAuth {
        acl,
        chap,
        limits: TargetLimits {
            portal_group_tag: 3,
            alias: Some("disk1".into()),
            ..TargetLimits::default()
        },
    };
    Dir(HashMap::from([(TARGET.to_owned(), auth)]))
}

fn open_dir() -> Dir {
    dir(AclPolicy::AllowAll, None)
}

fn secrets(mutual: bool) -> ChapSecrets {
    ChapSecrets {
        initiator: Credentials {
            user: "alice".into(),
            secret: "initiator-secret".into(),
        },
        target: mutual.then(|| Credentials {
            user: "target".into(),
            secret: "target-secret-xx".into(),
        }),
        algorithms: ChapAlgorithm::default_allowed(),
    }
}

fn machine() -> LoginMachine {
    LoginMachine::new(
        LoginConfig {
            cmd_window: 32,
            ..LoginConfig::default()
        },
        TSIH,
    )
}

fn request(transit: bool, csg: Stage, nsg: Stage, keys: &[(&str, &str)]) -> LoginRequest {
    LoginRequest {
        transit,
        cont: false,
        csg,
        nsg,
        version_max: 0,
        version_min: 0,
        isid: ISID,
        tsih: 0,
        itt: 0x77,
        cid: 0,
        cmd_sn: CMD_SN,
        exp_stat_sn: 500,
        data: text::encode(keys),
    }
}

fn identity(session: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("InitiatorName", INITIATOR), ("SessionType", session)];
    if session == "Normal" {
        v.push(("TargetName", TARGET));
    }
    v
}

/// The operational keys libiscsi sends (lib/login.c), in its order.
fn libiscsi_opneg(header_digest: &'static str) -> Vec<(&'static str, &'static str)> {
    crate::iscsi::test_vectors::libiscsi_operational_keys(header_digest)
}

fn keys_of(reply: &LoginReply) -> Pairs {
    text::parse(&reply.response.data).expect("target text parses")
}

fn key(reply: &LoginReply, k: &str) -> Option<String> {
    text::get(&keys_of(reply), k).map(str::to_owned)
}

fn established(reply: &LoginReply) -> &Established {
    match &reply.outcome {
        LoginOutcome::FullFeature(e) => e,
        other => panic!("expected full feature phase, got {other:?}"),
    }
}

fn failed_with(reply: &LoginReply, status: u16) {
    assert_eq!(reply.response.status, status, "{:?}", reply.outcome);
    assert!(
        matches!(&reply.outcome, LoginOutcome::Fail { status: s, .. } if *s == status),
        "{:?}",
        reply.outcome
    );
    assert!(!reply.response.transit);
}

/// Opneg with identity, as libiscsi sends it without CHAP: one PDU, CSG=1 NSG=3 T=1.
fn libiscsi_plain_login(m: &mut LoginMachine, d: &Dir, digest: &'static str) -> LoginReply {
    let mut keys = identity("Normal");
    keys.extend(libiscsi_opneg(digest));
    m.handle(
        &request(true, Stage::Operational, Stage::FullFeature, &keys),
        d,
    )
}

#[test]
fn libiscsi_login_without_auth_reaches_full_feature() {
    let mut m = machine();
    let reply = libiscsi_plain_login(&mut m, &open_dir(), "None,CRC32C");
    let r = &reply.response;
    assert_eq!(r.status, login_status::SUCCESS);
    assert!(r.transit);
    assert_eq!((r.csg, r.nsg), (Stage::Operational, Stage::FullFeature));
    assert_eq!(r.tsih, TSIH);
    assert_eq!(r.isid, ISID);
    assert_eq!(r.itt, 0x77);
    assert_eq!(
        r.sns.stat_sn, 500,
        "first StatSN follows the initiator's ExpStatSN"
    );
    assert_eq!(r.sns.exp_cmd_sn, CMD_SN);
    assert_eq!(r.sns.max_cmd_sn, CMD_SN + 31);
    assert_eq!(key(&reply, "TargetPortalGroupTag").as_deref(), Some("3"));
    assert_eq!(key(&reply, "TargetAlias").as_deref(), Some("disk1"));
    assert_eq!(key(&reply, "HeaderDigest").as_deref(), Some("None"));
    assert_eq!(
        key(&reply, "MaxRecvDataSegmentLength").as_deref(),
        Some("262144")
    );
    let e = established(&reply);
    assert_eq!(e.session_type, SessionType::Normal);
    assert_eq!(e.target_iqn.as_deref(), Some(TARGET));
    assert_eq!(e.initiator_name, INITIATOR);
    assert_eq!((e.isid, e.tsih), (ISID, TSIH));
    assert_eq!((e.exp_cmd_sn, e.next_stat_sn), (CMD_SN, 501));
    assert_eq!(e.params.target_name, TARGET);
    assert_eq!(e.params.max_send_data_segment_len, 262_144);
    assert_eq!(e.params.error_recovery_level, 0);
    assert_eq!(e.params.digests(), Default::default());
    // The machine is done; another request is an error.
    let again = libiscsi_plain_login(&mut m, &open_dir(), "None");
    failed_with(&again, login_status::INITIATOR_ERROR);
}

#[test]
fn digests_negotiate_to_crc32c() {
    let mut m = machine();
    let mut keys = identity("Normal");
    keys.extend(libiscsi_opneg("CRC32C,None"));
    keys.retain(|(k, _)| *k != "DataDigest");
    keys.push(("DataDigest", "CRC32C"));
    let reply = m.handle(
        &request(true, Stage::Operational, Stage::FullFeature, &keys),
        &open_dir(),
    );
    assert_eq!(key(&reply, "HeaderDigest").as_deref(), Some("CRC32C"));
    assert_eq!(key(&reply, "DataDigest").as_deref(), Some("CRC32C"));
    let p = &established(&reply).params;
    assert_eq!(
        (p.header_digest, p.data_digest),
        (DigestKind::Crc32c, DigestKind::Crc32c)
    );
}

#[test]
fn security_then_operational_stage_like_open_iscsi() {
    let d = open_dir();
    let mut m = machine();
    let mut keys = identity("Normal");
    keys.push(("AuthMethod", "None"));
    let first = m.handle(
        &request(true, Stage::Security, Stage::Operational, &keys),
        &d,
    );
    assert_eq!(first.outcome, LoginOutcome::Continue);
    assert!(first.response.transit);
    assert_eq!(
        (first.response.csg, first.response.nsg),
        (Stage::Security, Stage::Operational)
    );
    assert_eq!(key(&first, "AuthMethod").as_deref(), Some("None"));
    assert_eq!(first.response.tsih, 0, "TSIH only in the final response");
    let second = m.handle(
        &request(
            true,
            Stage::Operational,
            Stage::FullFeature,
            &libiscsi_opneg("None"),
        ),
        &d,
    );
    assert_eq!(second.response.sns.stat_sn, first.response.sns.stat_sn + 1);
    assert_eq!(established(&second).tsih, TSIH);
}

#[test]
fn initiator_not_in_acl_is_authorization_failure() {
    let d = dir(
        AclPolicy::Only(vec!["iqn.1994-05.com.redhat:other".into()]),
        None,
    );
    failed_with(
        &libiscsi_plain_login(&mut machine(), &d, "None"),
        login_status::AUTHORIZATION_FAILURE,
    );
    let nobody = dir(AclPolicy::Only(vec![]), None);
    failed_with(
        &libiscsi_plain_login(&mut machine(), &nobody, "None"),
        login_status::AUTHORIZATION_FAILURE,
    );
    let listed = dir(AclPolicy::Only(vec![INITIATOR.to_uppercase()]), None);
    let reply = libiscsi_plain_login(&mut machine(), &listed, "None");
    established(&reply);
}

#[test]
fn unknown_target_is_not_found() {
    let empty = Dir(HashMap::new());
    failed_with(
        &libiscsi_plain_login(&mut machine(), &empty, "None"),
        login_status::NOT_FOUND,
    );
}

#[test]
fn missing_names_are_missing_parameter() {
    let d = open_dir();
    let reply = machine().handle(
        &request(
            true,
            Stage::Operational,
            Stage::FullFeature,
            &[("SessionType", "Normal")],
        ),
        &d,
    );
    failed_with(&reply, login_status::MISSING_PARAMETER);
    let reply = machine().handle(
        &request(
            true,
            Stage::Operational,
            Stage::FullFeature,
            &[("InitiatorName", INITIATOR), ("SessionType", "Normal")],
        ),
        &d,
    );
    failed_with(&reply, login_status::MISSING_PARAMETER);
    let reply = machine().handle(
        &request(
            true,
            Stage::Operational,
            Stage::FullFeature,
            &[("InitiatorName", INITIATOR), ("SessionType", "Boot")],
        ),
        &d,
    );
    failed_with(&reply, login_status::SESSION_TYPE_NOT_SUPPORTED);
}

#[test]
fn unsupported_version_and_existing_tsih() {
    let d = open_dir();
    let mut keys = identity("Normal");
    keys.extend(libiscsi_opneg("None"));
    let mut req = request(true, Stage::Operational, Stage::FullFeature, &keys);
    req.version_min = 1;
    req.version_max = 2;
    failed_with(
        &machine().handle(&req, &d),
        login_status::UNSUPPORTED_VERSION,
    );

    let mut req = request(true, Stage::Operational, Stage::FullFeature, &keys);
    req.tsih = 7;
    failed_with(
        &machine().handle(&req, &d),
        login_status::TOO_MANY_CONNECTIONS,
    );
    req.tsih = 8;
    failed_with(
        &machine().handle(&req, &d),
        login_status::SESSION_DOES_NOT_EXIST,
    );
}

#[test]
fn discovery_login_needs_no_target_and_ignores_acl() {
    let nobody = dir(AclPolicy::Only(vec![]), None);
    let mut keys = identity("Discovery");
    keys.extend(libiscsi_opneg("None"));
    let reply = machine().handle(
        &request(true, Stage::Operational, Stage::FullFeature, &keys),
        &nobody,
    );
    assert_eq!(key(&reply, "TargetPortalGroupTag"), None);
    assert_eq!(
        key(&reply, "MaxBurstLength").as_deref(),
        Some(text::IRRELEVANT)
    );
    let e = established(&reply);
    assert_eq!(e.session_type, SessionType::Discovery);
    assert_eq!(e.target_iqn, None);
    assert_eq!(e.params.session_type, SessionType::Discovery);
}

#[test]
fn continued_text_is_acknowledged_then_assembled() {
    let d = open_dir();
    let mut m = machine();
    let mut keys = identity("Normal");
    keys.extend(libiscsi_opneg("None"));
    let all = text::encode(&keys);
    let (a, b) = all.split_at(50);
    let mut first = request(false, Stage::Operational, Stage::FullFeature, &[]);
    first.cont = true;
    first.data = Bytes::copy_from_slice(a);
    let ack = m.handle(&first, &d);
    assert_eq!(ack.outcome, LoginOutcome::Continue);
    assert!(ack.response.data.is_empty() && !ack.response.transit);
    let mut second = request(true, Stage::Operational, Stage::FullFeature, &[]);
    second.data = Bytes::copy_from_slice(b);
    let reply = m.handle(&second, &d);
    assert_eq!(established(&reply).target_iqn.as_deref(), Some(TARGET));
}

#[test]
fn invalid_stage_flags_are_initiator_errors() {
    let d = open_dir();
    let keys = identity("Normal");
    // T=1 with NSG not after CSG.
    let r = machine().handle(
        &request(true, Stage::Operational, Stage::Security, &keys),
        &d,
    );
    failed_with(&r, login_status::INITIATOR_ERROR);
    // CSG full feature.
    let r = machine().handle(
        &request(false, Stage::FullFeature, Stage::FullFeature, &keys),
        &d,
    );
    failed_with(&r, login_status::INITIATOR_ERROR);
    // T and C together.
    let mut req = request(true, Stage::Security, Stage::Operational, &keys);
    req.cont = true;
    failed_with(&machine().handle(&req, &d), login_status::INITIATOR_ERROR);
    // ISID changes mid-login.
    let mut m = machine();
    let mut k = keys.clone();
    k.push(("AuthMethod", "None"));
    m.handle(&request(false, Stage::Security, Stage::Operational, &k), &d);
    let mut req = request(true, Stage::Security, Stage::Operational, &[]);
    req.isid = [0; 6];
    failed_with(&m.handle(&req, &d), login_status::INITIATOR_ERROR);
    // CSG jumps without a transition.
    let mut m = machine();
    m.handle(&request(false, Stage::Security, Stage::Operational, &k), &d);
    let r = m.handle(
        &request(true, Stage::Operational, Stage::FullFeature, &[]),
        &d,
    );
    failed_with(&r, login_status::INITIATOR_ERROR);
}

#[test]
fn protocol_violations_in_keys_are_initiator_errors() {
    let d = open_dir();
    // A key twice in one request.
    let mut keys = identity("Normal");
    keys.push(("MaxBurstLength", "512"));
    keys.push(("MaxBurstLength", "1024"));
    failed_with(
        &machine().handle(
            &request(true, Stage::Operational, Stage::FullFeature, &keys),
            &d,
        ),
        login_status::INITIATOR_ERROR,
    );
    // Security keys in the operational stage.
    let mut keys = identity("Normal");
    keys.push(("AuthMethod", "None"));
    failed_with(
        &machine().handle(
            &request(true, Stage::Operational, Stage::FullFeature, &keys),
            &d,
        ),
        login_status::INITIATOR_ERROR,
    );
    // A changed TargetName later in the login.
    let mut m = machine();
    m.handle(
        &request(
            false,
            Stage::Operational,
            Stage::FullFeature,
            &identity("Normal"),
        ),
        &d,
    );
    let r = m.handle(
        &request(
            true,
            Stage::Operational,
            Stage::FullFeature,
            &[("TargetName", "iqn.x")],
        ),
        &d,
    );
    failed_with(&r, login_status::INITIATOR_ERROR);
    // Garbage text.
    let mut req = request(true, Stage::Operational, Stage::FullFeature, &[]);
    req.data = Bytes::from_static(b"no equals sign\0");
    failed_with(&machine().handle(&req, &d), login_status::INITIATOR_ERROR);
}

#[test]
fn target_offers_keys_and_waits_for_answers() {
    let mut d = open_dir();
    if let Some(t) = d.0.get_mut(TARGET) {
        t.limits.immediate_data = false;
    }
    let mut m = machine();
    let mut keys = identity("Normal");
    keys.push(("MaxRecvDataSegmentLength", "65536"));
    let offer = m.handle(
        &request(true, Stage::Operational, Stage::FullFeature, &keys),
        &d,
    );
    assert_eq!(offer.outcome, LoginOutcome::Continue);
    assert!(!offer.response.transit);
    assert_eq!(key(&offer, "ImmediateData").as_deref(), Some("No"));
    let done = m.handle(
        &request(
            true,
            Stage::Operational,
            Stage::FullFeature,
            &[("ImmediateData", "No")],
        ),
        &d,
    );
    assert!(!established(&done).params.immediate_data);
}
