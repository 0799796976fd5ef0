//! Calls to the node agents: one mutual-TLS gRPC channel per node (the operator's client
//! certificate; the agent's key pinned to the one its node's Lease publishes, and the agent asked
//! which node it is before the channel is used: see `pinning`), a deadline on every call, and
//! errors sorted into "try again later", "not that node's agent" and "the agent refused, here is
//! why". A channel is made again when the node's Lease names another endpoint or key (an agent
//! restarted with a new key).
//!
//! Every mutating call carries the leader's term ([`Term`]) and is sent only while the term may
//! act. A call of a term that has ended, or one an agent refuses as coming from a stale leader,
//! ends the term and never returns: the operator drops the term's reconciles with it, so a
//! deposed leader writes nothing more about that call, not even a status.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spindle_agent_api::v1::{self as api, agent_client::AgentClient};
use tonic::Code;
use tonic::transport::Channel;

use crate::term::Term;
use spindle_agent_api::pinning::{self, ClientIdentity, ConnectFailure, Dial, IdentityError};

/// Deadline of the calls that only change configuration.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of a drain: the in-flight commands finish first. A drain cut short is asked again
/// (the fence stays); this only bounds how long one attempt holds a reconcile worker.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a call to an agent did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent could not be reached or did not answer in time: try again later.
    #[error("agent at {endpoint} did not answer: {message}")]
    Unreachable {
        /// `host:port` dialled.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// The agent answered with an error status: the request or the agent's state is at fault.
    #[error("agent refused ({code:?}): {message}")]
    Refused {
        /// The gRPC status code (see the proto for what each means).
        code: Code,
        /// The agent's message, naming the field at fault.
        message: String,
        /// The typed reason, when the agent gave one (branch on this, never on `message`).
        detail: Option<api::ErrorDetail>,
    },
    /// What answers at the node's endpoint is not shown to be the node's agent: nothing was
    /// sent to it.
    #[error("{0}")]
    Identity(#[from] IdentityError),
    /// The TLS files could not be read or the endpoint is malformed.
    #[error("{0}")]
    Config(String),
    /// The agent obeys a newer operator leader: this replica no longer leads.
    #[error("agent at {endpoint} refused a stale leader: {message}")]
    StaleLeader {
        /// `host:port` dialled.
        endpoint: String,
        /// The agent's message.
        message: String,
    },
}

impl AgentError {
    /// The gRPC code of a refusal.
    pub fn refused_code(&self) -> Option<Code> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The typed reason of a refusal, if the agent gave one.
    pub fn detail(&self) -> Option<&api::ErrorDetail> {
        match self {
            Self::Refused { detail, .. } => detail.as_ref(),
            _ => None,
        }
    }

    /// The condition reason that reports this error.
    pub fn reason(&self) -> &'static str {
        use crate::conditions::reason;
        match self.detail().map(|d| d.reason()) {
            Some(api::ErrorReason::BackingStoreInUse) => return reason::BACKING_STORE_IN_USE,
            Some(api::ErrorReason::BackingStoreMissing) => return reason::BACKING_STORE_MISSING,
            Some(api::ErrorReason::NoSpace) => return reason::NO_SPACE,
            _ => {}
        }
        if matches!(self, Self::Identity(_)) {
            crate::conditions::reason::AGENT_UNVERIFIED
        } else if self.is_transient() {
            crate::conditions::reason::AGENT_UNREACHABLE
        } else {
            crate::conditions::reason::AGENT_REFUSED
        }
    }

    /// True when trying again later may succeed without anything changing in the cluster (an
    /// identity error included: the node's Lease may change, e.g. its agent upgraded).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Identity(_))
            || matches!(
                self.refused_code(),
                Some(Code::Unavailable | Code::ResourceExhausted | Code::Aborted)
            )
    }
}

fn from_status(endpoint: &str, s: tonic::Status) -> AgentError {
    if spindle_agent_api::detail::of(&s)
        .is_some_and(|d| d.reason() == api::ErrorReason::StaleLeader)
    {
        return AgentError::StaleLeader {
            endpoint: endpoint.to_owned(),
            message: s.message().to_owned(),
        };
    }
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            AgentError::Unreachable {
                endpoint: endpoint.to_owned(),
                message: s.message().to_owned(),
            }
        }
        code => AgentError::Refused {
            code,
            message: s.message().to_owned(),
            detail: spindle_agent_api::detail::of(&s),
        },
    }
}

/// The agents' API, with one verified channel per node.
pub struct AgentClients {
    identity: Arc<ClientIdentity>,
    channels: Arc<Mutex<HashMap<String, Verified>>>,
    /// The leadership term stamped on mutating calls (see [`Self::for_term`]); none: mutating
    /// calls are not sent.
    term: Option<Term>,
}

