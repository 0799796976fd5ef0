//! One target's state inside its engine thread: the LUN map, command dispatch with admission and
//! in-flight accounting, and the drain of a Device (the agent's side of the delete protocol).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::config::{LunConfig, TargetConfig};
use super::drain::{DrainEvent, DrainState, Gate, InvalidTransition};
use crate::metrics::{self, LunMetrics};
use crate::scsi::{self, LogicalUnit, LuConfig, NexusId, Response};
use crate::store::{FileStore, OpenedStore};

/// SCSI opcode of REPORT LUNS, answered at target level.
const REPORT_LUNS: u8 = 0xA0;

/// One LUN: its logical unit, its drain gate and its metrics.
pub struct LunSlot {
    pub lun: u64,
    /// `namespace/name` of the Device behind it.
    pub device: String,
    pub lu: LogicalUnit<FileStore>,
    pub gate: Rc<Gate>,
    metrics: LunMetrics,
}

/// What a finished drain reports: the flush acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainReport {
    pub device: String,
    pub luns: Vec<u64>,
    /// Commands that were in flight when the fence went up (all of them finished).
    pub drained_commands: u32,
    pub duration: Duration,
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

/// Identity of a Device as SCSI shows it: a unit serial number and an NAA designator, stable
/// across restarts (derived from the Device's namespace/name).
pub fn device_identity(device: &str) -> (String, [u8; 16]) {
    use md5::{Digest, Md5};
    let h: [u8; 16] = Md5::digest(device.as_bytes()).into();
    let serial = hex::encode(&h[..8]);
    let mut naa = h;
    // NAA 6 (IEEE Registered Extended); the rest of the bits are ours.
    naa[0] = 0x60 | (naa[0] & 0x0F);
    (serial, naa)
}

/// The target as its engine thread sees it.
pub struct TargetState {
    pub config: TargetConfig,
    luns: RefCell<BTreeMap<u64, Rc<LunSlot>>>,
}

