//! A Device's persistent reservations on the node: the file its logical unit keeps them in
//! when they persist through power loss, beside the Device's record
//! (`.spindle/state/reservations/<uid>.json`, in standalone mode too), read when the Device is
//! opened and again whenever its LUN is served afresh, removed when it is released.
//!
//! A file that cannot be read refuses the Device: serving it without the reservation that
//! fences another host could let two hosts write the same disk.

use std::path::{Path, PathBuf};

use super::error::{NodeError, precondition};
use super::state::{RESERVED_DIR, file_name};
use crate::scsi::pr_record::{self, PrRecord};
use crate::store::durable;

/// Where the reservations of the Device with `uid` are kept.
pub(super) fn path(data_dir: &Path, uid: &str) -> PathBuf {
    data_dir
        .join(RESERVED_DIR)
        .join("state")
        .join("reservations")
        .join(file_name(uid))
}

/// The persisted reservations at `path` (None: nothing persisted).
pub(super) fn load(path: &Path, device: &str) -> Result<Option<PrRecord>, NodeError> {
    let why = match std::fs::read(path) {
        Ok(bytes) => match pr_record::decode(&bytes) {
            Ok(r) => return Ok(Some(r)),
            Err(e) => e.to_string(),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => e.to_string(),
    };
    crate::metrics::get()
        .store_refusals
        .with_label_values(&["reservations"])
        .inc();
    Err(precondition(
        "spec.reservationPersistence",
        format!(
            "Device {device}: its persisted SCSI reservations at {} cannot be read ({why}); the \
             Device is not served, so no host loses the reservation that fences others: restore \
             the file, or remove it once every host that shares the disk is known to be fenced \
             or stopped",
            path.display()
        ),
    ))
}

/// Forgets a released Device's reservations.
pub(super) fn forget(path: &Path, device: &str) {
    if let Err(e) = durable::remove(path) {
        tracing::error!(
            %device, file = %path.display(), "persisted reservations not removed: {e}"
        );
    }
}
