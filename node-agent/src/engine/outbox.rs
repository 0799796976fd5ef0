//! The sending side of one connection: PDUs are queued in the order the session produced them
//! and one writer task sends whatever has accumulated with a single vectored write. Order is
//! kept (StatSN, DataSN) and many small responses share one syscall under load.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::iscsi::pdu::{Digests, Pdu};
use crate::metrics::stages::CommandClock;
use crate::ring::TcpStream;

/// Queue of encoded frames waiting for the writer task.
#[derive(Default)]
pub struct Outbox {
    parts: RefCell<Vec<Bytes>>,
    /// Clocks of the commands whose responses are among `parts`.
    clocks: RefCell<Vec<Rc<CommandClock>>>,
    wake: Notify,
    closing: Cell<bool>,
    /// Keep the socket open after the last write (it moves to another thread).
    detached: Cell<bool>,
    /// Why the last write failed, once one has.
    failure: RefCell<Option<io::Error>>,
}

impl Outbox {
    /// Encodes `pdu` and queues it. A PDU that cannot be encoded (a bug, not input) is logged
    /// and the connection is closed.
    pub fn send(&self, pdu: &Pdu, digests: Digests) {
        match pdu.encode(digests) {
            Ok(f) => {
                let mut parts = self.parts.borrow_mut();
                let trailer = f.trailer();
                let trailer = (!trailer.is_empty()).then(|| Bytes::copy_from_slice(trailer));
                parts.push(f.header);
                if !f.data.is_empty() {
                    parts.push(f.data);
                }
                parts.extend(trailer);
                drop(parts);
                self.wake.notify_one();
            }
            Err(e) => {
                tracing::error!("cannot encode a PDU: {e}; closing the connection");
                self.close();
            }
        }
    }

    /// The response of the command timed by `clock` was just queued: its clock stops when the
    /// write carrying it returns.
    pub fn stamp(&self, clock: Rc<CommandClock>) {
        self.clocks.borrow_mut().push(clock);
    }

    /// Asks the writer to send what is queued, then stop.
    pub fn close(&self) {
        self.closing.set(true);
        self.wake.notify_one();
    }

    /// Asks the writer to send what is queued, then stop without closing the socket.
    pub fn detach(&self) {
        self.detached.set(true);
        self.close();
    }

    /// Whether a write failed (the connection is dead).
    pub fn failed(&self) -> bool {
        self.failure.borrow().is_some()
    }

    /// Why a write failed, if one did.
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().as_ref().map(|e| e.to_string())
    }

    /// The writer task: runs until [`Outbox::close`] or a write error.
    pub async fn run(self: Rc<Self>, stream: Rc<TcpStream>) {
        loop {
            let batch = std::mem::take(&mut *self.parts.borrow_mut());
            let clocks = std::mem::take(&mut *self.clocks.borrow_mut());
            if batch.is_empty() {
                if self.closing.get() {
                    break;
                }
                self.wake.notified().await;
                continue;
            }
            if let Err(e) = stream.write_all_vectored(batch).await {
                *self.failure.borrow_mut() = Some(e);
                break;
            }
            let written = Instant::now();
            for c in clocks {
                c.record(written);
            }
        }
        if !self.detached.get() {
            let _ = stream.shutdown();
        }
    }
}
