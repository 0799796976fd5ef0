//! Prometheus metrics of the agent, and a small `/metrics` HTTP endpoint.

mod http;
pub mod stages;

pub use http::serve;

use std::cell::RefCell;
use std::sync::LazyLock;

use prometheus::{
    CounterVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Every metric of the agent, registered in one registry.
pub struct Metrics {
    pub registry: Registry,
    /// SCSI commands completed, by target, LUN, opcode name and status.
    pub commands: IntCounterVec,
    /// Bytes moved, by target, LUN and direction (read|write).
    pub bytes: IntCounterVec,
    /// Command latency from admission to status, by target, LUN and class (read|write|other).
    pub latency: HistogramVec,
    /// Commands admitted and not finished, by target and LUN.
    pub inflight: IntGaugeVec,
    /// Logged-in sessions, by target.
    pub sessions: IntGaugeVec,
    /// Time from fence to flush acknowledgement of a drain, by target.
    pub drain_seconds: HistogramVec,
    /// Logins refused (bad credentials, ACL, unknown target).
    pub login_failures: IntCounter,
    /// Keepalive NOP-In pings sent to idle connections.
    pub nop_pings: IntCounter,
    /// Targets being served.
    pub targets: IntGauge,
    /// 1 for a Device whose store failed a write or flush (it refuses writes until restarted).
    pub device_failed: IntGaugeVec,
    /// Time from a DrainDevice call to its flush acknowledgement.
    pub device_drain_seconds: Histogram,
    /// Agent API calls by method and gRPC code.
    pub api_requests: IntCounterVec,
    /// Agent API call durations by method.
    pub api_seconds: HistogramVec,
    /// Lease renewals that failed (the apiserver was unreachable or refused).
    pub lease_renew_failures: IntCounter,
    /// Where SCSI commands' time goes, by stage (see [`stages`]).
    pub stage_seconds: HistogramVec,
    /// 1 when the data dir had no identity at this start (new, or replaced by an empty one).
    pub data_dir_new: IntGauge,
    /// 1 when the data dir's identity names another node.
    pub data_dir_foreign: IntGauge,
    /// ApplyDevice refusals about the backing store, by reason (in_use|missing).
    pub store_refusals: IntCounterVec,
    /// Write data (Data-Out) held now over all sessions (set when scraped).
    pub write_memory: IntGauge,
    /// `--max-write-memory` (set when scraped).
    pub write_memory_limit: IntGauge,
    /// Time commands waited for a Target's QoS limits, by target and direction (read|write).
    pub qos_throttled_seconds: CounterVec,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new_custom(Some("spindle".into()), None)?;
    let commands = IntCounterVec::new(
        Opts::new("scsi_commands_total", "SCSI commands completed"),
        &["target", "lun", "opcode", "status"],
    )?;
    let bytes = IntCounterVec::new(
        Opts::new("scsi_bytes_total", "Bytes read from or written to LUNs"),
        &["target", "lun", "direction"],
    )?;
    let latency = HistogramVec::new(
        HistogramOpts::new("scsi_latency_seconds", "SCSI command latency")
            .buckets(prometheus::exponential_buckets(10e-6, 2.0, 18)?),
        &["target", "lun", "class"],
    )?;
    let inflight = IntGaugeVec::new(
        Opts::new("scsi_inflight", "SCSI commands in flight"),
        &["target", "lun"],
    )?;
    let sessions = IntGaugeVec::new(
        Opts::new("iscsi_sessions", "Logged-in sessions"),
        &["target"],
    )?;
    let drain_seconds = HistogramVec::new(
        HistogramOpts::new(
            "drain_seconds",
            "Drain duration, fence to flush acknowledgement",
        )
        .buckets(prometheus::exponential_buckets(0.001, 4.0, 10)?),
        &["target"],
    )?;
    let login_failures = IntCounter::new("iscsi_login_failures_total", "Logins refused")?;
    let nop_pings = IntCounter::new("iscsi_nop_pings_total", "Keepalive NOP-In pings sent")?;
    let targets = IntGauge::new("targets", "Targets served")?;
    let device_failed = IntGaugeVec::new(
        Opts::new(
            "device_failed",
            "1 when a Device's store failed a write or flush; it refuses writes until restarted",
        ),
        &["device"],
    )?;
    let device_drain_seconds = Histogram::with_opts(
        HistogramOpts::new(
            "device_drain_seconds",
            "DrainDevice: fence to flush acknowledgement",
        )
        .buckets(prometheus::exponential_buckets(0.001, 4.0, 10)?),
    )?;
    let api_requests = IntCounterVec::new(
        Opts::new("api_requests_total", "Agent API calls"),
        &["method", "code"],
    )?;
    let api_seconds = HistogramVec::new(
        HistogramOpts::new("api_request_seconds", "Agent API call duration")
            .buckets(prometheus::exponential_buckets(0.0001, 4.0, 10)?),
        &["method"],
    )?;
    let lease_renew_failures =
        IntCounter::new("lease_renew_failures_total", "Lease renewals that failed")?;
    // Factor √2 from 1 µs to about 1 s: p50/p99 estimates within ±20 %.
    let stage_seconds = HistogramVec::new(
        HistogramOpts::new(
            "stage_seconds",
            "Where SCSI commands' time goes: received→decoded (decode), →I/O submitted \
             (dispatch), →I/O completed (io), →response queued (complete), →written (send), \
             and received→written (total)",
        )
        .buckets(prometheus::exponential_buckets(
            1e-6,
            std::f64::consts::SQRT_2,
            41,
        )?),
        &["stage"],
    )?;
    let data_dir_new = IntGauge::new(
        "data_dir_new",
        "1 when the data dir had no identity at this start (new, or replaced by an empty one)",
    )?;
    let data_dir_foreign = IntGauge::new(
        "data_dir_foreign",
        "1 when the data dir's identity names another node",
    )?;
    let store_refusals = IntCounterVec::new(
        Opts::new(
            "store_refusals_total",
            "ApplyDevice refusals about the backing store (in_use: held by another Device; \
             missing: served before and gone; reservations: its persisted SCSI reservations \
             cannot be read)",
        ),
        &["reason"],
    )?;
    let write_memory = IntGauge::new(
        "write_memory_bytes",
        "Write data (Data-Out) the agent holds now over all sessions",
    )?;
    let write_memory_limit = IntGauge::new(
        "write_memory_limit_bytes",
        "Most write data the agent holds at once (--max-write-memory)",
    )?;
    let qos_throttled_seconds = CounterVec::new(
        Opts::new(
            "qos_throttled_seconds_total",
            "Time commands waited for their Target's QoS limits (spec.qos) before admission",
        ),
        &["target", "direction"],
    )?;
    registry.register(Box::new(qos_throttled_seconds.clone()))?;
    registry.register(Box::new(write_memory.clone()))?;
    registry.register(Box::new(write_memory_limit.clone()))?;
    registry.register(Box::new(data_dir_new.clone()))?;
    registry.register(Box::new(data_dir_foreign.clone()))?;
    registry.register(Box::new(store_refusals.clone()))?;
    registry.register(Box::new(commands.clone()))?;
    registry.register(Box::new(bytes.clone()))?;
    registry.register(Box::new(latency.clone()))?;
    registry.register(Box::new(inflight.clone()))?;
    registry.register(Box::new(sessions.clone()))?;
    registry.register(Box::new(drain_seconds.clone()))?;
    registry.register(Box::new(login_failures.clone()))?;
    registry.register(Box::new(nop_pings.clone()))?;
    registry.register(Box::new(targets.clone()))?;
    registry.register(Box::new(device_failed.clone()))?;
    registry.register(Box::new(device_drain_seconds.clone()))?;
    registry.register(Box::new(api_requests.clone()))?;
    registry.register(Box::new(api_seconds.clone()))?;
    registry.register(Box::new(lease_renew_failures.clone()))?;
    registry.register(Box::new(stage_seconds.clone()))?;
    Ok(Metrics {
        registry,
        commands,
        bytes,
        latency,
        inflight,
        sessions,
        drain_seconds,
        login_failures,
        nop_pings,
        targets,
        device_failed,
        device_drain_seconds,
        api_requests,
        api_seconds,
        lease_renew_failures,
        stage_seconds,
        data_dir_new,
        data_dir_foreign,
        store_refusals,
        write_memory,
        write_memory_limit,
        qos_throttled_seconds,
    })
}

/// The agent's metrics (built on first use; the names are fixed, so building cannot fail
/// except by a programming error caught by the unit test below).
pub fn get() -> &'static Metrics {
    static M: LazyLock<Metrics> =
        LazyLock::new(|| build().expect("metric definitions are static and valid"));
    &M
}

