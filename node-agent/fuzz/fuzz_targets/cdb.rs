//! CDBs and their parameter lists (MODE SELECT, UNMAP, PERSISTENT RESERVE OUT, EXTENDED COPY,
//! COMPARE AND WRITE, WRITE SAME, ...) through a logical unit over an in-memory store, several
//! commands from several nexuses per input so that reservations and unit attentions carry
//! over: nothing panics, and every answer is a well-formed status.
#![no_main]

use std::cell::RefCell;
use std::io;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spindle_agent::scsi::{Backend, LogicalUnit, LuConfig, NexusId, Status};

const BLOCKS: u64 = 64;

struct Mem(RefCell<Vec<u8>>);

impl Mem {
    fn range(&self, offset: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = start.checked_add(len).ok_or(io::ErrorKind::InvalidInput)?;
        if end > self.0.borrow().len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(start..end)
    }
}

impl Backend for Mem {
    async fn read(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let r = self.range(offset, len)?;
        Ok(Bytes::copy_from_slice(&self.0.borrow()[r]))
    }
    async fn write_at(&self, buf: Vec<u8>, offset: u64, _fua: bool) -> (io::Result<()>, Vec<u8>) {
        match self.range(offset, buf.len()) {
            Ok(r) => {
                self.0.borrow_mut()[r].copy_from_slice(&buf);
                (Ok(()), buf)
            }
            Err(e) => (Err(e), buf),
        }
    }
    async fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    async fn unmap(&self, offset: u64, len: u64) -> io::Result<()> {
        let r = self.range(offset, usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?)?;
        self.0.borrow_mut()[r].fill(0);
        Ok(())
    }
    fn mapping(&self, offset: u64) -> io::Result<(bool, u64)> {
        let len = self.0.borrow().len() as u64;
        Ok((true, len.saturating_sub(offset)))
    }
}

fuzz_target!(|input: &[u8]| {
    let cfg = LuConfig {
        num_blocks: BLOCKS,
        thin: input.first().is_some_and(|b| b & 1 != 0),
        serial: "FUZZ".into(),
        target_iqn: "iqn.2026-11.dev.spindle:fuzz".into(),
        ..LuConfig::default()
    };
    let lu = LogicalUnit::new(cfg, Mem(RefCell::new(vec![0; (BLOCKS * 512) as usize])));
    for n in 0..3 {
        lu.nexus_named(NexusId(n), &format!("iqn.2026-11.test:{n},i,0x00000000000{n}"));
    }
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut rest = input.get(1..).unwrap_or_default();
    // Each command: nexus, CDB length, Data-Out length (2 bytes), CDB, Data-Out.
    while rest.len() >= 4 {
        let nexus = NexusId(u64::from(rest[0] % 3));
        let cdb_len = 6 + usize::from(rest[1]) % 27;
        let data_len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        rest = &rest[4..];
        let cdb = &rest[..cdb_len.min(rest.len())];
        rest = &rest[cdb.len()..];
        let data = rest[..data_len.min(rest.len())].to_vec();
        rest = &rest[data.len()..];
        let r = rt.block_on(lu.execute(nexus, cdb, data));
        assert_eq!(r.sense.is_empty(), r.status != Status::CheckCondition);
    }
});
