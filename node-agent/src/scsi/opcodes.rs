//! The one opcode table: operation code (+ service action) → decoder and metadata (CDB length,
//! CDB usage mask, data direction, unit-attention and reservation policy, what the command has
//! to do with the medium). Command lookup ([`super::command::Decoded`] carries the row it
//! found) and REPORT SUPPORTED OPERATION CODES both read this table, so the report never lies.
//!
//! Execution dispatches on the decoded [`Command`](super::command::Command) (an exhaustive
//! `match` in the logical unit), so every decoder here necessarily has a handler.

use super::cdb::{Parsed, sbc, spc};
use super::sense::{INVALID_COMMAND_OPERATION_CODE, Sense};

/// Which way data flows for a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// No data transfer.
    None,
    /// Target to initiator (Data-In).
    In,
    /// Initiator to target (Data-Out).
    Out,
}

/// How a command behaves while a unit attention is pending for its I_T nexus (SAM-5 5.14,
/// SPC-4 5.14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UaPolicy {
    /// Terminated with the unit attention, which is then cleared.
    Report,
    /// Runs; the unit attention stays (INQUIRY, REPORT LUNS).
    Pass,
    /// Returns the unit attention as its parameter data (REQUEST SENSE).
    Sense,
}

/// How a command is gated by a reservation held through another I_T nexus (SPC-4 5.13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Never conflicts (INQUIRY, REPORT LUNS, REQUEST SENSE, PERSISTENT RESERVE ...).
    Always,
    /// Reads the medium: conflicts with exclusive-access reservations.
    Read,
    /// Writes the medium or changes state: conflicts with every reservation type.
    Write,
    /// RESERVE / RELEASE (6/10): conflict with persistent reservations.
    Reserve,
}

/// What a command has to do with the medium.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Medium {
    /// Runs without it, also while the unit is stopped (INQUIRY, MODE SENSE ...).
    Not,
    /// Needs it: fails NOT READY while the unit is stopped (VERIFY, SYNCHRONIZE CACHE ...).
    Needed,
    /// Needs it, and its data are logical blocks read or written (READ, WRITE): its bytes
    /// count as the LUN's traffic in the metrics.
    Io,
}

/// One row of the opcode table.
#[derive(Debug)]
pub struct OpInfo {
    /// Operation code.
    pub opcode: u8,
    /// Service action (in byte 1, bits 4-0), for opcodes that have them.
    pub sa: Option<u8>,
    /// Name, for logs and metrics.
    pub name: &'static str,
    /// CDB usage data for REPORT SUPPORTED OPERATION CODES; its length is the CDB length.
    pub usage: &'static [u8],
    /// Data direction.
    pub dir: Dir,
    /// Unit attention policy.
    pub ua: UaPolicy,
    /// Reservation gating.
    pub access: Access,
    /// What the command has to do with the medium.
    pub medium: Medium,
    /// Only offered by thin-provisioned units (UNMAP).
    pub thin_only: bool,
    /// The decoder.
    pub decode: fn(&[u8]) -> Parsed,
}

impl OpInfo {
    /// CDB length in bytes.
    pub fn cdb_len(&self) -> usize {
        self.usage.len()
    }

    /// Whether a unit (thin-provisioned or not) offers this command.
    pub fn offered(&self, thin: bool) -> bool {
        thin || !self.thin_only
    }
}

const CTL: u8 = 0x05; // NACA and LINK are examined (and rejected) in every control byte.

