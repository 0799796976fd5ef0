//! SANITIZE (SBC-4 5.30): OVERWRITE writes an initialization pattern over every block, BLOCK
//! ERASE deallocates every block (a hole punch over the whole store: on a file the space goes
//! back to the filesystem, on a block device the kernel discards or zeroes, as the store's
//! release wipe relies on), EXIT FAILURE MODE leaves the failure state a failed sanitize left.
//! CRYPTO ERASE is not offered (no store is encrypted): it fails like any unknown service
//! action, ILLEGAL REQUEST, INVALID FIELD IN CDB.
//!
//! While a sanitize runs, every command but INQUIRY, REPORT LUNS and REQUEST SENSE ends NOT
//! READY, SANITIZE IN PROGRESS, and REQUEST SENSE reports how far it got (sense-key-specific
//! progress). Without IMMED the sanitize runs while its command is open and the command's
//! status is its outcome; with IMMED the command ends GOOD once the CDB and parameter list are
//! checked, the unit is NOT READY from then on, and the engine runs the sanitize in the
//! background ([`LogicalUnit::run_background_sanitize`]); a failure then shows as the failure
//! mode below.

use std::cell::{Cell, RefCell};

use super::lu::{LogicalUnit, Out, empty};
use super::sbc::write_protected;
use super::sense::{
    PARAMETER_LIST_LENGTH_ERROR, SANITIZE_COMMAND_FAILED, SANITIZE_IN_PROGRESS, Sense, SenseKey,
    Sks,
};
use super::spc::write_error;
use super::{Backend, limits};

/// SANITIZE service actions.
pub const OVERWRITE: u8 = 0x01;
pub const BLOCK_ERASE: u8 = 0x02;
pub const EXIT_FAILURE_MODE: u8 = 0x1F;

/// Bytes written or deallocated per step (one progress update each).
const STEP_BYTES: u64 = 1 << 20;

/// The OVERWRITE parameter list (SBC-4 5.30.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overwrite {
    /// Invert the pattern between consecutive passes.
    pub invert: bool,
    /// Number of passes (1-31).
    pub passes: u8,
    /// The initialization pattern (1 to one block of bytes), repeated over each block.
    pub pattern: Vec<u8>,
}

/// Decodes an OVERWRITE parameter list of `len` bytes (the CDB's PARAMETER LIST LENGTH) from
/// `data` for blocks of `block_size` bytes. A length outside 5..=block_size+4 is an invalid
/// CDB field; a bad field inside the list points at it.
pub fn parse_overwrite(data: &[u8], len: u16, block_size: u32) -> Result<Overwrite, Sense> {
    let len = usize::from(len);
    if len < 5 || len > block_size as usize + 4 {
        return Err(Sense::invalid_cdb_field(7, None));
    }
    let Some(p) = data.get(..len) else {
        return Err(Sense::illegal(PARAMETER_LIST_LENGTH_ERROR));
    };
    if p[0] & 0x60 != 0 {
        // TEST: only the normal mode (00b).
        return Err(Sense::invalid_param_field(0, Some(6)));
    }
    let passes = p[0] & 0x1F;
    if passes == 0 {
        return Err(Sense::invalid_param_field(0, Some(4)));
    }
    let pattern_len = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if pattern_len == 0 || pattern_len > block_size as usize || pattern_len + 4 != len {
        return Err(Sense::invalid_param_field(2, None));
    }
    Ok(Overwrite {
        invert: p[0] & 0x80 != 0,
        passes,
        pattern: p[4..].to_vec(),
    })
}

/// One block of `block_size` bytes holding `pattern` repeated (cut at the block's end).
fn pattern_block(pattern: &[u8], block_size: usize) -> Vec<u8> {
    pattern.iter().copied().cycle().take(block_size).collect()
}

/// What a sanitize does to the whole unit.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Job {
    Overwrite(Overwrite),
    BlockErase,
}

/// A unit's sanitize state.
#[derive(Debug, Default)]
pub struct SanitizeState {
    /// A sanitize accepted with IMMED, for the engine to run.
    background: RefCell<Option<Job>>,
    /// Bytes done and the total, while a sanitize runs.
    running: Cell<Option<(u64, u64)>>,
    /// The last sanitize failed: medium commands fail until one succeeds or EXIT FAILURE MODE.
    failed: Cell<bool>,
}

