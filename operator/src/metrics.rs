//! Prometheus metrics and the HTTP endpoint that serves them with `/healthz` and `/readyz`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    /// `spindle_operator_reconciles_total{kind,result}`: result ok|error.
    pub reconciles: IntCounterVec,
    /// `spindle_operator_reconcile_errors_total{kind,reason}`.
    pub reconcile_errors: IntCounterVec,
    /// `spindle_operator_reconcile_duration_seconds{kind}`.
    pub reconcile_seconds: HistogramVec,
    /// `spindle_operator_delete_phases_total{kind,phase}`: phases completed.
    pub delete_phases: IntCounterVec,
    /// `spindle_operator_delete_phase_seconds{kind,phase}`: drain, release, remove (the agent
    /// call) and total (deletion requested to finalizer removed).
    pub delete_seconds: HistogramVec,
    /// `spindle_operator_agents_reachable`.
    pub agents_reachable: IntGauge,
    /// `spindle_operator_agents_registered`: agents with a Lease, reachable or not.
    pub agents_registered: IntGauge,
    /// `spindle_operator_leader`: 1 while this replica leads.
    pub leader: IntGauge,
    /// `spindle_operator_orphans_removed_total{kind}`: served by an agent, gone from the cluster.
    pub orphans_removed: IntCounterVec,
    /// `spindle_operator_deletes_pending{kind}`: deleted objects whose finalizer still holds.
    pub deletes_pending: IntGaugeVec,
    /// `spindle_operator_delete_pending_seconds{kind}`: age of the oldest of them (0 if none).
    pub delete_pending_seconds: GaugeVec,
    /// The deletions behind those two gauges, by uid (set from the reconciles, read at scrape).
    pending: Mutex<HashMap<String, Pending>>,
    /// Unix seconds of the last election round the apiserver answered (for `/readyz`).
    last_ok: AtomicI64,
    /// Unix seconds of the last sign of life of the election loop (for `/healthz`).
    heartbeat: AtomicI64,
}

/// A deletion the operator is working on.
struct Pending {
    kind: &'static str,
    /// Unix seconds of the deletion request (the object's deletionTimestamp).
    requested: f64,
    /// Unix seconds of the last reconcile that saw it waiting.
    seen: f64,
}

/// The kinds with a delete protocol (their gauges exist at 0 before any delete).
const DELETE_KINDS: [&str; 2] = ["Device", "Target"];

/// A pending deletion no reconcile has seen for this long is forgotten: a waiting delete is
/// requeued every few seconds, so it went without us (its finalizer removed by hand).
const PENDING_FORGET_SECS: f64 = 600.0;

/// Registers the metric `made` in `registry` and returns it.
fn registered<C: Collector + Clone + 'static>(
    registry: &Registry,
    made: prometheus::Result<C>,
) -> C {
    let c = must(made);
    must(registry.register(Box::new(c.clone())));
    c
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // The metric definitions are constants; a failure is a programming error caught by the tests.
    r.expect("metric definition is valid and registered once")
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            registered(&registry, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let opts = HistogramOpts::new(name, help).buckets(buckets);
            registered(&registry, HistogramVec::new(opts, labels))
        };
        let gauge = |name: &str, help: &str| registered(&registry, IntGauge::new(name, help));
        let fast = vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let slow = vec![
            0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
        ];
        Arc::new(Self {
            reconciles: counter(
                "spindle_operator_reconciles_total",
                "Reconciles by kind and result",
                &["kind", "result"],
            ),
            reconcile_errors: counter(
                "spindle_operator_reconcile_errors_total",
                "Failed reconciles by kind and cause",
                &["kind", "reason"],
            ),
            reconcile_seconds: histogram(
                "spindle_operator_reconcile_duration_seconds",
                "Duration of one reconcile",
                &["kind"],
                fast,
            ),
            delete_phases: counter(
                "spindle_operator_delete_phases_total",
                "Delete protocol phases completed",
                &["kind", "phase"],
            ),
            delete_seconds: histogram(
                "spindle_operator_delete_phase_seconds",
                "Duration of delete protocol phases",
                &["kind", "phase"],
                slow,
            ),
            agents_reachable: gauge(
                "spindle_operator_agents_reachable",
                "Agents whose Lease is current",
            ),
            agents_registered: gauge(
                "spindle_operator_agents_registered",
                "Agents with a Lease, current or expired",
            ),
            leader: gauge(
                "spindle_operator_leader",
                "1 while this replica is the leader",
            ),
            orphans_removed: counter(
                "spindle_operator_orphans_removed_total",
                "Objects an agent served that the cluster no longer has, removed",
                &["kind"],
            ),
            deletes_pending: registered(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "spindle_operator_deletes_pending",
                        "Deleted objects whose finalizer still holds",
                    ),
                    &["kind"],
                ),
            ),
            delete_pending_seconds: registered(
                &registry,
                GaugeVec::new(
                    Opts::new(
                        "spindle_operator_delete_pending_seconds",
                        "Seconds since the oldest pending deletion was requested (0 if none)",
                    ),
                    &["kind"],
                ),
            ),
            pending: Mutex::default(),
            registry,
            last_ok: AtomicI64::new(0),
            heartbeat: AtomicI64::new(unix_now()),
        })
    }

    /// Records that the deletion of `uid` (requested `waited` seconds ago) is not finished.
    pub fn delete_pending(&self, kind: &'static str, uid: &str, waited: f64) {
        let now = unix_now() as f64;
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.insert(
            uid.to_owned(),
            Pending {
                kind,
                requested: now - waited,
                seen: now,
            },
        );
    }

    /// Records that the deletion of `uid` is over (finalizer removed).
    pub fn delete_done(&self, uid: &str) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.remove(uid);
    }

    /// Sets the pending-deletion gauges from the deletions recorded.
    fn refresh_pending(&self) {
        let now = unix_now() as f64;
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|_, d| now - d.seen < PENDING_FORGET_SECS);
        for kind in DELETE_KINDS {
            let of_kind = p.values().filter(|d| d.kind == kind);
            let (count, oldest) =
                of_kind.fold((0, 0.0f64), |(n, o), d| (n + 1, o.max(now - d.requested)));
            self.deletes_pending.with_label_values(&[kind]).set(count);
            self.delete_pending_seconds
                .with_label_values(&[kind])
                .set(oldest);
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        self.refresh_pending();
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Records a round of the election loop; `answered`: the apiserver took part.
    pub fn beat(&self, answered: bool) {
        self.heartbeat.store(unix_now(), Ordering::Relaxed);
        if answered {
            self.last_ok.store(unix_now(), Ordering::Relaxed);
        }
    }

    fn healthy(&self) -> bool {
        unix_now() - self.heartbeat.load(Ordering::Relaxed) < STALE_SECS
    }

    fn ready(&self) -> bool {
        unix_now() - self.last_ok.load(Ordering::Relaxed) < STALE_SECS
    }
}