/// A channel to a node's agent, verified for that endpoint and key.
struct Verified {
    endpoint: String,
    key: String,
    channel: Channel,
}

impl AgentClients {
    /// Reads the operator's client certificate and key. (`_ca` is not needed any more: agents
    /// are known by the key their Lease publishes, not by a CA; the argument stays so that old
    /// command lines start.)
    pub fn new(cert: &Path, key: &Path, _ca: Option<&Path>) -> Result<Self, AgentError> {
        let identity =
            ClientIdentity::read(cert, key).map_err(|e| AgentError::Config(e.to_string()))?;
        Ok(Self {
            identity: Arc::new(identity),
            channels: Arc::default(),
            term: None,
        })
    }
    /// The same agents (and channels), for the reconciles of `term`.
    pub fn for_term(&self, term: Term) -> Self {
        Self {
            identity: self.identity.clone(),
            channels: self.channels.clone(),
            term: Some(term),
        }
    }

    /// Stamps `meta` with the term, if it may still act; otherwise never returns (the term's
    /// end drops the caller).
    async fn stamp(&self, meta: &mut api::ObjectMeta) {
        match self.term.as_ref().map(Term::check) {
            Some(Ok(n)) => meta.leader_term = n,
            Some(Err(e)) => {
                tracing::warn!(object = %meta.name, "{e}: agent call not sent");
                self.stop().await
            }
            None => {
                tracing::error!(object = %meta.name, "agent call outside a leadership term: not sent");
                self.stop().await
            }
        }
    }

    /// Ends the term and waits for the end of the term to drop the caller.
    async fn stop<T>(&self) -> T {
        if let Some(t) = &self.term {
            t.depose();
        }
        std::future::pending().await
    }

    /// A mutating call's outcome: a refusal as coming from a stale leader ends the term.
    async fn fenced<T>(&self, r: Result<T, AgentError>) -> Result<T, AgentError> {
        match r {
            Err(AgentError::StaleLeader { endpoint, message }) => {
                tracing::warn!(
                    term = self.term.as_ref().map(Term::number),
                    "the agent at {endpoint} has seen a newer operator leader ({message}): \
                     stepping down"
                );
                self.stop().await
            }
            r => r,
        }
    }

    /// A client of `dial.node`'s agent: the cached channel if the Lease still names the same
    /// endpoint and key, else a new one, verified (pinned key, then `GetStatus.node_name`).
    async fn client(&self, dial: Dial<'_>) -> Result<AgentClient<Channel>, AgentError> {
        pinning::check_published(dial)?;
        {
            let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(v) = channels.get(dial.node)
                && v.endpoint == dial.endpoint
                && v.key == dial.key
            {
                return Ok(AgentClient::new(v.channel.clone()));
            }
        }
        let channel = pinning::connect(&self.identity, dial, CONNECT_TIMEOUT)
            .await
            .map_err(|e| match e {
                ConnectFailure::Identity(e) => AgentError::Identity(e),
                ConnectFailure::Unreachable(message) => AgentError::Unreachable {
                    endpoint: dial.endpoint.to_owned(),
                    message,
                },
            })?;
        let mut c = AgentClient::new(channel.clone());
        node_status(dial, &mut c).await?;
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        // One key is held by one process: if it was verified for another node, one of the two
        // Leases is wrong (or two agents were given one certificate).
        if let Some((other, _)) = channels
            .iter()
            .find(|(n, v)| n.as_str() != dial.node && v.key == dial.key)
        {
            return Err(IdentityError::SharedKey {
                node: dial.node.to_owned(),
                other: other.clone(),
            }
            .into());
        }
        tracing::info!(
            node = dial.node,
            endpoint = dial.endpoint,
            key = dial.key,
            "agent verified: it holds the key its node's Lease publishes and names that node"
        );
        channels.insert(
            dial.node.to_owned(),
            Verified {
                endpoint: dial.endpoint.to_owned(),
                key: dial.key.to_owned(),
                channel,
            },
        );
        Ok(c)
    }

    /// `ApplyDevice`.
    pub async fn apply_device(
        &self,
        dial: Dial<'_>,
        mut req: api::ApplyDeviceRequest,
    ) -> Result<api::ApplyDeviceResponse, AgentError> {
        self.stamp(req.meta.get_or_insert_default()).await;
        let mut c = self.client(dial).await?;
        self.fenced(call(dial.endpoint, CALL_TIMEOUT, c.apply_device(req)).await)
            .await
    }

