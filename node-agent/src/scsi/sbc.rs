//! Block commands (SBC-3) that move or compare data: READ, WRITE, VERIFY, WRITE AND VERIFY,
//! COMPARE AND WRITE, ORWRITE, SYNCHRONIZE CACHE, PRE-FETCH, READ CAPACITY, READ DEFECT DATA.
//! Provisioning (UNMAP, WRITE SAME, GET LBA STATUS) is in `provisioning.rs`.

use bytes::Bytes;

use super::command::Rw;
use super::limits;
use super::lu::{Fail, LogicalUnit, Out, empty};
use super::sense::{
    INVALID_FIELD_IN_INFORMATION_UNIT, MISCOMPARE_DURING_VERIFY, Sense, SenseKey, WRITE_PROTECTED,
};
use super::spc::{read_error, write_error};
use super::{Backend, truncate};

/// DATA PROTECT, WRITE PROTECTED.
pub(super) fn write_protected() -> Sense {
    Sense::new(SenseKey::DataProtect, WRITE_PROTECTED)
}

/// ILLEGAL REQUEST, INVALID FIELD IN COMMAND INFORMATION UNIT: the Data-Out is shorter than
/// the command needs (or, where it must match exactly, of the wrong size).
pub(super) fn bad_data_out() -> Sense {
    Sense::illegal(INVALID_FIELD_IN_INFORMATION_UNIT)
}

/// MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION at byte `offset` of the Data-Out.
fn miscompare(offset: usize) -> Sense {
    Sense::new(SenseKey::Miscompare, MISCOMPARE_DURING_VERIFY).with_info(offset as u64)
}

