//! Which node agents exist and which are reachable: the agents' Leases (label
//! `spindle.dev/agent=true` in the operator's namespace) and the Node objects, watched, with a
//! one-second clock because a Lease expires without any event. An agent is reachable while the
//! operator sees its Lease's renewTime change, timed on the operator's own clock ([`Renewals`]). Every change a controller cares
//! about (a node's agent became reachable or unreachable, moved, re-registered; a Node appeared or
//! was deleted) is announced on a broadcast channel with the node's name.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use spindle_agent_api::lease as agent_lease;
use tokio::sync::broadcast;

use crate::metrics::Metrics;
use spindle_agent_api::pinning::Dial;

/// What the operator knows about the agent of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentView {
    /// The Node object exists (false also before the Node list arrived; see
    /// [`Registry::node_gone`]).
    pub node_exists: bool,
    /// The agent's registration, if it has a Lease.
    pub lease: Option<LeaseView>,
}

impl AgentView {
    /// The agent's API endpoint, when it is reachable.
    pub fn reachable_endpoint(&self) -> Option<&str> {
        self.lease
            .as_ref()
            .filter(|l| l.reachable)
            .map(|l| l.endpoint.as_str())
    }

    /// Where to call `node`'s agent and the key it must hold, when it is reachable (the key is
    /// checked when the call is made: see `pinning`).
    pub fn dial<'a>(&'a self, node: &'a str) -> Option<Dial<'a>> {
        self.lease.as_ref().filter(|l| l.reachable).map(|l| Dial {
            node,
            endpoint: &l.endpoint,
            key: &l.api_key,
        })
    }
}

/// An agent's Lease, as of now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// `host:port` of the agent API.
    pub endpoint: String,
    /// `ip:port` initiators reach (empty when the agent does not know one).
    pub portal: String,
    /// The operator saw `renewTime` change less than `leaseDurationSeconds` ago, by its own
    /// clock (and the endpoint is set).
    pub reachable: bool,
    /// When the Lease expires (or expired) by the operator's clock: when it last saw a renewal
    /// plus the duration, RFC 3339.
    pub expires: String,
    /// `spec.acquireTime`, which changes when the agent registers anew.
    pub acquired: String,
    /// Fingerprint of the agent's serving key (empty: the Lease publishes none).
    pub api_key: String,
}

/// When the operator last saw a Lease's `renewTime` change, on its own clocks. The agent's
/// timestamps are compared only with each other, never with the operator's clock, so clock skew
/// between the nodes does not matter (as in the operator's own leader election).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// `spec.renewTime` as last read.
    renewed: Option<Timestamp>,
    /// When it was first read with that value (monotonic).
    at: Instant,
    /// The same moment on the wall clock, for messages.
    wall: Timestamp,
}

/// [`Renewal`]s by Lease name.
#[derive(Debug, Default)]
pub struct Renewals(BTreeMap<String, Renewal>);

impl Renewals {
    /// Records `lease` as read at `now` (`wall` on the wall clock); returns when its renewTime
    /// last changed. A Lease seen for the first time counts as just renewed.
    pub fn observe(&mut self, lease: &Lease, now: Instant, wall: Timestamp) -> Renewal {
        let name = lease.metadata.name.clone().unwrap_or_default();
        let renewed = lease
            .spec
            .as_ref()
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0);
        let fresh = Renewal {
            renewed,
            at: now,
            wall,
        };
        let entry = self.0.entry(name).or_insert(fresh);
        if entry.renewed != renewed {
            *entry = fresh;
        }
        *entry
    }

    /// Forgets the Leases not in `names` (deleted).
    pub fn retain(&mut self, names: &BTreeSet<String>) {
        self.0.retain(|n, _| names.contains(n));
    }
}

