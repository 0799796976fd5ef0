//! Persistent reservations that persist through power loss: a unit with a reservation file
//! writes its registrations, reservation and generation there (atomically, fsynced) before a
//! PERSISTENT RESERVE OUT that changed them completes, while the last REGISTER carried
//! APTPL=1 or the unit always persists; APTPL=0 removes the file (SPC-4 5.13.5). A unit built
//! again (agent restart, Device re-applied) starts from the state it is handed.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use super::Backend;
use super::lu::{Fail, LogicalUnit};
use super::pr::Reservations;
use super::pr_record::{PrRecord, encode};
use super::sense::{INTERNAL_TARGET_FAILURE, Sense, SenseKey};
use crate::store::durable;

impl<B: Backend> LogicalUnit<B> {
    /// Whether state `r` persists through power loss (PTPL_A).
    pub(super) fn persists(&self, r: &Reservations) -> bool {
        self.cfg.pr_file.is_some() && (self.cfg.pr_always || r.aptpl)
    }

    /// Makes the change from `before` to the current state durable, or removes the file when
    /// the state no longer persists. A failure leaves the command failed (the caller puts
    /// `before` back): never GOOD for a change a power cut would lose.
    pub(super) fn persist_change(&self, before: &Reservations) -> Result<(), Fail> {
        let Some(path) = &self.cfg.pr_file else {
            return Ok(());
        };
        let r = self.reservations.borrow();
        let (was, now) = (self.persists(before), self.persists(&r));
        let record = r.to_record();
        drop(r);
        let done = if now {
            if was && record == before.to_record() {
                return Ok(());
            }
            write(path, &record)
        } else if was {
            durable::remove(path)
        } else {
            return Ok(());
        };
        done.map_err(|e| {
            tracing::error!(
                file = %path.display(), "persistent reservations could not be saved: {e}"
            );
            Sense::new(SenseKey::HardwareError, INTERNAL_TARGET_FAILURE).into()
        })
    }

    /// Starts from `record` (persisted, or carried over from the unit this one replaces),
    /// and brings the file in line with it: written when the state persists (a Device now
    /// `Always`), removed when it does not.
    pub fn restore_reservations(&self, record: Option<PrRecord>) -> std::io::Result<()> {
        if let Some(rec) = record {
            *self.reservations.borrow_mut() = Reservations::from_record(rec);
        }
        let Some(path) = &self.cfg.pr_file else {
            return Ok(());
        };
        let r = self.reservations.borrow();
        if self.persists(&r) {
            write(path, &r.to_record())
        } else {
            durable::remove(path)
        }
    }

    /// The persistent reservations now (for the unit that replaces this one).
    pub fn reservations_record(&self) -> PrRecord {
        self.reservations.borrow().to_record()
    }
}

fn write(path: &Path, record: &PrRecord) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    durable::replace(path, &encode(record))
}
