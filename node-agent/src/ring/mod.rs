//! The ring driver: the only module that touches `tokio-uring`.
//!
//! tokio-uring has no active maintainer upstream, so everything else in the agent goes through
//! the small surface here (a runtime per thread, spawn, files, TCP). Swapping the driver means
//! rewriting this file only.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use bytes::{Bytes, BytesMut};

mod buf;
mod submit;

pub use buf::{ALIGN, AlignedBuf};

/// Why io_uring cannot be used on this machine, with what to change.
#[derive(Debug, thiserror::Error)]
#[error(
    "io_uring is not available ({source}). Spindle's data path needs it: check that the kernel \
     is 5.11 or newer, that sysctl kernel.io_uring_disabled is 0, and that the container's \
     seccomp profile allows io_uring_setup/io_uring_enter/io_uring_register (e.g. run the \
     agent with seccompProfile: Unconfined or a profile that adds them)"
)]
pub struct RingUnavailable {
    #[source]
    source: io::Error,
}

/// Most buffers one vectored write may pass: the kernel's IOV_MAX (more is EINVAL).
pub const MAX_IOV: usize = 1024;

/// Submission queue size of each ring: enough for a full CmdSN window of several sessions.
const RING_ENTRIES: u32 = 1024;

/// One io_uring runtime, owned by one thread.
pub struct Runtime(tokio_uring::Runtime);

impl Runtime {
    /// Creates a ring runtime on the current thread.
    pub fn new() -> Result<Self, RingUnavailable> {
        submit::made_here(|| {
            tokio_uring::Runtime::new(tokio_uring::builder().entries(RING_ENTRIES))
                .map(Runtime)
                .map_err(|source| RingUnavailable { source })
        })
    }

    /// Runs `fut` to completion on this thread's ring (spawned tasks run alongside).
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.0.block_on(fut)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        submit::forget();
    }
}

/// Checks that a ring can be set up and completes a no-op, so the agent can refuse to start with
/// a clear message instead of failing on the first command.
pub fn probe() -> Result<(), RingUnavailable> {
    let rt = Runtime::new()?;
    rt.block_on(tokio_uring::no_op())
        .map_err(|source| RingUnavailable { source })
}

/// Spawns a task on the current thread's ring runtime.
pub fn spawn<F: Future + 'static>(fut: F) -> tokio::task::JoinHandle<F::Output> {
    tokio_uring::spawn(fut)
}

/// A file or block device whose reads, writes, syncs and fallocates go through the ring.
pub struct File {
    inner: tokio_uring::fs::File,
    fd: RawFd,
}

impl File {
    /// Wraps an open std file (opened with whatever flags the caller needs, e.g. O_DIRECT).
    pub fn from_std(file: std::fs::File) -> Self {
        let fd = file.as_raw_fd();
        File {
            inner: tokio_uring::fs::File::from_std(file),
            fd,
        }
    }

    /// Reads exactly `len` bytes at `pos` into a page-aligned pooled buffer (fit for
    /// O_DIRECT) and returns them as [`Bytes`] over that buffer, without copying.
    pub async fn read_exact_at_aligned(&self, len: usize, pos: u64) -> io::Result<Bytes> {
        use tokio_uring::buf::BoundedBuf;
        let buf = AlignedBuf::with_capacity(len);
        let (res, slice) = submit::eager(self.inner.read_exact_at(buf.slice(..len), pos)).await;
        res?;
        Ok(slice.into_inner().into_bytes())
    }

    /// Writes all of `buf` at `pos`.
    pub async fn write_all_at(&self, buf: Vec<u8>, pos: u64) -> (io::Result<()>, Vec<u8>) {
        submit::eager(self.inner.write_all_at(buf, pos)).await
    }

    /// Writes the bytes of a page-aligned buffer at `pos` (for O_DIRECT); the buffer goes
    /// back to its pool afterwards.
    pub async fn write_all_at_aligned(&self, buf: AlignedBuf, pos: u64) -> io::Result<()> {
        submit::eager(self.inner.write_all_at(buf, pos)).await.0
    }

