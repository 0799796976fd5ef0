use super::*;

fn pairs(list: &[(&str, &str)]) -> Pairs {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn answer_of<'a>(response: &'a Pairs, key: &str) -> Option<&'a str> {
    text::get(response, key)
}

/// The operational keys libiscsi sends in one login PDU.
fn libiscsi_offer(header_digest: &str) -> Pairs {
    pairs(&crate::iscsi::test_vectors::libiscsi_operational_keys(
        header_digest,
    ))
}

fn limits() -> TargetLimits {
    TargetLimits {
        max_recv_data_segment_len: 65536,
        max_burst_len: 131_072,
        first_burst_len: 65536,
        initial_r2t: false,
        immediate_data: true,
        max_outstanding_r2t: 8,
        default_time2wait: 2,
        default_time2retain: 20,
        ..TargetLimits::default()
    }
}

#[test]
fn libiscsi_offer_negotiates_by_each_keys_function() {
    let mut n = Negotiator::new(limits(), SessionType::Normal);
    let r = n.respond(&libiscsi_offer("None,CRC32C")).expect("valid");
    assert_eq!(
        answer_of(&r, "HeaderDigest"),
        Some("None"),
        "initiator's first choice"
    );
    assert_eq!(answer_of(&r, "DataDigest"), Some("None"));
    assert_eq!(answer_of(&r, "InitialR2T"), Some("Yes"), "OR");
    assert_eq!(answer_of(&r, "ImmediateData"), Some("Yes"), "AND");
    assert_eq!(answer_of(&r, "MaxBurstLength"), Some("131072"), "min");
    assert_eq!(answer_of(&r, "FirstBurstLength"), Some("65536"), "min");
    assert_eq!(answer_of(&r, "DefaultTime2Wait"), Some("2"), "max");
    assert_eq!(answer_of(&r, "DefaultTime2Retain"), Some("0"), "min");
    assert_eq!(answer_of(&r, "MaxOutstandingR2T"), Some("1"));
    assert_eq!(answer_of(&r, "ErrorRecoveryLevel"), Some("0"));
    assert_eq!(answer_of(&r, "IFMarker"), Some("No"));
    assert_eq!(answer_of(&r, "MaxConnections"), Some("1"));
    assert_eq!(
        answer_of(&r, "MaxRecvDataSegmentLength"),
        None,
        "declarative: no answer"
    );
    assert_eq!(answer_of(&r, "DataPDUInOrder"), Some("Yes"));
    let d = n.declarations();
    assert_eq!(d, pairs(&[("MaxRecvDataSegmentLength", "65536")]));
    assert!(n.declarations().is_empty(), "declared once");
    assert!(n.offers().is_empty());
    let p = n.finish().expect("acceptable");
    assert_eq!(p.max_recv_data_segment_len, 65536, "ours: inbound limit");
    assert_eq!(
        p.max_send_data_segment_len, 262_144,
        "initiator's: outbound limit"
    );
    assert_eq!(p.max_burst_len, 131_072);
    assert_eq!(p.first_burst_len, 65536);
    assert!(p.initial_r2t && p.immediate_data);
    assert_eq!(p.default_time2retain, 0);
    assert_eq!(p.error_recovery_level, 0);
}

#[test]
fn digest_list_negotiates_to_crc32c() {
    let mut n = Negotiator::new(limits(), SessionType::Normal);
    let r = n
        .respond(&pairs(&[
            ("HeaderDigest", "CRC32C,None"),
            ("DataDigest", "CRC32C,None"),
        ]))
        .expect("valid");
    assert_eq!(answer_of(&r, "HeaderDigest"), Some("CRC32C"));
    assert_eq!(answer_of(&r, "DataDigest"), Some("CRC32C"));
    let p = n.finish().expect("ok");
    assert_eq!(p.header_digest, DigestKind::Crc32c);
    assert!(p.digests().header && p.digests().data);
}