/// `/healthz` fails when the election loop has shown no sign of life for this long, `/readyz`
/// when the apiserver has not answered it for this long.
const STALE_SECS: i64 = 60;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` until the returned task is
/// dropped. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<(SocketAddr, impl Future<Output = ()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let m1 = metrics.clone();
    let m2 = metrics.clone();
    let app = Router::new()
        .route("/metrics", get(move || async move { m1.render() }))
        .route(
            "/healthz",
            get(move || async move {
                if m2.healthy() {
                    (StatusCode::OK, "ok\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "election loop stalled\n")
                }
            }),
        )
        .route(
            "/readyz",
            get(move || async move {
                if metrics.ready() {
                    (StatusCode::OK, "ok\n")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the apiserver has not answered lately\n",
                    )
                }
            }),
        );
    let server = async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics endpoint stopped: {e}");
        }
    };
    Ok((bound, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exported() {
        let m = Metrics::new();
        m.reconciles.with_label_values(&["Device", "ok"]).inc();
        m.reconcile_errors
            .with_label_values(&["Device", "agent"])
            .inc();
        m.reconcile_seconds
            .with_label_values(&["Device"])
            .observe(0.01);
        m.delete_phases
            .with_label_values(&["Device", "drain"])
            .inc();
        m.delete_seconds
            .with_label_values(&["Device", "drain"])
            .observe(0.5);
        m.orphans_removed.with_label_values(&["Target"]).inc();
        m.agents_reachable.set(2);
        m.delete_pending("Device", "uid-1", 30.0);
        m.delete_pending("Device", "uid-2", 5.0);
        m.delete_pending("Target", "uid-3", 1.0);
        m.delete_done("uid-3");
        let text = m.render();
        for family in [
            "spindle_operator_reconciles_total{kind=\"Device\",result=\"ok\"} 1",
            "spindle_operator_reconcile_errors_total",
            "spindle_operator_reconcile_duration_seconds_bucket",
            "spindle_operator_delete_phases_total",
            "spindle_operator_delete_phase_seconds_bucket",
            "spindle_operator_agents_reachable 2",
            "spindle_operator_agents_registered 0",
            "spindle_operator_leader 0",
            "spindle_operator_orphans_removed_total",
            "spindle_operator_deletes_pending{kind=\"Device\"} 2",
            "spindle_operator_deletes_pending{kind=\"Target\"} 0",
            "spindle_operator_delete_pending_seconds{kind=\"Target\"} 0",
        ] {
            assert!(text.contains(family), "{family} missing from:\n{text}");
        }
        let oldest = m
            .delete_pending_seconds
            .with_label_values(&["Device"])
            .get();
        assert!(
            (29.0..=32.0).contains(&oldest),
            "oldest Device delete {oldest}"
        );
    }
}