    /// `ApplyTarget`.
    pub async fn apply_target(
        &self,
        dial: Dial<'_>,
        mut req: api::ApplyTargetRequest,
    ) -> Result<api::ApplyTargetResponse, AgentError> {
        self.stamp(req.meta.get_or_insert_default()).await;
        let mut c = self.client(dial).await?;
        self.fenced(call(dial.endpoint, CALL_TIMEOUT, c.apply_target(req)).await)
            .await
    }

    /// `RemoveTarget`.
    pub async fn remove_target(
        &self,
        dial: Dial<'_>,
        mut meta: api::ObjectMeta,
    ) -> Result<api::RemoveTargetResponse, AgentError> {
        self.stamp(&mut meta).await;
        let mut c = self.client(dial).await?;
        let req = api::RemoveTargetRequest { meta: Some(meta) };
        self.fenced(call(dial.endpoint, DRAIN_TIMEOUT, c.remove_target(req)).await)
            .await
    }

    /// `DrainDevice`: its answer is the flush acknowledgement. Any answer, NOT_FOUND included,
    /// comes from the agent verified as `dial.node`'s.
    pub async fn drain_device(
        &self,
        dial: Dial<'_>,
        mut meta: api::ObjectMeta,
    ) -> Result<api::DrainAck, AgentError> {
        self.stamp(&mut meta).await;
        let mut c = self.client(dial).await?;
        let req = api::DrainDeviceRequest { meta: Some(meta) };
        self.fenced(call(dial.endpoint, DRAIN_TIMEOUT, c.drain_device(req)).await)
            .await
    }

    /// `ReleaseDevice`.
    pub async fn release_device(
        &self,
        dial: Dial<'_>,
        mut req: api::ReleaseDeviceRequest,
    ) -> Result<api::ReleaseDeviceResponse, AgentError> {
        self.stamp(req.meta.get_or_insert_default()).await;
        let mut c = self.client(dial).await?;
        self.fenced(call(dial.endpoint, CALL_TIMEOUT, c.release_device(req)).await)
            .await
    }

    /// `CreateSnapshot`: may hold the Device's writes for the agent's copy limit, so it has
    /// the drain's timeout.
    pub async fn create_snapshot(
        &self,
        dial: Dial<'_>,
        mut req: api::CreateSnapshotRequest,
    ) -> Result<api::Snapshot, AgentError> {
        self.stamp(req.meta.get_or_insert_default()).await;
        let mut c = self.client(dial).await?;
        self.fenced(call(dial.endpoint, DRAIN_TIMEOUT, c.create_snapshot(req)).await)
            .await
    }

    /// `DeleteSnapshot`.
    pub async fn delete_snapshot(
        &self,
        dial: Dial<'_>,
        mut meta: api::ObjectMeta,
    ) -> Result<api::DeleteSnapshotResponse, AgentError> {
        self.stamp(&mut meta).await;
        let mut c = self.client(dial).await?;
        let req = api::DeleteSnapshotRequest { meta: Some(meta) };
        self.fenced(call(dial.endpoint, CALL_TIMEOUT, c.delete_snapshot(req)).await)
            .await
    }

    /// `GetStatus` (its node name checked again).
    pub async fn status(&self, dial: Dial<'_>) -> Result<api::AgentStatus, AgentError> {
        let mut c = self.client(dial).await?;
        node_status(dial, &mut c).await
    }
}

/// `GetStatus` on `c`, whose answer must name `dial.node`.
async fn node_status(
    dial: Dial<'_>,
    c: &mut AgentClient<Channel>,
) -> Result<api::AgentStatus, AgentError> {
    let status = call(
        dial.endpoint,
        CALL_TIMEOUT,
        c.get_status(api::GetStatusRequest {}),
    )
    .await?;
    check_node(dial, &status)?;
    Ok(status)
}

/// The agent names the node it was dialled for.
fn check_node(dial: Dial<'_>, status: &api::AgentStatus) -> Result<(), IdentityError> {
    if status.node_name == dial.node {
        Ok(())
    } else {
        Err(IdentityError::WrongNode {
            node: dial.node.to_owned(),
            endpoint: dial.endpoint.to_owned(),
            answered: status.node_name.clone(),
        })
    }
}

