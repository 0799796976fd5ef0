//! Reading PDUs from a connection: a buffered reader that cuts the byte stream into PDUs with
//! the pure codec. (Sending is the [`super::outbox`]'s job.)

use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;

use crate::iscsi::pdu::{BHS_LEN, Digests, Pdu, PduError};
use crate::ring::TcpStream;

/// How much the reader asks the kernel for at once: a whole burst of Data-Out in one read.
const READ_CHUNK: usize = 256 * 1024;

/// Why no PDU could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed by the initiator")]
    Closed,
    /// Bytes that are not a valid PDU; `bhs` is the header received (for a Reject), and
    /// `consumed` says whether the reader skipped the bad PDU (reading can go on).
    #[error("malformed PDU: {err}")]
    Pdu {
        bhs: [u8; BHS_LEN],
        err: PduError,
        consumed: bool,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Buffered PDU reader of one connection.
pub struct PduReader {
    stream: Rc<TcpStream>,
    buf: BytesMut,
    /// When the last socket read returned (the PDUs it completed were received then).
    received_at: Instant,
}

impl PduReader {
    /// Reads from `stream`, starting with bytes already received (`leftover`).
    pub fn new(stream: Rc<TcpStream>, leftover: BytesMut) -> Self {
        let mut buf = leftover;
        buf.reserve(READ_CHUNK);
        PduReader {
            stream,
            buf,
            received_at: Instant::now(),
        }
    }

    /// When the bytes of the PDU last returned arrived: the end of the socket read that
    /// completed it.
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    /// Bytes received but not yet decoded (handed over with the connection after login).
    pub fn into_leftover(self) -> BytesMut {
        self.buf
    }

    /// Reads the next PDU. `max_data` is the MaxRecvDataSegmentLength this side declared.
    pub async fn next(&mut self, digests: Digests, max_data: usize) -> Result<Pdu, ReadError> {
        loop {
            let mut bhs = [0u8; BHS_LEN];
            if let Some(h) = self.buf.get(..BHS_LEN) {
                bhs.copy_from_slice(h);
            }
            let before = self.buf.len();
            match Pdu::decode_from(&mut self.buf, digests, max_data) {
                Ok(Some(pdu)) => return Ok(pdu),
                Ok(None) => {}
                Err(err) => {
                    return Err(ReadError::Pdu {
                        bhs,
                        err,
                        consumed: self.buf.len() < before,
                    });
                }
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            let buf = std::mem::take(&mut self.buf);
            let (res, buf) = self.stream.read(buf).await;
            self.received_at = Instant::now();
            self.buf = buf;
            if res? == 0 {
                return Err(ReadError::Closed);
            }
        }
    }
}