/// Per-LUN handles, looked up once so the data path does not hash label values per command.
pub struct LunMetrics {
    pub read_bytes: IntCounter,
    pub write_bytes: IntCounter,
    pub read_latency: Histogram,
    pub write_latency: Histogram,
    pub other_latency: Histogram,
    pub inflight: IntGauge,
    target: String,
    lun: String,
    /// Counters already looked up, by (opcode name, status name): a handful per LUN, so a
    /// linear scan beats hashing label values on every command.
    commands: RefCell<Vec<(&'static str, &'static str, IntCounter)>>,
}

impl LunMetrics {
    pub fn new(target: &str, lun: u64) -> Self {
        let m = get();
        let l = lun.to_string();
        LunMetrics {
            read_bytes: m.bytes.with_label_values(&[target, &l, "read"]),
            write_bytes: m.bytes.with_label_values(&[target, &l, "write"]),
            read_latency: m.latency.with_label_values(&[target, &l, "read"]),
            write_latency: m.latency.with_label_values(&[target, &l, "write"]),
            other_latency: m.latency.with_label_values(&[target, &l, "other"]),
            inflight: m.inflight.with_label_values(&[target, &l]),
            target: target.to_string(),
            lun: l,
            commands: RefCell::new(Vec::new()),
        }
    }

