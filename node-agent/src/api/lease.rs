//! Registration: the agent keeps a `coordination.k8s.io/v1` Lease named after its node in the
//! operator's namespace, renewed every few seconds, carrying its API endpoint and iSCSI portal
//! (docs/agent-api.md). The operator reads "agent reachable" from it. When the apiserver cannot
//! be reached the agent keeps serving and retries with backoff; it never exits for that.
//!
//! The Lease is also where the agent publishes the fingerprint of its serving key
//! (`spindle.dev/api-key-sha256`): the chart's ValidatingAdmissionPolicy lets the agent's
//! ServiceAccount write only the Lease named after the node its token is bound to, so what a
//! Lease says about a node comes from that node's agent.
//!
//! At each renewal it also publishes the room in its data dir (statvfs: free bytes available
//! to the agent, `f_bavail × f_frsize`, and the filesystem's size), which the CSI controller
//! reads for GetCapacity.
//!
//! Calls to the Kubernetes API (the chart's RBAC must allow exactly these, see `RBAC`):
//! server-side apply of its own Lease (`patch`, and `create` the first time).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams};
use spindle_agent_api::lease as names;

/// What the agent does with the Kubernetes API: (API group, resource, verbs).
pub const RBAC: &[(&str, &str, &[&str])] =
    &[("coordination.k8s.io", "leases", &["create", "patch"])];

/// Field manager of the agent's writes.
const FIELD_MANAGER: &str = "spindle-agent";

/// What the Lease says.
#[derive(Clone, Debug)]
pub struct Registration {
    pub namespace: String,
    pub node: String,
    /// `host:port` of the agent API.
    pub api_endpoint: String,
    /// `ip:port` initiators reach; empty when unknown.
    pub iscsi_portal: String,
    /// Fingerprint of the agent's serving key (the operator calls only a server holding it).
    pub api_key: String,
    /// When this agent process started: the Lease's acquireTime, so the operator can tell a
    /// restarted agent (which it re-checks) from a renewal.
    pub started: k8s_openapi::jiff::Timestamp,
    /// The data dir whose room the Lease publishes (None: nothing published).
    pub data_dir: Option<std::path::PathBuf>,
}

/// Room in the filesystem of the data dir.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Bytes the agent can still allocate (`f_bavail × f_frsize`: without the root reserve).
    pub free_bytes: u64,
    /// Size of the filesystem (`f_blocks × f_frsize`).
    pub total_bytes: u64,
}

/// statvfs(3) of `dir`.
// The statvfs fields are u64 on 64-bit Linux but narrower elsewhere.
#[allow(clippy::useless_conversion)]
pub fn capacity_of(dir: &std::path::Path) -> std::io::Result<Capacity> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a buffer of the right type; statvfs fills it on success.
    let r = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    let st = unsafe { st.assume_init() };
    let frsize = u64::from(st.f_frsize);
    Ok(Capacity {
        free_bytes: u64::from(st.f_bavail).saturating_mul(frsize),
        total_bytes: u64::from(st.f_blocks).saturating_mul(frsize),
    })
}

