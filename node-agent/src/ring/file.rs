//! Files and block devices on the ring: positioned reads and writes into owned buffers,
//! fdatasync and fallocate.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use bytes::Bytes;
use io_uring::{opcode, types};

use super::AlignedBuf;
use super::driver::Op;

/// A file or block device whose reads, writes, syncs and fallocates go through the ring.
pub struct File {
    /// Shared with every operation in flight, so the descriptor outlives them, and with the
    /// node that opened it (one descriptor per store, however many hold it).
    file: Arc<std::fs::File>,
}

/// Bytes one read or write may move (the kernel's MAX_RW_COUNT is a little less than 2 GiB).
const MAX_RW: usize = 1 << 30;

/// A completion's result as bytes moved, or the error it carries.
fn moved(res: i32) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as usize)
    }
}

impl File {
    /// Wraps an open std file (opened with whatever flags the caller needs, e.g. O_DIRECT),
    /// owned or shared.
    pub fn from_std(file: impl Into<Arc<std::fs::File>>) -> Self {
        File { file: file.into() }
    }

    fn fd(&self) -> types::Fd {
        types::Fd(self.file.as_raw_fd())
    }

    /// Reads exactly `len` bytes at `pos` into a page-aligned pooled buffer (fit for
    /// O_DIRECT) and returns them as [`Bytes`] over that buffer, without copying.
    pub async fn read_exact_at_aligned(&self, len: usize, pos: u64) -> io::Result<Bytes> {
        let mut buf = AlignedBuf::with_capacity(len);
        while buf.as_ref().len() < len {
            let done = buf.as_ref().len();
            let want = (len - done).min(MAX_RW);
            // SAFETY: the pointer is into `buf`'s heap memory past its initialised bytes, with
            // `want` bytes of capacity; `buf` moves into the operation until it completes.
            let entry = opcode::Read::new(self.fd(), unsafe { buf.spare_ptr() }, want as u32)
                .offset(pos + done as u64)
                .build();
            let op = unsafe { Op::submit(entry, (buf, self.file.clone())) }.map_err(|(e, _)| e)?;
            let (res, (b, _file)) = op.await;
            buf = b;
            match moved(res)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                // SAFETY: the kernel wrote `n` bytes after the initialised ones.
                n => unsafe { buf.set_len(done + n) },
            }
        }
        Ok(buf.into_bytes())
    }

    /// Writes every byte of `data` at `pos`; `D` owns the bytes and goes into the ring with
    /// each write, back out when it completes.
    async fn write_all_owned<D: AsRef<[u8]> + Unpin + 'static>(
        &self,
        mut data: D,
        pos: u64,
    ) -> (io::Result<()>, D) {
        let mut done = 0;
        while done < data.as_ref().len() {
            let rest = &data.as_ref()[done..];
            let want = rest.len().min(MAX_RW);
            let entry = opcode::Write::new(self.fd(), rest.as_ptr(), want as u32)
                .offset(pos + done as u64)
                .build();
            // SAFETY: the pointer is into `data`'s heap memory (a Vec's or an AlignedBuf's,
            // which do not move with their owner), and `data` moves into the operation.
            let op = match unsafe { Op::submit(entry, (data, self.file.clone())) } {
                Ok(op) => op,
                Err((e, (d, _file))) => return (Err(e), d),
            };
            let (res, (d, _file)) = op.await;
            data = d;
            match moved(res) {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), data),
                Ok(n) => done += n,
                Err(e) => return (Err(e), data),
            }
        }
        (Ok(()), data)
    }

    /// Writes all of `buf` at `pos`.
    pub async fn write_all_at(&self, buf: Vec<u8>, pos: u64) -> (io::Result<()>, Vec<u8>) {
        self.write_all_owned(buf, pos).await
    }

    /// Writes the bytes of a page-aligned buffer at `pos` (for O_DIRECT); the buffer goes
    /// back to its pool afterwards.
    pub async fn write_all_at_aligned(&self, buf: AlignedBuf, pos: u64) -> io::Result<()> {
        self.write_all_owned(buf, pos).await.0
    }

    /// fdatasync.
    pub async fn sync_data(&self) -> io::Result<()> {
        let entry = opcode::Fsync::new(self.fd())
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        // SAFETY: no memory is passed; the descriptor is kept open by the operation.
        let op = unsafe { Op::submit(entry, self.file.clone()) }.map_err(|(e, _)| e)?;
        let (res, _) = op.await;
        moved(res).map(drop)
    }

    /// fallocate with the given mode flags.
    pub async fn fallocate(&self, offset: u64, len: u64, flags: i32) -> io::Result<()> {
        let entry = opcode::Fallocate::new(self.fd(), len)
            .offset(offset)
            .mode(flags)
            .build();
        // SAFETY: as for sync_data.
        let op = unsafe { Op::submit(entry, self.file.clone()) }.map_err(|(e, _)| e)?;
        let (res, _) = op.await;
        moved(res).map(drop)
    }

    /// The raw descriptor, for synchronous queries the ring has no opcode for (lseek).
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ring::{Runtime, driver};
    use std::future::Future;
    use std::task::Poll;

    fn file_of(len: usize) -> (tempfile::NamedTempFile, File) {
        let t = tempfile::NamedTempFile::new().unwrap();
        t.as_file().set_len(len as u64).unwrap();
        let f = File::from_std(t.reopen().unwrap());
        (t, f)
    }

    #[test]
    fn writes_reads_syncs_and_punches_holes() {
        Runtime::new().unwrap().block_on(async {
            let (_t, f) = file_of(1 << 20);
            let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
            let (res, back) = f.write_all_at(data.clone(), 4096).await;
            res.unwrap();
            assert_eq!(back, data, "the buffer comes back");
            f.write_all_at_aligned(AlignedBuf::copy_of(&[7u8; 8192]), 512 * 1024)
                .await
                .unwrap();
            f.sync_data().await.unwrap();
            let got = f.read_exact_at_aligned(data.len(), 4096).await.unwrap();
            assert_eq!(&got[..], &data[..]);
            assert_eq!(got.as_ptr().align_offset(crate::ring::ALIGN), 0);
            let sevens = f.read_exact_at_aligned(8192, 512 * 1024).await.unwrap();
            assert!(sevens.iter().all(|&b| b == 7));
            let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            f.fallocate(4096, 65536, punch).await.unwrap();
            let hole = f.read_exact_at_aligned(65536, 4096).await.unwrap();
            assert!(hole.iter().all(|&b| b == 0), "punched range reads zeros");
            let after = f.read_exact_at_aligned(4096, 4096 + 65536).await.unwrap();
            assert_eq!(&after[..], &data[65536..65536 + 4096], "the rest is intact");
        });
    }

    #[test]
    fn reading_past_the_end_is_an_error_not_short_data() {
        Runtime::new().unwrap().block_on(async {
            let (_t, f) = file_of(8192);
            let e = f.read_exact_at_aligned(8192, 4096).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            let e = f.fallocate(0, 0, 0).await.unwrap_err();
            assert_eq!(
                e.raw_os_error(),
                Some(libc::EINVAL),
                "errors carry the errno (zero length)"
            );
        });
    }

    /// A pipe: a read of its empty read end stays in flight until the write end is written.
    pub(in crate::ring) fn pipe() -> (File, std::fs::File) {
        use std::os::fd::FromRawFd;
        let mut fds = [0; 2];
        // SAFETY: pipe fills two fresh descriptors, each owned by one File below.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (r, w) = unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        (File::from_std(r), w)
    }

    /// Polls `fut` once (which submits its operation), then drops it as an aborted task would.
    pub(in crate::ring) async fn submit_and_drop<F: Future>(fut: F) {
        let mut fut = std::pin::pin!(fut);
        let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "nothing to read yet");
    }

    #[test]
    fn a_dropped_operation_keeps_its_buffer_until_the_kernel_is_done() {
        use std::io::Write;
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            let ring = driver::current().unwrap();
            let (r, mut w) = pipe();
            submit_and_drop(r.read_exact_at_aligned(4096, 0)).await;
            assert_eq!(
                ring.borrow().in_flight(),
                1,
                "the driver holds the orphaned read"
            );
            w.write_all(&[1u8; 4096]).unwrap();
            for _ in 0..1000 {
                if ring.borrow().in_flight() == 0 {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            panic!("the orphaned read was never completed and freed");
        });
        // A runtime shut down with a read in flight waits for the kernel to finish it.
        let (r, mut w) = pipe();
        rt.block_on(submit_and_drop(r.read_exact_at_aligned(4096, 0)));
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            w.write_all(&[2u8; 4096]).unwrap();
        });
        let t = std::time::Instant::now();
        drop(rt);
        assert!(
            t.elapsed() >= std::time::Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        writer.join().unwrap();
        assert!(driver::current().is_none());
    }

    #[test]
    fn operations_outside_a_ring_thread_fail_cleanly() {
        let t = tempfile::NamedTempFile::new().unwrap();
        let f = File::from_std(t.reopen().unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = rt.block_on(f.sync_data()).unwrap_err();
        assert!(e.to_string().contains("no ring on this thread"), "{e}");
        assert!(crate::ring::probe().is_ok());
    }
}