#[test]
fn digest_policy_limits_the_choice() {
    let off = TargetLimits {
        header_digest: DigestPolicy::Off,
        ..limits()
    };
    let mut n = Negotiator::new(off, SessionType::Normal);
    let r = n
        .respond(&pairs(&[("HeaderDigest", "CRC32C,None")]))
        .expect("valid");
    assert_eq!(answer_of(&r, "HeaderDigest"), Some("None"));

    let require = TargetLimits {
        data_digest: DigestPolicy::Require,
        ..limits()
    };
    let mut n = Negotiator::new(require.clone(), SessionType::Normal);
    let r = n.respond(&pairs(&[("DataDigest", "None")])).expect("valid");
    assert_eq!(answer_of(&r, "DataDigest"), Some(REJECT));
    assert_eq!(
        n.finish(),
        Err(NegotiateError::DigestRequired("DataDigest"))
    );

    // Unknown digest names in the list are skipped.
    let mut n = Negotiator::new(require, SessionType::Normal);
    let r = n
        .respond(&pairs(&[("DataDigest", "Adler,CRC32C")]))
        .expect("valid");
    assert_eq!(answer_of(&r, "DataDigest"), Some("CRC32C"));
}

#[test]
fn out_of_range_and_garbage_values_are_rejected() {
    let mut n = Negotiator::new(limits(), SessionType::Normal);
    let r = n
        .respond(&pairs(&[
            ("MaxBurstLength", "100"),
            ("FirstBurstLength", "abc"),
            ("InitialR2T", "Maybe"),
            ("ErrorRecoveryLevel", "3"),
            ("DefaultTime2Wait", "3601"),
        ]))
        .expect("answers");
    for key in [
        "MaxBurstLength",
        "FirstBurstLength",
        "InitialR2T",
        "ErrorRecoveryLevel",
        "DefaultTime2Wait",
    ] {
        assert_eq!(answer_of(&r, key), Some(REJECT), "{key}");
    }
    // Rejected keys keep their defaults.
    assert_eq!(n.params().max_burst_len, 262_144);
}

#[test]
fn bad_max_recv_data_segment_length_fails() {
    for bad in ["511", "16777216", "lots"] {
        let mut n = Negotiator::new(limits(), SessionType::Normal);
        assert!(matches!(
            n.respond(&pairs(&[("MaxRecvDataSegmentLength", bad)])),
            Err(NegotiateError::BadDeclaration(_))
        ));
    }
}

#[test]
fn error_recovery_level_is_always_zero() {
    let mut n = Negotiator::new(limits(), SessionType::Normal);
    let r = n
        .respond(&pairs(&[("ErrorRecoveryLevel", "2")]))
        .expect("valid");
    assert_eq!(answer_of(&r, "ErrorRecoveryLevel"), Some("0"));
    assert_eq!(n.finish().expect("ok").error_recovery_level, 0);
}

#[test]
fn unknown_vendor_and_target_only_keys() {
    let mut n = Negotiator::new(limits(), SessionType::Normal);
    let r = n
        .respond(&pairs(&[
            ("X-com.example.Foo", "1"),
            ("FancyKey", "Yes"),
            ("TargetAlias", "x"),
            ("OFMarkInt", "2048~8192"),
            ("TaskReporting", "ResponseFence,RFC3720"),
            ("iSCSIProtocolLevel", "2"),
        ]))
        .expect("answers");
    assert_eq!(answer_of(&r, "X-com.example.Foo"), Some(NOT_UNDERSTOOD));
    assert_eq!(answer_of(&r, "FancyKey"), Some(NOT_UNDERSTOOD));
    assert_eq!(answer_of(&r, "TargetAlias"), Some(REJECT));
    assert_eq!(answer_of(&r, "OFMarkInt"), Some(IRRELEVANT));
    assert_eq!(answer_of(&r, "TaskReporting"), Some("RFC3720"));
    assert_eq!(answer_of(&r, "iSCSIProtocolLevel"), Some("1"));
}

