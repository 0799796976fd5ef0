//! EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 6.4, 6.18), plus the third-party
//! copy VPD page they are advertised in.
//!
//! The copy manager copies within this logical unit only: a target descriptor must name this
//! unit (by one of its VPD 83h logical unit designators); any other copy target is
//! unreachable. Copies run to completion inside the command (no background operations), so
//! COPY STATUS always reports a finished operation.

use super::lu::{Fail, LogicalUnit, Out, empty};
use super::sbc::write_protected;
use super::sense::{Asc, PARAMETER_LIST_LENGTH_ERROR, Sense, SenseKey};
use super::{Backend, LuConfig, NexusId, truncate, vpd};

/// Too many target descriptors.
const TOO_MANY_TARGET_DESCRIPTORS: Asc = Asc(0x26, 0x06);
/// Unsupported target descriptor type code.
const UNSUPPORTED_TARGET_DESCRIPTOR: Asc = Asc(0x26, 0x07);
/// Too many segment descriptors.
const TOO_MANY_SEGMENT_DESCRIPTORS: Asc = Asc(0x26, 0x08);
/// Unsupported segment descriptor type code.
const UNSUPPORTED_SEGMENT_DESCRIPTOR: Asc = Asc(0x26, 0x09);
/// Copy target device not reachable.
const COPY_TARGET_NOT_REACHABLE: Asc = Asc(0x0D, 0x02);

/// Operating parameters (reported by RECEIVE COPY RESULTS, enforced here).
const MAX_TARGET_DESCRIPTORS: usize = 2;
const MAX_SEGMENT_DESCRIPTORS: usize = 8;
const MAX_DESCRIPTOR_LIST_LENGTH: usize = 1024;
/// Bytes copied per backend read/write pair.
const COPY_CHUNK_BYTES: u64 = 1 << 20;
/// Completed copy results held per logical unit (oldest dropped first).
const MAX_HELD_RESULTS: usize = 16;

const TARGET_IDENTIFICATION: u8 = 0xE4;
const SEGMENT_BLOCK_TO_BLOCK: u8 = 0x02;
const HEADER_LEN: usize = 16;
const TARGET_LEN: usize = 32;
const SEGMENT_B2B_LEN: usize = 28;

/// COPY ABORTED with an ASC/ASCQ.
fn copy_aborted(asc: Asc) -> Sense {
    Sense::new(SenseKey::CopyAborted, asc)
}

/// One block-to-block segment: copy `blocks` blocks from `src_lba` to `dst_lba` between the
/// target descriptors `src` and `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Segment {
    src: u16,
    dst: u16,
    blocks: u16,
    src_lba: u64,
    dst_lba: u64,
}

/// A validated EXTENDED COPY parameter list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CopyList {
    pub list_id: u8,
    /// LIST ID USAGE 00b: hold the results for RECEIVE COPY RESULTS.
    pub hold: bool,
    /// Per target descriptor: whether it names this logical unit.
    pub reachable: Vec<bool>,
    pub segments: Vec<Segment>,
}

/// Whether the designation descriptor `d` (4-byte header and designator) names this unit.
fn names_this_unit(cfg: &LuConfig, d: &[u8]) -> bool {
    let Some(&len) = d.get(3) else {
        return false;
    };
    let Some(wanted) = d.get(..4 + usize::from(len)) else {
        return false;
    };
    vpd::lu_designators(cfg).iter().any(|own| {
        own.len() == wanted.len()
            && own[0] & 0x0F == wanted[0] & 0x0F
            && own[1] & 0x3F == wanted[1] & 0x3F
            && own[4..] == wanted[4..]
    })
}