    /// Counts one completed command.
    pub fn command(&self, opcode: &'static str, status: &'static str) {
        let mut cache = self.commands.borrow_mut();
        if let Some((_, _, c)) = cache.iter().find(|(o, s, _)| *o == opcode && *s == status) {
            c.inc();
            return;
        }
        let c = get()
            .commands
            .with_label_values(&[&self.target, &self.lun, opcode, status]);
        c.inc();
        cache.push((opcode, status, c));
    }
}

/// The text exposition of every metric.
pub fn render() -> String {
    use prometheus::Encoder;
    // The pool counts its bytes itself (one atomic on the data path); copied here per scrape.
    let pool = crate::iscsi::session::WriteMemory::global();
    get().write_memory.set(pool.used() as i64);
    get().write_memory_limit.set(pool.limit() as i64);
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail for the text format.
    let _ = prometheus::TextEncoder::new().encode(&get().registry.gather(), &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_build_and_render_with_labels() {
        let l = LunMetrics::new("ns/t", 3);
        l.read_bytes.inc_by(4096);
        l.command("READ_10", "GOOD");
        l.command("READ_10", "GOOD");
        let text = render();
        assert!(
            text.contains(
                r#"spindle_scsi_bytes_total{direction="read",lun="3",target="ns/t"} 4096"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"spindle_scsi_commands_total{lun="3",opcode="READ_10",status="GOOD",target="ns/t"} 2"#
        ));
        let limit = crate::iscsi::session::WriteMemory::global().limit();
        assert!(
            text.contains(&format!("spindle_write_memory_limit_bytes {limit}\n")),
            "{text}"
        );
        assert!(text.contains("spindle_write_memory_bytes "), "{text}");
    }
}
