//! INQUIRY vital product data pages (SPC-4 7.8, SBC-3 6.5): 00h supported pages, 80h unit
//! serial number, 83h device identification, 86h extended INQUIRY data (the task attributes
//! honoured), 8Fh third-party copy, B0h block limits, B1h block device characteristics, B2h
//! logical block provisioning.

use super::LuConfig;
use super::limits;
use super::sense::Sense;

/// The supported VPD pages, in ascending order.
pub const SUPPORTED: [u8; 8] = [0x00, 0x80, 0x83, 0x86, 0x8F, 0xB0, 0xB1, 0xB2];

/// The VPD page `code`, or INVALID FIELD IN CDB (pointing at the page code) if unsupported.
pub fn page(cfg: &LuConfig, code: u8) -> Result<Vec<u8>, Sense> {
    let body = match code {
        0x00 => SUPPORTED.to_vec(),
        0x80 => cfg
            .serial
            .bytes()
            .filter(|c| (0x20..=0x7E).contains(c))
            .collect(),
        0x83 => device_identification(cfg),
        0x86 => extended_inquiry(),
        0x8F => super::xcopy::third_party_copy_page(),
        0xB0 => block_limits(cfg),
        0xB1 => block_device_characteristics(),
        0xB2 => logical_block_provisioning(cfg),
        _ => return Err(Sense::invalid_cdb_field(2, None)),
    };
    let mut d = Vec::with_capacity(4 + body.len());
    d.extend_from_slice(&[0x00, code]);
    d.extend_from_slice(&(body.len() as u16).to_be_bytes());
    d.extend_from_slice(&body);
    Ok(d)
}

/// Appends one designation descriptor (SPC-4 7.8.6.1).
fn designator(out: &mut Vec<u8>, proto_codeset: u8, piv_assoc_type: u8, value: &[u8]) {
    out.extend_from_slice(&[proto_codeset, piv_assoc_type, 0, value.len() as u8]);
    out.extend_from_slice(value);
}

/// A SCSI name string designator value: UTF-8, NUL-terminated, padded to a multiple of 4.
fn name_string(s: &str) -> Vec<u8> {
    let mut v: Vec<u8> = s.bytes().take(251).collect();
    v.push(0);
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
    v
}

const CODE_BINARY: u8 = 0x1;
const CODE_ASCII: u8 = 0x2;
const CODE_UTF8: u8 = 0x3;
const PROTO_ISCSI: u8 = 0x5 << 4;
const PIV: u8 = 0x80;
const ASSOC_LU: u8 = 0x00;
const ASSOC_PORT: u8 = 0x10;
const ASSOC_DEVICE: u8 = 0x20;
const TYPE_T10: u8 = 0x1;
const TYPE_NAA: u8 = 0x3;
const TYPE_RELATIVE_PORT: u8 = 0x4;
const TYPE_PORT_GROUP: u8 = 0x5;
const TYPE_NAME: u8 = 0x8;

/// The designation descriptors that name the logical unit itself: NAA and T10 vendor ID.
/// (EXTENDED COPY target descriptors are matched against these.)
pub fn lu_designators(cfg: &LuConfig) -> Vec<Vec<u8>> {
    let mut naa = Vec::with_capacity(20);
    designator(&mut naa, CODE_BINARY, ASSOC_LU | TYPE_NAA, &cfg.naa);
    let mut value = [b' '; 8].to_vec();
    super::spc::ascii_field(&mut value, &cfg.vendor);
    value.extend(
        cfg.serial
            .bytes()
            .filter(|c| (0x20..=0x7E).contains(c))
            .take(200),
    );
    let mut t10 = Vec::with_capacity(4 + value.len());
    designator(&mut t10, CODE_ASCII, ASSOC_LU | TYPE_T10, &value);
    vec![naa, t10]
}

fn device_identification(cfg: &LuConfig) -> Vec<u8> {
    let mut d = lu_designators(cfg).concat();
    let mut rel = [0u8; 4];
    rel[2..].copy_from_slice(&cfg.relative_port.to_be_bytes());
    designator(
        &mut d,
        PROTO_ISCSI | CODE_BINARY,
        PIV | ASSOC_PORT | TYPE_RELATIVE_PORT,
        &rel,
    );
    let mut tpg = [0u8; 4];
    tpg[2..].copy_from_slice(&cfg.target_port_group.to_be_bytes());
    designator(
        &mut d,
        PROTO_ISCSI | CODE_BINARY,
        PIV | ASSOC_PORT | TYPE_PORT_GROUP,
        &tpg,
    );
    if !cfg.target_iqn.is_empty() {
        let port = cfg.target_port_name();
        designator(
            &mut d,
            PROTO_ISCSI | CODE_UTF8,
            PIV | ASSOC_PORT | TYPE_NAME,
            &name_string(&port),
        );
        designator(
            &mut d,
            PROTO_ISCSI | CODE_UTF8,
            PIV | ASSOC_DEVICE | TYPE_NAME,
            &name_string(&cfg.target_iqn),
        );
    }
    d
}

/// Extended INQUIRY data (SPC-4 7.8.7): HEADSUP, ORDSUP and SIMPSUP, since the task set
/// honours HEAD OF QUEUE, ORDERED and SIMPLE (see `taskset.rs`); nothing else is claimed.
fn extended_inquiry() -> Vec<u8> {
    let mut d = vec![0u8; 0x3C];
    d[1] = 0x04 | 0x02 | 0x01;
    d
}

