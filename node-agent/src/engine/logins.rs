//! Logins in progress on the acceptor: each must complete within [`LOGIN_TIMEOUT`], and at
//! most [`MAX_LOGINS`] run at once (the table's capacity). When the table is full the acceptor
//! waits ([`Logins::room`]) until a login ends or one has run too long ([`EVICT_AFTER`] while it
//! has not sent a whole PDU, [`EVICT_TALKING_AFTER`] once it has), and then drops that one: a
//! client that opens many connections and sends one byte a second (slow loris) cannot keep
//! other initiators from logging in, and a storm of honest initiators (every session of a node
//! with a thousand targets coming back after a restart) waits in the kernel's backlog instead
//! of pushing each other out before they are done.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::ring::TcpStream;

/// How long a connection may take from accept to the end of its login.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Logins in progress at once. Large enough that a storm of honest initiators (a thousand
/// sessions coming back together) all fit, so none is pushed out for being slow to send its
/// first PDU while its own machine is busy; each holds one descriptor and a few KiB.
pub const MAX_LOGINS: usize = 1024;
/// How long a login that has not sent one whole PDU may run before a new connection may push it
/// out of a full table. An honest initiator sends its first Login Request at once; a slow-loris
/// connection is out after this.
pub const EVICT_AFTER: Duration = Duration::from_secs(1);
/// The same for a login that is talking (it sent a whole PDU): under a storm of honest
/// initiators on a busy machine a login can take a while, and pushing it out only makes the
/// initiator start over.
pub const EVICT_TALKING_AFTER: Duration = Duration::from_secs(5);

struct Pending {
    id: u64,
    peer: SocketAddr,
    stream: Weak<TcpStream>,
    started: Instant,
    talking: bool,
}

impl Pending {
    /// When a new connection may push this login out.
    fn evictable_at(&self) -> Instant {
        self.started
            + if self.talking {
                EVICT_TALKING_AFTER
            } else {
                EVICT_AFTER
            }
    }
}

/// The logins in progress, oldest first.
pub struct Logins {
    next: Cell<u64>,
    pending: RefCell<VecDeque<Pending>>,
    /// Told when a login ends.
    freed: Notify,
    /// Logins in progress at once: [`MAX_LOGINS`] (smaller in tests, which open real
    /// connections and must fit a default open-file limit of 1,024).
    capacity: usize,
}

impl Default for Logins {
    fn default() -> Self {
        Logins::with_capacity(MAX_LOGINS)
    }
}

/// A login's place in the table; dropping it (the login ended) frees the place.
pub struct LoginTicket {
    logins: Rc<Logins>,
    id: u64,
}

impl LoginTicket {
    /// Whether a new connection pushed this login out of the table (its connection was shut
    /// down): it must not go on to a session, even if its last PDU was already read — a
    /// retry of the same initiator may be logged in by now, and this one would replace it.
    pub fn evicted(&self) -> bool {
        !self.logins.pending.borrow().iter().any(|p| p.id == self.id)
    }

    /// The initiator sent a whole PDU: it is talking, not trickling bytes.
    pub fn talking(&self) {
        if let Some(p) = self
            .logins
            .pending
            .borrow_mut()
            .iter_mut()
            .find(|p| p.id == self.id)
        {
            p.talking = true;
        }
    }
}

impl Drop for LoginTicket {
    fn drop(&mut self) {
        self.logins.pending.borrow_mut().retain(|p| p.id != self.id);
        self.logins.freed.notify_one();
    }
}

impl Logins {
    /// A table for at most `capacity` logins at once.
    pub fn with_capacity(capacity: usize) -> Self {
        Logins {
            next: Cell::new(0),
            pending: RefCell::new(VecDeque::new()),
            freed: Notify::new(),
            capacity,
        }
    }

    /// Waits until a new login may start: the table has room, or one of its logins may be
    /// pushed out ([`EVICT_AFTER`], [`EVICT_TALKING_AFTER`]; [`Logins::admit`] does it).
    pub async fn room(&self) {
        loop {
            let wait = {
                let pending = self.pending.borrow();
                if pending.len() < self.capacity {
                    return;
                }
                match pending.iter().map(Pending::evictable_at).min() {
                    Some(at) if at > Instant::now() => at - Instant::now(),
                    _ => return,
                }
            };
            let _ = tokio::time::timeout(wait, self.freed.notified()).await;
        }
    }

