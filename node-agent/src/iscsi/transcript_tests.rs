//! Whole logins over PDU bytes, as the pump will run them: the initiator's PDUs are encoded,
//! decoded by the target side, answered by the login machine, and the answer decoded again.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use super::discovery::{self, Asker, DiscoveryEntry};
use super::login::{
    AclPolicy, LoginConfig, LoginMachine, LoginOutcome, LoginReply, TargetAuth, TargetDirectory,
};
use super::params::{DEFAULT_MAX_RECV_DATA_SEGMENT_LEN, SessionType, TargetLimits};
use super::pdu::{
    Digests, LoginRequest, LoginResponse, Pdu, RESERVED_TAG, Sns, Stage, TextRequest, TextResponse,
    login_status,
};
use super::text;

const TARGET: &str = "iqn.2026-11.dev.spindle:default.vol";
const INITIATOR: &str = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-ls";

struct Dir(HashMap<String, TargetAuth>);

impl TargetDirectory for Dir {
    fn lookup(&self, iqn: &str) -> Option<TargetAuth> {
        self.0.get(iqn).cloned()
    }
}

fn directory() -> Dir {
    Dir(HashMap::from([(
        TARGET.to_owned(),
        TargetAuth {
            acl: AclPolicy::Only(vec![INITIATOR.into()]),
            chap: None,
            limits: TargetLimits::default(),
        },
    )]))
}

/// Sends `pdu` through encode → bytes → decode, as on a connection.
fn over_the_wire(pdu: Pdu, digests: Digests) -> Pdu {
    let mut wire = BytesMut::new();
    pdu.encode(digests).expect("encodes").write_to(&mut wire);
    let decoded = Pdu::decode_from(
        &mut wire,
        digests,
        DEFAULT_MAX_RECV_DATA_SEGMENT_LEN as usize,
    )
    .expect("valid PDU")
    .expect("whole PDU");
    assert!(wire.is_empty());
    decoded
}

fn login_pdu(session: &str, keys: &[(&str, &str)]) -> Pdu {
    let mut all = vec![("InitiatorName", INITIATOR), ("SessionType", session)];
    if session == "Normal" {
        all.push(("TargetName", TARGET));
    }
    all.extend_from_slice(keys);
    Pdu::LoginRequest(LoginRequest {
        transit: true,
        cont: false,
        csg: Stage::Operational,
        nsg: Stage::FullFeature,
        version_max: 0,
        version_min: 0,
        isid: [0x80, 0, 0, 0, 0, 1],
        tsih: 0,
        itt: 1,
        cid: 0,
        cmd_sn: 10,
        exp_stat_sn: 0,
        data: text::encode(&all),
    })
}

fn target_side(m: &mut LoginMachine, pdu: Pdu) -> LoginReply {
    let Pdu::LoginRequest(req) = over_the_wire(pdu, Digests::default()) else {
        panic!("login request expected");
    };
    m.handle(&req, &directory())
}

fn initiator_side(reply: &LoginReply) -> LoginResponse {
    let Pdu::LoginResponse(r) = over_the_wire(
        Pdu::LoginResponse(reply.response.clone()),
        Digests::default(),
    ) else {
        panic!("login response expected");
    };
    r
}