fn block_limits(cfg: &LuConfig) -> Vec<u8> {
    let mut d = vec![0u8; 0x3C];
    // Byte offsets below are relative to the page start minus the 4-byte header.
    d[1] = limits::MAX_COMPARE_AND_WRITE_BLOCKS;
    // Optimal transfer length granularity: one physical block (SBC-4 6.6.4).
    d[2..4].copy_from_slice(&limits::physical_block_blocks(cfg).to_be_bytes());
    d[4..8].copy_from_slice(&limits::max_transfer_blocks(cfg).to_be_bytes());
    d[8..12].copy_from_slice(&limits::optimal_transfer_blocks(cfg).to_be_bytes());
    d[12..16].copy_from_slice(&limits::max_transfer_blocks(cfg).to_be_bytes()); // prefetch
    if cfg.thin {
        d[16..20].copy_from_slice(&limits::max_unmap_blocks(cfg).to_be_bytes());
        d[20..24].copy_from_slice(&limits::MAX_UNMAP_DESCRIPTORS.to_be_bytes());
        // Optimal unmap granularity: a hole is punched per physical block.
        d[24..28].copy_from_slice(&u32::from(limits::physical_block_blocks(cfg)).to_be_bytes());
    }
    d[32..40].copy_from_slice(&limits::max_write_same_blocks(cfg).to_be_bytes());
    d
}

fn block_device_characteristics() -> Vec<u8> {
    let mut d = vec![0u8; 0x3C];
    d[0..2].copy_from_slice(&1u16.to_be_bytes()); // medium rotation rate: non-rotating
    // WABEREQ = 01b: a read after SANITIZE BLOCK ERASE succeeds (deallocated blocks read as
    // zeros); WACEREQ = 00b: no CRYPTO ERASE.
    d[3] = 0x40;
    d
}

fn logical_block_provisioning(cfg: &LuConfig) -> Vec<u8> {
    let mut d = vec![0u8; 4];
    if cfg.thin {
        // LBPU, LBPWS, LBPWS10, LBPRZ (deallocated blocks read as zeros).
        d[1] = 0x80 | 0x40 | 0x20 | 0x04;
        d[2] = 0x02; // provisioning type: thin
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LuConfig {
        LuConfig {
            num_blocks: 1000,
            serial: "SER1".into(),
            target_iqn: "iqn.2026-11.dev.spindle:t".into(),
            naa: [0x31; 8],
            thin: true,
            ..LuConfig::default()
        }
    }

    #[test]
    fn supported_pages_are_sorted_and_all_answer() {
        let c = cfg();
        let d = page(&c, 0).unwrap();
        let pages = &d[4..];
        assert!(pages.windows(2).all(|w| w[0] < w[1]));
        for &p in pages {
            let d = page(&c, p).unwrap();
            assert_eq!(d[1], p);
            assert_eq!(usize::from(u16::from_be_bytes([d[2], d[3]])), d.len() - 4);
        }
        assert!(page(&c, 0x87).is_err());
        assert_eq!(page(&c, 0x86).unwrap()[5], 0x07, "HEADSUP, ORDSUP, SIMPSUP");
    }

    #[test]
    fn device_identification_designators() {
        let c = cfg();
        let d = page(&c, 0x83).unwrap();
        let mut at = 4;
        let mut seen = Vec::new();
        while at < d.len() {
            let len = usize::from(d[at + 3]);
            seen.push((d[at] & 0x0F, d[at + 1], d[at + 4..at + 4 + len].to_vec()));
            at += 4 + len;
        }
        assert_eq!(at, d.len());
        assert_eq!(seen[0], (1, 0x03, vec![0x31; 8]));
        assert_eq!(seen[1].1, 0x01);
        assert_eq!(&seen[1].2, b"SPINDLE SER1");
        assert_eq!(seen[2], (1, 0x94, vec![0, 0, 0, 1]));
        assert_eq!(seen[3], (1, 0x95, vec![0, 0, 0, 1]));
        assert!(
            seen[4]
                .2
                .starts_with(b"iqn.2026-11.dev.spindle:t,t,0x0001\0")
        );
        assert_eq!(seen[4].2.len() % 4, 0);
        assert_eq!(seen[5].1, 0xA8);
    }

    #[test]
    fn block_limits_and_provisioning() {
        let c = cfg();
        let d = page(&c, 0xB0).unwrap();
        assert_eq!(d.len(), 64);
        assert_eq!(d[5], 255);
        assert_eq!(
            u32::from_be_bytes(d[8..12].try_into().unwrap()),
            (8 << 20) / 512
        );
        assert_eq!(u32::from_be_bytes(d[20..24].try_into().unwrap()), u32::MAX);
        assert_eq!(u32::from_be_bytes(d[24..28].try_into().unwrap()), 256);
        let d = page(&c, 0xB2).unwrap();
        assert_eq!(d[5], 0xE4);
        let thick = LuConfig {
            thin: false,
            ..cfg()
        };
        let d = page(&thick, 0xB2).unwrap();
        assert_eq!(d[5], 0);
        let d = page(&thick, 0xB0).unwrap();
        assert_eq!(&d[20..28], &[0; 8]);
    }

    #[test]
    fn block_limits_granularities_are_one_physical_block() {
        let d = page(&cfg(), 0xB0).unwrap();
        assert_eq!(u16::from_be_bytes([d[6], d[7]]), 1);
        assert_eq!(u32::from_be_bytes(d[28..32].try_into().unwrap()), 1);
        let c = LuConfig {
            physical_block_exp: 3,
            ..cfg()
        };
        let d = page(&c, 0xB0).unwrap();
        assert_eq!(u16::from_be_bytes([d[6], d[7]]), 8);
        assert_eq!(u32::from_be_bytes(d[28..32].try_into().unwrap()), 8);
    }
}
