//! TEST UNIT READY, INQUIRY, READ CAPACITY, REPORT LUNS, unit attentions, unknown opcodes,
//! sense format.

use crate::scsi::testing::*;
use crate::scsi::{LuConfig, NexusId, Status};

#[test]
fn new_nexus_sees_power_on_then_ready() {
    let lu = lu(config(100));
    let r = exec(&lu, N1, &[0; 6], Vec::new());
    assert_eq!(r.status, Status::CheckCondition);
    assert_eq!(sense_of(&r), (0x6, 0x29, 0x00));
    let r = exec(&lu, N1, &[0; 6], Vec::new());
    assert_eq!(r.status, Status::Good);
    assert!(r.sense.is_empty() && r.data_in.is_empty());
}

#[test]
fn inquiry_and_report_luns_pass_unit_attention_request_sense_clears_it() {
    let lu = lu(config(100));
    let r = exec(&lu, N1, &[0x12, 0, 0, 0, 96, 0], Vec::new());
    assert_eq!(r.status, Status::Good);
    let r = exec(
        &lu,
        N1,
        &[0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        Vec::new(),
    );
    assert_eq!(r.status, Status::Good);
    assert_eq!(&r.data_in[..4], &8u32.to_be_bytes());
    // Still pending: REQUEST SENSE returns it as data, with GOOD status, and clears it.
    let r = exec(&lu, N1, &[0x03, 0, 0, 0, 252, 0], Vec::new());
    assert_eq!(r.status, Status::Good);
    assert_eq!(
        (r.data_in[0], r.data_in[2], r.data_in[12]),
        (0x70, 0x06, 0x29)
    );
    let r = exec(&lu, N1, &[0x03, 1, 0, 0, 252, 0], Vec::new());
    assert_eq!(r.status, Status::Good);
    assert_eq!(
        &r.data_in[..4],
        &[0x72, 0x00, 0x00, 0x00],
        "NO SENSE, descriptor format"
    );
    assert_eq!(exec(&lu, N1, &[0; 6], Vec::new()).status, Status::Good);
}

#[test]
fn report_luns_clears_only_reported_luns_changed() {
    let lu = lu(config(100));
    clear_ua(&lu, N1);
    lu.establish_ua(None, 0x3F, 0x0E);
    let r = exec(
        &lu,
        N1,
        &[0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
        Vec::new(),
    );
    assert_eq!(r.status, Status::Good);
    assert_eq!(exec(&lu, N1, &[0; 6], Vec::new()).status, Status::Good);
}

#[test]
fn ua_for_one_nexus_reset_for_all_and_lost_nexus() {
    let lu = lu(config(100));
    clear_ua(&lu, N1);
    clear_ua(&lu, N2);
    lu.establish_ua(Some(N2), 0x3F, 0x0E);
    assert_eq!(exec(&lu, N1, &[0; 6], Vec::new()).status, Status::Good);
    assert_eq!(
        sense_of(&exec(&lu, N2, &[0; 6], Vec::new())),
        (6, 0x3F, 0x0E)
    );
    // A LUN reset: every nexus learns of it by a unit attention, the issuer's too (SAM-5).
    lu.reset();
    assert_eq!(
        sense_of(&exec(&lu, N1, &[0; 6], Vec::new())),
        (6, 0x29, 0x03)
    );
    assert_eq!(
        sense_of(&exec(&lu, N2, &[0; 6], Vec::new())),
        (6, 0x29, 0x03)
    );
    assert_eq!(exec(&lu, N2, &[0; 6], Vec::new()).status, Status::Good);
    // A nexus that reconnects after loss starts over with POWER ON.
    lu.nexus_lost(N1);
    assert_eq!(
        sense_of(&exec(&lu, N1, &[0; 6], Vec::new())),
        (6, 0x29, 0x00)
    );
    // TARGET RESET raises the generic POWER ON, RESET, OR BUS DEVICE RESET OCCURRED on
    // every nexus.
    clear_ua(&lu, N1);
    lu.target_reset();
    assert_eq!(
        sense_of(&exec(&lu, N1, &[0; 6], Vec::new())),
        (6, 0x29, 0x00)
    );
    assert_eq!(
        sense_of(&exec(&lu, N2, &[0; 6], Vec::new())),
        (6, 0x29, 0x00)
    );
    // A nexus never seen before also gets POWER ON, not the reset it missed.
    assert_eq!(
        sense_of(&exec(&lu, NexusId(9), &[0; 6], Vec::new())),
        (6, 0x29, 0x00)
    );
}

#[test]
fn unknown_opcode_is_invalid_command_operation_code() {
    let lu = lu(config(100));
    clear_ua(&lu, N1);
    let r = exec(&lu, N1, &[0xC7, 0, 0, 0, 0, 0], Vec::new());
    assert_eq!(r.status, Status::CheckCondition);
    assert_eq!(sense_of(&r), (0x5, 0x20, 0x00));
    // With a unit attention pending, the unit attention is reported first.
    lu.establish_ua(Some(N1), 0x2A, 0x01);
    let r = exec(&lu, N1, &[0xC7, 0, 0, 0, 0, 0], Vec::new());
    assert_eq!(sense_of(&r), (0x6, 0x2A, 0x01));
}

#[test]
fn standard_inquiry_fields() {
    let lu = lu(LuConfig {
        product: "VOLUME".into(),
        ..config(100)
    });
    let r = exec(&lu, N1, &[0x12, 0, 0, 0x01, 0x04, 0], Vec::new());
    let d = &r.data_in;
    assert_eq!(d.len(), 96);
    assert_eq!(d[0], 0x00);
    assert_eq!(d[2], 0x06);
    assert_eq!(d[3] & 0x0F, 2);
    assert_eq!(usize::from(d[4]), d.len() - 5);
    assert_eq!(&d[8..16], b"SPINDLE ");
    assert_eq!(&d[16..32], b"VOLUME          ");
    let descriptors: Vec<u16> = d[58..74]
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    for v in [0x00A0, 0x0960, 0x0460, 0x04C0] {
        assert!(descriptors.contains(&v), "{v:#x}");
    }
    // Allocation length truncates.
    for alloc in [5u8, 36, 95] {
        let r = exec(&lu, N1, &[0x12, 0, 0, 0, alloc, 0], Vec::new());
        assert_eq!(r.data_in.len(), usize::from(alloc));
        assert_eq!(&r.data_in[..], &d[..usize::from(alloc)]);
    }
}

#[test]
fn inquiry_vpd_pages_and_errors() {
    let lu = lu(config(100));
    let r = exec(&lu, N1, &[0x12, 1, 0x00, 0, 255, 0], Vec::new());
    assert_eq!(r.data_in[1], 0);
    for &p in &r.data_in[4..] {
        let r = exec(&lu, N1, &[0x12, 1, p, 0, 255, 0], Vec::new());
        assert_eq!(r.status, Status::Good, "page {p:#x}");
        assert_eq!(r.data_in[1], p);
    }
    let r = exec(&lu, N1, &[0x12, 1, 0x80, 0, 255, 0], Vec::new());
    assert_eq!(&r.data_in[4..], b"TESTSERIAL");
    let r = exec(&lu, N1, &[0x12, 0, 1, 1, 0, 0], Vec::new());
    assert_eq!(sense_of(&r), (5, 0x24, 0));
    let r = exec(&lu, N1, &[0x12, 1, 0xC5, 0, 255, 0], Vec::new());
    assert_eq!(sense_of(&r), (5, 0x24, 0));
}

#[test]
fn read_capacity_10_and_16() {
    let lu = lu(LuConfig {
        thin: true,
        ..config(1000)
    });
    clear_ua(&lu, N1);
    let r = exec(&lu, N1, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], Vec::new());
    assert_eq!(r.data_in[..], [0, 0, 0x03, 0xE7, 0, 0, 2, 0]);
    let mut cdb = vec![0x9E, 0x10];
    cdb.extend_from_slice(&[0; 8]);
    cdb.extend_from_slice(&32u32.to_be_bytes());
    cdb.extend_from_slice(&[0, 0]);
    let r = exec(&lu, N1, &cdb, Vec::new());
    assert_eq!(r.data_in.len(), 32);
    assert_eq!(u64::from_be_bytes(r.data_in[0..8].try_into().unwrap()), 999);
    assert_eq!(&r.data_in[8..12], &512u32.to_be_bytes());
    assert_eq!(r.data_in[13], 0, "one logical block per physical block");
    assert_eq!(r.data_in[14] & 0xC0, 0xC0, "LBPME and LBPRZ");
    for alloc in 0..16u8 {
        cdb[13] = alloc;
        let r = exec(&lu, N1, &cdb, Vec::new());
        assert_eq!(r.status, Status::Good);
        assert_eq!(r.data_in.len(), usize::from(alloc));
    }
}

#[test]
fn read_capacity_16_reports_the_physical_block_exponent() {
    let lu = lu(LuConfig {
        physical_block_exp: 3,
        ..config(1000)
    });
    clear_ua(&lu, N1);
    let mut cdb = vec![0x9E, 0x10];
    cdb.extend_from_slice(&[0; 8]);
    cdb.extend_from_slice(&32u32.to_be_bytes());
    cdb.extend_from_slice(&[0, 0]);
    let r = exec(&lu, N1, &cdb, Vec::new());
    assert_eq!(
        r.data_in[13] & 0x0F,
        3,
        "8 logical blocks per physical block"
    );
    let bad = LuConfig {
        physical_block_exp: 16,
        ..config(1000)
    };
    assert!(bad.validate().is_err());
}

#[test]
fn read_capacity10_saturates_for_huge_units() {
    let cfg = LuConfig {
        num_blocks: 1 << 33,
        ..config(0)
    };
    let lu = crate::scsi::LogicalUnit::new(cfg, MemBackend::new(0));
    clear_ua(&lu, N1);
    let r = exec(&lu, N1, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], Vec::new());
    assert_eq!(&r.data_in[..4], &[0xFF; 4]);
}

