//! One target's state inside its engine thread: the LUN map, command dispatch with admission and
//! in-flight accounting, and the drain of a Device (the agent's side of the delete protocol).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::config::{LunSetup, TargetConfig};
use super::drain::{DrainAck, DrainEvent, DrainState, Gate, InvalidTransition};
use crate::iscsi::login::AclPolicy;
use crate::metrics::{self, LunMetrics};
use crate::scsi::opcodes::Dir;
use crate::scsi::{
    self, Backend, LogicalUnit, LuConfig, NexusId, Response, Status, TaskAttr, TaskKey,
};
use crate::store::FileStore;

/// SCSI opcode of REPORT LUNS, answered at target level.
const REPORT_LUNS: u8 = 0xA0;

/// One LUN: its logical unit, its drain gate, its metrics and counters.
pub struct LunSlot {
    pub lun: u64,
    /// `namespace/name` of the Device behind it.
    pub device: String,
    pub lu: LogicalUnit<FileStore>,
    pub gate: Rc<Gate>,
    metrics: LunMetrics,
    counters: Cell<LunCounters>,
}

/// What a LUN has done, for the agent's status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LunCounters {
    pub commands: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

/// A LUN as the agent's status shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LunSnapshot {
    pub lun: u64,
    pub device: String,
    pub state: DrainState,
    pub inflight: u32,
    pub fenced: u64,
    pub counters: LunCounters,
}

/// Why a drain or release could not be done.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("no LUN of this target is backed by Device {0:?}")]
    UnknownDevice(String),
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    #[error("flushing Device {device:?}: {source}")]
    Flush {
        device: String,
        #[source]
        source: std::io::Error,
    },
}

/// How long a drain waits for the commands in flight, and then for the flush.
static DRAIN_TIMEOUT_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(60);

/// Sets how long a drain may wait for its commands in flight and for its flush (each) before
/// it fails: a store that hangs cannot hold a shutdown forever.
pub fn set_drain_timeout(limit: Duration) {
    DRAIN_TIMEOUT_SECS.store(limit.as_secs().max(1), std::sync::atomic::Ordering::Relaxed);
}

/// Test hook: `SPINDLE_TEST_DRAIN_DELAY_MS` holds every drain this long once its LUNs are
/// fenced (new commands refused) and before it waits for the commands in flight and flushes,
/// so an end-to-end test can kill the agent mid-drain however fast the drain is. Unset (the
/// default), it costs nothing.
fn test_drain_hold() -> Option<Duration> {
    static HOLD: std::sync::LazyLock<Option<Duration>> = std::sync::LazyLock::new(|| {
        std::env::var("SPINDLE_TEST_DRAIN_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
    });
    *HOLD
}

/// How long a drain or a stop may wait for the commands in flight, and then for the flush.
pub fn drain_timeout() -> Duration {
    Duration::from_secs(DRAIN_TIMEOUT_SECS.load(std::sync::atomic::Ordering::Relaxed))
}

/// READ/WRITE-family commands, whose bytes count as LUN traffic in the metrics.
fn is_medium_access(name: &str) -> bool {
    name.starts_with("READ(") || name.starts_with("WRITE(")
}

/// Label value of a SCSI status.
fn status_name(s: Status) -> &'static str {
    match s {
        Status::Good => "GOOD",
        Status::CheckCondition => "CHECK_CONDITION",
        Status::ConditionMet => "CONDITION_MET",
        Status::Busy => "BUSY",
        Status::ReservationConflict => "RESERVATION_CONFLICT",
        Status::TaskSetFull => "TASK_SET_FULL",
        Status::TaskAborted => "TASK_ABORTED",
    }
}

/// The target as its engine thread sees it.
pub struct TargetState {
    /// `namespace/name` of the Target object.
    pub name: String,
    pub iqn: String,
    /// Who may see this target in a SendTargets of its own sessions.
    acl: RefCell<AclPolicy>,
    luns: RefCell<BTreeMap<u64, Rc<LunSlot>>>,
    /// SCSI initiator port names of the live nexuses (a LUN added later learns them too).
    nexus_names: RefCell<BTreeMap<NexusId, String>>,
}

