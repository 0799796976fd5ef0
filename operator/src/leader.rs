//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder reconciles. A candidate
//! takes the Lease when its holder has not renewed it for a whole lease duration, measured on the
//! candidate's own clock from when it last saw the record change (so clock skew between replicas
//! does not matter). The leader renews every `duration / 3` and steps down by itself when it
//! could not renew for `2 * duration / 3`, before anyone else may take over. Every write is a
//! replace with the resourceVersion read, so two candidates never both win.
//!
//! Every round has a timeout (a third of the duration): an apiserver that does not answer is a
//! failed round, never a wait. Leading is a [`Term`]: it is valid until the renew deadline after
//! the start of its last successful round and ends by itself then, even while a round is still
//! waiting for the apiserver.
//!
//! The term's number is the resourceVersion of the write that made this replica the leader (a
//! take, or the first renewal after a restart). The apiserver's resourceVersions are etcd
//! revisions: one counter for every write in the cluster, so a later leader's write always has
//! a higher one, and no number is ever given twice — also when the Lease is deleted and created
//! again, which would start `leaseTransitions` over at 0 (and make every agent refuse the new
//! leader). Restoring etcd from a backup must bump its revision (`etcdutl snapshot restore
//! --bump-revision`), as the apiserver's own watch caches already require.

use std::time::Duration;

use tokio::time::Instant;

use crate::term::Term;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The holder record last seen and when (our clock) it was first seen.
    observed: Option<(Option<String>, Option<Timestamp>, Instant)>,
}

/// What one round of the election found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// This replica holds the Lease (it just took or renewed it); the resourceVersion of its
    /// write.
    Leading(u64),
    /// Another replica holds it.
    Following(String),
}

impl Elector {
    /// An elector for the Lease `name` in the API's namespace.
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            observed: None,
        }
    }

    /// How often a candidate looks and a leader renews.
    pub fn period(&self) -> Duration {
        self.duration / 3
    }

    /// How long a leader may fail to renew before it steps down.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// One round, given up after a period: an apiserver that does not answer in time counts as
    /// a failed round.
    async fn timed_round(&mut self) -> Result<Round, RoundError> {
        match tokio::time::timeout(self.period(), self.round()).await {
            Ok(r) => r,
            Err(_) => Err(RoundError::Timeout(self.period())),
        }
    }

    /// One round: take the Lease if it is free or expired, renew it if it is ours.
    pub async fn round(&mut self) -> Result<Round, RoundError> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(written) => Ok(Round::Leading(version_of(&written)?)),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Round::Following(String::new())),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let transitions = spec.lease_transitions.unwrap_or(0);
        let record = (holder.clone(), spec.renew_time.as_ref().map(|t| t.0));
        let first_seen = match &self.observed {
            Some((h, r, at)) if (h, r) == (&record.0, &record.1) => *at,
            _ => Instant::now(),
        };
        self.observed = Some((record.0, record.1, first_seen));
        let held_for = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.duration, Duration::from_secs);
        match decide(
            holder.as_deref(),
            &self.identity,
            first_seen.elapsed(),
            held_for,
        ) {
            Decision::Renew => {
                let acquired = spec.acquire_time.as_ref().map_or(now, |t| t.0);
                lease.spec = Some(self.spec(acquired, now, transitions));
            }
            Decision::Take => lease.spec = Some(self.spec(now, now, transitions + 1)),
            Decision::Follow(holder) => return Ok(Round::Following(holder)),
        }
        self.replace(&lease).await
    }

    async fn replace(&self, lease: &Lease) -> Result<Round, RoundError> {
        match self
            .api
            .replace(&self.name, &PostParams::default(), lease)
            .await
        {
            Ok(written) => Ok(Round::Leading(version_of(&written)?)),
            // Someone else wrote first: they hold it now, or will tell us next round.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Round::Following(String::new())),
            Err(e) => Err(e.into()),
        }
    }

    fn spec(&self, acquired: Timestamp, now: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.duration.as_secs()).unwrap_or(15)),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Gives the Lease up (on shutdown), so another replica takes over at once; gives up after a
    /// period.
    pub async fn release(&self) {
        if tokio::time::timeout(self.period(), self.release_now())
            .await
            .is_err()
        {
            tracing::debug!("releasing the leader Lease: no answer in time");
        }
    }

    async fn release_now(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::debug!("releasing the leader Lease: {e}");
        }
    }

    /// Waits until this replica leads and returns its term. `beat` is called after every round
    /// (true: the apiserver answered).
    pub async fn acquire(&mut self, mut beat: impl FnMut(bool)) -> Term {
        let mut last: Option<String> = None;
        loop {
            let started = Instant::now();
            let round = self.timed_round().await;
            beat(round.is_ok());
            match round {
                Ok(Round::Leading(version)) => {
                    return Term::new(version, started + self.renew_deadline());
                }
                Ok(Round::Following(holder)) => {
                    if !holder.is_empty() && last.as_deref() != Some(holder.as_str()) {
                        tracing::info!(leader = %holder, "standing by: another replica leads");
                        last = Some(holder);
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    if last.as_deref() != Some(msg.as_str()) {
                        tracing::warn!("leader election: {e} (retrying)");
                        last = Some(msg);
                    }
                }
            }
            tokio::time::sleep(self.period()).await;
        }
    }

    /// Renews while leading, extending `term` after every successful round; returns when the
    /// term has ended: another replica took the Lease (the term is deposed), or no renewal
    /// succeeded before the term's deadline (it ends at the deadline itself, even while a round
    /// is still waiting for the apiserver).
    pub async fn hold(&mut self, term: &Term, mut beat: impl FnMut(bool)) {
        let mut last_error = String::new();
        loop {
            let round = tokio::select! {
                () = term.ended() => break,
                round = async {
                    tokio::time::sleep(self.period()).await;
                    let started = Instant::now();
                    (started, self.timed_round().await)
                } => round,
            };
            let (started, round) = round;
            beat(round.is_ok());
            match round {
                Ok(Round::Leading(_)) => {
                    term.extend(started + self.renew_deadline());
                    last_error.clear();
                }
                Ok(Round::Following(holder)) => {
                    tracing::warn!(leader = %holder, "lost the leader Lease");
                    term.depose();
                    return;
                }
                Err(e) => {
                    let msg = e.to_string();
                    if msg != last_error {
                        tracing::warn!("renewing the leader Lease: {msg} (retrying)");
                        last_error = msg;
                    }
                }
            }
        }
    }
}

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// The apiserver refused or could not be reached.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// The apiserver did not answer within a round's time.
    #[error("the apiserver did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The apiserver's resourceVersion is not a number: no term can be derived from it.
    #[error("leader Lease resourceVersion {0:?} is not a number: cannot number the term")]
    Version(String),
}

