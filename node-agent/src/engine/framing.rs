//! Moving PDUs between a connection and the pure codec: a buffered reader that cuts the byte
//! stream into PDUs, and a writer that sends encoded frames with vectored writes.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use crate::iscsi::pdu::{Digests, Frame, Pdu, PduError};
use crate::ring::TcpStream;

/// How much the reader asks the kernel for at once: a whole burst of Data-Out in one read.
const READ_CHUNK: usize = 256 * 1024;

/// Why no PDU could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed by the initiator")]
    Closed,
    #[error("malformed PDU: {0}")]
    Pdu(#[from] PduError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Buffered PDU reader of one connection.
pub struct PduReader {
    stream: Rc<TcpStream>,
    buf: BytesMut,
}

impl PduReader {
    /// Reads from `stream`, starting with bytes already received (`leftover`).
    pub fn new(stream: Rc<TcpStream>, leftover: BytesMut) -> Self {
        let mut buf = leftover;
        buf.reserve(READ_CHUNK);
        PduReader { stream, buf }
    }

    /// Bytes received but not yet decoded (handed over with the connection after login).
    pub fn into_leftover(self) -> BytesMut {
        self.buf
    }

    /// Reads the next PDU. `max_data` is the MaxRecvDataSegmentLength this side declared.
    pub async fn next(&mut self, digests: Digests, max_data: usize) -> Result<Pdu, ReadError> {
        loop {
            if let Some(pdu) = Pdu::decode_from(&mut self.buf, digests, max_data)? {
                return Ok(pdu);
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            let buf = std::mem::take(&mut self.buf);
            let (res, buf) = self.stream.read(buf).await;
            self.buf = buf;
            if res? == 0 {
                return Err(ReadError::Closed);
            }
        }
    }
}

/// Collects encoded frames and writes them in one vectored write.
#[derive(Default)]
pub struct FrameBatch {
    parts: Vec<Bytes>,
}

impl FrameBatch {
    /// Encodes `pdu` into the batch.
    pub fn push(&mut self, pdu: &Pdu, digests: Digests) -> Result<(), PduError> {
        let f: Frame = pdu.encode(digests)?;
        let trailer = f.trailer();
        let trailer = (!trailer.is_empty()).then(|| Bytes::copy_from_slice(trailer));
        self.parts.push(f.header);
        if !f.data.is_empty() {
            self.parts.push(f.data);
        }
        self.parts.extend(trailer);
        Ok(())
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Writes every frame, in order.
    pub async fn send(self, stream: &TcpStream) -> std::io::Result<()> {
        stream.write_all_vectored(self.parts).await
    }
}