impl TargetState {
    /// Builds the target from its config and its LUNs.
    pub fn new(config: &TargetConfig, luns: Vec<LunSetup>) -> Self {
        let t = TargetState {
            name: config.name.clone(),
            iqn: config.iqn.clone(),
            acl: RefCell::new(config.acl.clone()),
            luns: RefCell::default(),
            nexus_names: RefCell::default(),
        };
        for l in luns {
            t.add_lun(l);
        }
        t
    }

    /// Serves one more LUN (replacing one of the same number). False if its config is invalid
    /// (logged).
    pub fn add_lun(&self, setup: LunSetup) -> bool {
        let LunSetup {
            config: lc,
            store: st,
            state,
            identity,
        } = setup;
        let bs = lc.store.block_size;
        let lu_cfg = LuConfig {
            lun: lc.lun,
            block_size: bs,
            num_blocks: st.len / u64::from(bs),
            read_only: lc.store.read_only,
            write_cache: lc.write_cache,
            thin: lc.thin,
            serial: identity.serial,
            naa: identity.naa,
            target_iqn: self.iqn.clone(),
            ..LuConfig::default()
        };
        if let Err(e) = lu_cfg.validate() {
            tracing::error!(target = %self.name, lun = lc.lun, "LUN not served: {e}");
            return false;
        }
        let store = FileStore::new(st.file, st.len, lc.store.direct).for_device(&lc.device);
        let slot = LunSlot {
            lun: lc.lun,
            device: lc.device.clone(),
            lu: LogicalUnit::new(lu_cfg, store),
            gate: Rc::new(Gate::new(state)),
            metrics: LunMetrics::new(&self.name, lc.lun),
            counters: Cell::default(),
        };
        for (nexus, name) in self.nexus_names.borrow().iter() {
            slot.lu.nexus_named(*nexus, name);
        }
        self.luns.borrow_mut().insert(lc.lun, Rc::new(slot));
        true
    }

    /// Stops serving a LUN (commands already running finish on their own).
    pub fn remove_lun(&self, lun: u64) -> bool {
        self.luns.borrow_mut().remove(&lun).is_some()
    }

    /// Tells the initiators of every LUN that the LUN inventory changed (REPORTED LUNS DATA
    /// HAS CHANGED), after LUNs were added or removed.
    pub fn inventory_changed(&self) {
        let a = scsi::sense::REPORTED_LUNS_DATA_HAS_CHANGED;
        for s in self.luns.borrow().values() {
            s.lu.establish_ua(None, a.0, a.1);
        }
    }

    /// The store of `device` now holds `len` bytes: its LUNs serve that many whole blocks,
    /// live (sessions and commands in flight go on), each of their I_T nexuses told once with
    /// CAPACITY DATA HAS CHANGED. Returns the LUNs whose capacity grew.
    pub fn grow_device(&self, device: &str, len: u64) -> Vec<u64> {
        self.luns
            .borrow()
            .values()
            .filter(|s| s.device == device)
            .filter(|s| s.lu.grow(len / u64::from(s.lu.config().block_size)))
            .map(|s| s.lun)
            .collect()
    }

    /// Who may see this target (new value after a Target update).
    pub fn set_acl(&self, acl: AclPolicy) {
        *self.acl.borrow_mut() = acl;
    }

    /// The current ACL.
    pub fn acl(&self) -> AclPolicy {
        self.acl.borrow().clone()
    }

    /// Every LUN as the status shows it.
    pub fn lun_snapshots(&self) -> Vec<LunSnapshot> {
        self.luns
            .borrow()
            .values()
            .map(|s| LunSnapshot {
                lun: s.lun,
                device: s.device.clone(),
                state: s.gate.state(),
                inflight: s.gate.inflight(),
                fenced: s.gate.refused(),
                counters: s.counters.get(),
            })
            .collect()
    }

    /// LUNs that accept commands (not fenced), in order.
    pub fn live_luns(&self) -> Vec<u64> {
        self.luns
            .borrow()
            .values()
            .filter(|s| s.gate.state() == DrainState::Running)
            .map(|s| s.lun)
            .collect()
    }

    /// Every LUN slot, fenced or not.
    pub fn slots(&self) -> Vec<Rc<LunSlot>> {
        self.luns.borrow().values().cloned().collect()
    }