/// Reads one agent Lease at `now`, given when its renewal was last seen.
pub fn lease_view(lease: &Lease, seen: Renewal, now: Instant) -> LeaseView {
    let annotation = |k: &str| {
        lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .cloned()
            .unwrap_or_default()
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let seconds = spec
        .lease_duration_seconds
        .unwrap_or(agent_lease::DURATION_SECONDS)
        .max(0);
    let duration = Duration::from_secs(u64::try_from(seconds).unwrap_or_default());
    let expires = seen
        .renewed
        .map(|_| seen.wall + SignedDuration::from_secs(i64::from(seconds)));
    let endpoint = annotation(agent_lease::API_ENDPOINT_ANNOTATION);
    LeaseView {
        reachable: !endpoint.is_empty()
            && seen.renewed.is_some()
            && now.saturating_duration_since(seen.at) < duration,
        endpoint,
        portal: annotation(agent_lease::ISCSI_PORTAL_ANNOTATION),
        expires: expires
            .map(|e| e.to_string())
            .unwrap_or_else(|| "never renewed".into()),
        acquired: spec
            .acquire_time
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        api_key: annotation(agent_lease::API_KEY_ANNOTATION),
    }
}

/// The agents and Nodes, kept current by [`Registry::run`].
pub struct Registry {
    leases: Store<Lease>,
    nodes: Store<PartialObjectMeta<Node>>,
    views: RwLock<BTreeMap<String, AgentView>>,
    renewals: Mutex<Renewals>,
    changes: broadcast::Sender<String>,
    leases_listed: AtomicBool,
    nodes_listed: AtomicBool,
}

/// Capacity of the change channel; a lagging subscriber resyncs everything.
const CHANGES_CAPACITY: usize = 1024;

impl Registry {
    /// Starts watching Leases in `namespace` and all Nodes. The returned future drives the
    /// watches and must be polled (it runs until dropped).
    pub fn new(
        client: kube::Client,
        namespace: &str,
        metrics: Arc<Metrics>,
    ) -> (Arc<Self>, impl Future<Output = ()> + Send + 'static) {
        let lease_api: Api<Lease> = Api::namespaced(client.clone(), namespace);
        let node_api: Api<PartialObjectMeta<Node>> = Api::all(client);
        let (lease_reader, lease_writer) = reflector::store();
        let (node_reader, node_writer) = reflector::store();
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let registry = Arc::new(Self {
            leases: lease_reader,
            nodes: node_reader,
            views: RwLock::default(),
            renewals: Mutex::default(),
            changes,
            leases_listed: AtomicBool::new(false),
            nodes_listed: AtomicBool::new(false),
        });
        let lease_cfg =
            watcher::Config::default().labels(&format!("{}=true", agent_lease::AGENT_LABEL));
        let leases = reflector::reflector(lease_writer, watcher(lease_api, lease_cfg))
            .default_backoff()
            .map(|e| {
                e.map(|e| Some(Kind::Lease).filter(|_| matches!(e, watcher::Event::InitDone)))
                    .map_err(|e| ("Lease", e.to_string()))
            })
            .boxed();
        let nodes =
            reflector::reflector(node_writer, watcher(node_api, watcher::Config::default()))
                .default_backoff()
                .map(|e| {
                    e.map(|e| Some(Kind::Node).filter(|_| matches!(e, watcher::Event::InitDone)))
                        .map_err(|e| ("Node", e.to_string()))
                })
                .boxed();
        let tick = tokio_stream_interval(Duration::from_secs(1))
            .map(|()| Ok(None))
            .boxed();
        let this = registry.clone();
        let drive = async move {
            let mut events = futures::stream::select_all([leases, nodes, tick]);
            let mut last_error: Option<String> = None;
            while let Some(event) = events.next().await {
                match event {
                    Ok(listed) => {
                        if last_error.take().is_some() {
                            tracing::info!("watching Leases and Nodes again");
                        }
                        match listed {
                            Some(Kind::Lease) => this.leases_listed.store(true, Ordering::Relaxed),
                            Some(Kind::Node) => this.nodes_listed.store(true, Ordering::Relaxed),
                            None => {}
                        }
                        this.refresh(&metrics);
                    }
                    Err((kind, e)) => {
                        if last_error.as_deref() != Some(e.as_str()) {
                            tracing::warn!("watching {kind} objects: {e} (retrying)");
                            last_error = Some(e);
                        }
                    }
                }
            }
        };
        (registry, drive)
    }

    /// Recomputes every node's view and announces the nodes whose view changed in a way that
    /// matters (not every renewal).
    fn refresh(&self, metrics: &Metrics) {
        let (now, wall) = (Instant::now(), Timestamp::now());
        let mut next: BTreeMap<String, AgentView> = BTreeMap::new();
        for node in self.nodes.state() {
            if let Some(name) = &node.metadata.name {
                next.entry(name.clone()).or_default().node_exists = true;
            }
        }
        {
            let mut renewals = self.renewals.lock().unwrap_or_else(|e| e.into_inner());
            let leases = self.leases.state();
            for lease in &leases {
                if let Some(name) = &lease.metadata.name {
                    let seen = renewals.observe(lease, now, wall);
                    next.entry(name.clone()).or_default().lease =
                        Some(lease_view(lease, seen, now));
                }
            }
            renewals.retain(
                &leases
                    .iter()
                    .filter_map(|l| l.metadata.name.clone())
                    .collect(),
            );
        }
        let changed: Vec<String> = {
            let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
            let names: BTreeSet<&String> = views.keys().chain(next.keys()).collect();
            let changed = names
                .into_iter()
                .filter(|n| views.get(*n).map(signature) != next.get(*n).map(signature))
                .cloned()
                .collect();
            *views = next;
            let reachable = views
                .values()
                .filter(|v| v.reachable_endpoint().is_some())
                .count();
            metrics.agents_reachable.set(reachable as i64);
            metrics
                .agents_registered
                .set(views.values().filter(|v| v.lease.is_some()).count() as i64);
            changed
        };
        for node in changed {
            tracing::debug!(node, "agent or node changed");
            // No subscriber yet is fine: nothing to tell.
            let _ = self.changes.send(node);
        }
    }

    /// Waits until both the Lease and the Node lists arrived.
    pub async fn wait_synced(&self) {
        // A store whose writer is gone never becomes ready; the caller's term ends then anyway.
        let _ = self.leases.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
    }

    /// The view of one node's agent (default: no Node, no Lease).
    pub fn view(&self, node: &str) -> AgentView {
        let views = self.views.read().unwrap_or_else(|e| e.into_inner());
        views.get(node).cloned().unwrap_or_default()
    }

    /// Every known node's view.
    pub fn snapshot(&self) -> BTreeMap<String, AgentView> {
        self.views.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// True when the Node object is known to be gone (its list arrived and it is not in it) and
    /// no reachable agent speaks for it: the escape hatch of the delete protocol.
    pub fn node_gone(&self, node: &str) -> bool {
        self.nodes_listed.load(Ordering::Relaxed)
            && self.leases_listed.load(Ordering::Relaxed)
            && !self
                .nodes
                .state()
                .iter()
                .any(|n| n.metadata.name.as_deref() == Some(node))
            && self.view(node).reachable_endpoint().is_none()
    }

    /// Node names whose agent or Node changed, as they change.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }
}

/// Which watch completed its list.
enum Kind {
    Lease,
    Node,
}

/// Of a Lease: reachable, endpoint, portal, acquire time, key.
type LeaseSignature<'a> = (bool, &'a str, &'a str, &'a str, &'a str);

/// What of a view triggers reconciles: existence, reachability, where to call, what to
/// advertise, a new registration, and the agent's key.
fn signature(v: &AgentView) -> (bool, Option<LeaseSignature<'_>>) {
    (
        v.node_exists,
        v.lease.as_ref().map(|l| {
            (
                l.reachable,
                l.endpoint.as_str(),
                l.portal.as_str(),
                l.acquired.as_str(),
                l.api_key.as_str(),
            )
        }),
    )
}

fn tokio_stream_interval(period: Duration) -> impl futures::Stream<Item = ()> {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    futures::stream::unfold(interval, |mut i| async move {
        i.tick().await;
        Some(((), i))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

    fn lease(endpoint: Option<&str>, renewed: Option<Timestamp>, seconds: Option<i32>) -> Lease {
        let mut annotations = BTreeMap::new();
        if let Some(e) = endpoint {
            annotations.insert(
                agent_lease::API_ENDPOINT_ANNOTATION.to_owned(),
                e.to_owned(),
            );
        }
        annotations.insert(
            agent_lease::ISCSI_PORTAL_ANNOTATION.to_owned(),
            "127.0.0.2:3260".to_owned(),
        );
        Lease {
            metadata: ObjectMeta {
                name: Some("node-a".into()),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                renew_time: renewed.map(MicroTime),
                lease_duration_seconds: seconds,
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn reachable_while_renewals_are_seen_within_the_duration() {
        let wall: Timestamp = "2026-11-30T10:00:00Z".parse().expect("time");
        let t0 = Instant::now();
        let after = |s: u64| t0 + Duration::from_secs(s);
        let renewed = Some(wall - SignedDuration::from_secs(3));
        let cases = [
            // (endpoint, renewTime, duration, seconds since the operator saw it change, reachable)
            (Some("127.0.0.2:9443"), renewed, Some(15), 0, true),
            (Some("127.0.0.2:9443"), renewed, Some(15), 14, true),
            (Some("127.0.0.2:9443"), renewed, Some(15), 15, false),
            (Some("127.0.0.2:9443"), renewed, Some(30), 20, true),
            (Some("127.0.0.2:9443"), renewed, None, 3, true),
            (Some("127.0.0.2:9443"), renewed, None, 16, false),
            (Some("127.0.0.2:9443"), renewed, Some(-5), 0, false),
            (Some("127.0.0.2:9443"), None, Some(15), 0, false),
            (None, renewed, Some(15), 0, false),
            (Some(""), renewed, Some(15), 0, false),
        ];
        for (endpoint, renewed_at, seconds, since, reachable) in cases {
            let l = lease(endpoint, renewed_at, seconds);
            let seen = Renewals::default().observe(&l, t0, wall);
            let v = lease_view(&l, seen, after(since));
            assert_eq!(
                v.reachable, reachable,
                "{endpoint:?} renewed {renewed_at:?} for {seconds:?}, seen {since} s ago"
            );
            assert_eq!(v.portal, "127.0.0.2:3260");
        }
        let l = lease(Some("e:1"), renewed, Some(15));
        let v = lease_view(&l, Renewals::default().observe(&l, t0, wall), after(20));
        assert_eq!(v.expires, "2026-11-30T10:00:15Z");
    }

    #[test]
    fn the_agents_clock_does_not_matter() {
        let wall: Timestamp = "2026-11-30T10:00:00Z".parse().expect("time");
        let t0 = Instant::now();
        let hour = SignedDuration::from_secs(3600);
        for skew in [hour, -hour, SignedDuration::ZERO] {
            let mut renewals = Renewals::default();
            // Renewing every 5 s (on a clock `skew` away from ours): reachable throughout.
            for i in 0..12_u64 {
                let at = t0 + Duration::from_secs(5 * i);
                let step = SignedDuration::from_secs(5 * i64::try_from(i).expect("small"));
                let l = lease(Some("e:1"), Some(wall + skew + step), Some(15));
                let v = lease_view(
                    &l,
                    renewals.observe(&l, at, wall),
                    at + Duration::from_secs(4),
                );
                assert!(v.reachable, "skew {skew}: renewal {i}");
            }
            // Then silent: unreachable once the duration has passed on our clock.
            let last = lease(
                Some("e:1"),
                Some(wall + skew + SignedDuration::from_secs(55)),
                Some(15),
            );
            let quiet = t0 + Duration::from_secs(55);
            let seen = renewals.observe(&last, quiet, wall);
            for (later, reachable) in [(0, true), (14, true), (15, false), (3600, false)] {
                let now = quiet + Duration::from_secs(later);
                let seen_again = renewals.observe(&last, now, wall);
                assert_eq!(seen_again, seen, "an unchanged Lease is no renewal");
                let v = lease_view(&last, seen_again, now);
                assert_eq!(v.reachable, reachable, "skew {skew}: {later} s after");
            }
        }
    }

    #[test]
    fn a_deleted_lease_is_forgotten() {
        let wall: Timestamp = "2026-11-30T10:00:00Z".parse().expect("time");
        let t0 = Instant::now();
        let l = lease(Some("e:1"), Some(wall), Some(15));
        let mut renewals = Renewals::default();
        renewals.observe(&l, t0, wall);
        renewals.retain(&BTreeSet::new());
        let later = t0 + Duration::from_secs(60);
        // Seen anew (re-created with the same renewTime): counts as just renewed.
        let v = lease_view(&l, renewals.observe(&l, later, wall), later);
        assert!(v.reachable);
    }

    #[test]
    fn renewals_alone_do_not_signal_a_change() {
        let view = |reachable: bool, expires: &str| AgentView {
            node_exists: true,
            lease: Some(LeaseView {
                endpoint: "127.0.0.2:9443".into(),
                portal: "127.0.0.2:3260".into(),
                reachable,
                expires: expires.into(),
                acquired: "t0".into(),
                api_key: "k0".into(),
            }),
        };
        assert_eq!(signature(&view(true, "a")), signature(&view(true, "b")));
        assert_ne!(signature(&view(true, "a")), signature(&view(false, "a")));
        let mut moved = view(true, "a");
        if let Some(l) = moved.lease.as_mut() {
            l.acquired = "t1".into();
        }
        assert_ne!(signature(&view(true, "a")), signature(&moved));
        let mut rekeyed = view(true, "a");
        if let Some(l) = rekeyed.lease.as_mut() {
            l.api_key = "k1".into();
        }
        assert_ne!(signature(&view(true, "a")), signature(&rekeyed));
    }
}
