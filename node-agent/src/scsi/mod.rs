//! The SCSI command set (SPC-4, SBC-3) for one logical unit, over a [`Backend`].
//!
//! Contract with the engine (which owns the LUN map, the drain fence and in-flight counts):
//! - the engine builds one [`LogicalUnit`] per LUN from an [`LuConfig`] and a backend;
//! - for a command addressed to a LUN it calls [`LogicalUnit::execute`] with the complete
//!   Data-Out (all of it collected by the iSCSI layer) and gets a [`Response`] back;
//! - REPORT LUNS and commands to LUNs that do not exist (or are fenced) are answered by the
//!   target-level helpers in [`target`], since only the engine knows which LUNs are live.

pub mod backend;

pub use backend::Backend;

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