/// Offset of the first byte where `a` and `b` differ.
fn first_mismatch(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// What a writing command has to do once its CDB and Data-Out are checked.
enum Writable {
    /// Nothing to write; the command completes GOOD with this (empty) buffer.
    Nothing(Vec<u8>),
    /// Write this Data-Out at this byte offset.
    Data(u64, Vec<u8>),
}

impl<B: Backend> LogicalUnit<B> {
    /// Checks that `blocks` blocks from `lba` lie on the medium and returns the byte offset
    /// and byte length. An LBA at or beyond the end is out of range even for 0 blocks.
    pub(super) fn range(&self, lba: u64, blocks: u64) -> Result<(u64, usize), Sense> {
        let n = self.num_blocks();
        let end = lba.checked_add(blocks);
        if lba >= n || end.is_none_or(|e| e > n) {
            return Err(Sense::lba_out_of_range());
        }
        let bs = u64::from(self.cfg.block_size);
        let len = blocks
            .checked_mul(bs)
            .and_then(|b| usize::try_from(b).ok())
            .ok_or(Sense::lba_out_of_range())?;
        Ok((lba * bs, len))
    }

    /// Range check plus the block limits page's MAXIMUM TRANSFER LENGTH.
    fn transfer(&self, rw: &Rw) -> Result<(u64, usize), Sense> {
        let r = self.range(rw.lba, u64::from(rw.blocks))?;
        if rw.blocks > limits::max_transfer_blocks(&self.cfg) {
            return Err(Sense::illegal(super::sense::INVALID_FIELD_IN_CDB));
        }
        Ok(r)
    }

    /// Whether a write must reach stable storage before completing (FUA, or no write cache).
    fn durable(&self, fua: bool) -> bool {
        fua || !self.mode.get().wce
    }

    /// Reads `len` bytes of the medium at `offset`, for data to return or compare.
    async fn read_medium(&self, offset: u64, len: usize) -> Result<Bytes, Sense> {
        self.backend.read(offset, len).await.map_err(read_error)
    }

    /// Writes `buf` at `offset`, handing the buffer back.
    async fn write_from(&self, buf: Vec<u8>, offset: u64, fua: bool) -> Result<Vec<u8>, Sense> {
        let (r, buf) = self.backend.write_at(buf, offset, self.durable(fua)).await;
        r.map_err(write_error)?;
        Ok(buf)
    }

    /// READ(6/10/12/16): the store's buffer goes out as the Data-In.
    pub(super) async fn read(&self, rw: Rw) -> Result<Bytes, Fail> {
        let (offset, len) = self.transfer(&rw)?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        Ok(self.read_medium(offset, len).await?)
    }

    /// The Data-Out a command may use: at most the `len` bytes its CDB asks for (extra bytes
    /// are ignored), and when the initiator sent less (Expected Data Transfer Length below the
    /// CDB's transfer length) only the whole blocks it did send. The command then completes
    /// normally on those and the iSCSI layer reports the residual: nothing beyond the data
    /// received is ever written (SAM-5 / FCP-4 overflow handling).
    fn data_out(&self, mut buf: Vec<u8>, len: usize) -> Vec<u8> {
        let bs = self.cfg.block_size as usize;
        let usable = buf.len().min(len) / bs * bs;
        buf.truncate(usable);
        buf
    }

    /// The common start of the commands that write Data-Out to the medium: write protection,
    /// the LBA range, and the usable Data-Out (see `data_out`).
    fn writable(&self, rw: &Rw, buf: Vec<u8>) -> Result<Writable, super::lu::Fail> {
        if self.write_protected() {
            return Err(write_protected().into());
        }
        let (offset, len) = self.transfer(rw)?;
        if len == 0 {
            return Ok(Writable::Nothing(empty(buf)));
        }
        let data = self.data_out(buf, len);
        if data.is_empty() {
            return Ok(Writable::Nothing(data));
        }
        Ok(Writable::Data(offset, data))
    }

    pub(super) async fn write(&self, rw: Rw, buf: Vec<u8>) -> Out {
        let (offset, buf) = match self.writable(&rw, buf)? {
            Writable::Nothing(b) => return Ok(b),
            Writable::Data(offset, b) => (offset, b),
        };
        let _shared = self.io_guard.read().await;
        let buf = self.write_from(buf, offset, rw.fua).await?;
        Ok(empty(buf))
    }

    /// Compares `data` with the medium at `offset`: each block against the single block in
    /// `data` when `one_block`, else byte for byte.
    async fn compare(
        &self,
        data: &[u8],
        offset: u64,
        len: usize,
        one_block: bool,
    ) -> Result<(), Sense> {
        let current = self.read_medium(offset, len).await?;
        let mismatch = if one_block {
            let bs = self.cfg.block_size as usize;
            current.chunks(bs).enumerate().find_map(|(i, blk)| {
                first_mismatch(blk, data.get(..bs).unwrap_or(data)).map(|o| i * bs + o)
            })
        } else {
            first_mismatch(&current, data)
        };
        match mismatch {
            Some(at) => Err(miscompare(at)),
            None => Ok(()),
        }
    }

    pub(super) async fn verify(&self, rw: Rw, buf: Vec<u8>) -> Out {
        let (offset, len) = self.transfer(&rw)?;
        if len == 0 || rw.bytchk == 0 {
            return Ok(empty(buf));
        }
        let one_block = rw.bytchk == 3;
        let need = if one_block {
            self.cfg.block_size as usize
        } else {
            len
        };
        let data = self.data_out(buf, need);
        if data.is_empty() {
            return Ok(data);
        }
        let compared = if one_block { len } else { data.len() };
        self.compare(&data, offset, compared, one_block).await?;
        Ok(empty(data))
    }

    pub(super) async fn write_verify(&self, rw: Rw, buf: Vec<u8>) -> Out {
        let (offset, data) = match self.writable(&rw, buf)? {
            Writable::Nothing(b) => return Ok(b),
            Writable::Data(offset, b) => (offset, b),
        };
        let _shared = self.io_guard.read().await;
        // Verification means the data is on the medium: write through.
        let data = self.write_from(data, offset, true).await?;
        if rw.bytchk == 1 {
            self.compare(&data, offset, data.len(), false).await?;
        }
        Ok(empty(data))
    }

    /// COMPARE AND WRITE: atomically (exclusive guard) compares the first half of the
    /// Data-Out with the medium and, if equal, writes the second half.
    pub(super) async fn compare_and_write(&self, rw: Rw, mut buf: Vec<u8>) -> Out {
        if self.write_protected() {
            return Err(write_protected().into());
        }
        if rw.blocks > u32::from(limits::MAX_COMPARE_AND_WRITE_BLOCKS) {
            return Err(Sense::invalid_cdb_field(13, None).into());
        }
        let (offset, len) = self.range(rw.lba, u64::from(rw.blocks))?;
        if len == 0 {
            // No blocks: nothing to compare or write, but Data-Out sent for it means the
            // NUMBER OF LOGICAL BLOCKS field is wrong (e.g. 256 truncated to one byte).
            if !buf.is_empty() {
                return Err(Sense::invalid_cdb_field(13, None).into());
            }
            return Ok(empty(buf));
        }
        if buf.len() != 2 * len {
            return Err(bad_data_out().into());
        }
        let _exclusive = self.io_guard.write().await;
        let current = self.read_medium(offset, len).await?;
        if let Some(at) = first_mismatch(&current, &buf[..len]) {
            return Err(miscompare(at).into());
        }
        let new = buf.split_off(len);
        self.write_from(new, offset, rw.fua).await?;
        Ok(empty(buf))
    }

    /// ORWRITE(16): ORs the Data-Out into the medium (read-modify-write, exclusive guard).
    pub(super) async fn orwrite(&self, rw: Rw, buf: Vec<u8>) -> Out {
        let (offset, data) = match self.writable(&rw, buf)? {
            Writable::Nothing(b) => return Ok(b),
            Writable::Data(offset, b) => (offset, b),
        };
        let _exclusive = self.io_guard.write().await;
        let mut current = Vec::from(self.read_medium(offset, data.len()).await?);
        current.iter_mut().zip(&data).for_each(|(c, d)| *c |= d);
        self.write_from(current, offset, rw.fua).await?;
        Ok(empty(data))
    }

    /// SYNCHRONIZE CACHE: range-checked (0 blocks means to the end), then a full flush.
    pub(super) async fn sync_cache(&self, rw: Rw, buf: Vec<u8>) -> Out {
        self.range_or_to_end(rw.lba, rw.blocks)?;
        self.backend.flush().await.map_err(write_error)?;
        Ok(empty(buf))
    }

    /// PRE-FETCH: range-checked; the page cache does the rest.
    pub(super) fn prefetch(&self, rw: Rw, buf: Vec<u8>) -> Out {
        self.range_or_to_end(rw.lba, rw.blocks)?;
        Ok(empty(buf))
    }

    /// Range check where 0 blocks means "from `lba` to the end of the medium".
    fn range_or_to_end(&self, lba: u64, blocks: u32) -> Result<(), Sense> {
        if blocks == 0 {
            self.range(lba, 0).map(|_| ())
        } else {
            self.range(lba, u64::from(blocks)).map(|_| ())
        }
    }

    pub(super) fn read_capacity10(&self, _lba: u32, _pmi: bool) -> Vec<u8> {
        let last = self.num_blocks().saturating_sub(1);
        let last = u32::try_from(last).unwrap_or(u32::MAX);
        let mut d = Vec::with_capacity(8);
        d.extend_from_slice(&last.to_be_bytes());
        d.extend_from_slice(&self.cfg.block_size.to_be_bytes());
        d
    }

    pub(super) fn read_capacity16(&self, alloc: u32) -> Vec<u8> {
        let mut d = vec![0u8; 32];
        d[0..8].copy_from_slice(&self.num_blocks().saturating_sub(1).to_be_bytes());
        d[8..12].copy_from_slice(&self.cfg.block_size.to_be_bytes());
        // Byte 13: logical blocks per physical block exponent.
        d[13] = self.cfg.physical_block_exp & 0x0F;
        if self.cfg.thin {
            d[14] = 0x80 | 0x40; // LBPME, LBPRZ
        }
        truncate(d, alloc as usize)
    }

    /// READ DEFECT DATA: this unit has no defect lists; the header echoes the request.
    pub(super) fn read_defect_data(
        &self,
        twelve: bool,
        plist: bool,
        glist: bool,
        format: u8,
        alloc: u32,
    ) -> Vec<u8> {
        let flags = (if plist { 0x10 } else { 0 }) | (if glist { 0x08 } else { 0 }) | format;
        let d = if twelve {
            vec![0, flags, 0, 0, 0, 0, 0, 0]
        } else {
            vec![0, flags, 0, 0]
        };
        truncate(d, alloc as usize)
    }
}
