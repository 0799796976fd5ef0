//! kubelet's plugin registration call, made acceptable to the Rust HTTP/2 server.
//!
//! kubelet (v1.34) dials the registration socket with the socket's path as the HTTP/2
//! `:authority` (`/var/lib/kubelet/plugins_registry/csi.spindle.dev-reg.sock`). The `h2` crate
//! under tonic parses every request's authority and answers one with a `/` in it with
//! RST_STREAM PROTOCOL_ERROR before any service sees the call, so kubelet never registers the
//! driver (measured in the guest run: docs/csi.md). This is the one place that knows: a pure
//! rewriter of the client-to-server byte stream that decodes each request's header block
//! (HPACK), sets `:authority` to `localhost` (the name a unix socket has to every other gRPC
//! client), and encodes it again. Every other frame passes unchanged, and the server's replies
//! are not touched. Anything that is not HTTP/2 as a client sends it ends the connection.

use fluke_hpack::{Decoder, Encoder};

/// The client connection preface (RFC 9113 section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame payload a peer may send before SETTINGS raised it (RFC 9113 4.2); the
/// rewritten header blocks are cut to it, which every server accepts.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this (over all its frames) ends the connection: a registration
/// call carries a few hundred bytes.
const MAX_HEADER_BLOCK: usize = 64 << 10;
/// A frame larger than this ends the connection (a server may allow up to 16 MiB; the
/// registration server allows the default 16 KiB).
const MAX_FRAME_IN: usize = 1 << 20;
/// What `:authority` becomes.
const AUTHORITY: &[u8] = b"localhost";

/// Why the connection is closed instead of forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("not an HTTP/2 client: the connection preface is missing")]
    Preface,
    #[error("frame on stream {stream} of {len} bytes is larger than the {max} bytes allowed")]
    FrameTooLarge { stream: u32, len: usize, max: usize },
    #[error("HEADERS frame on stream {0} is shorter than its padding and priority fields")]
    Malformed(u32),
    #[error(
        "expected CONTINUATION of stream {expected}, got frame type {got:#x} on stream {stream}"
    )]
    Continuation { expected: u32, got: u8, stream: u32 },
    #[error("header block of stream {0} is larger than {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge(u32),
    #[error("header block of stream {0} does not decode (HPACK)")]
    Hpack(u32),
}

/// A header block being collected from HEADERS and CONTINUATION frames.
struct Pending {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
}

/// The rewriter of one connection (HPACK keeps state for the whole connection).
pub struct AuthorityFix {
    preface_seen: bool,
    buf: Vec<u8>,
    pending: Option<Pending>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
}

impl Default for AuthorityFix {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthorityFix {
    pub fn new() -> Self {
        Self {
            preface_seen: false,
            buf: Vec::new(),
            pending: None,
            decoder: Decoder::new(),
            encoder: Encoder::new(),
        }
    }