    /// fdatasync.
    pub async fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data().await
    }

    /// fallocate with the given mode flags.
    pub async fn fallocate(&self, offset: u64, len: u64, flags: i32) -> io::Result<()> {
        self.inner.fallocate(offset, len, flags).await
    }

    /// The raw descriptor, for synchronous queries the ring has no opcode for (lseek).
    pub fn raw_fd(&self) -> RawFd {
        self.fd
    }
}

/// A TCP connection whose reads and writes go through the ring. Reads and writes may be in
/// flight at the same time (`&self` methods).
pub struct TcpStream(tokio_uring::net::TcpStream);

impl TcpStream {
    /// Wraps a connected std stream.
    pub fn from_std(s: std::net::TcpStream) -> Self {
        TcpStream(tokio_uring::net::TcpStream::from_std(s))
    }

    /// Reads some bytes into the spare capacity of `buf` (appending); `Ok(0)` is end of stream.
    pub async fn read(&self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        use tokio_uring::buf::BoundedBuf;
        let start = buf.len();
        let cap = buf.capacity();
        let (res, slice) = self.0.read(buf.slice(start..cap)).await;
        (res, slice.into_inner())
    }

    /// Writes every byte of every buffer, in order.
    ///
    /// The socket usually has room for a response, so a non-blocking `sendmsg` is tried
    /// first: it completes without a ring round trip (one wake-up less per command). Whatever
    /// it could not take goes through the ring.
    /// Each system call gets at most [`MAX_IOV`] buffers (the kernel refuses more).
    pub async fn write_all_vectored(&self, mut bufs: Vec<Bytes>) -> io::Result<()> {
        bufs.retain(|b| !b.is_empty());
        let sent = self.send_now(&bufs)?;
        consume(&mut bufs, sent);
        while !bufs.is_empty() {
            let rest = bufs.split_off(bufs.len().min(MAX_IOV));
            let (res, mut back) = self.0.writev(bufs).await;
            back.extend(rest);
            bufs = back;
            let n = res?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            consume(&mut bufs, n);
        }
        Ok(())
    }

    /// Sends as much of `bufs` as the socket takes right now, without blocking.
    fn send_now(&self, bufs: &[Bytes]) -> io::Result<usize> {
        let iov: Vec<libc::iovec> = bufs
            .iter()
            .take(MAX_IOV)
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        if iov.is_empty() {
            return Ok(0);
        }
        // SAFETY: an all-zero msghdr is valid; the iovecs point into `bufs`, which outlive
        // the call, and the kernel only reads from them.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len();
        // SAFETY: a valid socket descriptor and message header.
        let r = unsafe {
            libc::sendmsg(
                self.0.as_raw_fd(),
                &msg,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
            _ => Err(e),
        }
    }

    /// The local address the connection arrived on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        with_std_socket(self.0.as_raw_fd(), |s| s.local_addr())
    }

    /// The initiator's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        with_std_socket(self.0.as_raw_fd(), |s| s.peer_addr())
    }

    /// Sets TCP_NODELAY.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.0.set_nodelay(on)
    }

    /// Shuts the connection down in both directions.
    pub fn shutdown(&self) -> io::Result<()> {
        self.0.shutdown(std::net::Shutdown::Both)
    }

    /// Detaches the connection from this thread's ring so another thread's ring can adopt it
    /// with [`TcpStream::from_std`]. The descriptor is duplicated; this ring's copy is closed.
    pub fn into_std(self) -> io::Result<std::net::TcpStream> {
        use std::os::fd::FromRawFd;
        // SAFETY: dup returns a fresh descriptor that nothing else owns.
        let fd = unsafe { libc::dup(self.0.as_raw_fd()) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a valid, owned socket descriptor.
        Ok(unsafe { std::net::TcpStream::from_raw_fd(fd) })
    }
}

