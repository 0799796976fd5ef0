//! One leadership term of this replica: its number (sent with every mutating agent call, see
//! the agent's leader fence) and until when it may act.
//!
//! A term is valid until `renew deadline` after the start of its last successful renewal, on
//! this replica's monotonic clock (which keeps running while the process is frozen). A standby
//! takes over only after a whole lease duration without a change it observed itself, so a
//! leader that could not renew stops acting before anyone else starts. Past its deadline, or
//! once an agent said a newer leader exists, the term has ended: [`Term::ended`] resolves (the
//! operator then drops every reconcile of the term) and no agent call is sent any more.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

/// The term (cheap to clone: every clone is the same term).
#[derive(Clone, Debug)]
pub struct Term(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    number: u64,
    /// Valid until this instant, unless deposed.
    state: watch::Sender<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    valid_until: Instant,
    deposed: bool,
}

/// This replica may no longer act as the leader.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("leader term {0} has ended: not leading any more")]
pub struct Ended(pub u64);

impl Term {
    /// Term `number`, valid until `valid_until`.
    pub fn new(number: u64, valid_until: Instant) -> Self {
        Self(Arc::new(Inner {
            number,
            state: watch::Sender::new(State {
                valid_until,
                deposed: false,
            }),
        }))
    }

    /// The term's number.
    pub fn number(&self) -> u64 {
        self.0.number
    }

    /// After a successful renewal: valid until `until` (never shortened, never revived).
    pub fn extend(&self, until: Instant) {
        self.0.state.send_if_modified(|s| {
            if s.deposed || until <= s.valid_until || Instant::now() >= s.valid_until {
                return false;
            }
            s.valid_until = until;
            true
        });
    }

    /// Ends the term now (the Lease was lost, or an agent answered that a newer leader exists).
    pub fn depose(&self) {
        self.0.state.send_if_modified(|s| {
            let changed = !s.deposed;
            s.deposed = true;
            changed
        });
    }

    /// True once the term was ended by [`Self::depose`] (not merely by its deadline).
    pub fn deposed(&self) -> bool {
        self.0.state.borrow().deposed
    }

    /// The term's number if it may still act.
    pub fn check(&self) -> Result<u64, Ended> {
        let s = *self.0.state.borrow();
        if s.deposed || Instant::now() >= s.valid_until {
            Err(Ended(self.0.number))
        } else {
            Ok(self.0.number)
        }
    }

    /// Resolves when the term has ended (deadline passed or deposed).
    pub async fn ended(&self) {
        let mut rx = self.0.state.subscribe();
        loop {
            let s = *rx.borrow_and_update();
            if s.deposed {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(s.valid_until) => {
                    if self.check().is_err() {
                        return;
                    }
                }
                // The sender lives in `self`: it cannot be dropped while this waits.
                _ = rx.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_term_ends_at_its_deadline_unless_renewed() {
        let s = Duration::from_secs;
        let t = Term::new(42, Instant::now() + s(10));
        let ended = tokio::spawn({
            let t = t.clone();
            async move { t.ended().await }
        });
        tokio::time::advance(s(9)).await;
        assert_eq!(t.check(), Ok(42));
        // A renewal that started at 8 s carries it to 18 s.
        t.extend(Instant::now() - s(1) + s(10));
        tokio::time::advance(s(8)).await;
        assert_eq!(t.check(), Ok(42));
        assert!(!ended.is_finished());
        tokio::time::advance(s(2)).await;
        assert_eq!(t.check(), Err(Ended(42)));
        tokio::time::timeout(s(1), ended).await.unwrap().unwrap();
        // An ended term is not revived by a late renewal.
        t.extend(Instant::now() + s(10));
        assert_eq!(t.check(), Err(Ended(42)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deposed_term_ends_at_once() {
        let t = Term::new(7, Instant::now() + Duration::from_secs(10));
        let ended = tokio::spawn({
            let t = t.clone();
            async move { t.ended().await }
        });
        tokio::task::yield_now().await;
        t.depose();
        tokio::time::timeout(Duration::from_millis(1), ended)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t.check(), Err(Ended(7)));
    }
}