#[test]
fn sense_format_follows_d_sense() {
    let lu = lu(config(100));
    clear_ua(&lu, N1);
    let oob = cdb16(0x88, 0, u64::MAX, 1);
    let r = exec(&lu, N1, &oob, Vec::new());
    assert_eq!(r.sense[0], 0x70);
    // Set D_SENSE through MODE SELECT(6) of the control page.
    let ms = exec(&lu, N1, &[0x1A, 0x08, 0x0A, 0, 255, 0], Vec::new());
    let mut page = ms.data_in[4..].to_vec();
    page[2] |= 0x04;
    let mut list = vec![0, 0, 0, 0];
    list.extend_from_slice(&page);
    let r = exec(&lu, N1, &[0x15, 0x10, 0, 0, list.len() as u8, 0], list);
    assert_eq!(r.status, Status::Good, "{r:?}");
    let r = exec(&lu, N1, &oob, Vec::new());
    assert_eq!(r.sense[0], 0x72);
    assert_eq!(sense_of(&r), (5, 0x21, 0));
}

#[test]
fn a_malformed_cdb_waits_behind_a_unit_attention_as_its_policy_says() {
    let lu = lu(config(100));
    clear_ua(&lu, N1);
    // READ(10) reports unit attentions: the attention comes first, then the malformed CDB.
    let bad_read = [0x28, 0xE0, 0, 0, 0, 0, 0, 0, 1, 0];
    lu.establish_ua(Some(N1), 0x2A, 0x01);
    assert_eq!(
        sense_of(&exec(&lu, N1, &bad_read, Vec::new())),
        (0x6, 0x2A, 0x01)
    );
    let r = exec(&lu, N1, &bad_read, Vec::new());
    assert_eq!(sense_of(&r), (0x5, 0x24, 0x00));
    assert_eq!(&r.sense[15..18], &[0xCF, 0, 1], "PROTECT field pointer");
    // A short READ(10): INVALID FIELD IN CDB, byte 0.
    let r = exec(&lu, N1, &[0x28, 0, 0], Vec::new());
    assert_eq!(sense_of(&r), (0x5, 0x24, 0x00));
    // INQUIRY passes unit attentions: its malformed CDB fails at once, the attention stays.
    lu.establish_ua(Some(N1), 0x2A, 0x01);
    let r = exec(&lu, N1, &[0x12, 0, 0x80, 0, 0xFF, 0], Vec::new());
    assert_eq!(sense_of(&r), (0x5, 0x24, 0x00));
    assert_eq!(
        sense_of(&exec(&lu, N1, &[0; 6], Vec::new())),
        (0x6, 0x2A, 0x01)
    );
}