/// Runs `f` on a std view of a socket descriptor this module owns elsewhere (not closed).
fn with_std_socket<T>(fd: RawFd, f: impl FnOnce(&std::net::TcpStream) -> T) -> T {
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` is a live socket owned by the caller's wrapper; ManuallyDrop keeps this
    // view from closing it.
    let s = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
    f(&s)
}

/// A listening socket accepting through the ring.
pub struct TcpListener {
    inner: tokio_uring::net::TcpListener,
    fd: RawFd,
}

impl TcpListener {
    /// Wraps a bound std listener.
    pub fn from_std(l: std::net::TcpListener) -> Self {
        let fd = l.as_raw_fd();
        TcpListener {
            inner: tokio_uring::net::TcpListener::from_std(l),
            fd,
        }
    }

    /// Stops listening: a pending accept fails and the port is given back once the listener
    /// is dropped (a cancelled accept alone would keep it bound).
    pub fn shutdown(&self) {
        // SAFETY: shutdown on a descriptor this listener owns.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
    }

    /// Accepts the next connection.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (s, a) = self.inner.accept().await?;
        Ok((TcpStream(s), a))
    }
}

/// Drops the first `n` bytes of `bufs` (whole buffers, then part of the next).
fn consume(bufs: &mut Vec<Bytes>, mut n: usize) {
    let mut whole = 0;
    while whole < bufs.len() && n >= bufs[whole].len() {
        n -= bufs[whole].len();
        whole += 1;
    }
    bufs.drain(..whole);
    if n > 0
        && let Some(first) = bufs.first_mut()
    {
        *first = first.slice(n..);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_drops_whole_and_partial_buffers() {
        let mut b = vec![
            Bytes::from_static(b"abc"),
            Bytes::from_static(b"de"),
            Bytes::from_static(b"fgh"),
        ];
        consume(&mut b, 4);
        assert_eq!(
            b,
            vec![Bytes::from_static(b"e"), Bytes::from_static(b"fgh")]
        );
        consume(&mut b, 4);
        assert!(b.is_empty());
    }

    #[test]
    fn vectored_writes_arrive_whole_and_in_order() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let (mut s, _) = listener.accept().unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).unwrap();
            all
        });
        // More than a socket buffer holds, so both the direct send and the ring path run.
        let parts: Vec<Bytes> = (0..64u8).map(|i| Bytes::from(vec![i; 64 * 1024])).collect();
        let expected: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
        Runtime::new().unwrap().block_on(async {
            let s = TcpStream::from_std(std::net::TcpStream::connect(addr).unwrap());
            s.write_all_vectored(parts).await.unwrap();
            s.shutdown().unwrap();
        });
        assert!(reader.join().unwrap() == expected);
    }

    #[test]
    fn more_buffers_than_one_system_call_takes_are_sent_in_turns() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Small PDUs (a 48-byte header and an 8 KiB segment each, as with the RFC's default
        // MaxRecvDataSegmentLength) of many large reads: far more than IOV_MAX buffers, and
        // more bytes than the socket buffer, so the ring path gets them too.
        let parts: Vec<Bytes> = (0..8192u32)
            .map(|i| Bytes::from(vec![i as u8; if i % 2 == 0 { 48 } else { 8192 }]))
            .collect();
        let expected: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let (mut s, _) = listener.accept().unwrap();
            // Let the sender fill the socket buffer first.
            std::thread::sleep(std::time::Duration::from_millis(200));
            let mut all = Vec::new();
            s.read_to_end(&mut all).unwrap();
            all
        });
        Runtime::new().unwrap().block_on(async {
            let s = TcpStream::from_std(std::net::TcpStream::connect(addr).unwrap());
            s.write_all_vectored(parts).await.unwrap();
            s.shutdown().unwrap();
        });
        assert!(reader.join().unwrap() == expected);
    }
}
