//! A store that failed stays failed (the "fsyncgate" rule).
//!
//! Linux reports a writeback error to `fdatasync` once: the dirty pages that could not be
//! written are marked clean (or dropped), and the next `fdatasync` succeeds although the data
//! never reached the disk. So after any failed write or flush the store refuses every later
//! write, unmap and flush with an error (the logical unit answers MEDIUM ERROR) until the
//! Device is restarted; a drain of it reports failure, never "flushed". Reads still work.

use std::cell::RefCell;
use std::io;

/// The sticky failure state of one store.
#[derive(Debug, Default)]
pub struct StickyFailure {
    /// `namespace/name` of the Device (for logs and metrics).
    device: String,
    /// The first failure: what failed and the error.
    cause: RefCell<Option<String>>,
}

impl StickyFailure {
    /// A healthy store of Device `device`.
    pub fn new(device: &str) -> Self {
        StickyFailure {
            device: device.to_string(),
            cause: RefCell::new(None),
        }
    }

    /// Err once the store has failed.
    pub fn check(&self) -> io::Result<()> {
        match &*self.cause.borrow() {
            None => Ok(()),
            Some(cause) => Err(io::Error::other(format!(
                "the Device failed earlier ({cause}); it refuses writes and flushes until it is \
                 restarted"
            ))),
        }
    }

    /// Passes `r` on; an error fails the store for good (the first one is kept as the cause).
    pub fn record<T>(&self, op: &str, r: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &r {
            let mut cause = self.cause.borrow_mut();
            if cause.is_none() {
                tracing::error!(
                    device = %self.device,
                    "{op} failed: {e}; the Device is now FAILED: every later write and \
                     SYNCHRONIZE CACHE gets MEDIUM ERROR and a drain reports failure, until \
                     the Device is restarted"
                );
                crate::metrics::get()
                    .device_failed
                    .with_label_values(&[&self.device])
                    .set(1);
                *cause = Some(format!("{op}: {e}"));
            }
        }
        r
    }

    /// What failed first, if anything did.
    pub fn cause(&self) -> Option<String> {
        self.cause.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_error_sticks_and_later_successes_do_not_clear_it() {
        let f = StickyFailure::new("ns/d");
        assert!(f.check().is_ok());
        assert!(f.record("flush", Ok(())).is_ok());
        let e = f.record::<()>("flush", Err(io::Error::from_raw_os_error(libc::EIO)));
        assert!(e.is_err());
        // fdatasync would now succeed: the error was reported once. The store must not.
        assert!(f.record("flush", Ok(())).is_ok());
        let again = f.check().unwrap_err().to_string();
        assert!(
            again.contains("flush") && again.contains("restarted"),
            "{again}"
        );
        let _ = f.record::<()>("write", Err(io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(
            f.cause().unwrap().starts_with("flush"),
            "the first cause is kept"
        );
    }
}
