//! Logical block provisioning (SBC-3 4.7): UNMAP, WRITE SAME 10/16 (with UNMAP, NDOB) and
//! GET LBA STATUS.

use super::command::WriteSame;
use super::limits;
use super::lu::{LogicalUnit, Out, empty};
use super::sbc::{bad_data_out, write_protected};
use super::sense::{PARAMETER_LIST_LENGTH_ERROR, Sense};
use super::spc::{read_error, write_error};
use super::{Backend, truncate};

/// One UNMAP block descriptor: first LBA and number of blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Extent {
    pub lba: u64,
    pub blocks: u32,
}

/// Parses and validates an UNMAP parameter list (SBC-3 5.28.2) for a unit of `num_blocks`
/// blocks with the given per-descriptor and descriptor-count limits.
pub(super) fn parse_unmap(
    data: &[u8],
    num_blocks: u64,
    max_blocks: u32,
    max_descriptors: u32,
) -> Result<Vec<Extent>, Sense> {
    if data.len() < 8 {
        return Err(Sense::illegal(PARAMETER_LIST_LENGTH_ERROR));
    }
    let declared = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let available = declared.min(data.len() - 8);
    let count = available / 16;
    if count > max_descriptors as usize {
        return Err(Sense::invalid_param_field(2, None));
    }
    let mut extents = Vec::with_capacity(count);
    for (i, d) in data[8..8 + count * 16].chunks_exact(16).enumerate() {
        let at = (8 + i * 16) as u16;
        let lba = u64::from_be_bytes(d[0..8].try_into().unwrap_or_default());
        let blocks = u32::from_be_bytes(d[8..12].try_into().unwrap_or_default());
        if blocks > max_blocks {
            return Err(Sense::invalid_param_field(at + 8, None));
        }
        if lba
            .checked_add(u64::from(blocks))
            .is_none_or(|end| end > num_blocks)
        {
            return Err(Sense::lba_out_of_range());
        }
        extents.push(Extent { lba, blocks });
    }
    Ok(extents)
}

/// Fills `buf` (which holds one block at its start) with copies of that block, up to `len`.
fn replicate(buf: &mut Vec<u8>, block: usize, len: usize) {
    buf.resize(len, 0);
    let mut filled = block;
    while filled < len {
        let n = filled.min(len - filled);
        buf.copy_within(0..n, filled);
        filled += n;
    }
}

impl<B: Backend> LogicalUnit<B> {
    pub(super) async fn unmap(&self, anchor: bool, len: u16, buf: Vec<u8>) -> Out {
        if self.write_protected() {
            return Err(write_protected().into());
        }
        if anchor {
            // ANC_SUP is 0: anchored blocks are not supported.
            return Err(Sense::invalid_cdb_field(1, Some(0)).into());
        }
        let len = usize::from(len);
        if len == 0 {
            return Ok(empty(buf));
        }
        let Some(data) = buf.get(..len) else {
            return Err(Sense::illegal(PARAMETER_LIST_LENGTH_ERROR).into());
        };
        let extents = parse_unmap(
            data,
            self.num_blocks(),
            limits::max_unmap_blocks(&self.cfg),
            limits::MAX_UNMAP_DESCRIPTORS,
        )?;
        let bs = u64::from(self.cfg.block_size);
        let _shared = self.io_guard.read().await;
        for e in extents.iter().filter(|e| e.blocks > 0) {
            self.backend
                .unmap(e.lba * bs, u64::from(e.blocks) * bs)
                .await
                .map_err(write_error)?;
        }
        self.unmap_done().await?;
        Ok(empty(buf))
    }

    /// With the write cache off, a deallocation is on stable storage before GOOD, like a
    /// write (with it on, SYNCHRONIZE CACHE makes it so).
    async fn unmap_done(&self) -> Result<(), Sense> {
        if self.mode.get().wce {
            return Ok(());
        }
        self.backend.flush().await.map_err(write_error)
    }

