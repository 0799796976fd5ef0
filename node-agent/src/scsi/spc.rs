//! Primary commands (SPC-4) of the logical unit: INQUIRY, REQUEST SENSE, START STOP UNIT,
//! PREVENT ALLOW MEDIUM REMOVAL, REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS, REPORT TARGET
//! PORT GROUPS.

use super::lu::{Fail, LogicalUnit, Out};
use super::sense::{LU_NOT_READY_INIT_REQUIRED, NO_ADDITIONAL_SENSE, Sense, SenseKey};
use super::{Backend, NexusId, truncate, vpd};

/// Version descriptors claimed in standard INQUIRY data: SAM-5, iSCSI, SPC-4, SBC-3.
const VERSION_DESCRIPTORS: [u16; 4] = [0x00A0, 0x0960, 0x0460, 0x04C0];

/// Length of the standard INQUIRY data returned.
const STD_INQUIRY_LEN: usize = 96;

/// Copies `s` into `out` as space-padded printable ASCII (SPC-4 4.4.1).
pub(super) fn ascii_field(out: &mut [u8], s: &str) {
    out.fill(b' ');
    for (d, c) in out.iter_mut().zip(s.bytes()) {
        *d = if (0x20..=0x7E).contains(&c) { c } else { b' ' };
    }
}