impl TargetState {
    /// Builds the target from its config and the stores opened for its LUNs (same order).
    pub fn new(config: TargetConfig, stores: Vec<(LunConfig, OpenedStore)>) -> Self {
        let mut luns = BTreeMap::new();
        for (lc, st) in stores {
            let (serial, naa) = device_identity(&lc.device);
            let bs = lc.store.block_size;
            let lu_cfg = LuConfig {
                lun: lc.lun,
                block_size: bs,
                num_blocks: st.len / u64::from(bs),
                read_only: lc.store.read_only,
                write_cache: lc.write_cache,
                thin: lc.thin,
                serial,
                naa,
                target_iqn: config.iqn.clone(),
                ..LuConfig::default()
            };
            let store = FileStore::new(st.file, st.len, lc.store.direct);
            let slot = LunSlot {
                lun: lc.lun,
                device: lc.device.clone(),
                lu: LogicalUnit::new(lu_cfg, store),
                gate: Rc::new(Gate::default()),
                metrics: LunMetrics::new(&config.name, lc.lun),
            };
            luns.insert(lc.lun, Rc::new(slot));
        }
        TargetState {
            config,
            luns: RefCell::new(luns),
        }
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

    /// Executes one SCSI command addressed to `lun`.
    pub async fn execute(
        &self,
        nexus: NexusId,
        lun: u64,
        cdb: &[u8],
        data_out: Vec<u8>,
    ) -> Response {
        if cdb.first() == Some(&REPORT_LUNS) {
            return scsi::target::report_luns(&self.live_luns(), cdb);
        }
        let slot = self.luns.borrow().get(&lun).cloned();
        let Some(slot) = slot else {
            return scsi::target::absent_lun(cdb);
        };
        let Some(_admitted) = slot.gate.admit() else {
            return scsi::target::fenced_lun(cdb);
        };
        let m = &slot.metrics;
        m.inflight.inc();
        let start = Instant::now();
        let write_len = data_out.len();
        let resp = slot.lu.execute(nexus, cdb, data_out).await;
        let secs = start.elapsed().as_secs_f64();
        m.inflight.dec();
        let name = scsi::opcode_name(cdb);
        match scsi::io_class(cdb) {
            scsi::IoClass::Read => {
                m.read_bytes.inc_by(resp.data_in.len() as u64);
                m.read_latency.observe(secs);
            }
            scsi::IoClass::Write => {
                m.write_bytes.inc_by(write_len as u64);
                m.write_latency.observe(secs);
            }
            scsi::IoClass::Other => m.other_latency.observe(secs),
        }
        m.command(name, resp.status.name());
        resp
    }

    /// Raises a unit attention for every I_T nexus on every LUN.
    pub fn unit_attention_all(&self, asc: u8, ascq: u8) {
        for s in self.luns.borrow().values() {
            s.lu.establish_ua(None, asc, ascq);
        }
    }

    /// A new I_T nexus: its SCSI initiator port name (for reservations).
    pub fn nexus_named(&self, nexus: NexusId, name: &str) {
        for s in self.luns.borrow().values() {
            s.lu.nexus_named(nexus, name);
        }
    }

    /// LOGICAL UNIT RESET of one LUN (unknown LUNs are ignored: nothing to reset).
    pub fn lun_reset(&self, lun: u64) {
        if let Some(s) = self.luns.borrow().get(&lun) {
            s.lu.reset();
        }
    }

    /// TARGET WARM/COLD RESET: every LUN.
    pub fn target_reset(&self) {
        for s in self.luns.borrow().values() {
            s.lu.reset();
        }
    }

    /// An I_T nexus ended: forget its unit attentions and registrations.
    pub fn nexus_lost(&self, nexus: NexusId) {
        for s in self.luns.borrow().values() {
            s.lu.nexus_lost(nexus);
        }
    }

    /// Fences every LUN backed by `device`, waits until the commands accepted before the fence
    /// have finished, and flushes the store. Re-entrant: a drain already flushed reports again.
    pub async fn drain_device(&self, device: &str) -> Result<DrainReport, DrainError> {
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
                    target = %self.config.name, lun = s.lun, device,
                    inflight = s.gate.inflight(), "drain: LUN fenced"
                );
                // The initiator learns the LUN inventory changed through the LUNs that stay.
                for o in &others {
                    o.lu.establish_ua(
                        None,
                        scsi::sense::asc::REPORTED_LUNS_DATA_HAS_CHANGED.0,
                        scsi::sense::asc::REPORTED_LUNS_DATA_HAS_CHANGED.1,
                    );
                }
                s.gate.apply(DrainEvent::Fenced)?;
            }
        }
        for s in &mine {
            s.gate.wait_idle().await;
            if s.gate.state() == DrainState::Draining {
                s.gate.apply(DrainEvent::Idle)?;
            }
            if s.gate.state() == DrainState::Released {
                continue;
            }
            s.lu.backend()
                .flush()
                .await
                .map_err(|source| DrainError::Flush {
                    device: device.to_string(),
                    source,
                })?;
            s.gate.apply(DrainEvent::FlushDone)?;
        }
        let duration = start.elapsed();
        metrics::get()
            .drain_seconds
            .with_label_values(&[&self.config.name])
            .observe(duration.as_secs_f64());
        tracing::info!(
            target = %self.config.name, device, drained_commands = drained,
            ms = duration.as_millis() as u64, "drain: flushed"
        );
        Ok(DrainReport {
            device: device.to_string(),
            luns: mine.iter().map(|s| s.lun).collect(),
            drained_commands: drained,
            duration,
        })
    }

    /// Drains every Device of the target (shutdown).
    pub async fn drain_all(&self) -> Vec<Result<DrainReport, DrainError>> {
        let mut devices: Vec<String> = self.slots().iter().map(|s| s.device.clone()).collect();
        devices.dedup();
        let mut out = Vec::new();
        for d in devices {
            out.push(self.drain_device(&d).await);
        }
        out
    }

    /// Closes the stores of a drained Device and removes its LUNs. Only after a flush.
    pub fn release_device(&self, device: &str) -> Result<Vec<u64>, DrainError> {
        let mine: Vec<Rc<LunSlot>> = self
            .slots()
            .into_iter()
            .filter(|s| s.device == device)
            .collect();
        if mine.is_empty() {
            return Err(DrainError::UnknownDevice(device.to_string()));
        }
        for s in &mine {
            s.gate.apply(DrainEvent::Release)?;
        }
        let mut map = self.luns.borrow_mut();
        for s in &mine {
            map.remove(&s.lun);
        }
        Ok(mine.iter().map(|s| s.lun).collect())
    }
}