/// The Lease as the agent writes it at `now`.
pub fn lease(
    r: &Registration,
    now: k8s_openapi::jiff::Timestamp,
    capacity: Option<Capacity>,
) -> Lease {
    let mut annotations = BTreeMap::from([
        (
            names::API_ENDPOINT_ANNOTATION.into(),
            r.api_endpoint.clone(),
        ),
        (
            names::ISCSI_PORTAL_ANNOTATION.into(),
            r.iscsi_portal.clone(),
        ),
        (names::API_KEY_ANNOTATION.into(), r.api_key.clone()),
        (
            names::VERSION_ANNOTATION.into(),
            env!("CARGO_PKG_VERSION").into(),
        ),
    ]);
    if let Some(c) = capacity {
        annotations.insert(
            names::CAPACITY_FREE_ANNOTATION.into(),
            c.free_bytes.to_string(),
        );
        annotations.insert(
            names::CAPACITY_TOTAL_ANNOTATION.into(),
            c.total_bytes.to_string(),
        );
    }
    Lease {
        metadata: ObjectMeta {
            name: Some(r.node.clone()),
            namespace: Some(r.namespace.clone()),
            labels: Some(BTreeMap::from([(names::AGENT_LABEL.into(), "true".into())])),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(r.node.clone()),
            lease_duration_seconds: Some(names::DURATION_SECONDS),
            acquire_time: Some(MicroTime(r.started)),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

async fn renew(api: &Api<Lease>, r: &Registration) -> Result<(), kube::Error> {
    // A data dir that cannot be measured leaves the annotations out (server-side apply then
    // drops them: no stale figure stays published).
    let capacity = r.data_dir.as_deref().and_then(|d| {
        capacity_of(d)
            .inspect_err(|e| tracing::debug!(dir = %d.display(), "statvfs of the data dir: {e}"))
            .ok()
    });
    let l = lease(r, k8s_openapi::jiff::Timestamp::now(), capacity);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&r.node, &params, &Patch::Apply(&l)).await?;
    Ok(())
}

/// Next wait after a failure: doubling from 1 s up to the renewal period.
pub fn backoff(previous: Option<Duration>) -> Duration {
    let cap = Duration::from_secs(names::RENEW_EVERY_SECONDS);
    previous.map_or(Duration::from_secs(1), |d| (d * 2).min(cap))
}

/// Renews the Lease until the task is dropped. Logs the first failure of an outage and the
/// recovery, not every retry.
pub async fn keep_renewed(client: kube::Client, r: Registration) {
    let api: Api<Lease> = Api::namespaced(client, &r.namespace);
    let mut failing: Option<(Duration, u32)> = None;
    loop {
        match renew(&api, &r).await {
            Ok(()) => {
                if let Some((_, n)) = failing.take() {
                    tracing::info!(lease = %r.node, failures = n, "Lease renewed again");
                }
                tokio::time::sleep(Duration::from_secs(names::RENEW_EVERY_SECONDS)).await;
            }
            Err(e) => {
                crate::metrics::get().lease_renew_failures.inc();
                let (wait, n) = match failing {
                    None => {
                        tracing::warn!(
                            lease = %r.node, namespace = %r.namespace,
                            "cannot renew the agent's Lease: {e}; retrying (iSCSI service continues)"
                        );
                        (backoff(None), 1)
                    }
                    Some((d, n)) => {
                        tracing::debug!(lease = %r.node, "Lease renewal failed again: {e}");
                        (backoff(Some(d)), n + 1)
                    }
                };
                failing = Some((wait, n));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_carries_what_the_operator_reads() {
        let r = Registration {
            namespace: "spindle-system".into(),
            node: "node-a".into(),
            api_endpoint: "127.0.0.2:9443".into(),
            iscsi_portal: "127.0.0.2:3260".into(),
            api_key: "ab".repeat(32),
            started: k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            data_dir: None,
        };
        let l = lease(&r, k8s_openapi::jiff::Timestamp::UNIX_EPOCH, None);
        let ann = l.metadata.annotations.unwrap();
        assert_eq!(ann[names::API_ENDPOINT_ANNOTATION], "127.0.0.2:9443");
        assert_eq!(ann[names::ISCSI_PORTAL_ANNOTATION], "127.0.0.2:3260");
        assert_eq!(ann[names::API_KEY_ANNOTATION], "ab".repeat(32));
        assert_eq!(l.metadata.labels.unwrap()[names::AGENT_LABEL], "true");
        let spec = l.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("node-a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.acquire_time, Some(MicroTime(r.started)));
    }

    #[test]
    fn the_lease_carries_the_room_in_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let c = capacity_of(dir.path()).unwrap();
        assert!(c.total_bytes > 0 && c.free_bytes <= c.total_bytes, "{c:?}");
        let r = Registration {
            namespace: "spindle-system".into(),
            node: "node-a".into(),
            api_endpoint: "127.0.0.2:9443".into(),
            iscsi_portal: String::new(),
            api_key: "ab".repeat(32),
            started: k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            data_dir: Some(dir.path().to_path_buf()),
        };
        let l = lease(&r, k8s_openapi::jiff::Timestamp::UNIX_EPOCH, Some(c));
        let ann = l.metadata.annotations.unwrap();
        assert_eq!(
            ann[names::CAPACITY_FREE_ANNOTATION],
            c.free_bytes.to_string()
        );
        assert_eq!(
            ann[names::CAPACITY_TOTAL_ANNOTATION],
            c.total_bytes.to_string()
        );
        let none = lease(&r, k8s_openapi::jiff::Timestamp::UNIX_EPOCH, None);
        let ann = none.metadata.annotations.unwrap();
        assert!(!ann.contains_key(names::CAPACITY_FREE_ANNOTATION));
        assert!(capacity_of(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn retries_back_off_up_to_the_renewal_period() {
        let mut d = backoff(None);
        assert_eq!(d, Duration::from_secs(1));
        for _ in 0..10 {
            d = backoff(Some(d));
        }
        assert_eq!(d, Duration::from_secs(5));
    }
}