#[test]
fn naca_in_control_byte_is_rejected() {
    let lu = lu(config(100));
    clear_ua(&lu, N1);
    let r = exec(&lu, N1, &[0, 0, 0, 0, 0, 0x04], Vec::new());
    assert_eq!(sense_of(&r), (5, 0x24, 0));
    assert_eq!(&r.sense[15..18], &[0xCA, 0, 5]);
}

#[test]
fn config_validation() {
    assert_eq!(config(10).validate(), Ok(()));
    for bs in [0u32, 100, 1000, 1 << 17] {
        let c = LuConfig {
            block_size: bs,
            ..config(10)
        };
        assert_eq!(c.validate(), Err(crate::scsi::ConfigError::BlockSize(bs)));
    }
    let c = LuConfig {
        num_blocks: u64::MAX,
        ..config(0)
    };
    assert!(matches!(
        c.validate(),
        Err(crate::scsi::ConfigError::Capacity { .. })
    ));
    let c = LuConfig {
        naa: [0x60; 8],
        ..config(10)
    };
    assert_eq!(c.validate(), Err(crate::scsi::ConfigError::Naa(6)));
}

#[test]
fn invalid_config_gives_an_empty_unit_not_a_panic() {
    let cfg = LuConfig {
        block_size: 0,
        ..config(10)
    };
    let lu = crate::scsi::LogicalUnit::new(cfg, MemBackend::new(0));
    clear_ua(&lu, N1);
    let r = exec(&lu, N1, &cdb10(0x28, 0, 0, 1), Vec::new());
    assert_eq!(sense_of(&r), (5, 0x21, 0));
    let r = exec(&lu, N1, &cdb10(0x41, 0, 0, 0), vec![0; 512]);
    assert_eq!(r.status, Status::CheckCondition);
}