/// Standard INQUIRY data for a direct-access block device with peripheral qualifier
/// `qualifier` and type `device_type` (used for absent LUNs too).
pub(super) fn standard_inquiry(
    qualifier: u8,
    device_type: u8,
    vendor: &str,
    product: &str,
    revision: &str,
) -> Vec<u8> {
    let mut d = vec![0u8; STD_INQUIRY_LEN];
    d[0] = (qualifier << 5) | (device_type & 0x1F);
    d[2] = 0x06; // SPC-4
    d[3] = 0x10 | 0x02; // HISUP, response data format 2
    d[4] = (STD_INQUIRY_LEN - 5) as u8;
    d[5] = 0x10; // TPGS = 01b: implicit asymmetric access (REPORT TARGET PORT GROUPS)
    d[7] = 0x02; // CMDQUE
    ascii_field(&mut d[8..16], vendor);
    ascii_field(&mut d[16..32], product);
    ascii_field(&mut d[32..36], revision);
    for (i, v) in VERSION_DESCRIPTORS.iter().enumerate() {
        let at = 58 + 2 * i;
        d[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
    d
}

impl<B: Backend> LogicalUnit<B> {
    pub(super) fn inquiry(&self, evpd: bool, page: u8, alloc: u16) -> Out {
        let data = if evpd {
            vpd::page(&self.cfg, page)?
        } else {
            let c = &self.cfg;
            let mut d = standard_inquiry(0, 0x00, &c.vendor, &c.product, &c.revision);
            d[5] |= 0x08; // 3PC: EXTENDED COPY
            d
        };
        Ok(truncate(data, usize::from(alloc)))
    }

    /// REQUEST SENSE: a pending unit attention (cleared), else the unit's readiness.
    pub(super) fn request_sense(&self, nexus: NexusId, desc: bool, alloc: u8) -> Vec<u8> {
        let sense = match self.nexuses.borrow_mut().pop(nexus) {
            Some(asc) => Sense::unit_attention(asc),
            None if let Some(s) = self.sanitize_state.in_progress() => s,
            None if self.stopped.get() => {
                Sense::new(SenseKey::NotReady, LU_NOT_READY_INIT_REQUIRED)
            }
            None => Sense::new(SenseKey::NoSense, NO_ADDITIONAL_SENSE),
        };
        truncate(sense.to_bytes(desc), usize::from(alloc))
    }

    /// START STOP UNIT: START=0 stops the unit (medium commands then fail NOT READY),
    /// START=1 starts it. A stop flushes the write cache unless NO_FLUSH. LOEJ on a
    /// non-removable unit is refused while a PREVENT is in effect, and is otherwise a no-op.
    pub(super) async fn start_stop(
        &self,
        _nexus: NexusId,
        power_condition: u8,
        no_flush: bool,
        loej: bool,
        start: bool,
    ) -> Out {
        if power_condition != 0 {
            // Power conditions other than START_VALID are accepted and have no effect.
            return Ok(Vec::new());
        }
        if loej && !start && !self.prevent.borrow().is_empty() {
            return Err(Sense::illegal(super::sense::MEDIUM_REMOVAL_PREVENTED).into());
        }
        if !start && !no_flush {
            self.backend
                .flush()
                .await
                .map_err(|e| Fail::Check(write_error(e)))?;
        }
        self.stopped.set(!start);
        Ok(Vec::new())
    }

    /// PREVENT ALLOW MEDIUM REMOVAL: remembered per nexus (it only gates LOEJ).
    pub(super) fn prevent_allow(&self, nexus: NexusId, prevent: u8) -> Out {
        let mut p = self.prevent.borrow_mut();
        match prevent {
            0 => p.retain(|n| *n != nexus),
            1 => {
                if !p.contains(&nexus) {
                    p.push(nexus);
                }
            }
            // 10b/11b (medium changer element) are not supported.
            _ => return Err(Sense::invalid_cdb_field(4, Some(1)).into()),
        }
        Ok(Vec::new())
    }

    /// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (SPC-4 6.40): ABORT TASK, ABORT TASK SET,
    /// LOGICAL UNIT RESET, I_T NEXUS RESET, and (for the target) TARGET RESET.
    pub(super) fn report_tmf(&self, repd: bool, alloc: u32) -> Vec<u8> {
        // ATS (abort task), ATSS (abort task set), LURS (LU reset), TRS (target reset).
        const SUPPORTED: u8 = 0x80 | 0x40 | 0x08 | 0x02;
        let mut d = vec![SUPPORTED, 0x00, 0x00, 0x00];
        if repd {
            // Extended format: 16 bytes, ADDITIONAL DATA LENGTH 0Ch, no timeouts reported.
            d.resize(16, 0);
            d[3] = 0x0C;
        }
        truncate(d, alloc as usize)
    }

    /// REPORT TARGET PORT GROUPS (SPC-4 6.37): one group, active/optimized, one port.
    pub(super) fn report_tpg(&self, format: u8, alloc: u32) -> Vec<u8> {
        let mut d = Vec::with_capacity(8 + 12);
        if format == 1 {
            // Extended header: format type 001b, implicit transition time 0.
            d.extend_from_slice(&[0, 0, 0, 0, 0x10, 0, 0, 0]);
        } else {
            d.extend_from_slice(&[0, 0, 0, 0]);
        }
        let header = d.len();
        // Descriptor: PREF=1, state active/optimized; supports AO only (AO_SUP).
        d.extend_from_slice(&[0x80, 0x01]);
        d.extend_from_slice(&self.cfg.target_port_group.to_be_bytes());
        d.extend_from_slice(&[0, 0, 0, 1]); // reserved, status code, vendor, port count
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(&self.cfg.relative_port.to_be_bytes());
        let len = (d.len() - 4) as u32;
        d[..4].copy_from_slice(&len.to_be_bytes());
        debug_assert!(d.len() > header);
        truncate(d, alloc as usize)
    }
}

/// MEDIUM ERROR, WRITE ERROR: a backend write, flush or unmap failed (logged).
pub(super) fn write_error(e: std::io::Error) -> Sense {
    tracing::warn!(error = %e, "backend write failed");
    Sense::new(SenseKey::MediumError, super::sense::WRITE_ERROR)
}

/// MEDIUM ERROR, UNRECOVERED READ ERROR: a backend read failed (logged).
pub(super) fn read_error(e: std::io::Error) -> Sense {
    tracing::warn!(error = %e, "backend read failed");
    Sense::new(SenseKey::MediumError, super::sense::UNRECOVERED_READ_ERROR)
}
