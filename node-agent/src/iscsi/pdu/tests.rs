use bytes::{Bytes, BytesMut};

use super::*;

const NO_DIGESTS: Digests = Digests {
    header: false,
    data: false,
};
const ALL_DIGESTS: Digests = Digests {
    header: true,
    data: true,
};
const BIG: usize = MAX_DATA_SEGMENT_LEN;

fn sns() -> Sns {
    Sns {
        stat_sn: 0x1111_2222,
        exp_cmd_sn: 0x3333_4444,
        max_cmd_sn: 0x5555_6666,
    }
}

/// One PDU of every type, with distinct non-zero values in every field and odd data lengths
/// (so padding is exercised).
fn samples() -> Vec<Pdu> {
    let data = Bytes::from_static(b"hello, iscsi");
    let odd = Bytes::from_static(b"abcde");
    vec![
        Pdu::NopOut(NopOut {
            immediate: true,
            lun: 0x0001_0000_0000_0000,
            itt: 7,
            ttt: RESERVED_TAG,
            cmd_sn: 9,
            exp_stat_sn: 10,
            data: odd.clone(),
        }),
        Pdu::ScsiCommand(ScsiCommand {
            immediate: false,
            final_: true,
            read: false,
            write: true,
            attr: TaskAttr::Simple,
            lun: 0x0002_0000_0000_0000,
            itt: 0xdead_beef,
            expected_data_len: 4096,
            cmd_sn: 42,
            exp_stat_sn: 43,
            cdb: Bytes::from((0u8..16).collect::<Vec<_>>()),
            bidi_read_len: None,
            data: data.clone(),
        }),
        Pdu::ScsiCommand(ScsiCommand {
            immediate: true,
            final_: false,
            read: true,
            write: true,
            attr: TaskAttr::HeadOfQueue,
            lun: 3,
            itt: 1,
            expected_data_len: 512,
            cmd_sn: 2,
            exp_stat_sn: 3,
            cdb: Bytes::from((1u8..=32).collect::<Vec<_>>()),
            bidi_read_len: Some(8192),
            data: Bytes::new(),
        }),
        Pdu::TaskMgmtRequest(TaskMgmtRequest {
            immediate: true,
            function: TaskFunction::AbortTask,
            lun: 5,
            itt: 11,
            ref_task_tag: 12,
            cmd_sn: 13,
            exp_stat_sn: 14,
            ref_cmd_sn: 15,
            exp_data_sn: 16,
        }),
        Pdu::LoginRequest(LoginRequest {
            transit: true,
            cont: false,
            csg: Stage::Security,
            nsg: Stage::Operational,
            version_max: 0,
            version_min: 0,
            isid: [0x80, 1, 2, 3, 4, 5],
            tsih: 0,
            itt: 0x10,
            cid: 1,
            cmd_sn: 1,
            exp_stat_sn: 0,
            data: Bytes::from_static(b"InitiatorName=iqn.x\0AuthMethod=None\0"),
        }),
        Pdu::TextRequest(TextRequest {
            immediate: true,
            final_: true,
            cont: false,
            lun: 0,
            itt: 21,
            ttt: RESERVED_TAG,
            cmd_sn: 22,
            exp_stat_sn: 23,
            data: Bytes::from_static(b"SendTargets=All\0"),
        }),
        Pdu::DataOut(DataOut {
            final_: true,
            lun: 1,
            itt: 31,
            ttt: 32,
            exp_stat_sn: 33,
            data_sn: 34,
            buffer_offset: 8192,
            data: odd.clone(),
        }),
        Pdu::LogoutRequest(LogoutRequest {
            immediate: true,
            reason: LogoutReason::CloseSession,
            itt: 41,
            cid: 1,
            cmd_sn: 42,
            exp_stat_sn: 43,
        }),
        Pdu::Snack(SnackRequest {
            kind: 1,
            lun: 2,
            itt: 51,
            ttt: 52,
            exp_stat_sn: 53,
            beg_run: 54,
            run_length: 55,
        }),
        Pdu::NopIn(NopIn {
            lun: 0,
            itt: 7,
            ttt: RESERVED_TAG,
            sns: sns(),
            data: odd.clone(),
        }),
        Pdu::ScsiResponse(ScsiResponse {
            response: scsi_response::COMPLETED,
            status: 0x02,
            residual: Residual::Underflow(100),
            bidi_residual: Residual::Overflow(7),
            itt: 61,
            snack_tag: 0,
            sns: sns(),
            exp_data_sn: 62,
            sense: Bytes::from_static(&[
                0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0,
            ]),
            response_data: Bytes::new(),
        }),
        Pdu::ScsiResponse(ScsiResponse {
            response: scsi_response::COMPLETED,
            status: 0,
            residual: Residual::None,
            bidi_residual: Residual::None,
            itt: 63,
            snack_tag: 0,
            sns: sns(),
            exp_data_sn: 0,
            sense: Bytes::new(),
            response_data: Bytes::new(),
        }),
        Pdu::TaskMgmtResponse(TaskMgmtResponse {
            response: tmf_response::TASK_DOES_NOT_EXIST,
            itt: 71,
            sns: sns(),
        }),
        Pdu::LoginResponse(LoginResponse {
            transit: true,
            cont: false,
            csg: Stage::Operational,
            nsg: Stage::FullFeature,
            version_max: 0,
            version_active: 0,
            isid: [0x80, 1, 2, 3, 4, 5],
            tsih: 0x1234,
            itt: 0x10,
            sns: sns(),
            status: login_status::SUCCESS,
            data: Bytes::from_static(b"HeaderDigest=None\0"),
        }),
        Pdu::TextResponse(TextResponse {
            final_: false,
            cont: true,
            lun: 0,
            itt: 81,
            ttt: 82,
            sns: sns(),
            data: data.clone(),
        }),
        Pdu::DataIn(DataIn {
            final_: true,
            ack: false,
            status: Some(0),
            residual: Residual::Underflow(512),
            lun: 1,
            itt: 91,
            ttt: RESERVED_TAG,
            sns: sns(),
            data_sn: 3,
            buffer_offset: 24576,
            data: odd.clone(),
        }),
        Pdu::DataIn(DataIn {
            final_: false,
            ack: false,
            status: None,
            residual: Residual::None,
            lun: 1,
            itt: 92,
            ttt: RESERVED_TAG,
            sns: sns(),
            data_sn: 0,
            buffer_offset: 0,
            data: data.clone(),
        }),
        Pdu::LogoutResponse(LogoutResponse {
            response: logout_response::CLOSED,
            itt: 101,
            sns: sns(),
            time2wait: 2,
            time2retain: 20,
        }),
        Pdu::R2t(R2t {
            lun: 1,
            itt: 111,
            ttt: 112,
            sns: sns(),
            r2t_sn: 113,
            buffer_offset: 65536,
            desired_len: 262_144,
        }),
        Pdu::AsyncMessage(AsyncMessage {
            lun: 1,
            sns: sns(),
            event: async_event::SCSI_EVENT,
            vcode: 0,
            param1: 1,
            param2: 2,
            param3: 3,
            sense: Bytes::from_static(&[0x70, 0, 6, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x3f, 0x0e]),
            event_data: Bytes::new(),
        }),
        Pdu::Reject(Reject {
            reason: reject_reason::PROTOCOL_ERROR,
            sns: sns(),
            data_sn: 0,
            header: Bytes::from(vec![0xa5u8; BHS_LEN]),
        }),
    ]
}