/// Parses and validates an EXTENDED COPY (LID1) parameter list for this unit.
pub(super) fn parse(cfg: &LuConfig, data: &[u8]) -> Result<CopyList, Sense> {
    if data.len() < HEADER_LEN {
        return Err(Sense::illegal(PARAMETER_LIST_LENGTH_ERROR));
    }
    let be32 = |at: usize| u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
    let tdl = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let sdl = be32(8) as usize;
    let inline = be32(12) as usize;
    if HEADER_LEN + tdl + sdl + inline > data.len() {
        return Err(Sense::illegal(PARAMETER_LIST_LENGTH_ERROR));
    }
    if tdl + sdl > MAX_DESCRIPTOR_LIST_LENGTH {
        return Err(Sense::illegal(PARAMETER_LIST_LENGTH_ERROR));
    }
    if inline != 0 {
        return Err(Sense::invalid_param_field(12, None));
    }
    if !tdl.is_multiple_of(TARGET_LEN) {
        return Err(Sense::illegal(PARAMETER_LIST_LENGTH_ERROR));
    }
    if tdl / TARGET_LEN > MAX_TARGET_DESCRIPTORS {
        return Err(Sense::illegal(TOO_MANY_TARGET_DESCRIPTORS));
    }
    let targets = &data[HEADER_LEN..HEADER_LEN + tdl];
    let mut reachable = Vec::with_capacity(tdl / TARGET_LEN);
    for (i, t) in targets.chunks_exact(TARGET_LEN).enumerate() {
        let at = (HEADER_LEN + i * TARGET_LEN) as u16;
        if t[0] != TARGET_IDENTIFICATION {
            return Err(Sense::illegal(UNSUPPORTED_TARGET_DESCRIPTOR).with_sks(
                super::sense::Sks::Field {
                    cdb: false,
                    byte: at,
                    bit: None,
                },
            ));
        }
        if t[1] & 0x1F != 0 {
            // Only direct-access block devices.
            return Err(Sense::invalid_param_field(at + 1, Some(4)));
        }
        let block_len = u32::from_be_bytes([0, t[29], t[30], t[31]]);
        reachable.push(names_this_unit(cfg, &t[4..24]) && block_len == cfg.block_size);
    }
    let seg_area = &data[HEADER_LEN + tdl..HEADER_LEN + tdl + sdl];
    let mut segments = Vec::new();
    let mut at = 0;
    while at < seg_area.len() {
        let Some(s) = seg_area.get(at..at + 4) else {
            return Err(Sense::illegal(PARAMETER_LIST_LENGTH_ERROR));
        };
        let abs = (HEADER_LEN + tdl + at) as u16;
        if s[0] != SEGMENT_BLOCK_TO_BLOCK {
            return Err(Sense::illegal(UNSUPPORTED_SEGMENT_DESCRIPTOR).with_sks(
                super::sense::Sks::Field {
                    cdb: false,
                    byte: abs,
                    bit: None,
                },
            ));
        }
        if usize::from(u16::from_be_bytes([s[2], s[3]])) + 4 != SEGMENT_B2B_LEN {
            return Err(Sense::invalid_param_field(abs + 2, None));
        }
        let Some(d) = seg_area.get(at..at + SEGMENT_B2B_LEN) else {
            return Err(Sense::illegal(PARAMETER_LIST_LENGTH_ERROR));
        };
        // DC (counts in destination blocks) means the same thing within one unit.
        segments.push(Segment {
            src: u16::from_be_bytes([d[4], d[5]]),
            dst: u16::from_be_bytes([d[6], d[7]]),
            blocks: u16::from_be_bytes([d[10], d[11]]),
            src_lba: u64::from_be_bytes(d[12..20].try_into().unwrap_or_default()),
            dst_lba: u64::from_be_bytes(d[20..28].try_into().unwrap_or_default()),
        });
        at += SEGMENT_B2B_LEN;
        if segments.len() > MAX_SEGMENT_DESCRIPTORS {
            return Err(Sense::illegal(TOO_MANY_SEGMENT_DESCRIPTORS));
        }
    }
    Ok(CopyList {
        list_id: data[0],
        hold: (data[1] >> 3) & 0x03 == 0,
        reachable,
        segments,
    })
}

/// The outcome of one copy operation, as COPY STATUS reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CopyResult {
    nexus: NexusId,
    list_id: u8,
    ok: bool,
    segments: u16,
    kib: u32,
}

/// Results held for RECEIVE COPY RESULTS.
#[derive(Debug, Default)]
pub(crate) struct HeldResults {
    results: Vec<CopyResult>,
}

impl HeldResults {
    fn hold(&mut self, r: CopyResult) {
        self.results
            .retain(|x| !(x.nexus == r.nexus && x.list_id == r.list_id));
        if self.results.len() >= MAX_HELD_RESULTS {
            self.results.remove(0);
        }
        self.results.push(r);
    }

    fn take(&mut self, nexus: NexusId, list_id: u8) -> Option<CopyResult> {
        let i = self
            .results
            .iter()
            .position(|x| x.nexus == nexus && x.list_id == list_id)?;
        Some(self.results.remove(i))
    }

    /// Drops the results of a lost nexus.
    pub fn nexus_lost(&mut self, nexus: NexusId) {
        self.results.retain(|x| x.nexus != nexus);
    }
}

/// The third-party copy VPD page body (SPC-4 7.8.17): supported commands and descriptors.
pub(super) fn third_party_copy_page() -> Vec<u8> {
    let mut d = Vec::with_capacity(32);
    // Supported Commands descriptor (0001h).
    let cmds: [u8; 7] = [0x83, 1, 0x00, 0x84, 2, 0x00, 0x03];
    let mut body = vec![cmds.len() as u8];
    body.extend_from_slice(&cmds);
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    d.extend_from_slice(&0x0001u16.to_be_bytes());
    d.extend_from_slice(&(body.len() as u16).to_be_bytes());
    d.extend_from_slice(&body);
    // Supported Descriptors descriptor (0009h).
    let mut body = vec![2, SEGMENT_BLOCK_TO_BLOCK, TARGET_IDENTIFICATION];
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    d.extend_from_slice(&0x0009u16.to_be_bytes());
    d.extend_from_slice(&(body.len() as u16).to_be_bytes());
    d.extend_from_slice(&body);
    d
}

