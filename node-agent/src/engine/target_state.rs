//! One target's state inside its engine thread: the LUN map, and the command path with
//! admission (the drain gate), in-flight accounting and metrics. The drain of a Device over
//! this state is in `device_drain.rs`, a snapshot's write barrier in `device_barrier.rs`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Instant;

use super::admission::Share;
use super::barrier::WriteBarrier;
use super::config::{LunSetup, TargetConfig};
use super::drain::{DrainState, Gate};
use super::throttle::Throttle;
use crate::iscsi::login::AclPolicy;
use crate::metrics::LunMetrics;
use crate::scsi::opcodes::Dir;
use crate::scsi::{
    self, Decoded, LogicalUnit, LuConfig, NexusId, Response, Status, TaskAttr, TaskKey,
};
use crate::store::FileStore;

/// Runs a SANITIZE accepted with IMMED after its command ended, admitted through the LUN's
/// drain gate like a command (a drain waits for it); a LUN already draining drops it.
fn spawn_background_sanitize(slot: &Rc<LunSlot>) {
    let Some(admitted) = slot.gate.admit() else {
        slot.lu.cancel_background_sanitize();
        return;
    };
    let slot = slot.clone();
    tokio::task::spawn_local(async move {
        let _admitted = admitted;
        slot.lu.run_background_sanitize().await;
    });
}

/// SCSI opcode of REPORT LUNS, answered at target level.
const REPORT_LUNS: u8 = 0xA0;