    /// Registers the login of `stream` from `peer`; if the table is full, first drops the
    /// login that may be pushed out soonest (a silent one before a talking one).
    pub fn admit(self: &Rc<Self>, stream: &Rc<TcpStream>, peer: SocketAddr) -> LoginTicket {
        let mut pending = self.pending.borrow_mut();
        while pending.len() >= self.capacity {
            let victim = (0..pending.len()).min_by_key(|&i| pending[i].evictable_at());
            if let Some(old) = victim.and_then(|i| pending.remove(i)) {
                tracing::warn!(
                    peer = %old.peer, talking = old.talking,
                    "{} logins in progress: dropping the slowest to let a new one in",
                    self.capacity
                );
                if let Some(s) = old.stream.upgrade() {
                    let _ = s.shutdown();
                }
            }
        }
        let id = self.next.get();
        self.next.set(id + 1);
        pending.push_back(Pending {
            id,
            peer,
            stream: Rc::downgrade(stream),
            started: Instant::now(),
            talking: false,
        });
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
    use std::io::Read;

    /// A listener and the login table, with the connections admitted so far: the client ends,
    /// the server ends (kept open unless the table shuts them down) and their tickets.
    struct Table {
        listener: std::net::TcpListener,
        logins: Rc<Logins>,
        clients: Vec<std::net::TcpStream>,
        streams: Vec<Rc<TcpStream>>,
        tickets: Vec<LoginTicket>,
    }

    /// The capacity of the tables under test: the same logic as [`MAX_LOGINS`], with few
    /// enough connections for any open-file limit.
    const CAP: usize = 16;

    impl Table {
        fn new() -> Table {
            Table {
                listener: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
                logins: Rc::new(Logins::with_capacity(CAP)),
                clients: Vec::new(),
                streams: Vec::new(),
                tickets: Vec::new(),
            }
        }

        /// Connects and admits `n` more logins.
        fn admit(&mut self, n: usize) {
            for _ in 0..n {
                let addr = self.listener.local_addr().unwrap();
                self.clients
                    .push(std::net::TcpStream::connect(addr).unwrap());
                let (s, peer) = self.listener.accept().unwrap();
                self.streams.push(Rc::new(TcpStream::from_std(s)));
                let ticket = self.logins.admit(self.streams.last().unwrap(), peer);
                self.tickets.push(ticket);
            }
        }

        /// Whether the target shut client `i`'s connection down (it reads end of file).
        fn shut(&mut self, i: usize) -> bool {
            let c = &mut self.clients[i];
            c.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            matches!(c.read(&mut [0u8; 1]), Ok(0))
        }
    }

    #[test]
    fn a_full_table_drops_the_oldest_login_and_tickets_free_their_place() {
        crate::ring::Runtime::new().unwrap().block_on(async {
            let mut t = Table::new();
            t.admit(CAP + 1);
            assert_eq!(t.logins.len(), CAP, "never more than the cap");
            assert!(t.shut(0), "the first client's connection was shut down");
            assert!(!t.shut(1));
            t.tickets.clear();
            assert!(t.logins.is_empty(), "logins that ended free their place");
        });
    }

    #[test]
    fn a_full_table_of_young_logins_makes_the_next_one_wait_not_evict() {
        crate::ring::Runtime::new().unwrap().block_on(async {
            let first = Instant::now();
            let mut t = Table::new();
            t.admit(CAP);
            let short = Duration::from_millis(100);
            assert!(
                tokio::time::timeout(short, t.logins.room()).await.is_err(),
                "a full table of logins younger than {EVICT_AFTER:?} has no room"
            );
            t.tickets.pop();
            tokio::time::timeout(short, t.logins.room())
                .await
                .expect("a login that ended makes room at once");
            t.admit(1);
            tokio::time::timeout(EVICT_AFTER * 2, t.logins.room())
                .await
                .expect("the oldest login may be pushed out once it is old enough");
            assert!(
                first.elapsed() >= EVICT_AFTER,
                "not before the oldest is old enough"
            );
            assert_eq!(t.logins.len(), CAP, "room() evicts nothing itself");
        });
    }

    #[test]
    fn a_silent_login_is_pushed_out_before_older_talking_ones() {
        crate::ring::Runtime::new().unwrap().block_on(async {
            let mut t = Table::new();
            t.admit(CAP);
            for ticket in &t.tickets[..CAP - 2] {
                ticket.talking(); // all but the two youngest
            }
            t.admit(1);
            let silent = CAP - 2; // the older of the two silent ones goes first
            assert!(t.shut(silent) && t.tickets[silent].evicted());
            assert!(!t.shut(0), "the oldest login is talking: it stays");
            assert!(!t.tickets[0].evicted() && !t.tickets[CAP].evicted());
        });
    }
}