#[test]
fn discovery_login_then_send_targets() {
    let mut m = LoginMachine::new(LoginConfig::default(), 5);
    let reply = target_side(
        &mut m,
        login_pdu(
            "Discovery",
            &[
                ("HeaderDigest", "None"),
                ("MaxRecvDataSegmentLength", "262144"),
            ],
        ),
    );
    let response = initiator_side(&reply);
    assert_eq!(response.status, login_status::SUCCESS);
    assert_eq!(response.tsih, 5);
    let LoginOutcome::FullFeature(session) = reply.outcome else {
        panic!("discovery login must succeed: {:?}", reply.outcome);
    };
    assert_eq!(session.session_type, SessionType::Discovery);

    // Full feature phase: libiscsi's Text Request.
    let request = Pdu::TextRequest(TextRequest {
        immediate: true,
        final_: true,
        cont: false,
        lun: 0,
        itt: 2,
        ttt: RESERVED_TAG,
        cmd_sn: session.exp_cmd_sn,
        exp_stat_sn: session.next_stat_sn,
        data: Bytes::from_static(b"SendTargets=All\0"),
    });
    let digests = session.params.digests();
    let Pdu::TextRequest(req) = over_the_wire(request, digests) else {
        panic!("text request expected");
    };
    let keys = text::parse(&req.data).expect("parses");
    let entries = [
        DiscoveryEntry {
            iqn: TARGET.into(),
            portals: vec!["127.0.0.1:3260,1".into()],
            acl: AclPolicy::Only(vec![INITIATOR.into()]),
        },
        DiscoveryEntry {
            iqn: "iqn.2026-11.dev.spindle:default.hidden".into(),
            portals: vec!["127.0.0.1:3260,1".into()],
            acl: AclPolicy::Only(vec![]),
        },
    ];
    let asker = Asker {
        initiator_name: &session.initiator_name,
        session_type: session.session_type,
        current_target: None,
    };
    let data = discovery::respond(&keys, &asker, &entries);
    let mut reply = text::TextReply::new(data, session.params.max_send_data_segment_len as usize);
    let (segment, more) = reply.next_segment();
    assert!(!more);
    let response = Pdu::TextResponse(TextResponse {
        final_: true,
        cont: false,
        lun: 0,
        itt: req.itt,
        ttt: RESERVED_TAG,
        sns: Sns {
            stat_sn: session.next_stat_sn,
            exp_cmd_sn: session.exp_cmd_sn,
            max_cmd_sn: session.exp_cmd_sn + 63,
        },
        data: segment,
    });
    let Pdu::TextResponse(back) = over_the_wire(response, digests) else {
        panic!("text response expected");
    };
    assert_eq!(
        text::parse(&back.data).expect("parses"),
        vec![
            ("TargetName".to_owned(), TARGET.to_owned()),
            ("TargetAddress".to_owned(), "127.0.0.1:3260,1".to_owned()),
        ]
    );
}

#[test]
fn normal_login_over_the_wire_with_digests_after_login() {
    let mut m = LoginMachine::new(LoginConfig::default(), 9);
    let reply = target_side(
        &mut m,
        login_pdu(
            "Normal",
            &[
                ("HeaderDigest", "CRC32C,None"),
                ("DataDigest", "CRC32C,None"),
                ("MaxRecvDataSegmentLength", "65536"),
            ],
        ),
    );
    assert_eq!(initiator_side(&reply).status, login_status::SUCCESS);
    let LoginOutcome::FullFeature(session) = reply.outcome else {
        panic!("login must succeed: {:?}", reply.outcome);
    };
    let digests = session.params.digests();
    assert!(digests.header && digests.data);
    // A NOP-Out in full feature phase carries both digests.
    let nop = Pdu::NopOut(super::pdu::NopOut {
        immediate: true,
        lun: 0,
        itt: 3,
        ttt: RESERVED_TAG,
        cmd_sn: session.exp_cmd_sn,
        exp_stat_sn: session.next_stat_sn,
        data: Bytes::from_static(b"ping"),
    });
    let frame = nop.encode(digests).expect("encodes");
    assert_eq!(frame.len(), 48 + 4 + 4 + 4);
    assert_eq!(over_the_wire(nop.clone(), digests), nop);
}

#[test]
fn unknown_initiator_is_refused_over_the_wire() {
    let mut m = LoginMachine::new(LoginConfig::default(), 9);
    let Pdu::LoginRequest(mut req) = login_pdu("Normal", &[]) else {
        unreachable!()
    };
    req.data = text::encode(&[
        ("InitiatorName", "iqn.1994-05.com.redhat:stranger"),
        ("TargetName", TARGET),
    ]);
    let reply = m.handle(&req, &directory());
    let response = initiator_side(&reply);
    assert_eq!(response.status, login_status::AUTHORIZATION_FAILURE);
    assert!(response.data.is_empty());
}