/// One LUN: its logical unit, its drain gate, its metrics and counters.
pub struct LunSlot {
    pub lun: u64,
    /// `namespace/name` of the Device behind it.
    pub device: String,
    pub lu: LogicalUnit<FileStore>,
    pub gate: Rc<Gate>,
    /// A snapshot's write barrier (`barrier.rs`).
    pub barrier: Rc<WriteBarrier>,
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

impl LunSlot {
    /// Counts a finished command in the LUN's metrics and counters: the bytes of the commands
    /// that read or write the medium (the opcode table says which) as its traffic.
    fn record(&self, command: &Decoded, resp: &Response, write_len: usize, secs: f64) {
        let m = &self.metrics;
        let medium_io = command.medium_io();
        let dir = command.dir();
        match dir {
            Dir::In if medium_io => {
                m.read_bytes.inc_by(resp.data_in.len() as u64);
                m.read_latency.observe(secs);
            }
            Dir::Out if medium_io => {
                m.write_bytes.inc_by(write_len as u64);
                m.write_latency.observe(secs);
            }
            _ => m.other_latency.observe(secs),
        }
        m.command(command.name(), status_name(resp.status));
        let mut c = self.counters.get();
        c.commands += 1;
        if medium_io {
            match dir {
                Dir::In => c.read_bytes += resp.data_in.len() as u64,
                Dir::Out => c.write_bytes += write_len as u64,
                Dir::None => {}
            }
        }
        self.counters.set(c);
    }
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
    pub(super) luns: RefCell<BTreeMap<u64, Rc<LunSlot>>>,
    /// SCSI initiator port names of the live nexuses (a LUN added later learns them too).
    nexus_names: RefCell<BTreeMap<NexusId, String>>,
    /// Its turn at the stores and its part of the CmdSN window, among its ring's targets.
    pub share: Share,
    /// `spec.qos` limits: commands wait here before admission.
    pub throttle: Throttle,
    /// Commands waiting for the limits now (so an abort can reach them).
    throttled: RefCell<Vec<Rc<Throttled>>>,
}

/// A command waiting for the Target's QoS limits. It is in no task set yet: an abort (ABORT
/// TASK, a reset, its nexus replaced) marks and wakes it here, and it never starts.
struct Throttled {
    nexus: NexusId,
    tag: u64,
    lun: u64,
    aborted: Cell<bool>,
    wake: tokio::sync::Notify,
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
            share: Share::new(config.weight),
            throttle: Throttle::new(&config.name, config.qos),
            throttled: RefCell::default(),
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
            reservations,
        } = setup;
        let bs = lc.store.block_size;
        let lu_cfg = LuConfig {
            lun: lc.lun,
            block_size: bs,
            num_blocks: st.len / u64::from(bs),
            read_only: lc.store.read_only,
            write_cache: lc.write_cache,
            thin: lc.thin,
            physical_block_exp: lc.physical_block_exp,
            serial: identity.serial,
            naa: identity.naa,
            target_iqn: self.iqn.clone(),
            pr_file: reservations.file,
            pr_always: reservations.always,
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
            barrier: Rc::default(),
            metrics: LunMetrics::new(&self.name, lc.lun),
            counters: Cell::default(),
        };
        // Serving without the reservations that fence other hosts is worse than not serving.
        if let Err(e) = slot.lu.restore_reservations(reservations.restored) {
            tracing::error!(
                target = %self.name, lun = lc.lun, device = %lc.device,
                "LUN not served: its persistent reservations could not be saved: {e}"
            );
            return false;
        }
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
        self.execute_transfer(key, lun, cdb, data_out).await.0
    }

    /// Executes a command as it came over iSCSI, as task `key` of its LUN's task set. Returns
    /// the response and how many Data-Out bytes the CDB asked for (the iSCSI layer reports the
    /// difference to the Expected Data Transfer Length as the write residual; the logical unit
    /// uses only what both allow).
    pub async fn execute_transfer(
        &self,
        key: TaskKey,
        lun: u64,
        cdb: &[u8],
        data_out: Vec<u8>,
    ) -> (Response, Option<u32>) {
        let nexus = key.nexus;
        if cdb.first() == Some(&REPORT_LUNS) {
            let resp = scsi::lun_inventory::report_luns(&self.live_luns(), cdb);
            // Reading the inventory clears "reported LUNs data has changed" on every LUN.
            for s in self.luns.borrow().values() {
                s.lu.luns_reported(nexus);
            }
            return (resp, None);
        }
        let slot = self.luns.borrow().get(&lun).cloned();
        let Some(slot) = slot else {
            return (scsi::lun_inventory::absent_lun(cdb, nexus), None);
        };
        // Looked up and decoded once: the Data-Out length, the logical unit and the metrics
        // all read this value.
        let command = slot.lu.decode(cdb);
        let want = slot.lu.data_out_len(&command);
        // A command over the Target's limits waits before admission (it is not in flight
        // yet, so a drain does not wait for it; a fence meanwhile refuses it below).
        if self.throttle.holds(&command)
            && !self
                .wait_for_limits(key, lun, &command, slot.lu.config().block_size)
                .await
        {
            return (Response::status(Status::TaskAborted), want);
        }
        // A snapshot's barrier: writes wait (reads go on), then are admitted as any command.
        let _passed = match command.may_write() {
            true => Some(slot.barrier.pass().await),
            false => None,
        };
        let Some(_admitted) = slot.gate.admit() else {
            return (scsi::lun_inventory::fenced_lun(cdb), want);
        };
        slot.metrics.inflight.inc();
        let start = Instant::now();
        let write_len = data_out.len();
        let resp = slot
            .lu
            .execute_admitted(key, &command, data_out, self.share.admit())
            .await;
        if slot.lu.has_background_sanitize() {
            spawn_background_sanitize(&slot);
        }
        let secs = start.elapsed().as_secs_f64();
        slot.metrics.inflight.dec();
        slot.record(&command, &resp, write_len, secs);
        (resp, want)
    }

    /// Waits until the QoS limits admit `command`; false if it was aborted meanwhile.
    async fn wait_for_limits(
        &self,
        key: TaskKey,
        lun: u64,
        command: &Decoded,
        block_size: u32,
    ) -> bool {
        let me = Rc::new(Throttled {
            nexus: key.nexus,
            tag: key.tag,
            lun,
            aborted: Cell::new(false),
            wake: tokio::sync::Notify::new(),
        });
        self.throttled.borrow_mut().push(me.clone());
        tokio::select! {
            () = self.throttle.admit(command, block_size) => {}
            () = me.wake.notified() => {}
        }
        self.throttled.borrow_mut().retain(|t| !Rc::ptr_eq(t, &me));
        !me.aborted.get()
    }

    /// Aborts the commands waiting for the QoS limits that `which` picks.
    fn abort_throttled(&self, which: impl Fn(&Throttled) -> bool) {
        for t in self.throttled.borrow().iter().filter(|t| which(t)) {
            t.aborted.set(true);
            t.wake.notify_one();
        }
    }

    /// A task management function aborts every task of `lun` (None: of every LUN): the
    /// commands still waiting for the QoS limits never start.
    pub fn abort_throttled_on(&self, lun: Option<u64>) {
        self.abort_throttled(|t| lun.is_none_or(|l| l == t.lun));
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
        self.abort_throttled(|t| t.nexus == nexus);
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
        self.abort_throttled(|t| t.nexus == nexus && tags.iter().any(|g| g.0 == t.tag));
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
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::engine::config::{DeviceIdentity, LunConfig};
    use crate::store::{StoreSource, StoreSpec, open_store};

    pub(in crate::engine) fn write10(lba: u32, blocks: u16) -> [u8; 10] {
        let mut c = [0u8; 10];
        c[0] = 0x2A;
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        c[7..9].copy_from_slice(&blocks.to_be_bytes());
        c
    }

    pub(in crate::engine) fn target(dir: &std::path::Path, devices: &[(u64, &str)]) -> TargetState {
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
                physical_block_exp: 0,
            };
            let (serial, naa) = crate::engine::identity::device_identity(b"test", &config.device);
            configs.push(config.clone());
            luns.push(LunSetup {
                config,
                store: open_store(&spec, dir, &[]).unwrap(),
                state: DrainState::Running,
                identity: DeviceIdentity { serial, naa },
                reservations: Default::default(),
            });
        }
        let cfg = TargetConfig {
            name: "ns/t".into(),
            iqn: "iqn.2026-11.dev.spindle:ns.t".into(),
            port: 3260,
            acl: AclPolicy::AllowAll,
            chap: None,
            limits: Default::default(),
            weight: 1,
            qos: Default::default(),
            luns: configs,
        };
        TargetState::new(&cfg, luns)
    }

    /// Runs `f` on a ring, as the engine thread does.
    pub(in crate::engine) fn on_ring<F: std::future::Future<Output = ()>>(f: F) {
        crate::ring::Runtime::new().unwrap().block_on(f);
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
                physical_block_exp: 0,
            },
            store: open_store(&spec, dir.path(), &[]).unwrap(),
            state,
            identity: DeviceIdentity {
                serial: "c".into(),
                naa: [0x30; 8],
            },
            reservations: Default::default(),
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

