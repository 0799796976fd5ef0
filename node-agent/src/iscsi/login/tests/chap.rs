//! The security stage through the login machine: CHAP with each algorithm, the choice among
//! the initiator's offers, refusals, mutual CHAP, and malformed CHAP keys.

use super::*;
use crate::iscsi::chap::{self, ChapAlgorithm};

use ChapAlgorithm::{Md5, Sha1, Sha3_256, Sha256};

/// What the target answered to CHAP_A: the algorithm, CHAP_I and CHAP_C.
struct Offered {
    algorithm: ChapAlgorithm,
    id: u8,
    challenge: Vec<u8>,
}

/// AuthMethod=CHAP, then CHAP_A=`offer`: the machine and the target's reply to CHAP_A.
fn start_chap(d: &Dir, offer: &str) -> (LoginMachine, LoginReply) {
    let mut m = machine();
    let mut keys = identity("Normal");
    keys.push(("AuthMethod", "CHAP,None"));
    let first = m.handle(
        &request(true, Stage::Security, Stage::Operational, &keys),
        d,
    );
    assert_eq!(key(&first, "AuthMethod").as_deref(), Some("CHAP"));
    assert!(!first.response.transit, "cannot leave security before CHAP");
    assert_eq!(first.outcome, LoginOutcome::Continue);
    let reply = m.handle(
        &request(
            false,
            Stage::Security,
            Stage::Operational,
            &[("CHAP_A", offer)],
        ),
        d,
    );
    (m, reply)
}

fn offered(reply: &LoginReply) -> Offered {
    let code: u64 = key(reply, "CHAP_A")
        .and_then(|a| a.parse().ok())
        .expect("CHAP_A");
    Offered {
        algorithm: ChapAlgorithm::from_code(code).expect("a known algorithm"),
        id: key(reply, "CHAP_I")
            .and_then(|i| i.parse().ok())
            .expect("CHAP_I"),
        challenge: key(reply, "CHAP_C")
            .and_then(|c| text::decode_binary(&c))
            .expect("CHAP_C"),
    }
}

/// A whole CHAP exchange offering `offer`: the final reply and what the target chose.
fn chap_exchange_with(
    d: &Dir,
    offer: &str,
    secret: &str,
    mutual: Option<(u8, Vec<u8>)>,
) -> (LoginMachine, LoginReply, Offered) {
    let (mut m, reply) = start_chap(d, offer);
    let o = offered(&reply);
    assert!(o.challenge.len() >= chap::response_len(o.algorithm));
    let r = chap::response(o.algorithm, o.id, secret.as_bytes(), &o.challenge);
    let mut answer = vec![
        ("CHAP_N".to_owned(), "alice".to_owned()),
        ("CHAP_R".to_owned(), text::encode_hex(&r)),
    ];
    if let Some((i, c)) = mutual {
        answer.push(("CHAP_I".into(), i.to_string()));
        answer.push(("CHAP_C".into(), text::encode_hex(&c)));
    }
    let mut req = request(true, Stage::Security, Stage::Operational, &[]);
    req.data = text::encode(&answer);
    let reply = m.handle(&req, d);
    (m, reply, o)
}

/// libiscsi's sequence: CHAP_A=5 only.
fn chap_exchange(
    d: &Dir,
    secret: &str,
    mutual: Option<(u8, Vec<u8>)>,
) -> (LoginMachine, LoginReply) {
    let (m, reply, o) = chap_exchange_with(d, "5", secret, mutual);
    assert_eq!(o.algorithm, Md5);
    (m, reply)
}

fn allowing(mutual: bool, algorithms: &[ChapAlgorithm]) -> Dir {
    let mut s = secrets(mutual);
    s.algorithms = algorithms.to_vec();
    dir(AclPolicy::AllowAll, Some(s))
}

