//! Mode parameters (SPC-4 7.5, SBC-3 6.4): the caching (08h), control (0Ah) and
//! informational exceptions control (1Ch) pages, MODE SENSE 6/10 and MODE SELECT 6/10.
//!
//! Changeable: WCE (caching), D_SENSE and SWP (control). Saved values are not supported.

use super::lu::{LogicalUnit, Out};
use super::sense::{
    MODE_PARAMETERS_CHANGED, PARAMETER_LIST_LENGTH_ERROR, SAVING_PARAMETERS_NOT_SUPPORTED, Sense,
};
use super::{Backend, LuConfig, NexusId, command::ModeSense, truncate};

/// The current values of the changeable mode parameters (one set per logical unit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModeState {
    /// Write cache enable (caching page).
    pub wce: bool,
    /// Descriptor-format sense data (control page).
    pub d_sense: bool,
    /// Software write protect (control page).
    pub swp: bool,
}

impl ModeState {
    /// The power-on values for a configuration.
    pub fn initial(cfg: &LuConfig) -> Self {
        ModeState {
            wce: cfg.write_cache,
            d_sense: false,
            swp: false,
        }
    }
}

const CACHING: u8 = 0x08;
const CONTROL: u8 = 0x0A;
const INFO_EXCEPTIONS: u8 = 0x1C;
const ALL_PAGES: u8 = 0x3F;

/// Supported pages, in the order MODE SENSE returns them for "all pages".
const PAGES: [u8; 3] = [CACHING, CONTROL, INFO_EXCEPTIONS];

/// Page control values.
const PC_CURRENT: u8 = 0;
const PC_CHANGEABLE: u8 = 1;
const PC_DEFAULT: u8 = 2;

/// The page `code` with current values from `s` (page header included).
fn page_values(code: u8, s: ModeState) -> Vec<u8> {
    match code {
        CACHING => {
            let mut p = vec![0u8; 20];
            p[0] = CACHING;
            p[1] = 0x12;
            if s.wce {
                p[2] |= 0x04;
            }
            p
        }
        CONTROL => {
            let mut p = vec![0u8; 12];
            p[0] = CONTROL;
            p[1] = 0x0A;
            if s.d_sense {
                p[2] |= 0x04;
            }
            p[3] = 0x10; // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering
            if s.swp {
                p[4] |= 0x08;
            }
            p[5] = 0x40; // TAS: aborted commands of other nexuses get TASK ABORTED
            p[8..10].copy_from_slice(&0xFFFFu16.to_be_bytes()); // busy timeout: unlimited
            p
        }
        INFO_EXCEPTIONS => {
            let mut p = vec![0u8; 12];
            p[0] = INFO_EXCEPTIONS;
            p[1] = 0x0A;
            p[2] = 0x08; // DEXCPT: informational exceptions disabled
            p
        }
        _ => Vec::new(),
    }
}

/// The changeable-bits mask of page `code` (page header included, as MODE SENSE returns it).
fn page_mask(code: u8) -> Vec<u8> {
    let mut p = page_values(
        code,
        ModeState {
            wce: false,
            d_sense: false,
            swp: false,
        },
    );
    for b in p.iter_mut().skip(2) {
        *b = 0;
    }
    match code {
        CACHING => p[2] = 0x04,
        CONTROL => {
            p[2] = 0x04;
            p[4] = 0x08;
        }
        _ => {}
    }
    p
}

/// Reads the changeable parameters back out of validated page bytes.
fn apply_page(code: u8, p: &[u8], s: &mut ModeState) {
    let bit = |i: usize, m: u8| p.get(i).is_some_and(|b| b & m != 0);
    match code {
        CACHING => s.wce = bit(2, 0x04),
        CONTROL => {
            s.d_sense = bit(2, 0x04);
            s.swp = bit(4, 0x08);
        }
        _ => {}
    }
}

impl<B: Backend> LogicalUnit<B> {
    /// Whether writes are refused: a read-only unit or software write protect.
    pub(super) fn write_protected(&self) -> bool {
        self.cfg.read_only || self.mode.get().swp
    }

    fn page(&self, code: u8, pc: u8) -> Vec<u8> {
        match pc {
            PC_CHANGEABLE => page_mask(code),
            PC_DEFAULT => page_values(code, ModeState::initial(&self.cfg)),
            _ => page_values(code, self.mode.get()),
        }
    }

    pub(super) fn mode_sense(&self, ms: ModeSense) -> Out {
        if ms.pc == 3 {
            return Err(Sense::illegal(SAVING_PARAMETERS_NOT_SUPPORTED).into());
        }
        if ms.page != ALL_PAGES && !PAGES.contains(&ms.page) {
            return Err(Sense::invalid_cdb_field(2, Some(5)).into());
        }
        if ms.subpage != 0 && ms.subpage != 0xFF {
            return Err(Sense::invalid_cdb_field(3, None).into());
        }
        let codes: &[u8] = if ms.page == ALL_PAGES {
            &PAGES
        } else {
            std::slice::from_ref(&ms.page)
        };
        let header_len = if ms.ten { 8 } else { 4 };
        let long = ms.ten && ms.llbaa;
        let mut d = vec![0u8; header_len];
        if !ms.dbd {
            self.block_descriptor(&mut d, long, ms.pc);
        }
        let bd_len = d.len() - header_len;
        for &code in codes {
            d.extend_from_slice(&self.page(code, ms.pc));
        }
        // Device-specific parameter: WP, DPOFUA.
        let dsp = if self.write_protected() { 0x80 } else { 0 } | 0x10;
        if ms.ten {
            let len = (d.len() - 2) as u16;
            d[0..2].copy_from_slice(&len.to_be_bytes());
            d[3] = dsp;
            if long {
                d[4] = 0x01;
            }
            d[6..8].copy_from_slice(&(bd_len as u16).to_be_bytes());
        } else {
            d[0] = (d.len() - 1).min(255) as u8;
            d[2] = dsp;
            d[3] = bd_len as u8;
        }
        Ok(truncate(d, usize::from(ms.alloc)))
    }

