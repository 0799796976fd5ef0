//! The node agent API, `spindle.agent.v1` (see `spindle/agent/v1/agent.proto` for what each
//! call guarantees), and the names the operator and the agent must agree on: the Lease that
//! registers an agent, and the TLS identities of both ends.

/// Generated messages, `agent_client::AgentClient` and `agent_server::{Agent, AgentServer}`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("spindle.agent.v1");

    impl std::fmt::Debug for ChapCredentials {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ChapCredentials")
                .field("user", &self.user)
                .field("secret", &"<redacted>")
                .finish()
        }
    }
}

/// How an agent registers: a `coordination.k8s.io/v1` Lease named after its node, in the
/// operator's namespace, renewed while the agent runs.
pub mod lease {
    /// Label on every agent Lease (the operator watches Leases with it).
    pub const AGENT_LABEL: &str = "spindle.dev/agent";
    /// Annotation: the agent API endpoint, `host:port` (https, mutual TLS).
    pub const API_ENDPOINT_ANNOTATION: &str = "spindle.dev/api-endpoint";
    /// Annotation: the iSCSI portal initiators reach, `ip:port`; empty when the agent does not
    /// know an address it can advertise.
    pub const ISCSI_PORTAL_ANNOTATION: &str = "spindle.dev/iscsi-portal";
    /// Annotation: the agent's version.
    pub const VERSION_ANNOTATION: &str = "spindle.dev/agent-version";
    /// Annotation: the fingerprint of the agent's serving key (see
    /// [`crate::identity::fingerprint`]). The operator calls the agent only over a TLS
    /// connection whose server key has this fingerprint; a Lease without it is not trusted.
    pub const API_KEY_ANNOTATION: &str = "spindle.dev/api-key-sha256";
    /// Annotation: bytes the agent's data directory has free for new file-backed Devices
    /// (statvfs: available blocks × fragment size), refreshed at every renewal. The CSI
    /// controller places volumes and answers GetCapacity from it.
    pub const CAPACITY_FREE_ANNOTATION: &str = "spindle.dev/capacity-free-bytes";
    /// Annotation: the data directory's total size in bytes (statvfs), beside the free bytes.
    pub const CAPACITY_TOTAL_ANNOTATION: &str = "spindle.dev/capacity-total-bytes";
    /// How long a Lease holds without renewal.
    pub const DURATION_SECONDS: i32 = 15;
    /// How often the agent renews it.
    pub const RENEW_EVERY_SECONDS: u64 = 5;
}

/// The TLS identities of the API's two ends. The operator's client certificate is signed by the
/// CA the agents trust. Each agent makes its own serving key when it starts and publishes its
/// fingerprint in its Lease (which only that node's agent may write); the operator accepts an
/// agent's certificate only if its key has the fingerprint the node's Lease publishes.
pub mod identity {
    /// DNS name in the agent's serving certificate (informational: the operator pins the key,
    /// not the name).
    pub const AGENT_SERVER_NAME: &str = "spindle-agent";
    /// DNS name (subjectAltName) the operator's client certificate must carry; the agent refuses
    /// any other client during the TLS handshake, before any call is read.
    pub const OPERATOR_CLIENT_NAME: &str = "spindle-operator";

    /// The fingerprint of a public key: SHA-256 of its DER SubjectPublicKeyInfo (the whole
    /// SEQUENCE, as `openssl pkey -pubin -outform DER` writes it), 64 lowercase hex digits.
    pub fn fingerprint(spki_der: &[u8]) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// True when `s` has the form of a fingerprint (64 lowercase hex digits).
    pub fn is_fingerprint(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn fingerprints_are_sha256_in_lowercase_hex() {
            // SHA-256 of the empty input.
            let f = fingerprint(b"");
            assert_eq!(
                f,
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            );
            assert!(is_fingerprint(&f));
            assert!(!is_fingerprint(&f.to_uppercase()));
            assert!(!is_fingerprint(&f[1..]));
            assert!(!is_fingerprint(""));
        }
    }
}

pub mod pinning;

/// The typed reason of a refusal, carried in a gRPC status's details (`ErrorDetail`), so a
/// caller branches on a kind rather than on message text.
pub mod detail {
    use prost::Message;

    use crate::v1::{ErrorDetail, ErrorReason};

    /// A status with `code` and `message` that carries `detail`.
    pub fn status(
        code: tonic::Code,
        message: impl Into<String>,
        detail: &ErrorDetail,
    ) -> tonic::Status {
        tonic::Status::with_details(code, message, detail.encode_to_vec().into())
    }

    /// The detail a status carries, if any (malformed details read as none).
    pub fn of(status: &tonic::Status) -> Option<ErrorDetail> {
        let bytes = status.details();
        if bytes.is_empty() {
            return None;
        }
        let d = ErrorDetail::decode(bytes).ok()?;
        (d.reason() != ErrorReason::Unspecified).then_some(d)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn detail_round_trips_through_a_status() {
            let d = ErrorDetail {
                reason: ErrorReason::BackingStoreInUse as i32,
                owner: "ns-a/db".into(),
                owner_uid: "u-1".into(),
            };
            let s = status(tonic::Code::FailedPrecondition, "in use", &d);
            assert_eq!(of(&s), Some(d));
            assert_eq!(s.message(), "in use");
        }

        #[test]
        fn plain_or_malformed_details_read_as_none() {
            assert_eq!(of(&tonic::Status::failed_precondition("x")), None);
            let junk =
                tonic::Status::with_details(tonic::Code::Internal, "x", vec![0xff, 0xff].into());
            assert_eq!(of(&junk), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v1::ChapCredentials;

    #[test]
    fn chap_secrets_never_show_in_debug_output() {
        let c = ChapCredentials {
            user: "alice".into(),
            secret: "very-secret-1".into(),
        };
        let text = format!("{c:?}");
        assert!(text.contains("alice"));
        assert!(!text.contains("very-secret-1"), "{text}");
    }
}