impl<B: Backend> LogicalUnit<B> {
    pub(super) async fn extended_copy(&self, nexus: NexusId, len: u32, buf: Vec<u8>) -> Out {
        let len = len as usize;
        if len == 0 {
            return Ok(empty(buf));
        }
        let Some(data) = buf.get(..len) else {
            return Err(Sense::illegal(PARAMETER_LIST_LENGTH_ERROR).into());
        };
        let list = parse(&self.cfg, data)?;
        let mut done = CopyResult {
            nexus,
            list_id: list.list_id,
            ok: false,
            segments: 0,
            kib: 0,
        };
        let mut bytes = 0u64;
        let mut result = Ok(());
        for s in &list.segments {
            match self.copy_segment(&list, s).await {
                Ok(n) => {
                    bytes += n;
                    done.segments += 1;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        done.ok = result.is_ok();
        done.kib = u32::try_from(bytes / 1024).unwrap_or(u32::MAX);
        if list.hold {
            self.copies.borrow_mut().hold(done);
        }
        result?;
        Ok(empty(buf))
    }

    /// Copies one segment; returns the bytes copied.
    async fn copy_segment(&self, list: &CopyList, s: &Segment) -> Result<u64, Fail> {
        let reachable = |i: u16| list.reachable.get(usize::from(i)).copied() == Some(true);
        if !reachable(s.src) || !reachable(s.dst) {
            return Err(copy_aborted(COPY_TARGET_NOT_REACHABLE).into());
        }
        if s.blocks == 0 {
            return Ok(0);
        }
        if self.write_protected() {
            return Err(write_protected().into());
        }
        let n = u64::from(s.blocks);
        let (Ok((src, len)), Ok((dst, _))) = (self.range(s.src_lba, n), self.range(s.dst_lba, n))
        else {
            return Err(copy_aborted(super::sense::NO_ADDITIONAL_SENSE).into());
        };
        let len = len as u64;
        let chunk = COPY_CHUNK_BYTES.min(len);
        // Copy backwards when the destination overlaps the source from above.
        let backwards = dst > src && dst < src + len;
        let _shared = self.io_guard.read().await;
        let mut copied = 0u64;
        while copied < len {
            let n = chunk.min(len - copied);
            let at = if backwards { len - copied - n } else { copied };
            let data = self
                .backend
                .read(src + at, n as usize)
                .await
                .map_err(super::spc::read_error)?;
            let (r, _) = self
                .backend
                .write_at(Vec::from(data), dst + at, !self.mode.get().wce)
                .await;
            r.map_err(super::spc::write_error)?;
            copied += n;
        }
        Ok(len)
    }

    pub(super) fn receive_copy_results(
        &self,
        nexus: NexusId,
        sa: u8,
        list_id: u8,
        alloc: u32,
    ) -> Out {
        let d = match sa {
            0x00 => {
                let Some(r) = self.copies.borrow_mut().take(nexus, list_id) else {
                    return Err(Sense::invalid_cdb_field(2, None).into());
                };
                let mut d = vec![0u8; 12];
                d[0..4].copy_from_slice(&8u32.to_be_bytes());
                d[4] = if r.ok { 0x01 } else { 0x02 };
                d[5..7].copy_from_slice(&r.segments.to_be_bytes());
                d[7] = 0x01; // transfer count in KiB
                d[8..12].copy_from_slice(&r.kib.to_be_bytes());
                d
            }
            0x03 => {
                let mut d = vec![0u8; 44];
                d[4] = 0; // SNLID: a list identifier is required
                d[8..10].copy_from_slice(&(MAX_TARGET_DESCRIPTORS as u16).to_be_bytes());
                d[10..12].copy_from_slice(&(MAX_SEGMENT_DESCRIPTORS as u16).to_be_bytes());
                d[12..16].copy_from_slice(&(MAX_DESCRIPTOR_LIST_LENGTH as u32).to_be_bytes());
                let max_segment = u32::from(u16::MAX).saturating_mul(self.cfg.block_size);
                d[16..20].copy_from_slice(&max_segment.to_be_bytes());
                // Inline data, held data, stream transfer size: none.
                d[34..36].copy_from_slice(&1u16.to_be_bytes()); // total concurrent copies
                d[36] = 1; // maximum concurrent copies
                d[37] = self.cfg.block_size.trailing_zeros() as u8; // data segment granularity
                d.push(SEGMENT_BLOCK_TO_BLOCK);
                d.push(TARGET_IDENTIFICATION);
                d[43] = 2;
                let avail = (d.len() - 4) as u32;
                d[0..4].copy_from_slice(&avail.to_be_bytes());
                d
            }
            _ => return Err(Sense::invalid_cdb_field(1, Some(4)).into()),
        };
        Ok(truncate(d, alloc as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::sense::{INVALID_FIELD_IN_PARAMETER_LIST, PARAMETER_LIST_LENGTH_ERROR};
    use crate::scsi::testing::segment;

    fn cfg() -> LuConfig {
        LuConfig {
            num_blocks: 100,
            naa: [0x39, 9, 9, 9, 9, 9, 9, 9],
            ..LuConfig::default()
        }
    }

    /// An identification target descriptor naming `naa`.
    fn target(naa: &[u8; 8], block: u32) -> Vec<u8> {
        let mut t = vec![0u8; 32];
        t[0] = 0xE4;
        t[4..8].copy_from_slice(&[0x01, 0x03, 0, 8]);
        t[8..16].copy_from_slice(naa);
        t[29..32].copy_from_slice(&block.to_be_bytes()[1..]);
        t
    }

    fn list(targets: &[&[u8]], segments: &[&[u8]]) -> Vec<u8> {
        let t: Vec<u8> = targets.concat();
        let s: Vec<u8> = segments.concat();
        let mut d = vec![0u8; 16];
        d[0] = 7;
        d[2..4].copy_from_slice(&(t.len() as u16).to_be_bytes());
        d[8..12].copy_from_slice(&(s.len() as u32).to_be_bytes());
        d.extend_from_slice(&t);
        d.extend_from_slice(&s);
        d
    }

    #[test]
    fn parses_a_valid_list() {
        let c = cfg();
        let l = parse(
            &c,
            &list(&[&target(&c.naa, 512)], &[&segment(0, 0, 4, 1, 50)]),
        )
        .unwrap();
        assert_eq!(l.list_id, 7);
        assert!(l.hold);
        assert_eq!(l.reachable, vec![true]);
        assert_eq!(l.segments[0].dst_lba, 50);
        // Another unit, or another block size, is not reachable.
        let other = target(&[0x30; 8], 512);
        let wrong_size = target(&c.naa, 4096);
        let l = parse(&c, &list(&[&other, &wrong_size], &[])).unwrap();
        assert_eq!(l.reachable, vec![false, false]);
    }

    #[test]
    fn rejects_bad_lists() {
        let c = cfg();
        let t = target(&c.naa, 512);
        let s = segment(0, 0, 1, 0, 1);
        let asc = |d: &[u8]| parse(&c, d).unwrap_err().asc();
        assert_eq!(asc(&[0; 10]), PARAMETER_LIST_LENGTH_ERROR);
        let full = list(&[&t[..]], &[&s[..]]);
        assert_eq!(asc(&full[..full.len() - 1]), PARAMETER_LIST_LENGTH_ERROR);
        assert_eq!(
            asc(&list(&[&t[..]; 3], &[&s[..]])),
            TOO_MANY_TARGET_DESCRIPTORS
        );
        assert_eq!(
            asc(&list(&[&t[..]], &[&s[..]; 9])),
            TOO_MANY_SEGMENT_DESCRIPTORS
        );
        assert_eq!(
            asc(&list(&[&t[..]], &[&s[..]; 40])),
            PARAMETER_LIST_LENGTH_ERROR
        );
        let mut bad = t.clone();
        bad[0] = 0xE0;
        assert_eq!(
            asc(&list(&[&bad[..]], &[&s[..]])),
            UNSUPPORTED_TARGET_DESCRIPTOR
        );
        let mut bad = s.clone();
        bad[0] = 0x03;
        assert_eq!(
            asc(&list(&[&t[..]], &[&bad[..]])),
            UNSUPPORTED_SEGMENT_DESCRIPTOR
        );
        let mut inline = list(&[&t], &[&s]);
        inline[15] = 4;
        inline.extend_from_slice(&[0; 4]);
        assert_eq!(asc(&inline), INVALID_FIELD_IN_PARAMETER_LIST);
    }

    #[test]
    fn third_party_copy_page_lists_both_commands() {
        let d = third_party_copy_page();
        assert_eq!(&d[0..2], &[0, 1]);
        let len = usize::from(u16::from_be_bytes([d[2], d[3]]));
        assert_eq!(len % 4, 0);
        assert_eq!(&d[4..12], &[7, 0x83, 1, 0, 0x84, 2, 0, 3]);
        assert_eq!(&d[4 + len..6 + len], &[0, 9]);
    }
}