fn to_wire(pdu: &Pdu, digests: Digests) -> BytesMut {
    let mut out = BytesMut::new();
    pdu.encode(digests).expect("encodes").write_to(&mut out);
    out
}

fn split_bhs(wire: &[u8]) -> ([u8; BHS_LEN], Bytes) {
    let mut bhs = [0u8; BHS_LEN];
    bhs.copy_from_slice(&wire[..BHS_LEN]);
    (bhs, Bytes::copy_from_slice(&wire[BHS_LEN..]))
}

#[test]
fn every_pdu_round_trips_with_and_without_digests() {
    for digests in [
        NO_DIGESTS,
        ALL_DIGESTS,
        Digests {
            header: true,
            data: false,
        },
    ] {
        for pdu in samples() {
            let wire = to_wire(&pdu, digests);
            let (bhs, rest) = split_bhs(&wire);
            let info = BhsInfo::parse(&bhs, BIG).expect("bhs parses");
            assert_eq!(info.opcode, pdu.opcode());
            assert_eq!(BHS_LEN + info.frame_len(digests), wire.len(), "{pdu:?}");
            assert_eq!(wire.len() % 4, 0, "wire length is padded");
            let back = Pdu::decode(&bhs, rest, digests).expect("decodes");
            assert_eq!(back, pdu);
        }
    }
}

