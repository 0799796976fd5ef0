//! The SCSI command set (SPC-4, SBC-3) for one logical unit, over a [`Backend`].
//!
//! Contract with the engine (which owns the LUN map, the drain fence and in-flight counts):
//! - the engine builds one [`LogicalUnit`] per LUN from an [`LuConfig`] (check it with
//!   [`LuConfig::validate`]) and a backend;
//! - a command addressed to a LUN is decoded once, on arrival, with [`LogicalUnit::decode`]
//!   into a [`Decoded`] (its opcode table row: name, data direction, whether it reads or
//!   writes the medium; and the typed command or the sense a malformed CDB fails with). The
//!   engine, its metrics and the logical unit all take that value: [`LogicalUnit::data_out_len`]
//!   says how much Data-Out it asks for, [`LogicalUnit::execute_task`] runs it with the
//!   complete Data-Out (all of it collected by the iSCSI layer) and gives a [`Response`]
//!   back; the Data-In of a READ is the store's own buffer, handed on without a copy;
//! - commands go through the unit's task set ([`taskset`]): [`LogicalUnit::execute_task`]
//!   honours SIMPLE, ORDERED and HEAD OF QUEUE across every nexus, and
//!   [`LogicalUnit::abort_tasks`] / [`LogicalUnit::tasks_ended`] abort commands (TASK
//!   ABORTED) and wait for them, for task management; PREEMPT AND ABORT does so itself;
//! - session events: [`LogicalUnit::nexus_named`] when an I_T nexus starts,
//!   [`LogicalUnit::nexus_lost`] when it ends (its commands are aborted),
//!   [`LogicalUnit::reset`] for LOGICAL UNIT RESET, [`LogicalUnit::target_reset`] for
//!   TARGET WARM/COLD RESET,
//!   [`LogicalUnit::establish_ua`] for anything else a nexus must be told (e.g. REPORTED
//!   LUNS DATA HAS CHANGED when another LUN is fenced);
//! - REPORT LUNS and commands to LUNs that do not exist (or are fenced) are answered by the
//!   target-level helpers in [`lun_inventory`], since only the engine knows which LUNs are
//!   live; after answering REPORT LUNS through a live LUN the engine calls
//!   [`LogicalUnit::luns_reported`] so its REPORTED LUNS DATA HAS CHANGED attention clears.
//!
//! Inside: [`command`] holds the typed commands and the [`Decoded`] value, [`cdb`] the
//! decoders from CDB bytes (primary and block commands), [`opcodes`] the one table of
//! supported commands (the lookup and REPORT SUPPORTED OPERATION CODES read it), [`sense`]
//! the one sense-data builder; `spc`, `sbc`, `provisioning`, `mode`, `vpd`, `pr`, `xcopy`
//! hold the handlers, `ua` the unit attention queues, `limits` the block limits.

pub mod backend;
pub mod cdb;
pub mod command;
mod limits;
mod lu;
pub mod lun_inventory;
mod mode;
pub mod opcodes;
mod pr;
mod pr_persist;
pub mod pr_record;
mod provisioning;
mod sanitize;
mod sbc;
pub mod sense;
mod spc;
pub mod taskset;
mod ua;
mod vpd;
mod xcopy;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use backend::Backend;
pub use command::Decoded;
pub use lu::{ConfigError, LogicalUnit, LuConfig};
pub use taskset::{Aborted, TaskAttr, TaskKey};

/// Identifies an I_T nexus (one iSCSI session) for unit attentions and reservations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NexusId(pub u64);

/// SCSI status byte values (SAM-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Good = 0x00,
    CheckCondition = 0x02,
    ConditionMet = 0x04,
    Busy = 0x08,
    ReservationConflict = 0x18,
    TaskSetFull = 0x28,
    TaskAborted = 0x40,
}

/// What a command produced: the status, the Data-In (exactly what the command's allocation or
/// transfer length asks for; the iSCSI layer truncates to the expected transfer length and
/// computes residuals) and, for CHECK CONDITION, formatted sense data (empty otherwise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// SCSI status.
    pub status: Status,
    /// Data-In bytes (for READ, the store's own buffer: no copy on the way out).
    pub data_in: Bytes,
    /// Sense data (fixed or descriptor format), empty unless CHECK CONDITION.
    pub sense: Vec<u8>,
    /// The command's Data-Out allocation, emptied, for the caller to reuse for a later
    /// command's Data-Out (no allocation, no fresh pages); empty when there was none.
    pub spare: Vec<u8>,
    /// PREEMPT AND ABORT: the I_T nexuses whose tasks it aborted (their tasks outside the
    /// logical unit, e.g. still receiving Data-Out, are the caller's to abort).
    pub preempted: Vec<NexusId>,
}

impl Response {
    /// GOOD status with Data-In.
    pub fn good(data_in: impl Into<Bytes>) -> Self {
        Response {
            status: Status::Good,
            data_in: data_in.into(),
            sense: Vec::new(),
            spare: Vec::new(),
            preempted: Vec::new(),
        }
    }

    /// CHECK CONDITION with the given sense, formatted as descriptor or fixed sense data.
    pub fn check(sense: &sense::Sense, descriptor: bool) -> Self {
        Response {
            status: Status::CheckCondition,
            data_in: Bytes::new(),
            sense: sense.to_bytes(descriptor),
            spare: Vec::new(),
            preempted: Vec::new(),
        }
    }

    /// A status without data or sense (RESERVATION CONFLICT, BUSY ...).
    pub fn status(status: Status) -> Self {
        Response {
            status,
            data_in: Bytes::new(),
            sense: Vec::new(),
            spare: Vec::new(),
            preempted: Vec::new(),
        }
    }
}

/// Truncates parameter data to an allocation length.
pub(crate) fn truncate(mut data: Vec<u8>, alloc: usize) -> Vec<u8> {
    data.truncate(alloc);
    data
}