#[test]
fn engine_answered_report_luns_clears_the_unit_attention() {
    let lu = lu(config(100));
    clear_ua(&lu, N1);
    lu.establish_ua(Some(N1), 0x3F, 0x0E);
    lu.luns_reported(N1);
    assert_eq!(exec(&lu, N1, &[0; 6], Vec::new()).status, Status::Good);
}

#[test]
fn data_out_lengths_follow_the_cdb() {
    let lu = lu(LuConfig {
        thin: true,
        ..config(100)
    });
    let data_out_len = |cdb: &[u8]| lu.data_out_len(&lu.decode(cdb));
    assert_eq!(data_out_len(&cdb10(0x2A, 0, 0, 3)), Some(1536));
    assert_eq!(data_out_len(&cdb10(0x28, 0, 0, 3)), None);
    assert_eq!(data_out_len(&cdb10(0x2F, 0, 0, 3)), Some(0));
    assert_eq!(data_out_len(&cdb10(0x2F, 0x02, 0, 3)), Some(1536));
    assert_eq!(data_out_len(&cdb10(0x2F, 0x06, 0, 3)), Some(512));
    let mut caw = cdb16(0x89, 0, 0, 0);
    caw[13] = 2;
    assert_eq!(data_out_len(&caw), Some(2048));
    assert_eq!(data_out_len(&cdb16(0x93, 0x01, 0, 8)), Some(0), "NDOB");
    assert_eq!(data_out_len(&cdb10(0x41, 0, 0, 8)), Some(512));
    assert_eq!(data_out_len(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]), Some(24));
    assert_eq!(data_out_len(&[0x15, 0x10, 0, 0, 28, 0]), Some(28));
    let mut xcopy = vec![0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 76, 0, 0];
    assert_eq!(data_out_len(&xcopy), Some(76));
    xcopy[1] = 1; // unknown service action
    assert_eq!(data_out_len(&xcopy), None);
}
