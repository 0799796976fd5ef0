//! The security negotiation stage: AuthMethod and the CHAP exchange, as a small state machine.

use rand::RngCore;

use crate::iscsi::chap::{self, Challenge, ChapError, ChapSecrets};
use crate::iscsi::text::{self, Pairs};

/// Keys of the security stage.
pub(super) fn is_security_key(key: &str) -> bool {
    key == "AuthMethod" || key.starts_with("CHAP_")
}

#[derive(Debug)]
enum State {
    /// No AuthMethod yet.
    Start,
    /// AuthMethod=CHAP agreed; CHAP_A expected.
    AwaitAlgorithm,
    /// Challenge sent; CHAP_N / CHAP_R expected.
    AwaitResponse(Challenge),
    /// Authenticated (or AuthMethod=None).
    Done,
}

/// How authentication failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AuthError {
    /// Wrong credentials, or no acceptable method: status 0x0201.
    Failed(String),
    /// Keys out of order or malformed: status 0x0200.
    Protocol(String),
}

impl From<ChapError> for AuthError {
    fn from(e: ChapError) -> Self {
        Self::Failed(e.to_string())
    }
}

/// Security negotiation for one login.
#[derive(Debug)]
pub(super) struct Authenticator {
    chap: Option<ChapSecrets>,
    state: State,
}

impl Authenticator {
    /// CHAP is required when `chap` is set; otherwise AuthMethod=None is accepted.
    pub(super) fn new(chap: Option<ChapSecrets>) -> Self {
        Self {
            chap,
            state: State::Start,
        }
    }

    /// Whether the initiator has authenticated.
    pub(super) fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The initiator skipped (or left) the security stage: fine only without CHAP.
    pub(super) fn skip(&mut self) -> Result<(), AuthError> {
        match self.state {
            State::Done => Ok(()),
            State::Start if self.chap.is_none() => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(AuthError::Failed(
                "the target requires CHAP authentication".into(),
            )),
        }
    }

    /// Handles the security keys of one request; returns the response keys.
    pub(super) fn step(&mut self, keys: &Pairs, rng: &mut dyn RngCore) -> Result<Pairs, AuthError> {
        if keys.is_empty() {
            return Ok(Pairs::new());
        }
        let get = |k: &str| text::get(keys, k);
        match std::mem::replace(&mut self.state, State::Start) {
            State::Start => {
                let methods = get("AuthMethod")
                    .ok_or_else(|| AuthError::Protocol("CHAP keys before AuthMethod".into()))?;
                let offered = |m: &str| text::list(methods).any(|x| x == m);
                let (chosen, next) = match &self.chap {
                    Some(_) if offered("CHAP") => ("CHAP", State::AwaitAlgorithm),
                    None if offered("None") => ("None", State::Done),
                    Some(_) => {
                        return Err(AuthError::Failed(format!(
                            "target requires CHAP, initiator offered {methods}"
                        )));
                    }
                    None => {
                        return Err(AuthError::Failed(format!(
                            "target has no CHAP secrets, initiator offered {methods}"
                        )));
                    }
                };
                self.state = next;
                Ok(vec![("AuthMethod".to_owned(), chosen.to_owned())])
            }
            State::AwaitAlgorithm => {
                let a =
                    get("CHAP_A").ok_or_else(|| AuthError::Protocol("CHAP_A expected".into()))?;
                let allowed = self
                    .chap
                    .as_ref()
                    .map_or(&[][..], |c| c.algorithms.as_slice());
                let algorithm = chap::select(a, allowed)?;
                let challenge = Challenge::generate(algorithm, rng);
                let response = challenge.keys();
                self.state = State::AwaitResponse(challenge);
                Ok(response)
            }
            State::AwaitResponse(challenge) => {
                let secrets = self
                    .chap
                    .as_ref()
                    .ok_or_else(|| AuthError::Failed("no CHAP secrets".into()))?;
                challenge.verify(&secrets.initiator, get("CHAP_N"), get("CHAP_R"))?;
                let response = match (get("CHAP_I"), get("CHAP_C")) {
                    (Some(i), Some(c)) => challenge.answer_mutual(secrets.target.as_ref(), i, c)?,
                    (None, None) => Pairs::new(),
                    _ => {
                        return Err(AuthError::Protocol(
                            "CHAP_I and CHAP_C must come together".into(),
                        ));
                    }
                };
                self.state = State::Done;
                Ok(response)
            }
            State::Done => Err(AuthError::Protocol(
                "security keys after authentication completed".into(),
            )),
        }
    }
}