const U_TUR: &[u8] = &[0x00, 0, 0, 0, 0, CTL];
const U_REQUEST_SENSE: &[u8] = &[0x03, 0x01, 0, 0, 0xFF, CTL];
const U_INQUIRY: &[u8] = &[0x12, 0x01, 0xFF, 0xFF, 0xFF, CTL];
const U_MODE_SELECT6: &[u8] = &[0x15, 0x11, 0, 0, 0xFF, CTL];
const U_MODE_SENSE6: &[u8] = &[0x1A, 0x08, 0xFF, 0xFF, 0xFF, CTL];
const U_MODE_SELECT10: &[u8] = &[0x55, 0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF, CTL];
const U_MODE_SENSE10: &[u8] = &[0x5A, 0x18, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, CTL];
const U_RESERVE6: &[u8] = &[0x16, 0, 0, 0, 0, CTL];
const U_RELEASE6: &[u8] = &[0x17, 0, 0, 0, 0, CTL];
const U_RESERVE10: &[u8] = &[0x56, 0, 0, 0, 0, 0, 0, 0, 0, CTL];
const U_RELEASE10: &[u8] = &[0x57, 0, 0, 0, 0, 0, 0, 0, 0, CTL];
const U_START_STOP: &[u8] = &[0x1B, 0x01, 0, 0x0F, 0xF7, CTL];
const U_PREVENT: &[u8] = &[0x1E, 0, 0, 0, 0x03, CTL];
const U_REPORT_LUNS: &[u8] = &[0xA0, 0, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, CTL];
const U_RTPG: &[u8] = &[0xA3, 0xEA, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, CTL];
const U_RSOC: &[u8] = &[
    0xA3, 0x0C, 0x87, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, CTL,
];
const U_RSTMF: &[u8] = &[0xA3, 0x0D, 0x80, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, CTL];
const U_PR_IN: &[u8] = &[0x5E, 0x1F, 0, 0, 0, 0, 0, 0xFF, 0xFF, CTL];
const U_PR_OUT: &[u8] = &[0x5F, 0x1F, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, CTL];

const U_READ6: &[u8] = &[0x08, 0x1F, 0xFF, 0xFF, 0xFF, CTL];
const U_WRITE6: &[u8] = &[0x0A, 0x1F, 0xFF, 0xFF, 0xFF, CTL];
const U_READ10: &[u8] = &[0x28, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, CTL];
const U_WRITE10: &[u8] = &[0x2A, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, CTL];
const U_READ12: &[u8] = &[
    0xA8, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, CTL,
];
const U_WRITE12: &[u8] = &[
    0xAA, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, CTL,
];
const U_READ16: &[u8] = &[
    0x88, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, CTL,
];
const U_WRITE16: &[u8] = &[
    0x8A, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, CTL,
];
const U_VERIFY10: &[u8] = &[0x2F, 0x16, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, CTL];
const U_VERIFY12: &[u8] = &[
    0xAF, 0x16, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, CTL,
];
const U_VERIFY16: &[u8] = &[
    0x8F, 0x16, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, CTL,
];
const U_WRITE_VERIFY10: &[u8] = &[0x2E, 0x12, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, CTL];
const U_WRITE_VERIFY12: &[u8] = &[
    0xAE, 0x12, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, CTL,
];
const U_WRITE_VERIFY16: &[u8] = &[
    0x8E, 0x12, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, CTL,
];
const U_SYNC10: &[u8] = &[0x35, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, CTL];
const U_SYNC16: &[u8] = &[
    0x91, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, CTL,
];
const U_PREFETCH10: &[u8] = &[0x34, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, CTL];
const U_PREFETCH16: &[u8] = &[
    0x90, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, CTL,
];
const U_READ_CAPACITY10: &[u8] = &[0x25, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x01, CTL];
const U_READ_CAPACITY16: &[u8] = &[
    0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, CTL,
];
const U_GET_LBA_STATUS: &[u8] = &[
    0x9E, 0x12, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, CTL,
];
const U_UNMAP: &[u8] = &[0x42, 0x01, 0, 0, 0, 0, 0x1F, 0xFF, 0xFF, CTL];
const U_WRITE_SAME10: &[u8] = &[0x41, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, CTL];
const U_WRITE_SAME16: &[u8] = &[
    0x93, 0x19, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, CTL,
];
const U_CAW: &[u8] = &[
    0x89, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0x1F, CTL,
];
const U_ORWRITE16: &[u8] = &[
    0x8B, 0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, CTL,
];
const U_XCOPY: &[u8] = &[
    0x83, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, CTL,
];
const U_RCR: &[u8] = &[
    0x84, 0x00, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, CTL,
];
const U_SANITIZE: &[u8] = &[0x48, 0xBF, 0, 0, 0, 0, 0, 0xFF, 0xFF, CTL];
const U_READ_DEFECT10: &[u8] = &[0x37, 0, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, CTL];
const U_READ_DEFECT12: &[u8] = &[0xB7, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, CTL];