    /// Takes bytes the client sent and appends to `out` what goes to the server: every complete
    /// frame (header blocks rewritten); an incomplete one waits for the next call.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), AuthorityError> {
        self.buf.extend_from_slice(input);
        let mut at = 0;
        if !self.preface_seen {
            let have = self.buf.len().min(PREFACE.len());
            if self.buf[..have] != PREFACE[..have] {
                return Err(AuthorityError::Preface);
            }
            if have < PREFACE.len() {
                return Ok(());
            }
            out.extend_from_slice(PREFACE);
            self.preface_seen = true;
            at = PREFACE.len();
        }
        while self.buf.len() - at >= FRAME_HEADER {
            let h = &self.buf[at..at + FRAME_HEADER];
            let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            let (kind, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            if len > MAX_FRAME_IN {
                return Err(AuthorityError::FrameTooLarge {
                    stream,
                    len,
                    max: MAX_FRAME_IN,
                });
            }
            if self.buf.len() - at < FRAME_HEADER + len {
                break;
            }
            let frame = at..at + FRAME_HEADER + len;
            at = frame.end;
            if kind != HEADERS && self.pending.is_none() {
                // Everything but a header block goes as it came (a CONTINUATION without its
                // HEADERS too: the server refuses it as the protocol says).
                out.extend_from_slice(&self.buf[frame]);
                continue;
            }
            let payload = self.buf[frame.start + FRAME_HEADER..frame.end].to_vec();
            match self.pending.take() {
                None => {
                    let pending = Pending {
                        stream,
                        end_stream: flags & END_STREAM != 0,
                        block: header_fragment(&payload, flags, stream)?.to_vec(),
                    };
                    self.collect(pending, flags, out)?;
                }
                Some(mut pending) if kind == CONTINUATION && pending.stream == stream => {
                    pending.block.extend_from_slice(&payload);
                    self.collect(pending, flags, out)?;
                }
                Some(pending) => {
                    return Err(AuthorityError::Continuation {
                        expected: pending.stream,
                        got: kind,
                        stream,
                    });
                }
            }
        }
        self.buf.drain(..at);
        Ok(())
    }

    /// Holds `pending` until END_HEADERS, then writes the rewritten block.
    fn collect(
        &mut self,
        pending: Pending,
        flags: u8,
        out: &mut Vec<u8>,
    ) -> Result<(), AuthorityError> {
        if pending.block.len() > MAX_HEADER_BLOCK {
            return Err(AuthorityError::HeaderBlockTooLarge(pending.stream));
        }
        if flags & END_HEADERS == 0 {
            self.pending = Some(pending);
            return Ok(());
        }
        let headers = self
            .decoder
            .decode(&pending.block)
            .map_err(|_| AuthorityError::Hpack(pending.stream))?;
        let block = self.encoder.encode(headers.iter().map(|(name, value)| {
            if name == b":authority" {
                (&name[..], AUTHORITY)
            } else {
                (&name[..], &value[..])
            }
        }));
        write_header_frames(out, pending.stream, pending.end_stream, &block);
        Ok(())
    }
}

/// The header block fragment of a HEADERS frame: without its padding and priority fields.
fn header_fragment(payload: &[u8], flags: u8, stream: u32) -> Result<&[u8], AuthorityError> {
    let mut body = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        let (&n, rest) = body
            .split_first()
            .ok_or(AuthorityError::Malformed(stream))?;
        pad = usize::from(n);
        body = rest;
    }
    if flags & PRIORITY != 0 {
        body = body.get(5..).ok_or(AuthorityError::Malformed(stream))?;
    }
    body.get(
        ..body
            .len()
            .checked_sub(pad)
            .ok_or(AuthorityError::Malformed(stream))?,
    )
    .ok_or(AuthorityError::Malformed(stream))
}

/// `block` as a HEADERS frame and as many CONTINUATION frames as it needs.
fn write_header_frames(out: &mut Vec<u8>, stream: u32, end_stream: bool, block: &[u8]) {
    let mut chunks = block.chunks(MAX_FRAME).peekable();
    let mut kind = HEADERS;
    let mut first_flags = if end_stream { END_STREAM } else { 0 };
    if chunks.peek().is_none() {
        frame_header(out, 0, HEADERS, first_flags | END_HEADERS, stream);
        return;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let flags = first_flags | if last { END_HEADERS } else { 0 };
        frame_header(out, chunk.len(), kind, flags, stream);
        out.extend_from_slice(chunk);
        kind = CONTINUATION;
        first_flags = 0;
    }
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = u32::try_from(len).expect("chunks are at most MAX_FRAME");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// One whole frame (tests of the rewriter and of the registration server build requests so).
#[cfg(test)]
pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame_header(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

/// The client connection preface, for tests that speak HTTP/2 by hand.
#[cfg(test)]
pub(crate) const CLIENT_PREFACE: &[u8] = PREFACE;

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
