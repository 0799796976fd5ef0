//! Reservations: RESERVE/RELEASE (6/10, SPC-2) and PERSISTENT RESERVE IN/OUT (SPC-4 5.13).

use super::cdb::Command;
use super::lu::{Fail, LogicalUnit, Out};
use super::opcodes::Access;
use super::{Backend, NexusId};

/// Reservation state of one logical unit.
#[derive(Debug, Default)]
pub(crate) struct Reservations {
    /// The nexus holding a RESERVE(6/10) reservation.
    legacy: Option<NexusId>,
}

impl Reservations {
    /// I_T nexus loss releases its RESERVE(6/10) reservation.
    pub fn nexus_lost(&mut self, nexus: NexusId) {
        if self.legacy == Some(nexus) {
            self.legacy = None;
        }
    }

    /// LUN RESET releases RESERVE(6/10) reservations.
    pub fn reset(&mut self) {
        self.legacy = None;
    }
}

impl<B: Backend> LogicalUnit<B> {
    /// Whether `command` from `nexus` conflicts with a reservation held elsewhere.
    pub(super) fn conflicts(&self, nexus: NexusId, access: Access, _command: &Command) -> bool {
        let r = self.reservations.borrow();
        match r.legacy {
            Some(holder) if holder != nexus => access != Access::Always,
            _ => false,
        }
    }

    pub(super) fn reserve(&self, nexus: NexusId) -> Out {
        let mut r = self.reservations.borrow_mut();
        match r.legacy {
            Some(holder) if holder != nexus => Err(Fail::Conflict),
            _ => {
                r.legacy = Some(nexus);
                Ok(Vec::new())
            }
        }
    }

    pub(super) fn release(&self, nexus: NexusId) -> Out {
        let mut r = self.reservations.borrow_mut();
        if r.legacy == Some(nexus) {
            r.legacy = None;
        }
        Ok(Vec::new())
    }

    pub(super) fn pr_in(&self, _sa: u8, _alloc: u16) -> Out {
        Err(super::sense::Sense::illegal(super::sense::INVALID_COMMAND_OPERATION_CODE).into())
    }

    pub(super) fn pr_out(
        &self,
        _nexus: NexusId,
        _sa: u8,
        _scope: u8,
        _kind: u8,
        _len: u32,
        _data: &[u8],
    ) -> Out {
        Err(super::sense::Sense::illegal(super::sense::INVALID_COMMAND_OPERATION_CODE).into())
    }
}