    /// Executes one SIMPLE SCSI command addressed to `lun`.
    pub async fn execute(
        &self,
        nexus: NexusId,
        lun: u64,
        cdb: &[u8],
        data_out: Vec<u8>,
    ) -> Response {
        let key = TaskKey {
            nexus,
            tag: u64::MAX,
            attr: TaskAttr::Simple,
        };
        self.execute_task(key, lun, cdb, data_out).await
    }

    /// Executes one SCSI command addressed to `lun`, as task `key` of that LUN's task set.
    pub async fn execute_task(
        &self,
        key: TaskKey,
        lun: u64,
        cdb: &[u8],
        data_out: Vec<u8>,
    ) -> Response {
        let nexus = key.nexus;
        if cdb.first() == Some(&REPORT_LUNS) {
            let resp = scsi::target::report_luns(&self.live_luns(), cdb);
            // Reading the inventory clears "reported LUNs data has changed" on every LUN.
            for s in self.luns.borrow().values() {
                s.lu.luns_reported(nexus);
            }
            return resp;
        }
        let slot = self.luns.borrow().get(&lun).cloned();
        let Some(slot) = slot else {
            return scsi::target::absent_lun(cdb, nexus);
        };
        let Some(_admitted) = slot.gate.admit() else {
            return scsi::target::fenced_lun(cdb);
        };
        let m = &slot.metrics;
        m.inflight.inc();
        let start = Instant::now();
        let write_len = data_out.len();
        let resp = slot.lu.execute_task(key, cdb, data_out).await;
        let secs = start.elapsed().as_secs_f64();
        m.inflight.dec();
        let (name, dir) = scsi::opcodes::lookup(cdb, slot.lu.config().thin)
            .map(|op| (op.name, op.dir))
            .unwrap_or(("UNKNOWN", Dir::None));
        match dir {
            Dir::In if is_medium_access(name) => {
                m.read_bytes.inc_by(resp.data_in.len() as u64);
                m.read_latency.observe(secs);
            }
            Dir::Out if is_medium_access(name) => {
                m.write_bytes.inc_by(write_len as u64);
                m.write_latency.observe(secs);
            }
            _ => m.other_latency.observe(secs),
        }
        m.command(name, status_name(resp.status));
        let mut c = slot.counters.get();
        c.commands += 1;
        if is_medium_access(name) {
            match dir {
                Dir::In => c.read_bytes += resp.data_in.len() as u64,
                Dir::Out => c.write_bytes += write_len as u64,
                _ => {}
            }
        }
        slot.counters.set(c);
        resp
    }

    /// Executes a command as it came over iSCSI. Returns the response and how many Data-Out
    /// bytes the CDB asked for (the iSCSI layer reports the difference to the Expected Data
    /// Transfer Length as the write residual; the logical unit uses only what both allow).
    pub async fn execute_transfer(
        &self,
        key: TaskKey,
        lun: u64,
        cdb: &[u8],
        data_out: Vec<u8>,
    ) -> (Response, Option<u32>) {
        let want = self
            .luns
            .borrow()
            .get(&lun)
            .and_then(|s| s.lu.data_out_len(cdb));
        (self.execute_task(key, lun, cdb, data_out).await, want)
    }

    /// A new I_T nexus: its SCSI initiator port name (for reservations).
    pub fn nexus_named(&self, nexus: NexusId, name: &str) {
        self.nexus_names
            .borrow_mut()
            .insert(nexus, name.to_string());
        for s in self.luns.borrow().values() {
            s.lu.nexus_named(nexus, name);
        }
    }

    /// The slot of `lun`, fenced or not.
    pub fn slot(&self, lun: u64) -> Option<Rc<LunSlot>> {
        self.luns.borrow().get(&lun).cloned()
    }

    /// I_T nexus `nexus` is being replaced (session reinstatement): every command of it in a
    /// logical unit is aborted; wait for them with the returned handles.
    pub fn abort_nexus(&self, nexus: NexusId) -> Vec<(Rc<LunSlot>, scsi::Aborted)> {
        self.slots()
            .into_iter()
            .map(|s| {
                let a = s.lu.abort_tasks(|k| k.nexus == nexus);
                (s, a)
            })
            .collect()
    }

    /// ABORT TASK / ABORT TASK SET / logout: the commands `tags` of `nexus` that wait in a
    /// logical unit never start (the session answers for them).
    pub fn abort_tasks(&self, nexus: NexusId, tags: &[crate::iscsi::session::TaskId]) {
        for s in self.luns.borrow().values() {
            let _ =
                s.lu.abort_tasks(|k| k.nexus == nexus && tags.iter().any(|t| t.0 == k.tag));
        }
    }