#[test]
fn discovery_session_marks_data_keys_irrelevant() {
    let mut n = Negotiator::new(limits(), SessionType::Discovery);
    let r = n.respond(&libiscsi_offer("None")).expect("valid");
    for key in [
        "InitialR2T",
        "ImmediateData",
        "MaxBurstLength",
        "FirstBurstLength",
        "MaxOutstandingR2T",
        "DataPDUInOrder",
        "DataSequenceInOrder",
        "MaxConnections",
    ] {
        assert_eq!(answer_of(&r, key), Some(IRRELEVANT), "{key}");
    }
    assert_eq!(answer_of(&r, "HeaderDigest"), Some("None"));
    assert_eq!(answer_of(&r, "DefaultTime2Retain"), Some("0"));
    assert!(n.offers().is_empty());
}

#[test]
fn identical_reoffer_repeats_answer_and_change_is_an_error() {
    let mut n = Negotiator::new(limits(), SessionType::Normal);
    let first = n.respond(&libiscsi_offer("None")).expect("valid");
    let again = n
        .respond(&libiscsi_offer("None"))
        .expect("same values are fine");
    assert_eq!(first, again);
    assert_eq!(
        n.respond(&pairs(&[("MaxBurstLength", "65536")])),
        Err(NegotiateError::Renegotiated("MaxBurstLength".into()))
    );
}

#[test]
fn target_offers_keys_whose_default_it_cannot_accept() {
    let strict = TargetLimits {
        immediate_data: false,
        max_burst_len: 65536,
        first_burst_len: 16384,
        header_digest: DigestPolicy::Require,
        ..limits()
    };
    let mut n = Negotiator::new(strict, SessionType::Normal);
    n.respond(&pairs(&[("MaxRecvDataSegmentLength", "8192")]))
        .expect("valid");
    let offers = n.offers();
    assert_eq!(answer_of(&offers, "HeaderDigest"), Some("CRC32C"));
    assert_eq!(answer_of(&offers, "ImmediateData"), Some("No"));
    assert_eq!(answer_of(&offers, "MaxBurstLength"), Some("65536"));
    assert_eq!(answer_of(&offers, "FirstBurstLength"), Some("16384"));
    assert_eq!(
        answer_of(&offers, "InitialR2T"),
        None,
        "default Yes is fine"
    );
    assert!(n.awaiting_answers());
    assert!(n.offers().is_empty(), "offered once");
    // The initiator's answers produce no response keys.
    let r = n
        .respond(&pairs(&[
            ("HeaderDigest", "CRC32C"),
            ("ImmediateData", "No"),
            ("MaxBurstLength", "65536"),
            ("FirstBurstLength", "8192"),
        ]))
        .expect("answers");
    assert!(r.is_empty());
    assert!(!n.awaiting_answers());
    let p = n.finish().expect("ok");
    assert_eq!(p.header_digest, DigestKind::Crc32c);
    assert!(!p.immediate_data);
    assert_eq!(p.max_burst_len, 65536);
    assert_eq!(p.first_burst_len, 8192);
}

#[test]
fn first_burst_never_exceeds_max_burst() {
    let mut n = Negotiator::new(limits(), SessionType::Normal);
    n.respond(&pairs(&[
        ("FirstBurstLength", "131072"),
        ("MaxBurstLength", "4096"),
    ]))
    .expect("valid");
    let p = n.finish().expect("ok");
    assert!(p.first_burst_len <= p.max_burst_len);
    assert_eq!(p.max_burst_len, 4096);
}

#[test]
fn without_declaration_our_limit_is_the_default() {
    let n = Negotiator::new(limits(), SessionType::Normal);
    let p = n.finish().expect("ok");
    assert_eq!(p.max_recv_data_segment_len, 8192);
    assert_eq!(p.max_send_data_segment_len, 8192);
}
