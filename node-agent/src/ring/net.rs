//! TCP on the ring thread's tokio reactor (epoll readiness and non-blocking system calls).
//!
//! Reads wait for readiness and then `recv` directly; writes try a direct `sendmsg` first and
//! hand only what the socket could not take to the ring (see docs/benchmarks.md, "Ring
//! driver").

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use bytes::{Bytes, BytesMut};
use io_uring::{opcode, types};

use super::MAX_IOV;
use super::driver::Op;

/// A TCP connection. Reads and writes may be in flight at the same time (`&self` methods).
///
/// If the thread's reactor refuses the socket (out of epoll watches or memory), the socket is
/// closed and every call on the stream fails with that error, so the connection ends cleanly.
pub struct TcpStream(Result<tokio::net::TcpStream, io::ErrorKind>);

/// Makes `s` non-blocking and hands it to the thread's reactor with `register`; on failure
/// logs and keeps the error (the socket is closed).
fn on_reactor<S: AsRawFd, T>(
    what: &str,
    s: S,
    register: impl FnOnce(S) -> io::Result<T>,
) -> Result<T, io::ErrorKind> {
    let fd = s.as_raw_fd();
    // SAFETY: fcntl on a descriptor `s` owns, adding O_NONBLOCK only.
    let nonblocking = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    let r = if nonblocking {
        register(s)
    } else {
        Err(io::Error::last_os_error())
    };
    r.map_err(|e| {
        tracing::error!("the ring thread's reactor refused a {what}: {e}");
        e.kind()
    })
}

impl TcpStream {
    /// Wraps a connected std stream (made non-blocking). Must run on a ring thread.
    pub fn from_std(s: std::net::TcpStream) -> Self {
        TcpStream(on_reactor("connection", s, tokio::net::TcpStream::from_std))
    }

    fn get(&self) -> io::Result<&tokio::net::TcpStream> {
        self.0.as_ref().map_err(|&k| k.into())
    }

    /// Reads some bytes into the spare capacity of `buf` (appending); `Ok(0)` is end of stream.
    pub async fn read(&self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        let s = match self.get() {
            Ok(s) => s,
            Err(e) => return (Err(e), buf),
        };
        if buf.capacity() == buf.len() {
            return (Ok(0), buf);
        }
        loop {
            match s.try_read_buf(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                res => return (res, buf),
            }
            if let Err(e) = s.readable().await {
                return (Err(e), buf);
            }
        }
    }

    /// Writes every byte of every buffer, in order.
    ///
    /// The socket usually has room for a response, so it goes out in this poll with one
    /// non-blocking `sendmsg`. What the socket cannot take goes to the ring as one `sendmsg`
    /// with MSG_WAITALL: the kernel sends it as the socket drains, without waking this thread
    /// for every bit of room (readiness plus retries cost 1.7x the CPU per 128 KiB read).
    /// Each system call gets at most [`MAX_IOV`] buffers (the kernel refuses more).
    pub async fn write_all_vectored(&self, mut bufs: Vec<Bytes>) -> io::Result<()> {
        let fd = self.get()?.as_raw_fd();
        bufs.retain(|b| !b.is_empty());
        match send_now(fd, &bufs) {
            Ok(n) => consume(&mut bufs, n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
        while !bufs.is_empty() {
            let rest = bufs.split_off(bufs.len().min(MAX_IOV));
            let (res, mut back) = send_on_ring(fd, bufs).await;
            back.extend(rest);
            bufs = back;
            match res? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => consume(&mut bufs, n),
            }
        }
        Ok(())
    }

    /// The local address the connection arrived on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.get()?.local_addr()
    }