#[test]
fn one_way_chap_success_then_operational() {
    let d = dir(AclPolicy::AllowAll, Some(secrets(false)));
    let (mut m, reply) = chap_exchange(&d, "initiator-secret", None);
    assert_eq!(reply.response.status, login_status::SUCCESS);
    assert!(reply.response.transit);
    assert_eq!(reply.response.nsg, Stage::Operational);
    assert_eq!(key(&reply, "CHAP_N"), None, "no mutual answer unless asked");
    // libiscsi repeats its identity keys in the operational stage.
    let mut keys = identity("Normal");
    keys.extend(libiscsi_opneg("None"));
    let done = m.handle(
        &request(true, Stage::Operational, Stage::FullFeature, &keys),
        &d,
    );
    assert_eq!(established(&done).initiator_name, INITIATOR);
}

#[test]
fn every_algorithm_logs_in_one_way_and_mutually() {
    for alg in ChapAlgorithm::ALL {
        let code = alg.code().to_string();
        let d = allowing(false, &[alg]);
        let (_, reply, o) = chap_exchange_with(&d, &code, "initiator-secret", None);
        assert_eq!(o.algorithm, alg);
        assert_eq!(o.challenge.len(), chap::challenge_len(alg));
        assert_eq!(reply.response.status, login_status::SUCCESS, "{alg}");
        let (_, reply, _) = chap_exchange_with(&d, &code, "wrong-secret-xx", None);
        failed_with(&reply, login_status::AUTHENTICATION_FAILURE);

        let d = allowing(true, &[alg]);
        let theirs = vec![0x5a; 48];
        let (_, reply, _) =
            chap_exchange_with(&d, &code, "initiator-secret", Some((9, theirs.clone())));
        assert_eq!(reply.response.status, login_status::SUCCESS, "{alg}");
        assert_eq!(key(&reply, "CHAP_N").as_deref(), Some("target"));
        let r = key(&reply, "CHAP_R").and_then(|r| text::decode_binary(&r));
        // Mutual CHAP answers with the algorithm of the login, not MD5.
        assert_eq!(
            r,
            Some(chap::response(alg, 9, b"target-secret-xx", &theirs)),
            "{alg}"
        );
    }
}

#[test]
fn the_initiators_order_decides_among_allowed_algorithms() {
    let all = dir(AclPolicy::AllowAll, Some(secrets(false)));
    for (offer, want) in [
        ("8,7,6,5", Sha3_256),
        ("7,8", Sha256),
        ("5,8", Md5),
        ("6,5", Sha1),
        ("99,7", Sha256),
    ] {
        let (_, reply, o) = chap_exchange_with(&all, offer, "initiator-secret", None);
        assert_eq!(o.algorithm, want, "{offer}");
        assert_eq!(reply.response.status, login_status::SUCCESS, "{offer}");
    }
    // With MD5 turned off an initiator that lists it first gets the next one it offers.
    let strong = allowing(false, &[Sha3_256, Sha256]);
    let (_, reply, o) = chap_exchange_with(&strong, "5,6,7", "initiator-secret", None);
    assert_eq!(o.algorithm, Sha256);
    assert_eq!(reply.response.status, login_status::SUCCESS);
}

#[test]
fn no_allowed_algorithm_is_an_authentication_failure_naming_both_sides() {
    let strong = allowing(false, &[Sha3_256, Sha256]);
    for offer in ["5", "5,6", "9", "", "x,y", ",,,"] {
        let (_, reply) = start_chap(&strong, offer);
        failed_with(&reply, login_status::AUTHENTICATION_FAILURE);
        let LoginOutcome::Fail { reason, .. } = &reply.outcome else {
            unreachable!()
        };
        assert!(
            reason.contains(&format!("CHAP_A={offer}"))
                && reason.contains("SHA3-256 (8), SHA256 (7)"),
            "{reason}"
        );
    }
}