    /// An I_T nexus ended: forget its unit attentions and registrations.
    pub fn nexus_lost(&self, nexus: NexusId) {
        self.nexus_names.borrow_mut().remove(&nexus);
        for s in self.luns.borrow().values() {
            s.lu.nexus_lost(nexus);
        }
    }

    /// Fences every LUN backed by `device`, waits until the commands accepted before the fence
    /// have finished, and flushes the store. Re-entrant: a drain already flushed reports again.
    pub async fn drain_device(&self, device: &str) -> Result<DrainAck, DrainError> {
        let start = Instant::now();
        let (mine, others): (Vec<_>, Vec<_>) =
            self.slots().into_iter().partition(|s| s.device == device);
        if mine.is_empty() {
            return Err(DrainError::UnknownDevice(device.to_string()));
        }
        let mut drained = 0;
        for s in &mine {
            if s.gate.state() == DrainState::Running {
                s.gate.apply(DrainEvent::Fence)?;
                drained += s.gate.inflight();
                tracing::info!(
                    target = %self.name, lun = s.lun, device,
                    inflight = s.gate.inflight(), "drain: LUN fenced"
                );
                // The initiator learns the LUN inventory changed through the LUNs that stay.
                for o in &others {
                    let a = scsi::sense::REPORTED_LUNS_DATA_HAS_CHANGED;
                    o.lu.establish_ua(None, a.0, a.1);
                }
            }
        }
        if let Some(d) = test_drain_hold() {
            tracing::warn!(target = %self.name, device, "test hook: drain held for {d:?}, fenced");
            tokio::time::sleep(d).await;
        }
        // A store that hangs (a dead disk, a stuck network filesystem) must not hold the
        // drain, and with it a shutdown, forever: past the deadline the drain fails.
        let limit = drain_timeout();
        let timed_out = |what: &str| DrainError::Flush {
            device: device.to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{what} did not finish within {} s", limit.as_secs()),
            ),
        };
        for s in &mine {
            let flushed = async {
                tokio::time::timeout(limit, s.gate.wait_idle())
                    .await
                    .map_err(|_| timed_out("the commands in flight"))?;
                if s.gate.state() == DrainState::Draining {
                    s.gate.apply(DrainEvent::Idle)?;
                }
                if s.gate.state() == DrainState::Released {
                    return Ok(());
                }
                tokio::time::timeout(limit, s.lu.backend().flush())
                    .await
                    .map_err(|_| timed_out("the flush"))?
                    .map_err(|source| DrainError::Flush {
                        device: device.to_string(),
                        source,
                    })?;
                s.gate.apply(DrainEvent::FlushDone)?;
                Ok::<(), DrainError>(())
            };
            if let Err(e) = flushed.await {
                if matches!(e, DrainError::Flush { .. }) {
                    // Not flushed: the LUN says so until a forced release (as the record does).
                    s.gate.apply(DrainEvent::FlushFailed)?;
                }
                return Err(e);
            }
        }
        let fenced: u64 = mine.iter().map(|s| s.gate.refused()).sum();
        let duration = start.elapsed();
        metrics::get()
            .drain_seconds
            .with_label_values(&[&self.name])
            .observe(duration.as_secs_f64());
        tracing::info!(
            target = %self.name, device, drained_commands = drained,
            ms = duration.as_millis() as u64, "drain: flushed"
        );
        Ok(DrainAck::now(
            Some(self.name.clone()),
            mine.iter().map(|s| s.lun).collect(),
            drained,
            fenced,
            duration,
        ))
    }

    /// Flushes every LUN's store without fencing anything: the end of a stop (an agent
    /// restart, a removed Target), after its sessions ended. A failed or hung flush is
    /// reported per Device.
    pub async fn flush_all(&self) -> Vec<(String, Result<Duration, DrainError>)> {
        let limit = drain_timeout();
        let mut out = Vec::new();
        for s in self.slots() {
            if s.gate.state() == DrainState::Released {
                continue;
            }
            let start = Instant::now();
            let r = match tokio::time::timeout(limit, s.lu.backend().flush()).await {
                Ok(Ok(())) => Ok(start.elapsed()),
                Ok(Err(source)) => Err(DrainError::Flush {
                    device: s.device.clone(),
                    source,
                }),
                Err(_) => Err(DrainError::Flush {
                    device: s.device.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the flush did not finish within {} s", limit.as_secs()),
                    ),
                }),
            };
            out.push((s.device.clone(), r));
        }
        out
    }

    /// Closes the stores of a drained Device and removes its LUNs. Only after a flush, unless
    /// `force` (the user accepted the loss): then the LUNs are fenced and dropped unflushed.
    pub fn release_device(&self, device: &str, force: bool) -> Result<Vec<u64>, DrainError> {
        let mine: Vec<Rc<LunSlot>> = self
            .slots()
            .into_iter()
            .filter(|s| s.device == device)
            .collect();
        if mine.is_empty() {
            return Err(DrainError::UnknownDevice(device.to_string()));
        }
        let mut fenced_now = false;
        for s in &mine {
            if force {
                fenced_now |= s.gate.state() == DrainState::Running;
                s.gate.apply(DrainEvent::ForceRelease)?;
            } else {
                s.gate.apply(DrainEvent::Release)?;
            }
        }
        let mut map = self.luns.borrow_mut();
        for s in &mine {
            map.remove(&s.lun);
        }
        drop(map);
        if fenced_now {
            self.inventory_changed();
        }
        Ok(mine.iter().map(|s| s.lun).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::{DeviceIdentity, LunConfig};
    use crate::store::{StoreSource, StoreSpec, open_store};

    fn write10(lba: u32, blocks: u16) -> [u8; 10] {
        let mut c = [0u8; 10];
        c[0] = 0x2A;
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        c[7..9].copy_from_slice(&blocks.to_be_bytes());
        c
    }

    fn target(dir: &std::path::Path, devices: &[(u64, &str)]) -> TargetState {
        let mut luns = Vec::new();
        let mut configs = Vec::new();
        for (lun, dev) in devices {
            let spec = StoreSpec {
                source: StoreSource::File {
                    path: format!("{dev}.img"),
                    size_bytes: 1 << 20,
                },
                block_size: 512,
                read_only: false,
                direct: false,
            };
            let config = LunConfig {
                lun: *lun,
                device: format!("ns/{dev}"),
                store: spec.clone(),
                write_cache: true,
                thin: false,
            };
            let (serial, naa) = crate::engine::identity::device_identity(b"test", &config.device);
            configs.push(config.clone());
            luns.push(LunSetup {
                config,
                store: open_store(&spec, dir, &[]).unwrap(),
                state: DrainState::Running,
                identity: DeviceIdentity { serial, naa },
            });
        }
        let cfg = TargetConfig {
            name: "ns/t".into(),
            iqn: "iqn.2026-11.dev.spindle:ns.t".into(),
            port: 3260,
            acl: AclPolicy::AllowAll,
            chap: None,
            limits: Default::default(),
            luns: configs,
        };
        TargetState::new(&cfg, luns)
    }

    /// Runs `f` on a ring, as the engine thread does.
    fn on_ring<F: std::future::Future<Output = ()>>(f: F) {
        crate::ring::Runtime::new().unwrap().block_on(f);
    }

    #[test]
    fn drain_finishes_admitted_writes_fences_new_ones_and_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let st = Rc::new(target(dir.path(), &[(0, "a"), (1, "b")]));
        on_ring(async {
            let n0 = NexusId(1);
            // Clear the power-on unit attentions first.
            for lun in [0, 1] {
                let _ = st.execute(n0, lun, &[0, 0, 0, 0, 0, 0], Vec::new()).await;
            }
            let mut tasks = Vec::new();
            for i in 0..8u32 {
                let st = st.clone();
                tasks.push(crate::ring::spawn(async move {
                    st.execute(n0, 0, &write10(i * 8, 8), vec![i as u8 + 1; 4096])
                        .await
                }));
            }
            // Let every write start (be admitted) before the fence goes up.
            tokio::task::yield_now().await;
            assert_eq!(st.slots()[0].gate.inflight(), 8);
            let report = st.drain_device("ns/a").await.unwrap();
            assert_eq!(report.drained_commands, 8);
            assert_eq!(report.fenced_commands, 0);
            assert_eq!(st.slots()[0].gate.state(), DrainState::Flushed);
            for t in tasks {
                assert_eq!(
                    t.await.unwrap().status,
                    Status::Good,
                    "admitted writes complete"
                );
            }
            // After the fence: 25h/00h, nothing executed.
            let r = st.execute(n0, 0, &write10(100, 1), vec![0xEE; 512]).await;
            assert_eq!(r.status, Status::CheckCondition);
            assert_eq!((r.sense[12], r.sense[13]), (0x25, 0x00));
            // The other LUN reports the inventory change once, then works.
            let tur = [0u8; 6];
            let r = st.execute(n0, 1, &tur, Vec::new()).await;
            assert_eq!((r.sense[12], r.sense[13]), (0x3F, 0x0E));
            assert_eq!(
                st.execute(n0, 1, &tur, Vec::new()).await.status,
                Status::Good
            );
            assert_eq!(st.live_luns(), vec![1]);
            // Re-entrant: a second drain reports flushed again, counting the refused write.
            let again = st.drain_device("ns/a").await.unwrap();
            assert_eq!(again.fenced_commands, 1);
            let lun0 = &st.lun_snapshots()[0];
            assert_eq!((lun0.state, lun0.fenced), (DrainState::Flushed, 1));
            assert_eq!(lun0.counters.commands, 9, "TUR and 8 writes ran");
            assert_eq!(lun0.counters.write_bytes, 8 * 4096);
            assert_eq!(st.release_device("ns/a", false).unwrap(), vec![0]);
        });
        let data = std::fs::read(dir.path().join("a.img")).unwrap();
        for i in 0..8usize {
            assert!(
                data[i * 4096..(i + 1) * 4096]
                    .iter()
                    .all(|&b| b == i as u8 + 1)
            );
        }
        assert!(
            data[100 * 512..101 * 512].iter().all(|&b| b == 0),
            "fenced write not executed"
        );
    }

    #[test]
    fn release_before_flush_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let st = target(dir.path(), &[(0, "a")]);
        assert!(matches!(
            st.release_device("ns/a", false),
            Err(DrainError::Transition(_))
        ));
        assert!(matches!(
            st.release_device("ns/x", false),
            Err(DrainError::UnknownDevice(_))
        ));
    }

    #[test]
    fn a_forced_release_drops_an_unflushed_lun_and_tells_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let st = target(dir.path(), &[(0, "a"), (1, "b")]);
        on_ring(async {
            let n0 = NexusId(1);
            let tur = [0u8; 6];
            for lun in [0, 1] {
                let _ = st.execute(n0, lun, &tur, Vec::new()).await;
            }
            assert_eq!(st.release_device("ns/a", true).unwrap(), vec![0]);
            assert_eq!(st.live_luns(), vec![1]);
            let r = st.execute(n0, 1, &tur, Vec::new()).await;
            assert_eq!((r.sense[12], r.sense[13]), (0x3F, 0x0E));
        });
    }

    #[test]
    fn a_lun_added_later_serves_and_a_fenced_one_starts_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let st = target(dir.path(), &[(0, "a")]);
        let spec = StoreSpec {
            source: StoreSource::File {
                path: "c.img".into(),
                size_bytes: 1 << 20,
            },
            block_size: 512,
            read_only: false,
            direct: false,
        };
        let setup = |lun, state| LunSetup {
            config: LunConfig {
                lun,
                device: "ns/c".into(),
                store: spec.clone(),
                write_cache: true,
                thin: false,
            },
            store: open_store(&spec, dir.path(), &[]).unwrap(),
            state,
            identity: DeviceIdentity {
                serial: "c".into(),
                naa: [0x30; 8],
            },
        };
        assert!(st.add_lun(setup(3, DrainState::Running)));
        assert!(st.add_lun(setup(4, DrainState::Flushed)));
        assert_eq!(st.live_luns(), vec![0, 3], "the fenced LUN is not reported");
        on_ring(async {
            let n0 = NexusId(1);
            let r = st.execute(n0, 4, &write10(0, 1), vec![1; 512]).await;
            assert_eq!((r.sense[12], r.sense[13]), (0x25, 0x00));
        });
        assert!(st.remove_lun(3));
        assert!(!st.remove_lun(3));
        assert_eq!(st.live_luns(), vec![0]);
    }
}