    pub(super) async fn write_same(&self, ws: WriteSame, mut buf: Vec<u8>) -> Out {
        if self.write_protected() {
            return Err(write_protected().into());
        }
        if ws.anchor {
            return Err(Sense::invalid_cdb_field(1, Some(4)).into());
        }
        if ws.unmap && !self.cfg.thin {
            return Err(Sense::invalid_cdb_field(1, Some(3)).into());
        }
        let blocks = match ws.blocks {
            0 => self
                .num_blocks()
                .checked_sub(ws.lba)
                .filter(|b| *b > 0)
                .ok_or(Sense::lba_out_of_range())?,
            n => u64::from(n),
        };
        if blocks > limits::max_write_same_blocks(&self.cfg) {
            return Err(Sense::illegal(super::sense::INVALID_FIELD_IN_CDB).into());
        }
        let (offset, len) = self.range(ws.lba, blocks)?;
        let bs = self.cfg.block_size as usize;
        if ws.ndob {
            buf.clear();
            buf.resize(bs, 0);
        } else if buf.len() != bs {
            return Err(bad_data_out().into());
        }
        let _shared = self.io_guard.read().await;
        // UNMAP on a thin unit deallocates whatever the pattern: deallocated blocks read as
        // zeros (LBPRZ), which SBC-3 allows in place of the pattern.
        if ws.unmap {
            self.backend
                .unmap(offset, len as u64)
                .await
                .map_err(write_error)?;
            self.unmap_done().await?;
            return Ok(empty(buf));
        }
        let chunk = len.min((limits::WRITE_SAME_CHUNK_BYTES as usize / bs).max(1) * bs);
        replicate(&mut buf, bs, chunk);
        let durable = !self.mode.get().wce;
        let mut done = 0usize;
        while done < len {
            let n = chunk.min(len - done);
            buf.truncate(n);
            let (r, back) = self
                .backend
                .write_at(buf, offset + done as u64, durable)
                .await;
            r.map_err(write_error)?;
            buf = back;
            done += n;
        }
        Ok(empty(buf))
    }

    /// GET LBA STATUS (SBC-3 5.7): mapped/deallocated extents from `lba`, as many as fit.
    pub(super) fn get_lba_status(&self, lba: u64, alloc: u32) -> Out {
        let n = self.num_blocks();
        if lba >= n {
            return Err(Sense::lba_out_of_range().into());
        }
        let bs = u64::from(self.cfg.block_size);
        let max_desc = ((alloc as usize).saturating_sub(8) / 16).clamp(1, 64);
        let mut d = vec![0u8; 8];
        let mut cur = lba;
        while cur < n && (d.len() - 8) / 16 < max_desc {
            let left = n - cur;
            let (mapped, blocks) = if self.cfg.thin {
                let (mapped, bytes) = self.backend.mapping(cur * bs).map_err(read_error)?;
                if mapped {
                    (true, bytes.div_ceil(bs))
                } else if bytes / bs == 0 {
                    // A hole smaller than a block: the block still holds data.
                    (true, 1)
                } else {
                    (false, bytes / bs)
                }
            } else {
                (true, left)
            };
            let blocks = blocks.clamp(1, left).min(u64::from(u32::MAX));
            d.extend_from_slice(&cur.to_be_bytes());
            d.extend_from_slice(&(blocks as u32).to_be_bytes());
            d.extend_from_slice(&[if mapped { 0 } else { 1 }, 0, 0, 0]);
            cur += blocks;
        }
        let len = (d.len() - 4) as u32;
        d[0..4].copy_from_slice(&len.to_be_bytes());
        Ok(truncate(d, alloc as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::sense::{INVALID_FIELD_IN_PARAMETER_LIST, LBA_OUT_OF_RANGE};
    use crate::scsi::testing::unmap_list as list;

    #[test]
    fn unmap_list_parses() {
        let e = parse_unmap(&list(&[(0, 8), (100, 0), (990, 10)]), 1000, 64, 4).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(
            e[2],
            Extent {
                lba: 990,
                blocks: 10
            }
        );
        assert!(parse_unmap(&list(&[]), 1000, 64, 4).unwrap().is_empty());
        // LBA == capacity with zero blocks is allowed.
        assert!(parse_unmap(&list(&[(1000, 0)]), 1000, 64, 4).is_ok());
    }

    #[test]
    fn unmap_list_errors() {
        assert_eq!(
            parse_unmap(&[0; 7], 1000, 64, 4).unwrap_err().asc(),
            PARAMETER_LIST_LENGTH_ERROR
        );
        assert_eq!(
            parse_unmap(&list(&[(995, 10)]), 1000, 64, 4)
                .unwrap_err()
                .asc(),
            LBA_OUT_OF_RANGE
        );
        assert_eq!(
            parse_unmap(&list(&[(u64::MAX, 2)]), 1000, 64, 4)
                .unwrap_err()
                .asc(),
            LBA_OUT_OF_RANGE
        );
        let e = parse_unmap(&list(&[(0, 1), (0, 65)]), 1000, 64, 4).unwrap_err();
        assert_eq!(e.asc(), INVALID_FIELD_IN_PARAMETER_LIST);
        let e = parse_unmap(&list(&[(0, 1); 5]), 1000, 64, 4).unwrap_err();
        assert_eq!(e.asc(), INVALID_FIELD_IN_PARAMETER_LIST);
        // A truncated list only counts whole descriptors.
        let mut l = list(&[(0, 1), (5, 1)]);
        l.truncate(8 + 16 + 7);
        assert_eq!(parse_unmap(&l, 1000, 64, 4).unwrap().len(), 1);
    }

    #[test]
    fn replicate_fills_whole_blocks() {
        let mut b = vec![1, 2, 3, 4];
        replicate(&mut b, 4, 16);
        assert_eq!(b, [1, 2, 3, 4].repeat(4));
    }
}