async fn call<T>(
    endpoint: &str,
    timeout: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, AgentError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(from_status(endpoint, s)),
        Err(_) => Err(AgentError::Unreachable {
            endpoint: endpoint.to_owned(),
            message: format!("no answer within {} s", timeout.as_secs()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_sort_into_retry_and_refusal() {
        let cases = [
            (Code::Unavailable, true),
            (Code::DeadlineExceeded, true),
            (Code::Unknown, true),
            (Code::InvalidArgument, false),
            (Code::FailedPrecondition, false),
            (Code::NotFound, false),
            (Code::DataLoss, false),
        ];
        for (code, transient) in cases {
            let e = from_status("127.0.0.2:9443", tonic::Status::new(code, "spec.x: bad"));
            assert_eq!(e.is_transient(), transient, "{code:?}");
            if !transient {
                assert_eq!(e.refused_code(), Some(code));
                assert!(e.to_string().contains("spec.x: bad"), "{e}");
            }
        }
    }

    #[test]
    fn an_unverified_agent_is_retried_under_its_own_reason() {
        let e = AgentError::from(IdentityError::WrongNode {
            node: "node-b".into(),
            endpoint: "127.0.0.2:9443".into(),
            answered: "node-a".into(),
        });
        assert!(e.is_transient());
        assert_eq!(e.refused_code(), None, "never read as NOT_FOUND");
        assert_eq!(e.reason(), crate::conditions::reason::AGENT_UNVERIFIED);
        assert!(e.to_string().contains("node-a"), "{e}");
        let dial = Dial {
            node: "node-b",
            endpoint: "127.0.0.2:9443",
            key: "",
        };
        let status = |n: &str| api::AgentStatus {
            node_name: n.into(),
            ..Default::default()
        };
        assert!(check_node(dial, &status("node-b")).is_ok());
        assert!(check_node(dial, &status("node-a")).is_err());
        assert!(check_node(dial, &status("")).is_err());
    }

    #[test]
    fn typed_refusals_name_their_reason() {
        use crate::conditions::reason;
        let of = |r: api::ErrorReason| {
            let d = api::ErrorDetail {
                reason: r.into(),
                owner: "ns-a/db".into(),
                owner_uid: "u".into(),
            };
            let s = spindle_agent_api::detail::status(Code::FailedPrecondition, "any text", &d);
            from_status("127.0.0.2:9443", s)
        };
        let e = of(api::ErrorReason::BackingStoreInUse);
        assert_eq!(e.reason(), reason::BACKING_STORE_IN_USE);
        assert_eq!(e.detail().map(|d| d.owner.as_str()), Some("ns-a/db"));
        assert_eq!(
            of(api::ErrorReason::BackingStoreMissing).reason(),
            reason::BACKING_STORE_MISSING
        );
        let no_space = from_status(
            "127.0.0.2:9443",
            spindle_agent_api::detail::status(
                Code::ResourceExhausted,
                "spec.source.file.sizeBytes: cannot grow",
                &api::ErrorDetail {
                    reason: api::ErrorReason::NoSpace.into(),
                    ..Default::default()
                },
            ),
        );
        assert_eq!(no_space.reason(), reason::NO_SPACE);
        assert!(no_space.is_transient(), "retried until there is room");
        let plain = from_status(
            "127.0.0.2:9443",
            tonic::Status::failed_precondition("backing store in use"),
        );
        assert_eq!(plain.reason(), reason::AGENT_REFUSED, "never from text");
    }

    #[test]
    fn a_stale_leader_refusal_is_told_apart_by_its_detail() {
        let detail = api::ErrorDetail {
            reason: api::ErrorReason::StaleLeader as i32,
            ..api::ErrorDetail::default()
        };
        let s = spindle_agent_api::detail::status(
            Code::FailedPrecondition,
            "stale leader: term 3 < 5",
            &detail,
        );
        let e = from_status("127.0.0.2:9443", s);
        assert!(matches!(e, AgentError::StaleLeader { .. }), "{e:?}");
        // Without the detail, the same code is an ordinary refusal.
        let e = from_status(
            "127.0.0.2:9443",
            tonic::Status::failed_precondition("stale leader: term 3 < 5"),
        );
        assert_eq!(e.refused_code(), Some(Code::FailedPrecondition));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_of_an_ended_term_is_never_sent_and_never_returns() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["spindle-operator".into()])
            .unwrap()
            .self_signed(&pair)
            .unwrap();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(pair.serialize_der()).into();
        let clients = AgentClients {
            identity: Arc::new(ClientIdentity::from_der(vec![cert.der().clone()], key)),
            channels: Arc::default(),
            term: None,
        };
        let term = Term::new(4, tokio::time::Instant::now() + Duration::from_secs(10));
        let agents = clients.for_term(term.clone());
        tokio::time::advance(Duration::from_secs(11)).await;
        let dial = Dial {
            node: "node-a",
            endpoint: "127.0.0.1:1",
            key: "",
        };
        let call = agents.remove_target(dial, api::ObjectMeta::default());
        // Not sent: no channel was even made for the endpoint.
        assert!(
            tokio::time::timeout(Duration::from_secs(60), call)
                .await
                .is_err(),
            "a call of an ended term returned"
        );
        assert!(clients.channels.lock().unwrap().is_empty());
        assert!(term.deposed());
    }
}