#[cfg(test)]
mod throttled_tests {
    use super::tests::{on_ring, target};
    use super::*;
    use crate::engine::token_bucket::{DirLimits, QosLimits};
    use crate::iscsi::session::TaskId;
    use std::time::Duration;

    fn read10(lba: u32) -> [u8; 10] {
        let mut c = [0u8; 10];
        c[0] = 0x28;
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        c[8] = 1;
        c
    }

    #[test]
    fn a_command_waiting_for_the_limits_is_aborted_and_never_starts() {
        let dir = tempfile::tempdir().unwrap();
        let st = Rc::new(target(dir.path(), &[(0, "a")]));
        st.throttle.set(QosLimits {
            read: DirLimits {
                iops: Some(1),
                bytes_per_second: None,
            },
            burst_seconds: 0,
            ..QosLimits::default()
        });
        on_ring(async {
            let key = |tag| TaskKey {
                nexus: NexusId(1),
                tag,
                attr: TaskAttr::Simple,
            };
            // The power-on unit attention goes to a command the limits do not hold.
            st.execute(NexusId(1), 0, &[0u8; 6], vec![]).await;
            let (r, _) = st.execute_transfer(key(1), 0, &read10(0), vec![]).await;
            assert_eq!(r.status, Status::Good, "the first read passes");
            let s2 = st.clone();
            let held = crate::ring::spawn(async move {
                let started = Instant::now();
                let (r, _) = s2.execute_transfer(key(2), 0, &read10(1), vec![]).await;
                (r.status, started.elapsed())
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            // Another task's abort leaves it waiting; its own ends it at once.
            st.abort_tasks(NexusId(1), &[TaskId(7)]);
            st.abort_tasks(NexusId(1), &[TaskId(2)]);
            let (status, took) = held.await.unwrap();
            assert_eq!(status, Status::TaskAborted);
            assert!(took < Duration::from_millis(500), "{took:?}");
            assert!(st.throttled.borrow().is_empty());
            // Unlimited again: nothing waits.
            st.throttle.set(QosLimits::default());
            assert!(
                !st.throttle
                    .holds(&st.slot(0).unwrap().lu.decode(&read10(2)))
            );
        });
    }
}