macro_rules! op {
    ($opcode:expr, $sa:expr, $name:expr, $usage:expr, $dir:ident, $ua:ident, $access:ident,
     $medium:ident, $decode:path) => {
        OpInfo {
            opcode: $opcode,
            sa: $sa,
            name: $name,
            usage: $usage,
            dir: Dir::$dir,
            ua: UaPolicy::$ua,
            access: Access::$access,
            medium: Medium::$medium,
            thin_only: $opcode == 0x42,
            decode: $decode,
        }
    };
}

/// Every command this logical unit supports, sorted by opcode then service action.
#[rustfmt::skip]
pub static TABLE: &[OpInfo] = &[
    op!(0x00, None, "TEST UNIT READY", U_TUR, None, Report, Always, Needed, spc::test_unit_ready),
    op!(0x03, None, "REQUEST SENSE", U_REQUEST_SENSE, In, Sense, Always, Not, spc::request_sense),
    op!(0x08, None, "READ(6)", U_READ6, In, Report, Read, Io, sbc::read6),
    op!(0x0A, None, "WRITE(6)", U_WRITE6, Out, Report, Write, Io, sbc::write6),
    op!(0x12, None, "INQUIRY", U_INQUIRY, In, Pass, Always, Not, spc::inquiry),
    op!(0x15, None, "MODE SELECT(6)", U_MODE_SELECT6, Out, Report, Write, Not, spc::mode_select6),
    op!(0x16, None, "RESERVE(6)", U_RESERVE6, None, Report, Reserve, Not, spc::reserve),
    op!(0x17, None, "RELEASE(6)", U_RELEASE6, None, Report, Reserve, Not, spc::release),
    op!(0x1A, None, "MODE SENSE(6)", U_MODE_SENSE6, In, Report, Read, Not, spc::mode_sense6),
    op!(0x1B, None, "START STOP UNIT", U_START_STOP, None, Report, Write, Not, spc::start_stop_unit),
    op!(0x1E, None, "PREVENT ALLOW MEDIUM REMOVAL", U_PREVENT, None, Report, Read, Not, spc::prevent_allow),
    op!(0x25, None, "READ CAPACITY(10)", U_READ_CAPACITY10, In, Report, Always, Needed, sbc::read_capacity10),
    op!(0x28, None, "READ(10)", U_READ10, In, Report, Read, Io, sbc::read10),
    op!(0x2A, None, "WRITE(10)", U_WRITE10, Out, Report, Write, Io, sbc::write10),
    op!(0x2E, None, "WRITE AND VERIFY(10)", U_WRITE_VERIFY10, Out, Report, Write, Needed, sbc::write_verify10),
    op!(0x2F, None, "VERIFY(10)", U_VERIFY10, Out, Report, Read, Needed, sbc::verify10),
    op!(0x34, None, "PRE-FETCH(10)", U_PREFETCH10, None, Report, Read, Needed, sbc::prefetch10),
    op!(0x35, None, "SYNCHRONIZE CACHE(10)", U_SYNC10, None, Report, Write, Needed, sbc::sync_cache10),
    op!(0x37, None, "READ DEFECT DATA(10)", U_READ_DEFECT10, In, Report, Read, Needed, sbc::read_defect10),
    op!(0x41, None, "WRITE SAME(10)", U_WRITE_SAME10, Out, Report, Write, Needed, sbc::write_same10),
    op!(0x42, None, "UNMAP", U_UNMAP, Out, Report, Write, Needed, sbc::unmap),
    op!(0x48, Some(0x01), "SANITIZE / OVERWRITE", U_SANITIZE, Out, Report, Write, Needed, sbc::sanitize),
    op!(0x48, Some(0x02), "SANITIZE / BLOCK ERASE", U_SANITIZE, Out, Report, Write, Needed, sbc::sanitize),
    op!(0x48, Some(0x1F), "SANITIZE / EXIT FAILURE MODE", U_SANITIZE, Out, Report, Write, Needed, sbc::sanitize),
    op!(0x55, None, "MODE SELECT(10)", U_MODE_SELECT10, Out, Report, Write, Not, spc::mode_select10),
    op!(0x56, None, "RESERVE(10)", U_RESERVE10, None, Report, Reserve, Not, spc::reserve),
    op!(0x57, None, "RELEASE(10)", U_RELEASE10, None, Report, Reserve, Not, spc::release),
    op!(0x5A, None, "MODE SENSE(10)", U_MODE_SENSE10, In, Report, Read, Not, spc::mode_sense10),
    op!(0x5E, Some(0x00), "PERSISTENT RESERVE IN / READ KEYS", U_PR_IN, In, Report, Always, Not, spc::pr_in),
    op!(0x5E, Some(0x01), "PERSISTENT RESERVE IN / READ RESERVATION", U_PR_IN, In, Report, Always, Not, spc::pr_in),
    op!(0x5E, Some(0x02), "PERSISTENT RESERVE IN / REPORT CAPABILITIES", U_PR_IN, In, Report, Always, Not, spc::pr_in),
    op!(0x5E, Some(0x03), "PERSISTENT RESERVE IN / READ FULL STATUS", U_PR_IN, In, Report, Always, Not, spc::pr_in),
    op!(0x5F, Some(0x00), "PERSISTENT RESERVE OUT / REGISTER", U_PR_OUT, Out, Report, Always, Not, spc::pr_out),
    op!(0x5F, Some(0x01), "PERSISTENT RESERVE OUT / RESERVE", U_PR_OUT, Out, Report, Always, Not, spc::pr_out),
    op!(0x5F, Some(0x02), "PERSISTENT RESERVE OUT / RELEASE", U_PR_OUT, Out, Report, Always, Not, spc::pr_out),
    op!(0x5F, Some(0x03), "PERSISTENT RESERVE OUT / CLEAR", U_PR_OUT, Out, Report, Always, Not, spc::pr_out),
    op!(0x5F, Some(0x04), "PERSISTENT RESERVE OUT / PREEMPT", U_PR_OUT, Out, Report, Always, Not, spc::pr_out),
    op!(0x5F, Some(0x05), "PERSISTENT RESERVE OUT / PREEMPT AND ABORT", U_PR_OUT, Out, Report, Always, Not, spc::pr_out),
    op!(0x5F, Some(0x06), "PERSISTENT RESERVE OUT / REGISTER AND IGNORE EXISTING KEY", U_PR_OUT, Out, Report, Always, Not, spc::pr_out),
    op!(0x83, Some(0x00), "EXTENDED COPY(LID1)", U_XCOPY, Out, Report, Write, Needed, spc::extended_copy),
    op!(0x84, Some(0x00), "RECEIVE COPY RESULTS / COPY STATUS", U_RCR, In, Report, Read, Not, spc::receive_copy_results),
    op!(0x84, Some(0x03), "RECEIVE COPY RESULTS / OPERATING PARAMETERS", U_RCR, In, Report, Read, Not, spc::receive_copy_results),
    op!(0x88, None, "READ(16)", U_READ16, In, Report, Read, Io, sbc::read16),
    op!(0x89, None, "COMPARE AND WRITE", U_CAW, Out, Report, Write, Needed, sbc::compare_and_write),
    op!(0x8A, None, "WRITE(16)", U_WRITE16, Out, Report, Write, Io, sbc::write16),
    op!(0x8B, None, "ORWRITE(16)", U_ORWRITE16, Out, Report, Write, Needed, sbc::orwrite16),
    op!(0x8E, None, "WRITE AND VERIFY(16)", U_WRITE_VERIFY16, Out, Report, Write, Needed, sbc::write_verify16),
    op!(0x8F, None, "VERIFY(16)", U_VERIFY16, Out, Report, Read, Needed, sbc::verify16),
    op!(0x90, None, "PRE-FETCH(16)", U_PREFETCH16, None, Report, Read, Needed, sbc::prefetch16),
    op!(0x91, None, "SYNCHRONIZE CACHE(16)", U_SYNC16, None, Report, Write, Needed, sbc::sync_cache16),
    op!(0x93, None, "WRITE SAME(16)", U_WRITE_SAME16, Out, Report, Write, Needed, sbc::write_same16),
    op!(0x9E, Some(0x10), "READ CAPACITY(16)", U_READ_CAPACITY16, In, Report, Always, Needed, sbc::read_capacity16),
    op!(0x9E, Some(0x12), "GET LBA STATUS", U_GET_LBA_STATUS, In, Report, Read, Needed, sbc::get_lba_status),
    op!(0xA0, None, "REPORT LUNS", U_REPORT_LUNS, In, Pass, Always, Not, spc::report_luns),
    op!(0xA3, Some(0x0A), "REPORT TARGET PORT GROUPS", U_RTPG, In, Report, Always, Not, spc::report_target_port_groups),
    op!(0xA3, Some(0x0C), "REPORT SUPPORTED OPERATION CODES", U_RSOC, In, Report, Always, Not, spc::report_opcodes),
    op!(0xA3, Some(0x0D), "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", U_RSTMF, In, Report, Always, Not, spc::report_tmf),
    op!(0xA8, None, "READ(12)", U_READ12, In, Report, Read, Io, sbc::read12),
    op!(0xAA, None, "WRITE(12)", U_WRITE12, Out, Report, Write, Io, sbc::write12),
    op!(0xAE, None, "WRITE AND VERIFY(12)", U_WRITE_VERIFY12, Out, Report, Write, Needed, sbc::write_verify12),
    op!(0xAF, None, "VERIFY(12)", U_VERIFY12, Out, Report, Read, Needed, sbc::verify12),
    op!(0xB7, None, "READ DEFECT DATA(12)", U_READ_DEFECT12, In, Report, Read, Needed, sbc::read_defect12),
];

