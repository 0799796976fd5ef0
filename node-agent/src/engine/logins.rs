//! Logins in progress on the acceptor: each must complete within [`LOGIN_TIMEOUT`], and at
//! most [`MAX_LOGINS`] run at once. When a connection arrives and the table is full, the
//! oldest login in progress is dropped: a client that opens many connections and sends one
//! byte a second (slow loris) cannot keep other initiators from logging in.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::ring::TcpStream;

/// How long a connection may take from accept to the end of its login.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Logins in progress at once.
pub const MAX_LOGINS: usize = 64;

/// The logins in progress, oldest first.
#[derive(Default)]
pub struct Logins {
    next: Cell<u64>,
    pending: RefCell<VecDeque<(u64, SocketAddr, Weak<TcpStream>)>>,
}

/// A login's place in the table; dropping it (the login ended) frees the place.
pub struct LoginTicket {
    logins: Rc<Logins>,
    id: u64,
}

impl Drop for LoginTicket {
    fn drop(&mut self) {
        self.logins
            .pending
            .borrow_mut()
            .retain(|(id, _, _)| *id != self.id);
    }
}

impl Logins {
    /// Registers the login of `stream` from `peer`, dropping the oldest one if the table is
    /// full.
    pub fn admit(self: &Rc<Self>, stream: &Rc<TcpStream>, peer: SocketAddr) -> LoginTicket {
        let mut pending = self.pending.borrow_mut();
        while pending.len() >= MAX_LOGINS {
            if let Some((_, old_peer, old)) = pending.pop_front() {
                tracing::warn!(
                    peer = %old_peer,
                    "{MAX_LOGINS} logins in progress: dropping the oldest to let a new one in"
                );
                if let Some(s) = old.upgrade() {
                    let _ = s.shutdown();
                }
            }
        }
        let id = self.next.get();
        self.next.set(id + 1);
        pending.push_back((id, peer, Rc::downgrade(stream)));
        LoginTicket {
            logins: self.clone(),
            id,
        }
    }

    /// Logins in progress now.
    pub fn len(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Whether no login is in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_drops_the_oldest_login_and_tickets_free_their_place() {
        crate::ring::Runtime::new().unwrap().block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let logins = Rc::new(Logins::default());
            let mut clients = Vec::new();
            let mut tickets = Vec::new();
            let mut streams = Vec::new();
            for _ in 0..=MAX_LOGINS {
                clients.push(std::net::TcpStream::connect(addr).unwrap());
                let (s, peer) = listener.accept().unwrap();
                let s = Rc::new(TcpStream::from_std(s));
                tickets.push(logins.admit(&s, peer));
                streams.push(s);
            }
            assert_eq!(logins.len(), MAX_LOGINS, "never more than the cap");
            // The first client's connection was shut down by the target.
            use std::io::Read;
            let mut byte = [0u8; 1];
            assert_eq!(clients[0].read(&mut byte).unwrap(), 0);
            tickets.clear();
            assert!(logins.is_empty(), "logins that ended free their place");
        });
    }
}
