//! An in-memory [`Backend`] for unit tests, and small helpers to drive a logical unit.

use std::cell::{Cell, RefCell};
use std::io;

use bytes::Bytes;

use super::{Backend, LogicalUnit, LuConfig, NexusId, Response};

/// Allocation granularity of the in-memory store (like a filesystem block).
pub const GRAIN: u64 = 512;

/// A store in memory that records flushes, FUA writes and deallocation.
pub struct MemBackend {
    pub data: RefCell<Vec<u8>>,
    /// Per-GRAIN allocation state.
    pub mapped: RefCell<Vec<bool>>,
    pub flushes: Cell<u32>,
    pub fua_writes: Cell<u32>,
    pub writes: Cell<u32>,
    /// When set, every I/O fails.
    pub fail: Cell<bool>,
    /// While set, writes wait (they are "in flight"); [`MemBackend::release_writes`] lets
    /// them go.
    pub hold_writes: Cell<bool>,
    released: tokio::sync::Notify,
}

impl MemBackend {
    pub fn new(len: u64) -> Self {
        MemBackend {
            data: RefCell::new(vec![0; len as usize]),
            mapped: RefCell::new(vec![true; len.div_ceil(GRAIN) as usize]),
            flushes: Cell::new(0),
            fua_writes: Cell::new(0),
            writes: Cell::new(0),
            fail: Cell::new(false),
            hold_writes: Cell::new(false),
            released: tokio::sync::Notify::new(),
        }
    }

    /// Lets held writes go on (and later ones pass).
    pub fn release_writes(&self) {
        self.hold_writes.set(false);
        self.released.notify_waiters();
    }

    fn check(&self, offset: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
        if self.fail.get() {
            return Err(io::Error::other("injected failure"));
        }
        let start = offset as usize;
        let end = start + len;
        if end > self.data.borrow().len() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "past end"));
        }
        Ok(start..end)
    }
}

impl Backend for MemBackend {
    async fn read(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let r = self.check(offset, len)?;
        Ok(Bytes::copy_from_slice(&self.data.borrow()[r]))
    }

    async fn write_at(&self, buf: Vec<u8>, offset: u64, fua: bool) -> (io::Result<()>, Vec<u8>) {
        // Yield once so concurrent commands can interleave, as with a real ring.
        tokio::task::yield_now().await;
        loop {
            let released = self.released.notified();
            if !self.hold_writes.get() {
                break;
            }
            released.await;
        }
        match self.check(offset, buf.len()) {
            Ok(r) => {
                self.data.borrow_mut()[r.clone()].copy_from_slice(&buf);
                let mut m = self.mapped.borrow_mut();
                for g in (r.start as u64 / GRAIN)..(r.end as u64).div_ceil(GRAIN) {
                    m[g as usize] = true;
                }
                self.writes.set(self.writes.get() + 1);
                if fua {
                    self.fua_writes.set(self.fua_writes.get() + 1);
                }
                (Ok(()), buf)
            }
            Err(e) => (Err(e), buf),
        }
    }

    async fn flush(&self) -> io::Result<()> {
        if self.fail.get() {
            return Err(io::Error::other("injected failure"));
        }
        self.flushes.set(self.flushes.get() + 1);
        Ok(())
    }

    async fn unmap(&self, offset: u64, len: u64) -> io::Result<()> {
        let r = self.check(offset, len as usize)?;
        self.data.borrow_mut()[r.clone()].fill(0);
        let mut m = self.mapped.borrow_mut();
        // Only whole grains are deallocated, like punching a hole.
        for g in (r.start as u64).div_ceil(GRAIN)..(r.end as u64 / GRAIN) {
            m[g as usize] = false;
        }
        Ok(())
    }

    fn mapping(&self, offset: u64) -> io::Result<(bool, u64)> {
        let m = self.mapped.borrow();
        let g = (offset / GRAIN) as usize;
        let Some(&state) = m.get(g) else {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "past end"));
        };
        let run = m[g..].iter().take_while(|s| **s == state).count() as u64;
        let end = ((g as u64 + run) * GRAIN).min(self.data.borrow().len() as u64);
        Ok((state, end - offset))
    }

    fn resized(&self, len: u64) {
        // Grown like a sparse file: the new bytes read as zeros and are not mapped.
        self.data.borrow_mut().resize(len as usize, 0);
        self.mapped
            .borrow_mut()
            .resize(len.div_ceil(GRAIN) as usize, false);
    }
}