/// Whether any row of the table has `opcode` with service actions.
fn has_service_actions(opcode: u8) -> bool {
    TABLE.iter().any(|e| e.opcode == opcode && e.sa.is_some())
}

/// Finds the table row for a CDB on a unit that is `thin` or not: ILLEGAL REQUEST INVALID
/// COMMAND OPERATION CODE for an unknown opcode, INVALID FIELD IN CDB for an unknown service
/// action.
pub fn lookup(cdb: &[u8], thin: bool) -> Result<&'static OpInfo, Sense> {
    let Some(&opcode) = cdb.first() else {
        return Err(Sense::illegal(INVALID_COMMAND_OPERATION_CODE));
    };
    if has_service_actions(opcode) {
        let sa = cdb.get(1).copied().unwrap_or(0) & 0x1F;
        return TABLE
            .iter()
            .find(|e| e.opcode == opcode && e.sa == Some(sa))
            .ok_or(Sense::invalid_cdb_field(1, Some(4)));
    }
    TABLE
        .iter()
        .find(|e| e.opcode == opcode && e.offered(thin))
        .ok_or(Sense::illegal(INVALID_COMMAND_OPERATION_CODE))
}

/// Nominal and recommended command timeouts reported with RCTD, in seconds.
const NOMINAL_TIMEOUT: u32 = 1;
const RECOMMENDED_TIMEOUT: u32 = 30;