#[test]
fn malformed_chap_keys_are_refused_without_panic() {
    let d = dir(AclPolicy::AllowAll, Some(secrets(true)));
    // Numbers may be written in hex (RFC 7143 section 6.1); the rest matches nothing.
    let (_, reply) = start_chap(&d, "0x7");
    assert_eq!(offered(&reply).algorithm, Sha256);
    for offer in ["5\u{e9}", "-5", "18446744073709551621", "0x", "5 ", " 5"] {
        let (_, reply) = start_chap(&d, offer);
        failed_with(&reply, login_status::AUTHENTICATION_FAILURE);
    }
    let long = "9,".repeat(3000) + "7";
    let (_, reply) = start_chap(&d, &long);
    match &reply.outcome {
        LoginOutcome::Continue => assert_eq!(offered(&reply).algorithm, Sha256),
        LoginOutcome::Fail { status, .. } => assert_eq!(*status, login_status::INITIATOR_ERROR),
        other => panic!("{other:?}"),
    }
    let too_long = format!("0x{}", "ff".repeat(600));
    for alg in ChapAlgorithm::ALL {
        let code = alg.code().to_string();
        let right_length = text::encode_hex(&vec![1; chap::response_len(alg)]);
        for r in [
            "0x",
            "0x00",
            "0b",
            "md5",
            &right_length,
            &"0xff".repeat(600),
            &too_long,
        ] {
            let (mut m, reply) = start_chap(&d, &code);
            offered(&reply);
            let reply = m.handle(
                &request(
                    true,
                    Stage::Security,
                    Stage::Operational,
                    &[("CHAP_N", "alice"), ("CHAP_R", r)],
                ),
                &d,
            );
            failed_with(&reply, login_status::AUTHENTICATION_FAILURE);
        }
    }
}

#[test]
fn chap_wrong_password_is_authentication_failure() {
    let d = dir(AclPolicy::AllowAll, Some(secrets(false)));
    let (_, reply) = chap_exchange(&d, "wrong-secret", None);
    failed_with(&reply, login_status::AUTHENTICATION_FAILURE);
}

#[test]
fn mutual_chap_without_target_credentials_fails() {
    let d = dir(AclPolicy::AllowAll, Some(secrets(false)));
    let (_, reply) = chap_exchange(&d, "initiator-secret", Some((9, vec![1; 16])));
    failed_with(&reply, login_status::AUTHENTICATION_FAILURE);
}

#[test]
fn reflected_challenge_is_refused() {
    let d = dir(AclPolicy::AllowAll, Some(secrets(true)));
    let (mut m, algo) = start_chap(&d, "5");
    let o = offered(&algo);
    let r = text::encode_hex(&chap::response(
        Md5,
        o.id,
        b"initiator-secret",
        &o.challenge,
    ));
    let (id, c) = (o.id.to_string(), text::encode_hex(&o.challenge));
    let keys = [
        ("CHAP_N", "alice"),
        ("CHAP_R", &r),
        ("CHAP_I", &id),
        ("CHAP_C", &c),
    ];
    let reply = m.handle(
        &request(true, Stage::Security, Stage::Operational, &keys),
        &d,
    );
    failed_with(&reply, login_status::AUTHENTICATION_FAILURE);
}

#[test]
fn chap_required_but_skipped_or_refused() {
    let d = dir(AclPolicy::AllowAll, Some(secrets(false)));
    // Straight to the operational stage.
    let reply = libiscsi_plain_login(&mut machine(), &d, "None");
    failed_with(&reply, login_status::AUTHENTICATION_FAILURE);
    // Only AuthMethod=None offered.
    let mut keys = identity("Normal");
    keys.push(("AuthMethod", "None"));
    let reply = machine().handle(
        &request(true, Stage::Security, Stage::Operational, &keys),
        &d,
    );
    failed_with(&reply, login_status::AUTHENTICATION_FAILURE);
    // A CHAP algorithm Spindle does not know (CHAP_A=7 was refused when only MD5 existed).
    let (_, reply) = start_chap(&d, "9");
    failed_with(&reply, login_status::AUTHENTICATION_FAILURE);
}