impl SanitizeState {
    /// NOT READY, SANITIZE IN PROGRESS with how far it got, while a sanitize runs.
    pub fn in_progress(&self) -> Option<Sense> {
        let (done, total) = self.running.get()?;
        let fraction = (u128::from(done) * 65536 / u128::from(total.max(1))).min(65535) as u16;
        Some(Sense::new(SenseKey::NotReady, SANITIZE_IN_PROGRESS).with_sks(Sks::Progress(fraction)))
    }

    /// MEDIUM ERROR, SANITIZE COMMAND FAILED, after a failed sanitize.
    pub fn failure(&self) -> Option<Sense> {
        self.failed
            .get()
            .then(|| Sense::new(SenseKey::MediumError, SANITIZE_COMMAND_FAILED))
    }

    fn advance(&self, done: u64, total: u64) {
        self.running.set(Some((done, total)));
    }
}

/// Clears the running state when the sanitize ends, however it ends.
struct Running<'a>(&'a SanitizeState);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.set(None);
    }
}

impl<B: Backend> LogicalUnit<B> {
    pub(super) async fn sanitize(&self, sa: u8, immed: bool, len: u16, buf: Vec<u8>) -> Out {
        if sa == EXIT_FAILURE_MODE {
            if len != 0 {
                return Err(Sense::invalid_cdb_field(7, None).into());
            }
            self.sanitize_state.failed.set(false);
            return Ok(empty(buf));
        }
        let job = match (sa, len) {
            (OVERWRITE, _) => Job::Overwrite(parse_overwrite(&buf, len, self.cfg.block_size)?),
            (BLOCK_ERASE, 0) => Job::BlockErase,
            (BLOCK_ERASE, _) => return Err(Sense::invalid_cdb_field(7, None).into()),
            // The opcode table has no other service action.
            _ => return Err(Sense::invalid_cdb_field(1, Some(4)).into()),
        };
        if self.write_protected() {
            return Err(write_protected().into());
        }
        let total = self.num_blocks() * u64::from(self.cfg.block_size);
        // NOT READY from here on, also before the background run starts.
        self.sanitize_state.advance(0, total);
        if immed {
            *self.sanitize_state.background.borrow_mut() = Some(job);
            return Ok(empty(buf));
        }
        self.run_sanitize(job).await?;
        Ok(empty(buf))
    }

    /// Whether a sanitize accepted with IMMED waits for [`Self::run_background_sanitize`].
    pub fn has_background_sanitize(&self) -> bool {
        self.sanitize_state.background.borrow().is_some()
    }

    /// Runs the sanitize accepted with IMMED, if any (the engine spawns it, holding the LUN's
    /// drain gate so a drain waits for it).
    pub async fn run_background_sanitize(&self) {
        let job = self.sanitize_state.background.borrow_mut().take();
        if let Some(job) = job {
            // Its outcome shows as the failure mode: the command already ended GOOD.
            let _ = self.run_sanitize(job).await;
        }
    }

    /// Drops a sanitize accepted with IMMED that cannot run (the LUN is draining): the unit
    /// is left in failure mode, as after a sanitize that failed.
    pub fn cancel_background_sanitize(&self) {
        if self.sanitize_state.background.borrow_mut().take().is_some() {
            self.sanitize_state.running.set(None);
            self.sanitize_state.failed.set(true);
        }
    }

    async fn run_sanitize(&self, job: Job) -> Result<(), Sense> {
        let state = &self.sanitize_state;
        let _running = Running(state);
        // Exclusive: no write of another command lands in the middle of the sanitize.
        let _exclusive = self.io_guard.write().await;
        let total = self.num_blocks() * u64::from(self.cfg.block_size);
        state.advance(0, total);
        let r = match &job {
            Job::Overwrite(o) => self.overwrite_all(o, total).await,
            Job::BlockErase => self.erase_all(total).await,
        };
        // Cached blocks were rewritten too: the flush makes the result durable.
        let r = match r {
            Ok(()) => self.backend.flush().await,
            Err(e) => Err(e),
        };
        state.failed.set(r.is_err());
        r.map_err(|e| {
            let _ = write_error(e);
            Sense::new(SenseKey::MediumError, SANITIZE_COMMAND_FAILED)
        })
    }

    async fn erase_all(&self, total: u64) -> std::io::Result<()> {
        let mut done = 0;
        while done < total {
            let n = STEP_BYTES.min(total - done);
            self.backend.unmap(done, n).await?;
            done += n;
            self.sanitize_state.advance(done, total);
        }
        Ok(())
    }