#[test]
fn decode_from_buffer_handles_partial_and_back_to_back_pdus() {
    let pdus = samples();
    let mut wire = BytesMut::new();
    for pdu in &pdus {
        wire.extend_from_slice(&to_wire(pdu, ALL_DIGESTS));
    }
    let total = wire.len();
    // Feed in 7-byte steps: never a whole PDU early, every PDU exactly once.
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for chunk in wire.chunks(7) {
        buf.extend_from_slice(chunk);
        while let Some(pdu) = Pdu::decode_from(&mut buf, ALL_DIGESTS, BIG).expect("valid") {
            got.push(pdu);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(got, pdus);
    assert!(total > 0);
}

#[test]
fn frame_parts_keep_data_without_copy() {
    let big = Bytes::from(vec![7u8; 65536]);
    let slice = big.slice(8192..16384);
    let pdu = Pdu::DataIn(DataIn {
        final_: false,
        ack: false,
        status: None,
        residual: Residual::None,
        lun: 0,
        itt: 1,
        ttt: RESERVED_TAG,
        sns: Sns::default(),
        data_sn: 1,
        buffer_offset: 8192,
        data: slice.clone(),
    });
    let frame = pdu.encode(ALL_DIGESTS).expect("encodes");
    assert_eq!(frame.data.as_ptr(), slice.as_ptr());
    assert_eq!(frame.header.len(), BHS_LEN + 4);
    assert_eq!(frame.trailer().len(), 4);
    assert_eq!(frame.len(), BHS_LEN + 4 + 8192 + 4);
}

#[test]
fn padding_is_zero_and_counted_in_data_digest() {
    let pdu = Pdu::NopOut(NopOut {
        immediate: true,
        lun: 0,
        itt: 1,
        ttt: RESERVED_TAG,
        cmd_sn: 1,
        exp_stat_sn: 1,
        data: Bytes::from_static(b"x"),
    });
    let wire = to_wire(&pdu, ALL_DIGESTS);
    let data_start = BHS_LEN + 4;
    assert_eq!(&wire[data_start..data_start + 4], b"x\0\0\0");
    let expected = digest::digest(&[b"x\0\0\0"]);
    assert_eq!(&wire[data_start + 4..], &expected);
}

#[test]
fn login_request_fields_at_rfc_offsets() {
    let pdu = &samples()[4];
    let wire = to_wire(pdu, NO_DIGESTS);
    assert_eq!(wire[0], 0x43, "login is immediate");
    assert_eq!(wire[1], 0x81, "T=1 CSG=0 NSG=1");
    assert_eq!(&wire[8..14], &[0x80, 1, 2, 3, 4, 5]);
    assert_eq!(&wire[16..20], &[0, 0, 0, 0x10]);
    assert_eq!(&wire[20..22], &[0, 1]);
}

#[test]
fn scsi_response_sense_has_length_prefix() {
    let pdu = &samples()[10];
    let wire = to_wire(pdu, NO_DIGESTS);
    assert_eq!(wire[1], 0x80 | 0x10 | 0x02, "F, o (bidi overflow), U");
    assert_eq!(&wire[44..48], &100u32.to_be_bytes());
    assert_eq!(&wire[40..44], &7u32.to_be_bytes());
    assert_eq!(&wire[BHS_LEN..BHS_LEN + 2], &[0, 18]);
}

#[test]
fn extended_cdb_goes_into_ahs() {
    let pdu = &samples()[2];
    let wire = to_wire(pdu, NO_DIGESTS);
    let (bhs, _) = split_bhs(&wire);
    let info = BhsInfo::parse(&bhs, BIG).expect("parses");
    // Extended CDB: 4 header bytes + 16 CDB bytes; bidi AHS: 8 bytes.
    assert_eq!(info.total_ahs_len, 20 + 8);
    assert_eq!(&wire[BHS_LEN..BHS_LEN + 4], &[0, 17, AHS_EXTENDED_CDB, 0]);
}

#[test]
fn residual_of_expected_and_wanted() {
    assert_eq!(Residual::of(512, 512), Residual::None);
    assert_eq!(Residual::of(512, 1024), Residual::Overflow(512));
    assert_eq!(Residual::of(4096, 512), Residual::Underflow(3584));
}

// ---- malformed input ----

fn nop_out_wire(digests: Digests) -> BytesMut {
    to_wire(&samples()[0], digests)
}

#[test]
fn unknown_opcode_is_an_error_after_framing() {
    let mut wire = nop_out_wire(NO_DIGESTS);
    wire[0] = 0x1c;
    let (bhs, rest) = split_bhs(&wire);
    let info = BhsInfo::parse(&bhs, BIG).expect("framing still works");
    assert_eq!(info.opcode, 0x1c);
    let err = Pdu::decode(&bhs, rest, NO_DIGESTS).unwrap_err();
    assert_eq!(err, PduError::UnknownOpcode(0x1c));
    assert!(err.is_rejectable());
}

#[test]
fn data_segment_beyond_limit_is_refused_at_bhs() {
    let wire = nop_out_wire(NO_DIGESTS);
    let (bhs, _) = split_bhs(&wire);
    let err = BhsInfo::parse(&bhs, 4).unwrap_err();
    assert_eq!(err, PduError::DataSegmentTooLong { len: 5, max: 4 });
    assert!(!err.is_rejectable());
    let mut buf = wire.clone();
    assert!(Pdu::decode_from(&mut buf, NO_DIGESTS, 4).is_err());
}

#[test]
fn truncated_or_overlong_frame_is_an_error() {
    let wire = nop_out_wire(ALL_DIGESTS);
    let (bhs, rest) = split_bhs(&wire);
    for cut in 0..rest.len() {
        let err = Pdu::decode(&bhs, rest.slice(..cut), ALL_DIGESTS).unwrap_err();
        assert!(matches!(err, PduError::FrameLength { .. }));
    }
    let mut longer = BytesMut::from(&rest[..]);
    longer.extend_from_slice(&[0; 4]);
    assert!(Pdu::decode(&bhs, longer.freeze(), ALL_DIGESTS).is_err());
    // A buffer with less than a whole PDU is not an error, just not ready.
    let mut partial = BytesMut::from(&wire[..wire.len() - 1]);
    assert_eq!(Pdu::decode_from(&mut partial, ALL_DIGESTS, BIG), Ok(None));
    assert_eq!(partial.len(), wire.len() - 1);
}

#[test]
fn digest_mismatches_are_detected() {
    let wire = nop_out_wire(ALL_DIGESTS);
    let mut bad_header = wire.clone();
    bad_header[24] ^= 0x01; // CmdSN
    let (bhs, rest) = split_bhs(&bad_header);
    assert_eq!(
        Pdu::decode(&bhs, rest, ALL_DIGESTS),
        Err(PduError::HeaderDigest)
    );

    let mut bad_data = wire.clone();
    bad_data[BHS_LEN + 4] ^= 0x80;
    let (bhs, rest) = split_bhs(&bad_data);
    let err = Pdu::decode(&bhs, rest, ALL_DIGESTS).unwrap_err();
    assert_eq!(err, PduError::DataDigest);
    assert!(err.is_rejectable());

    let mut bad_pad = wire.clone();
    bad_pad[BHS_LEN + 4 + 6] = 1; // a padding byte
    let (bhs, rest) = split_bhs(&bad_pad);
    assert_eq!(
        Pdu::decode(&bhs, rest, ALL_DIGESTS),
        Err(PduError::DataDigest)
    );
}

fn command_with_ahs(ahs: &[u8]) -> Result<Pdu, PduError> {
    let wire = to_wire(&samples()[1], NO_DIGESTS);
    let (mut bhs, rest) = split_bhs(&wire);
    bhs[4] = u8::try_from(ahs.len() / 4).expect("small");
    let mut with_ahs = BytesMut::from(ahs);
    with_ahs.extend_from_slice(&rest);
    Pdu::decode(&bhs, with_ahs.freeze(), NO_DIGESTS)
}

#[test]
fn ahs_garbage_is_an_error() {
    // Length running past TotalAHSLength.
    assert!(matches!(
        command_with_ahs(&[0, 40, 1, 0]),
        Err(PduError::BadAhs(_))
    ));
    // Unknown AHS type.
    assert!(matches!(
        command_with_ahs(&[0, 1, 9, 0]),
        Err(PduError::BadAhs(_))
    ));
    // Bidirectional AHS with the wrong length.
    assert!(matches!(
        command_with_ahs(&[0, 3, 2, 0, 0, 0, 0, 0]),
        Err(PduError::BadAhs(_))
    ));
    // Two extended CDB AHS.
    assert!(matches!(
        command_with_ahs(&[0, 3, 1, 0, 1, 2, 0, 0, 0, 3, 1, 0, 1, 2, 0, 0]),
        Err(PduError::BadAhs(_))
    ));
    // A good one for contrast.
    let Ok(Pdu::ScsiCommand(cmd)) = command_with_ahs(&[0, 3, 1, 0, 0xaa, 0xbb, 0, 0]) else {
        panic!("valid AHS must decode");
    };
    assert_eq!(cmd.cdb.len(), 18);
    assert_eq!(&cmd.cdb[16..], &[0xaa, 0xbb]);
}

#[test]
fn ahs_on_other_pdus_is_an_error() {
    let wire = nop_out_wire(NO_DIGESTS);
    let (mut bhs, rest) = split_bhs(&wire);
    bhs[4] = 1;
    let mut with_ahs = BytesMut::from(&[0u8, 1, 1, 0][..]);
    with_ahs.extend_from_slice(&rest);
    assert_eq!(
        Pdu::decode(&bhs, with_ahs.freeze(), NO_DIGESTS),
        Err(PduError::UnexpectedAhs(opcode::NOP_OUT))
    );
}

#[test]
fn data_on_pdus_without_data_is_an_error() {
    let wire = to_wire(&samples()[7], NO_DIGESTS); // Logout Request
    let (mut bhs, _) = split_bhs(&wire);
    bhs[7] = 4;
    assert_eq!(
        Pdu::decode(&bhs, Bytes::from_static(&[1, 2, 3, 4]), NO_DIGESTS),
        Err(PduError::UnexpectedData(opcode::LOGOUT_REQUEST))
    );
}

#[test]
fn bad_sense_length_and_flags_are_errors() {
    let wire = to_wire(&samples()[10], NO_DIGESTS);
    let (bhs, rest) = split_bhs(&wire);
    let mut bad = BytesMut::from(&rest[..]);
    bad[0] = 0xff;
    assert!(matches!(
        Pdu::decode(&bhs, bad.freeze(), NO_DIGESTS),
        Err(PduError::BadDataSegment(_))
    ));
    let mut both = bhs;
    both[1] |= 0x06;
    assert!(matches!(
        Pdu::decode(&both, rest, NO_DIGESTS),
        Err(PduError::BadField(_))
    ));
}

#[test]
fn random_bytes_never_panic() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(7143);
    for _ in 0..5000 {
        let mut bhs = [0u8; BHS_LEN];
        rng.fill(&mut bhs[..]);
        bhs[5] = 0;
        bhs[6] &= 0x01;
        let digests = Digests {
            header: rng.random(),
            data: rng.random(),
        };
        let Ok(info) = BhsInfo::parse(&bhs, BIG) else {
            continue;
        };
        let mut rest = vec![0u8; info.frame_len(digests)];
        rng.fill(&mut rest[..]);
        // Only must not panic; most are digest or field errors.
        let _ = Pdu::decode(&bhs, Bytes::from(rest), Digests::default());
        let mut rest = vec![0u8; info.frame_len(Digests::default())];
        rng.fill(&mut rest[..]);
        if let Ok(pdu) = Pdu::decode(&bhs, Bytes::from(rest), Digests::default()) {
            let _ = pdu.encode(digests);
        }
    }
}