    /// The initiator's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.get()?.peer_addr()
    }

    /// Sets TCP_NODELAY.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.get()?.set_nodelay(on)
    }

    /// Shuts the connection down in both directions (pending reads then see end of stream).
    pub fn shutdown(&self) -> io::Result<()> {
        // SAFETY: shutdown on a socket this stream owns.
        if unsafe { libc::shutdown(self.get()?.as_raw_fd(), libc::SHUT_RDWR) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Detaches the connection from this thread so another ring thread can adopt it with
    /// [`TcpStream::from_std`].
    pub fn into_std(self) -> io::Result<std::net::TcpStream> {
        self.0.map_err(io::Error::from)?.into_std()
    }
}

/// A message header over buffers, kept together on the heap while the kernel uses it.
struct Message {
    msg: libc::msghdr,
    _iov: Vec<libc::iovec>,
    bufs: Vec<Bytes>,
}

/// iovecs over (at most [`MAX_IOV`] of) `bufs`.
fn iovecs(bufs: &[Bytes]) -> Vec<libc::iovec> {
    bufs.iter()
        .take(MAX_IOV)
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect()
}

/// A message header over `iov` (no address, no control data).
fn header(iov: &[libc::iovec]) -> libc::msghdr {
    // SAFETY: an all-zero msghdr is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len();
    msg
}

/// One non-blocking `sendmsg` of up to [`MAX_IOV`] of `bufs`: the bytes the socket took.
fn send_now(fd: RawFd, bufs: &[Bytes]) -> io::Result<usize> {
    if bufs.is_empty() {
        return Ok(0);
    }
    let iov = iovecs(bufs);
    let msg = header(&iov);
    // SAFETY: a valid socket descriptor and a header over live buffers, which the kernel only
    // reads.
    let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// `sendmsg` of `bufs` (at most [`MAX_IOV`]) through the ring, completing once all of it is
/// sent or the connection fails; the buffers come back.
async fn send_on_ring(fd: RawFd, bufs: Vec<Bytes>) -> (io::Result<usize>, Vec<Bytes>) {
    let iov = iovecs(&bufs);
    let m = Box::new(Message {
        msg: header(&iov),
        _iov: iov,
        bufs,
    });
    let entry = opcode::SendMsg::new(types::Fd(fd), &m.msg)
        .flags((libc::MSG_WAITALL | libc::MSG_NOSIGNAL) as u32)
        .build();
    // SAFETY: the header, its iovecs and the bytes they point to are owned by `m` (heap
    // memory that does not move), which the operation owns until it completes.
    let op = match unsafe { Op::submit(entry, m) } {
        Ok(op) => op,
        Err((e, m)) => return (Err(e), m.bufs),
    };
    let (res, m) = op.await;
    if res < 0 {
        return (Err(io::Error::from_raw_os_error(-res)), m.bufs);
    }
    (Ok(res as usize), m.bufs)
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

/// A listening socket (like [`TcpStream`], failing every accept if the reactor refused it).
pub struct TcpListener(Result<tokio::net::TcpListener, io::ErrorKind>);

impl TcpListener {
    /// Wraps a bound std listener (made non-blocking). Must run on a ring thread.
    pub fn from_std(l: std::net::TcpListener) -> Self {
        TcpListener(on_reactor("listener", l, tokio::net::TcpListener::from_std))
    }

    /// Stops listening: a pending accept fails and the port is given back once the listener
    /// is dropped.
    pub fn shutdown(&self) {
        if let Ok(l) = &self.0 {
            // SAFETY: shutdown on a descriptor this listener owns.
            unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }

    /// Accepts the next connection.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let l = self.0.as_ref().map_err(|&k| io::Error::from(k))?;
        let (s, a) = l.accept().await?;
        Ok((TcpStream(Ok(s)), a))
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
        super::super::Runtime::new().unwrap().block_on(async {
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
        super::super::Runtime::new().unwrap().block_on(async {
            let s = TcpStream::from_std(std::net::TcpStream::connect(addr).unwrap());
            s.write_all_vectored(parts).await.unwrap();
            s.shutdown().unwrap();
        });
        assert!(reader.join().unwrap() == expected);
    }
}