    fn block_descriptor(&self, d: &mut Vec<u8>, long: bool, pc: u8) {
        let (blocks, size) = if pc == PC_CHANGEABLE {
            (0, 0)
        } else {
            (self.num_blocks(), self.cfg.block_size)
        };
        if long {
            d.extend_from_slice(&blocks.to_be_bytes());
            d.extend_from_slice(&[0; 4]);
            d.extend_from_slice(&size.to_be_bytes());
        } else {
            let short = u32::try_from(blocks).unwrap_or(u32::MAX);
            d.extend_from_slice(&short.to_be_bytes());
            d.push(0);
            d.extend_from_slice(&size.to_be_bytes()[1..]);
        }
    }

    /// MODE SELECT 6/10: validates every page against the changeable masks first, then
    /// applies them all, and tells the other nexuses MODE PARAMETERS CHANGED.
    pub(super) fn mode_select(
        &self,
        nexus: NexusId,
        ten: bool,
        _pf: bool,
        sp: bool,
        len: u16,
        buf: &[u8],
    ) -> Out {
        if sp {
            return Err(Sense::invalid_cdb_field(1, Some(0)).into());
        }
        let len = usize::from(len);
        if len == 0 {
            return Ok(Vec::new());
        }
        let header_len = if ten { 8 } else { 4 };
        let Some(data) = buf.get(..len) else {
            return Err(Sense::illegal(PARAMETER_LIST_LENGTH_ERROR).into());
        };
        if data.len() < header_len {
            return Err(Sense::illegal(PARAMETER_LIST_LENGTH_ERROR).into());
        }
        let (bd_len, long) = if ten {
            (
                usize::from(u16::from_be_bytes([data[6], data[7]])),
                data[4] & 0x01 != 0,
            )
        } else {
            (usize::from(data[3]), false)
        };
        let pages_at = header_len + bd_len;
        if pages_at > data.len() {
            return Err(Sense::illegal(PARAMETER_LIST_LENGTH_ERROR).into());
        }
        self.check_block_descriptors(&data[header_len..pages_at], header_len, long)?;
        let mut next = self.mode.get();
        let mut at = pages_at;
        while at < data.len() {
            let rest = &data[at..];
            let code = rest[0] & 0x3F;
            let spf = rest[0] & 0x40 != 0;
            if spf || !PAGES.contains(&code) {
                return Err(Sense::invalid_param_field(at as u16, Some(5)).into());
            }
            let Some(&plen) = rest.get(1) else {
                return Err(Sense::illegal(PARAMETER_LIST_LENGTH_ERROR).into());
            };
            let current = self.page(code, PC_CURRENT);
            if usize::from(plen) + 2 != current.len() {
                return Err(Sense::invalid_param_field((at + 1) as u16, None).into());
            }
            let Some(new) = rest.get(..current.len()) else {
                return Err(Sense::illegal(PARAMETER_LIST_LENGTH_ERROR).into());
            };
            let mask = page_mask(code);
            for i in 2..current.len() {
                let diff = (new[i] ^ current[i]) & !mask[i];
                if diff != 0 {
                    let bit = 7 - diff.leading_zeros() as u8;
                    return Err(Sense::invalid_param_field((at + i) as u16, Some(bit)).into());
                }
            }
            apply_page(code, new, &mut next);
            at += current.len();
        }
        if next != self.mode.get() {
            self.mode.set(next);
            self.nexuses
                .borrow_mut()
                .establish_others(nexus, MODE_PARAMETERS_CHANGED);
        }
        Ok(Vec::new())
    }

    /// Block descriptors in MODE SELECT may only restate the unit's geometry.
    fn check_block_descriptors(&self, bds: &[u8], offset: usize, long: bool) -> Result<(), Sense> {
        let size = if long { 16 } else { 8 };
        if !bds.len().is_multiple_of(size) {
            return Err(Sense::illegal(PARAMETER_LIST_LENGTH_ERROR));
        }
        for (n, bd) in bds.chunks(size).enumerate() {
            let base = offset + n * size;
            let (blocks, len, len_at) = if long {
                (
                    u64::from_be_bytes(bd[0..8].try_into().unwrap_or_default()),
                    u32::from_be_bytes(bd[12..16].try_into().unwrap_or_default()),
                    12,
                )
            } else {
                (
                    u64::from(u32::from_be_bytes(bd[0..4].try_into().unwrap_or_default())),
                    u32::from_be_bytes([0, bd[5], bd[6], bd[7]]),
                    5,
                )
            };
            let short_max = u64::from(u32::MAX);
            let blocks_ok = blocks == 0
                || blocks == self.num_blocks()
                || (!long && blocks == short_max && self.num_blocks() >= short_max);
            if !blocks_ok {
                return Err(Sense::invalid_param_field(base as u16, None));
            }
            if len != 0 && len != self.cfg.block_size {
                return Err(Sense::invalid_param_field((base + len_at) as u16, None));
            }
        }
        Ok(())
    }
}