/// A test configuration: 512-byte blocks, `blocks` of them.
pub fn config(blocks: u64) -> LuConfig {
    LuConfig {
        lun: 0,
        block_size: 512,
        num_blocks: blocks,
        serial: "TESTSERIAL".into(),
        target_iqn: "iqn.2026-11.dev.spindle:test".into(),
        naa: [0x31, 2, 3, 4, 5, 6, 7, 8],
        ..LuConfig::default()
    }
}

/// A logical unit over a fresh in-memory store.
pub fn lu(cfg: LuConfig) -> LogicalUnit<MemBackend> {
    let len = cfg.num_blocks * u64::from(cfg.block_size);
    LogicalUnit::new(cfg, MemBackend::new(len))
}

/// Runs a future to completion on a current-thread runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// The nexus most tests use.
pub const N1: NexusId = NexusId(1);
/// A second nexus.
pub const N2: NexusId = NexusId(2);

/// Executes one command.
pub fn exec(lu: &LogicalUnit<MemBackend>, nexus: NexusId, cdb: &[u8], data: Vec<u8>) -> Response {
    block_on(lu.execute(nexus, cdb, data))
}

/// Executes commands until the nexus's pending unit attentions are gone.
pub fn clear_ua(lu: &LogicalUnit<MemBackend>, nexus: NexusId) {
    for _ in 0..16 {
        let r = exec(lu, nexus, &[0, 0, 0, 0, 0, 0], Vec::new());
        if r.status == super::Status::Good {
            return;
        }
    }
    panic!("unit attention never cleared");
}

/// (sense key, ASC, ASCQ) of fixed or descriptor sense data.
pub fn sense_of(r: &Response) -> (u8, u8, u8) {
    let s = &r.sense;
    match s.first() {
        Some(0x70) | Some(0xF0) => (s[2] & 0x0F, s[12], s[13]),
        Some(0x72) => (s[1] & 0x0F, s[2], s[3]),
        _ => panic!("no sense data: {r:?}"),
    }
}

/// Builds a 10-byte READ/WRITE-style CDB.
pub fn cdb10(op: u8, flags: u8, lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![op, flags];
    c.extend_from_slice(&lba.to_be_bytes());
    c.push(0);
    c.extend_from_slice(&blocks.to_be_bytes());
    c.push(0);
    c
}

/// Builds a 16-byte READ/WRITE-style CDB.
pub fn cdb16(op: u8, flags: u8, lba: u64, blocks: u32) -> Vec<u8> {
    let mut c = vec![op, flags];
    c.extend_from_slice(&lba.to_be_bytes());
    c.extend_from_slice(&blocks.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    c
}

/// An UNMAP parameter list with these (LBA, blocks) descriptors.
pub(crate) fn unmap_list(extents: &[(u64, u32)]) -> Vec<u8> {
    let mut d = vec![0u8; 8];
    for (lba, n) in extents {
        d.extend_from_slice(&lba.to_be_bytes());
        d.extend_from_slice(&n.to_be_bytes());
        d.extend_from_slice(&[0; 4]);
    }
    let bd = (d.len() - 8) as u16;
    d[0..2].copy_from_slice(&(bd + 6).to_be_bytes());
    d[2..4].copy_from_slice(&bd.to_be_bytes());
    d
}

/// An EXTENDED COPY block-to-block segment descriptor (02h).
pub(crate) fn segment(src: u16, dst: u16, blocks: u16, from: u64, to: u64) -> Vec<u8> {
    let mut s = vec![0u8; 28];
    s[0] = 0x02;
    s[2..4].copy_from_slice(&24u16.to_be_bytes());
    s[4..6].copy_from_slice(&src.to_be_bytes());
    s[6..8].copy_from_slice(&dst.to_be_bytes());
    s[10..12].copy_from_slice(&blocks.to_be_bytes());
    s[12..20].copy_from_slice(&from.to_be_bytes());
    s[20..28].copy_from_slice(&to.to_be_bytes());
    s
}