    async fn overwrite_all(&self, o: &Overwrite, total: u64) -> std::io::Result<()> {
        let bs = self.cfg.block_size as usize;
        let block = pattern_block(&o.pattern, bs);
        let chunk = (limits::WRITE_SAME_CHUNK_BYTES as usize / bs).max(1) * bs;
        let all = total * u64::from(o.passes);
        for pass in 0..u64::from(o.passes) {
            // With INVERT, every other pass writes the inverted pattern; the last pass writes
            // the pattern itself (an odd count ends on it, an even one is shifted by one).
            let inverted = o.invert && (u64::from(o.passes) - 1 - pass) % 2 == 1;
            let mut buf: Vec<u8> = block
                .iter()
                .map(|b| if inverted { !b } else { *b })
                .collect();
            buf = buf.repeat((chunk / bs).max(1));
            let mut done = 0u64;
            while done < total {
                let n = (chunk as u64).min(total - done) as usize;
                buf.truncate(n);
                let (r, back) = self.backend.write_at(buf, done, false).await;
                r?;
                buf = back;
                done += n as u64;
                self.sanitize_state.advance(pass * total + done, all);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::cdb::tests::field;
    use crate::scsi::sense::{INVALID_FIELD_IN_CDB, INVALID_FIELD_IN_PARAMETER_LIST};

    fn list(b0: u8, pattern: &[u8]) -> Vec<u8> {
        let mut v = vec![b0, 0];
        v.extend_from_slice(&(pattern.len() as u16).to_be_bytes());
        v.extend_from_slice(pattern);
        v
    }

    #[test]
    fn overwrite_list_round_trips_its_fields() {
        let d = list(0x83, &[0xAA; 512]);
        let o = parse_overwrite(&d, d.len() as u16, 512).unwrap();
        assert_eq!(
            o,
            Overwrite {
                invert: true,
                passes: 3,
                pattern: vec![0xAA; 512]
            }
        );
        let d = list(0x01, &[1, 2, 3, 4]);
        assert_eq!(parse_overwrite(&d, 8, 512).unwrap().pattern, [1, 2, 3, 4]);
        assert_eq!(pattern_block(&[1, 2, 3], 8), [1, 2, 3, 1, 2, 3, 1, 2]);
    }

    #[test]
    fn malformed_overwrite_lists_fail_with_the_field_never_panic() {
        // Parameter list length outside 5..=block+4: the CDB field.
        for len in [0u16, 1, 4, 517, u16::MAX] {
            let e = parse_overwrite(&[0xFF; 600], len, 512).unwrap_err();
            assert_eq!(field(e), (7, None), "len {len}");
        }
        // Data-Out shorter than the length.
        let e = parse_overwrite(&[1, 0, 0, 4], 8, 512).unwrap_err();
        assert_eq!(e.asc(), PARAMETER_LIST_LENGTH_ERROR);
        // Zero passes, a TEST mode, a zero, too long or inconsistent pattern length.
        for d in [
            list(0x00, &[1; 8]),
            list(0x21, &[1; 8]),
            vec![0x01, 0, 0, 0, 0xAA],
            {
                let mut d = list(0x01, &[1; 8]);
                d[3] = 9;
                d
            },
        ] {
            let len = d.len() as u16;
            let e = parse_overwrite(&d, len, 512).unwrap_err();
            assert_eq!(e.asc(), INVALID_FIELD_IN_PARAMETER_LIST, "{d:?}");
        }
        // Every byte pattern of a short list: an error or a value, never a panic.
        for b in 0..=255u8 {
            for len in 0..12u16 {
                let _ = parse_overwrite(&[b; 11], len, 512);
                let _ = parse_overwrite(&[b; 3], len, 4);
            }
        }
        assert_ne!(INVALID_FIELD_IN_CDB, INVALID_FIELD_IN_PARAMETER_LIST);
    }

    #[test]
    fn progress_is_reported_in_65536ths_while_running() {
        let s = SanitizeState::default();
        assert!(s.in_progress().is_none() && s.failure().is_none());
        {
            let _r = Running(&s);
            s.advance(1 << 20, 4 << 20);
            let sense = s.in_progress().unwrap();
            assert_eq!(sense.asc(), SANITIZE_IN_PROGRESS);
            assert_eq!(sense.sks, Some(Sks::Progress(16384)));
        }
        assert!(s.in_progress().is_none(), "cleared when the sanitize ends");
        s.failed.set(true);
        assert_eq!(s.failure().unwrap().asc(), SANITIZE_COMMAND_FAILED);
    }
}