/// The term number of a Lease this replica just wrote: its resourceVersion.
fn version_of(lease: &Lease) -> Result<u64, RoundError> {
    let v = lease.metadata.resource_version.clone().unwrap_or_default();
    v.parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or(RoundError::Version(v))
}

/// What to do with a Lease held by `holder` whose record has not changed for `unchanged_for`.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Renew,
    Take,
    Follow(String),
}

fn decide(holder: Option<&str>, me: &str, unchanged_for: Duration, held_for: Duration) -> Decision {
    match holder {
        Some(h) if h == me => Decision::Renew,
        Some(h) if unchanged_for < held_for => Decision::Follow(h.to_owned()),
        _ => Decision::Take,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_acts_on_a_lease() {
        let s = Duration::from_secs;
        let cases = [
            (Some("me"), s(0), Decision::Renew),
            (Some("me"), s(100), Decision::Renew),
            (Some("other"), s(0), Decision::Follow("other".into())),
            (Some("other"), s(14), Decision::Follow("other".into())),
            (Some("other"), s(15), Decision::Take),
            (None, s(0), Decision::Take),
        ];
        for (holder, unchanged, want) in cases {
            assert_eq!(
                decide(holder, "me", unchanged, s(15)),
                want,
                "{holder:?} {unchanged:?}"
            );
        }
    }

    #[test]
    fn the_term_is_the_resource_version_of_the_write() {
        let lease = |rv: Option<&str>| Lease {
            metadata: ObjectMeta {
                resource_version: rv.map(str::to_owned),
                ..ObjectMeta::default()
            },
            spec: None,
        };
        assert_eq!(version_of(&lease(Some("81234"))).unwrap(), 81234);
        for bad in [None, Some(""), Some("0"), Some("abc"), Some("-4")] {
            assert!(version_of(&lease(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_leader_steps_down_before_anyone_may_take_over() {
        // Renewing every duration/3 and giving up after 2*duration/3 without success leaves a
        // margin of a third of the duration before a standby takes over.
        let d = Duration::from_secs(15);
        assert!(d * 2 / 3 + d / 3 <= d);
    }
}

#[cfg(test)]
mod hang_tests {
    use super::*;

    /// An "apiserver" that accepts connections and reads requests but never answers (a
    /// half-open connection, a frozen apiserver).
    async fn hanging_apiserver() -> (kube::Client, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                held.push(s); // never read from, never answered, never closed
            }
        });
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        (kube::Client::try_from(config).unwrap(), server)
    }

    #[tokio::test]
    async fn a_leader_whose_apiserver_hangs_steps_down_within_its_deadline() {
        let (client, server) = hanging_apiserver().await;
        let mut e = Elector::new(
            Api::namespaced(client, "ns"),
            "lease",
            "me",
            Duration::from_secs(3),
        );
        let started = Instant::now();
        let term = Term::new(9, started + e.renew_deadline());
        let held = tokio::time::timeout(Duration::from_secs(10), e.hold(&term, |_| {})).await;
        assert!(held.is_ok(), "still leading after 10 s without a renewal");
        assert!(started.elapsed() <= e.renew_deadline() + Duration::from_millis(500));
        assert_eq!(term.check(), Err(crate::term::Ended(9)));
        server.abort();
    }
}
