//! Cutting the byte stream of a connection into PDU frames, and writing frames back.
//!
//! A frame is the 48-byte BHS, the AHS, an optional header digest, the data segment padded to
//! 4 bytes, and an optional data digest. Only the two length fields of the BHS are read here;
//! decoding is the pure codec's job (`iscsi::pdu`).

use std::io;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use crate::ring::TcpStream;

/// Length of the Basic Header Segment.
pub const BHS_LEN: usize = 48;
/// How much the reader asks the kernel for at once: a whole burst of Data-Out in one read.
const READ_CHUNK: usize = 256 * 1024;
/// Largest data segment accepted (2^24 - 1 is the field's limit; we cap far lower).
pub const MAX_DATA_SEGMENT: usize = 16 * 1024 * 1024;

/// One PDU as raw bytes, cut at its boundaries.
#[derive(Debug)]
pub struct Frame {
    /// BHS followed by the AHS (header digest not included).
    pub header: Bytes,
    /// Header digest as sent, when header digests are on.
    pub header_digest: Option<u32>,
    /// Data segment without padding.
    pub data: Bytes,
    /// Data digest as sent, when data digests are on and there is data.
    pub data_digest: Option<u32>,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("data segment of {0} bytes exceeds the limit")]
    TooLong(usize),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Buffered reader of frames from one connection.
pub struct FrameReader {
    stream: Rc<TcpStream>,
    buf: BytesMut,
}

impl FrameReader {
    pub fn new(stream: Rc<TcpStream>) -> Self {
        FrameReader {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// Makes at least `n` bytes available in the buffer.
    async fn fill(&mut self, n: usize) -> Result<(), FrameError> {
        while self.buf.len() < n {
            let want = (n - self.buf.len()).max(READ_CHUNK);
            self.buf.reserve(want);
            let buf = std::mem::take(&mut self.buf);
            let (res, buf) = self.stream.read(buf).await;
            self.buf = buf;
            match res? {
                0 => return Err(FrameError::Closed),
                _ => continue,
            }
        }
        Ok(())
    }

    async fn take(&mut self, n: usize) -> Result<Bytes, FrameError> {
        self.fill(n).await?;
        Ok(self.buf.split_to(n).freeze())
    }

    async fn take_u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4).await?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads the next frame; `header_digest`/`data_digest` say whether digests are on.
    pub async fn next(
        &mut self,
        header_digest: bool,
        data_digest: bool,
    ) -> Result<Frame, FrameError> {
        self.fill(BHS_LEN).await?;
        let ahs_len = usize::from(self.buf[4]) * 4;
        let data_len =
            (usize::from(self.buf[5]) << 16) | (usize::from(self.buf[6]) << 8) | usize::from(self.buf[7]);
        if data_len > MAX_DATA_SEGMENT {
            return Err(FrameError::TooLong(data_len));
        }
        let header = self.take(BHS_LEN + ahs_len).await?;
        let hd = if header_digest { Some(self.take_u32().await?) } else { None };
        let padded = data_len.div_ceil(4) * 4;
        let mut data = self.take(padded).await?;
        data.truncate(data_len);
        let dd = if data_digest && data_len > 0 {
            Some(self.take_u32().await?)
        } else {
            None
        };
        Ok(Frame {
            header,
            header_digest: hd,
            data,
            data_digest: dd,
        })
    }
}