fn push_timeouts(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x00, 0x0A, 0x00, 0x00]);
    out.extend_from_slice(&NOMINAL_TIMEOUT.to_be_bytes());
    out.extend_from_slice(&RECOMMENDED_TIMEOUT.to_be_bytes());
}

/// REPORT SUPPORTED OPERATION CODES parameter data (SPC-4 6.35), from the table. (DPO and
/// FUA are always supported, matching MODE SENSE's DPOFUA bit and the usage masks.)
pub fn report(rctd: bool, options: u8, opcode: u8, sa: u16, thin: bool) -> Result<Vec<u8>, Sense> {
    match options {
        0 => Ok(report_all(rctd, thin)),
        1..=3 => report_one(rctd, options, opcode, sa, thin),
        _ => Err(Sense::invalid_cdb_field(2, Some(2))),
    }
}

fn report_all(rctd: bool, thin: bool) -> Vec<u8> {
    let desc_len = if rctd { 20 } else { 8 };
    let mut out = Vec::with_capacity(4 + TABLE.len() * desc_len);
    out.extend_from_slice(&[0; 4]);
    for e in TABLE.iter().filter(|e| e.offered(thin)) {
        out.push(e.opcode);
        out.push(0);
        out.extend_from_slice(&u16::from(e.sa.unwrap_or(0)).to_be_bytes());
        out.push(0);
        let mut flags = 0u8;
        if e.sa.is_some() {
            flags |= 0x01; // SERVACTV
        }
        if rctd {
            flags |= 0x02; // CTDP
        }
        out.push(flags);
        out.extend_from_slice(&(e.cdb_len() as u16).to_be_bytes());
        if rctd {
            push_timeouts(&mut out);
        }
    }
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

fn report_one(rctd: bool, options: u8, opcode: u8, sa: u16, thin: bool) -> Result<Vec<u8>, Sense> {
    let with_sa = has_service_actions(opcode);
    let row = match (options, with_sa) {
        // 001b: by opcode alone; an error for an opcode that has service actions.
        (1, true) => return Err(Sense::invalid_cdb_field(2, Some(2))),
        (1, false) | (3, false) => TABLE.iter().find(|e| e.opcode == opcode && e.offered(thin)),
        // 010b: by opcode and service action; an error for an opcode without them.
        (2, false) => return Err(Sense::invalid_cdb_field(2, Some(2))),
        _ => TABLE
            .iter()
            .find(|e| e.opcode == opcode && e.sa.map(u16::from) == Some(sa)),
    };
    let mut out = Vec::with_capacity(4 + 16 + 12);
    out.extend_from_slice(&[0, 0, 0, 0]);
    match row {
        None => out[1] = 0x01, // SUPPORT = 001b: not supported
        Some(e) => {
            out[1] = 0x03 | if rctd { 0x80 } else { 0 }; // SUPPORT = 011b, CTDP
            out[2..4].copy_from_slice(&(e.cdb_len() as u16).to_be_bytes());
            let start = out.len();
            out.extend_from_slice(e.usage);
            if let (Some(sa), Some(b)) = (e.sa, out.get_mut(start + 1)) {
                // The service action sits where the CDB has it (SPC-4 6.35.3).
                *b = (*b & !0x1F) | (sa & 0x1F);
            }
            if rctd {
                push_timeouts(&mut out);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::command::{Command, Decoded};
    use crate::scsi::sense::INVALID_FIELD_IN_CDB;

    /// The row and the command of a CDB that decodes, or the sense it fails with.
    fn decode(cdb: &[u8], thin: bool) -> Result<(&'static OpInfo, Command), Sense> {
        let d = Decoded::new(cdb, thin);
        let command = d.command?;
        Ok((d.op.expect("a decoded command has its row"), command))
    }

    #[test]
    fn table_is_sorted_unique_and_consistent() {
        for w in TABLE.windows(2) {
            let a = (w[0].opcode, w[0].sa);
            let b = (w[1].opcode, w[1].sa);
            assert!(a < b, "{a:?} before {b:?}");
        }
        for e in TABLE {
            assert_eq!(e.usage[0], e.opcode, "{}", e.name);
            let expected = match e.opcode >> 5 {
                0 => 6,
                1 | 2 => 10,
                4 => 16,
                5 => 12,
                _ => unreachable!("{}", e.name),
            };
            assert_eq!(e.cdb_len(), expected, "{}", e.name);
            if let Some(sa) = e.sa {
                let one = report(false, 2, e.opcode, u16::from(sa), true).unwrap();
                assert_eq!(one[5] & 0x1F, sa, "{}: SA in usage data", e.name);
            }
        }
    }

    #[test]
    fn every_row_decodes_its_own_minimal_cdb() {
        for e in TABLE {
            let mut cdb = vec![0u8; e.cdb_len()];
            cdb[0] = e.opcode;
            if let Some(sa) = e.sa {
                cdb[1] = sa;
            }
            let (row, _) = decode(&cdb, true).unwrap_or_else(|s| panic!("{}: {s:?}", e.name));
            assert!(std::ptr::eq(row, e));
        }
    }

    #[test]
    fn medium_io_is_exactly_the_read_and_write_commands() {
        // The metrics count the bytes of READ(n) and WRITE(n) as the LUN's traffic, nothing
        // else (not VERIFY, WRITE AND VERIFY, WRITE SAME, COMPARE AND WRITE ...).
        for e in TABLE {
            let plain_rw = ["READ(", "WRITE("].iter().any(|p| e.name.starts_with(p));
            assert_eq!(e.medium == Medium::Io, plain_rw, "{}", e.name);
            if e.medium == Medium::Io {
                assert_ne!(e.dir, Dir::None, "{}", e.name);
            }
        }
    }

    #[test]
    fn unknown_opcode_and_service_action() {
        let e = decode(&[0xFF; 16], true).unwrap_err();
        assert_eq!(e.asc(), INVALID_COMMAND_OPERATION_CODE);
        let e = decode(
            &[0x9E, 0x1F, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            true,
        )
        .unwrap_err();
        assert_eq!(e.asc(), INVALID_FIELD_IN_CDB);
        assert!(decode(&[], true).is_err());
        // Short CDB for a known opcode.
        assert_eq!(
            decode(&[0x28, 0, 0], true).unwrap_err().asc(),
            INVALID_FIELD_IN_CDB
        );
    }

    #[test]
    fn report_all_lists_every_row() {
        for rctd in [false, true] {
            let data = report(rctd, 0, 0, 0, true).unwrap();
            let len = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
            assert_eq!(len, data.len() - 4);
            let step = if rctd { 20 } else { 8 };
            assert_eq!(len, TABLE.len() * step);
            for (d, e) in data[4..].chunks(step).zip(TABLE) {
                assert_eq!(d[0], e.opcode);
                assert_eq!(
                    u16::from_be_bytes([d[2], d[3]]),
                    u16::from(e.sa.unwrap_or(0))
                );
                assert_eq!(d[5] & 1 == 1, e.sa.is_some(), "SERVACTV");
                assert_eq!(d[5] & 2 == 2, rctd, "CTDP");
                assert_eq!(usize::from(u16::from_be_bytes([d[6], d[7]])), e.cdb_len());
                if rctd {
                    assert_eq!(&d[8..10], &[0, 0x0A]);
                }
            }
        }
    }

    #[test]
    fn thin_only_commands_follow_the_unit() {
        let unmap = [0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0];
        assert!(decode(&unmap, true).is_ok());
        let e = decode(&unmap, false).unwrap_err();
        assert_eq!(e.asc(), INVALID_COMMAND_OPERATION_CODE);
        let all = report(false, 0, 0, 0, false).unwrap();
        assert!(all[4..].chunks(8).all(|d| d[0] != 0x42));
        let all = report(false, 0, 0, 0, true).unwrap();
        assert!(all[4..].chunks(8).any(|d| d[0] == 0x42));
        assert_eq!(report(false, 1, 0x42, 0, false).unwrap()[1] & 7, 1);
    }

    #[test]
    fn report_one_by_opcode_and_service_action() {
        let d = report(false, 1, 0x28, 0, true).unwrap();
        assert_eq!(d[1] & 7, 3);
        assert_eq!(&d[4..], U_READ10);
        // Options 1 on an opcode with service actions fails, options 2 works.
        assert!(report(false, 1, 0x9E, 0x10, true).is_err());
        let d = report(true, 2, 0x9E, 0x10, true).unwrap();
        assert_eq!(d[1], 0x83);
        assert_eq!(&d[4..20], U_READ_CAPACITY16);
        assert_eq!(&d[20..22], &[0, 0x0A]);
        assert!(report(false, 2, 0x28, 0, true).is_err());
        // Unsupported opcode: SUPPORT 001b, not an error.
        let d = report(false, 1, 0xC0, 0, true).unwrap();
        assert_eq!(d, vec![0, 1, 0, 0]);
        let d = report(false, 3, 0x28, 7, true).unwrap();
        assert_eq!(d[1] & 7, 3);
    }
}
