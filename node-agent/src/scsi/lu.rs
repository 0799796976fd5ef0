//! The logical unit: configuration, state, and the command pipeline (unit attention,
//! reservation and readiness checks, dispatch) for a command decoded once on arrival
//! ([`Decoded`]). The command handlers live in
//! `spc.rs`, `sbc.rs`, `mode.rs`, `pr.rs` as further `impl` blocks of [`LogicalUnit`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::Bytes;

use super::command::{Command, Decoded};
use super::mode::ModeState;
use super::opcodes::{self, Medium, OpInfo, UaPolicy};
use super::pr::Reservations;
use super::sanitize::SanitizeState;
use super::sense::{
    Asc, BUS_DEVICE_RESET, CAPACITY_DATA_HAS_CHANGED, LU_NOT_READY_INIT_REQUIRED, POWER_ON_RESET,
    REPORTED_LUNS_DATA_HAS_CHANGED, Sense, SenseKey,
};
use super::taskset::{Aborted, TaskAttr, TaskKey, TaskSet};
use super::ua::Nexuses;
use super::xcopy::HeldResults;
use super::{Backend, NexusId, Response, Status};

/// Everything a logical unit needs to know about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LuConfig {
    /// The LUN (as in REPORT LUNS, single-level).
    pub lun: u64,
    /// Logical block size in bytes (512 or 4096).
    pub block_size: u32,
    /// Number of logical blocks.
    pub num_blocks: u64,
    /// Write-protected medium.
    pub read_only: bool,
    /// Write cache enabled (caching mode page WCE) at start.
    pub write_cache: bool,
    /// Thin provisioning: UNMAP, WRITE SAME with UNMAP, LBPME.
    pub thin: bool,
    /// T10 vendor identification (up to 8 ASCII characters).
    pub vendor: String,
    /// Product identification (up to 16 ASCII characters).
    pub product: String,
    /// Product revision level (up to 4 ASCII characters).
    pub revision: String,
    /// Unit serial number (VPD 80h).
    pub serial: String,
    /// The logical unit's NAA designator for VPD 83h: 8 bytes, NAA 3 (locally assigned) or
    /// NAA 5 (IEEE Registered, for whoever has a company ID).
    pub naa: [u8; 8],
    /// The target's IQN (SCSI target device name in VPD 83h).
    pub target_iqn: String,
    /// Target port group (VPD 83h, REPORT TARGET PORT GROUPS).
    pub target_port_group: u16,
    /// Relative target port identifier (VPD 83h).
    pub relative_port: u16,
    /// Logical blocks per physical block, as a power of two (READ CAPACITY(16)): the store's
    /// allocation unit, e.g. 3 for 512-byte blocks on a filesystem with 4 KiB blocks.
    pub physical_block_exp: u8,
    /// Where persistent reservations are kept when they persist through power loss (None:
    /// they never do, PTPL_C is 0).
    pub pr_file: Option<std::path::PathBuf>,
    /// Persist reservations whatever the initiator's APTPL says (a Device's
    /// `reservationPersistence: Always`).
    pub pr_always: bool,
}

impl Default for LuConfig {
    fn default() -> Self {
        LuConfig {
            lun: 0,
            block_size: 512,
            num_blocks: 0,
            read_only: false,
            write_cache: true,
            thin: false,
            vendor: "SPINDLE".into(),
            product: "SPINDLE DISK".into(),
            revision: "0001".into(),
            serial: String::new(),
            naa: [0x30, 0, 0, 0, 0, 0, 0, 0],
            target_iqn: String::new(),
            target_port_group: 1,
            relative_port: 1,
            physical_block_exp: 0,
            pr_file: None,
            pr_always: false,
        }
    }
}

/// Why an [`LuConfig`] cannot describe a logical unit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The block size is not a power of two between 512 and 65536.
    #[error("block size {0} is not a power of two between 512 and 65536")]
    BlockSize(u32),
    /// The capacity in bytes does not fit in 64 bits.
    #[error("{blocks} blocks of {block_size} bytes overflow 64-bit byte offsets")]
    Capacity { blocks: u64, block_size: u32 },
    /// The NAA designator is not NAA 3 or 5 (first nibble), the 8-byte formats.
    #[error("NAA designator must start with nibble 3 or 5, not {0:#x}")]
    Naa(u8),
    /// The physical block exponent does not fit its 4-bit field.
    #[error("logical blocks per physical block exponent {0} exceeds 15")]
    PhysicalBlockExp(u8),
}

impl LuConfig {
    /// The SCSI target port name initiators reach this unit through (`iqn,t,0x<port>`).
    pub fn target_port_name(&self) -> String {
        format!("{},t,0x{:04x}", self.target_iqn, self.relative_port)
    }

    /// Checks that the configuration describes a unit this engine can serve.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bs = self.block_size;
        if !bs.is_power_of_two() || !(512..=65536).contains(&bs) {
            return Err(ConfigError::BlockSize(bs));
        }
        if self.num_blocks.checked_mul(u64::from(bs)).is_none() {
            return Err(ConfigError::Capacity {
                blocks: self.num_blocks,
                block_size: bs,
            });
        }
        let naa = self.naa[0] >> 4;
        if naa != 3 && naa != 5 {
            return Err(ConfigError::Naa(naa));
        }
        if self.physical_block_exp > 15 {
            return Err(ConfigError::PhysicalBlockExp(self.physical_block_exp));
        }
        Ok(())
    }
}

/// Why a command did not end GOOD.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fail {
    /// CHECK CONDITION with this sense.
    Check(Sense),
    /// RESERVATION CONFLICT.
    Conflict,
}

impl From<Sense> for Fail {
    fn from(s: Sense) -> Self {
        Fail::Check(s)
    }
}

/// What a handler returns: Data-In on success.
pub(crate) type Out = Result<Vec<u8>, Fail>;

/// A finished command: its Data-In, the Data-Out allocation to reuse, and the nexuses a
/// PREEMPT AND ABORT aborted.
type Done = (Bytes, Vec<u8>, Vec<NexusId>);

/// One SCSI logical unit over a backend. Single-threaded: all state is in `Cell`/`RefCell`,
/// and the engine drives it from one thread.
pub struct LogicalUnit<B: Backend> {
    /// As built; the capacity may have grown since (`blocks`).
    pub(super) cfg: LuConfig,
    /// Number of logical blocks now: `cfg.num_blocks` at start, raised by
    /// [`LogicalUnit::grow`].
    blocks: Cell<u64>,
    pub(super) backend: B,
    pub(super) nexuses: RefCell<Nexuses>,
    pub(super) mode: Cell<ModeState>,
    /// Stopped by START STOP UNIT (START=0): medium commands fail NOT READY.
    pub(super) stopped: Cell<bool>,
    /// Nexuses that have PREVENT set.
    pub(super) prevent: RefCell<Vec<NexusId>>,
    pub(super) reservations: RefCell<Reservations>,
    /// Writes take it shared; COMPARE AND WRITE takes it exclusively, so its
    /// read-compare-write is atomic with respect to other writes on this unit.
    pub(super) io_guard: tokio::sync::RwLock<()>,
    /// EXTENDED COPY results held for RECEIVE COPY RESULTS.
    pub(super) copies: RefCell<HeldResults>,
    /// Every command from arrival to end, for task attributes and aborts.
    pub(super) tasks: Rc<TaskSet>,
    /// Initiator port names a PREEMPT AND ABORT just removed (its tasks to abort).
    pub(super) preempted: RefCell<Vec<String>>,
    /// Unit attentions a PERSISTENT RESERVE OUT owes other nexuses, sent once its change
    /// stands.
    pub(super) pr_notes: RefCell<Vec<(Vec<String>, Asc)>>,
    /// A SANITIZE running or failed.
    pub(super) sanitize_state: SanitizeState,
}

impl<B: Backend> LogicalUnit<B> {
    /// Builds a logical unit from its configuration and backend. Call
    /// [`LuConfig::validate`] first: a configuration that fails it yields a unit with no
    /// capacity (every medium access is out of range) rather than a panic.
    pub fn new(mut cfg: LuConfig, backend: B) -> Self {
        if let Err(e) = cfg.validate() {
            tracing::error!(lun = cfg.lun, error = %e, "invalid logical unit configuration");
            if matches!(e, ConfigError::BlockSize(_) | ConfigError::Capacity { .. }) {
                cfg.block_size = 512;
                cfg.num_blocks = 0;
            }
        }
        let mode = ModeState::initial(&cfg);
        LogicalUnit {
            blocks: Cell::new(cfg.num_blocks),
            cfg,
            backend,
            nexuses: RefCell::new(Nexuses::default()),
            mode: Cell::new(mode),
            stopped: Cell::new(false),
            prevent: RefCell::new(Vec::new()),
            reservations: RefCell::new(Reservations::default()),
            io_guard: tokio::sync::RwLock::new(()),
            copies: RefCell::new(HeldResults::default()),
            tasks: Rc::new(TaskSet::default()),
            preempted: RefCell::new(Vec::new()),
            pr_notes: RefCell::new(Vec::new()),
            sanitize_state: SanitizeState::default(),
        }
    }

    /// The configuration this unit was built from (its `num_blocks` is the capacity at start:
    /// see [`LogicalUnit::num_blocks`]).
    pub fn config(&self) -> &LuConfig {
        &self.cfg
    }

    /// Number of logical blocks served now.
    pub fn num_blocks(&self) -> u64 {
        self.blocks.get()
    }

    /// Grows the capacity to `num_blocks` live: the backend must already hold that many blocks.
    /// Commands in flight finish as they started; later ones see the new capacity, and every
    /// I_T nexus gets CAPACITY DATA HAS CHANGED (2Ah/09h) once (SPC-4 6.6, SBC-3 4.6: READ
    /// CAPACITY then reports the new size). Returns whether the capacity changed: a size that
    /// is not larger, or that overflows 64-bit byte offsets, changes nothing.
    pub fn grow(&self, num_blocks: u64) -> bool {
        let bs = u64::from(self.cfg.block_size);
        if num_blocks <= self.blocks.get() || num_blocks.checked_mul(bs).is_none() {
            return false;
        }
        self.blocks.set(num_blocks);
        self.backend.resized(num_blocks * bs);
        self.nexuses
            .borrow_mut()
            .establish(None, CAPACITY_DATA_HAS_CHANGED);
        true
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Establishes a unit attention for one I_T nexus, or for every nexus (`None`). Nexuses
    /// not seen yet get POWER ON, RESET, OR BUS DEVICE RESET OCCURRED on first contact anyway.
    pub fn establish_ua(&self, nexus: Option<NexusId>, asc: u8, ascq: u8) {
        self.nexuses.borrow_mut().establish(nexus, Asc(asc, ascq));
    }

    /// Records the initiator port name of a nexus (`iqn...,i,0x<isid>`), which persistent
    /// reservations use to identify registrants across sessions.
    pub fn nexus_named(&self, nexus: NexusId, name: &str) {
        self.nexuses.borrow_mut().touch(nexus).name = Some(name.to_owned());
    }

    /// The engine answered REPORT LUNS (with [`super::lun_inventory::report_luns`]) for `nexus`
    /// through this unit: clears its REPORTED LUNS DATA HAS CHANGED unit attention.
    pub fn luns_reported(&self, nexus: NexusId) {
        self.nexuses
            .borrow_mut()
            .clear(nexus, REPORTED_LUNS_DATA_HAS_CHANGED);
    }

    /// The I_T nexus is gone (session closed or lost): aborts its commands (those not
    /// started never start), drops its unit attentions, its RESERVE(6/10) reservation and its
    /// PREVENT state. Persistent reservations stay.
    pub fn nexus_lost(&self, nexus: NexusId) {
        let _ = self.tasks.abort(|k| k.nexus == nexus);
        self.nexuses.borrow_mut().remove(nexus);
        self.reservations.borrow_mut().nexus_lost(nexus);
        self.prevent.borrow_mut().retain(|n| *n != nexus);
        self.copies.borrow_mut().nexus_lost(nexus);
    }

    /// The state changes of a LOGICAL UNIT RESET (SAM-5 6.3.3): releases RESERVE(6/10)
    /// reservations, clears PREVENT and the stopped state, and raises BUS DEVICE RESET
    /// FUNCTION OCCURRED (29h/03h) on every I_T nexus, the issuer's too. Persistent
    /// reservations and mode pages survive. The reset's commands are aborted with
    /// [`LogicalUnit::abort_tasks`] (all of them) before this is called.
    pub fn reset(&self) {
        self.clear_for_reset();
        self.nexuses.borrow_mut().establish(None, BUS_DEVICE_RESET);
    }

    /// TARGET WARM/COLD RESET as seen by this unit: the same state is cleared as for a LUN
    /// RESET, and every I_T nexus gets POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (29h/00h).
    pub fn target_reset(&self) {
        self.clear_for_reset();
        self.nexuses.borrow_mut().establish(None, POWER_ON_RESET);
    }

    /// Marks the commands `which` selects as aborted: one not started never starts, one
    /// running finishes its I/O; both end with TASK ABORTED (the control mode page's TAS=1).
    /// Wait for them with [`LogicalUnit::tasks_ended`].
    pub fn abort_tasks(&self, which: impl FnMut(&TaskKey) -> bool) -> Aborted {
        self.tasks.abort(which)
    }

    /// Waits until the commands of `aborted` have ended.
    pub async fn tasks_ended(&self, aborted: Aborted) {
        self.tasks.ended(aborted).await
    }

    /// Commands in the unit's task set (started or waiting for their turn).
    pub fn tasks_in_set(&self) -> usize {
        self.tasks.len()
    }

    fn clear_for_reset(&self) {
        self.reservations.borrow_mut().reset();
        self.prevent.borrow_mut().clear();
        self.stopped.set(false);
    }

    /// Looks up and decodes a CDB for this unit (whether it is thin decides whether UNMAP
    /// exists), once: the engine, its metrics and [`LogicalUnit::execute_task`] take the
    /// result.
    pub fn decode(&self, cdb: &[u8]) -> Decoded {
        Decoded::new(cdb, self.cfg.thin)
    }

    /// How many bytes of Data-Out `command` asks for, per its CDB (None: the command takes no
    /// Data-Out or does not decode). The iSCSI layer compares this with the Expected Data
    /// Transfer Length to report write residuals.
    pub fn data_out_len(&self, command: &Decoded) -> Option<u32> {
        command.data_out_len(self.cfg.block_size)
    }

    /// Whether the control mode page asks for descriptor-format sense data.
    pub(super) fn descriptor_sense(&self) -> bool {
        self.mode.get().d_sense
    }

    /// Decodes and executes one SIMPLE command from `nexus` (see
    /// [`LogicalUnit::execute_task`]).
    pub async fn execute(&self, nexus: NexusId, cdb: &[u8], data_out: Vec<u8>) -> Response {
        let key = TaskKey {
            nexus,
            tag: u64::MAX,
            attr: TaskAttr::Simple,
        };
        self.execute_task(key, &self.decode(cdb), data_out).await
    }

    /// Executes one command: it enters the task set, waits for its turn (task attribute),
    /// runs, and leaves. `data_out` holds all Data-Out; a command that returns no Data-In
    /// hands its allocation back in [`Response::spare`] for reuse. A command aborted while
    /// in the set ends with TASK ABORTED, whether or not it ran.
    pub async fn execute_task(
        &self,
        key: TaskKey,
        command: &Decoded,
        data_out: Vec<u8>,
    ) -> Response {
        self.execute_admitted(key, command, data_out, std::future::ready(()))
            .await
    }

    /// [`LogicalUnit::execute_task`], where the command, once its turn in the task set has
    /// come, also waits for `admit` (the engine's fair share between targets) and runs while
    /// holding what it yields. Aborted while it waits, it never runs.
    pub async fn execute_admitted<P>(
        &self,
        key: TaskKey,
        command: &Decoded,
        data_out: Vec<u8>,
        admit: impl std::future::Future<Output = P>,
    ) -> Response {
        let ticket = self.tasks.enter(key);
        let aborted = |data_out| Response {
            spare: empty(data_out),
            ..Response::status(Status::TaskAborted)
        };
        if !ticket.turn().await {
            return aborted(data_out);
        }
        let _admitted = admit.await;
        if ticket.aborted() {
            return aborted(data_out);
        }
        let mut r = match self.run(key.nexus, command, data_out).await {
            Ok((data, spare, preempted)) => Response {
                spare,
                preempted,
                ..Response::good(data)
            },
            Err(Fail::Check(sense)) => Response::check(&sense, self.descriptor_sense()),
            Err(Fail::Conflict) => Response::status(Status::ReservationConflict),
        };
        if ticket.aborted() {
            r.status = Status::TaskAborted;
            r.data_in = Bytes::new();
            r.sense.clear();
        }
        r
    }

    async fn run(&self, nexus: NexusId, decoded: &Decoded, buf: Vec<u8>) -> Result<Done, Fail> {
        self.nexuses.borrow_mut().touch(nexus);
        // A pending unit attention comes before an unknown opcode, and before the malformed
        // CDB of a command whose policy reports it.
        let info = match decoded.op {
            Ok(info) => info,
            Err(sense) => {
                self.report_ua(nexus)?;
                return Err(sense.into());
            }
        };
        if info.ua == UaPolicy::Report {
            self.report_ua(nexus)?;
        }
        let command = decoded.command?;
        self.gate(nexus, info, &command)?;
        self.dispatch(nexus, command, buf).await
    }

    /// Terminates the command with the oldest pending unit attention, clearing it.
    fn report_ua(&self, nexus: NexusId) -> Result<(), Fail> {
        match self.nexuses.borrow_mut().pop(nexus) {
            Some(asc) => Err(Sense::unit_attention(asc).into()),
            None => Ok(()),
        }
    }

    /// Reservation and readiness checks that come before execution.
    fn gate(&self, nexus: NexusId, info: &OpInfo, command: &Command) -> Result<(), Fail> {
        if self.conflicts(nexus, info.access, command) {
            return Err(Fail::Conflict);
        }
        // During a sanitize only INQUIRY, REPORT LUNS and REQUEST SENSE run (SBC-4 4.11).
        if info.ua == UaPolicy::Report
            && let Some(sense) = self.sanitize_state.in_progress()
        {
            return Err(sense.into());
        }
        if info.medium != Medium::Not
            && !matches!(command, Command::Sanitize { .. })
            && let Some(sense) = self.sanitize_state.failure()
        {
            return Err(sense.into());
        }
        if info.medium != Medium::Not && self.stopped.get() {
            return Err(Sense::new(SenseKey::NotReady, LU_NOT_READY_INIT_REQUIRED).into());
        }
        Ok(())
    }

    async fn dispatch(&self, nexus: NexusId, command: Command, buf: Vec<u8>) -> Result<Done, Fail> {
        use Command as C;
        let out: Out = match command {
            C::TestUnitReady => Ok(empty(buf)),
            C::RequestSense { desc, alloc } => Ok(self.request_sense(nexus, desc, alloc)),
            C::Inquiry { evpd, page, alloc } => self.inquiry(evpd, page, alloc),
            // The engine normally answers REPORT LUNS itself (it knows every LUN); a unit
            // asked directly reports itself.
            C::ReportLuns { select, alloc } => {
                self.luns_reported(nexus);
                Ok(super::lun_inventory::report_luns_data(
                    &[self.cfg.lun],
                    select,
                    alloc,
                )?)
            }
            C::ModeSense(ms) => self.mode_sense(ms),
            C::ModeSelect { ten, pf, sp, len } => self.mode_select(nexus, ten, pf, sp, len, &buf),
            C::StartStopUnit {
                immed: _,
                power_condition,
                no_flush,
                loej,
                start,
            } => {
                self.start_stop(nexus, power_condition, no_flush, loej, start)
                    .await
            }
            C::PreventAllow { prevent } => self.prevent_allow(nexus, prevent),
            C::ReportOpcodes {
                rctd,
                options,
                opcode,
                sa,
                alloc,
            } => Ok(super::truncate(
                opcodes::report(rctd, options, opcode, sa, self.cfg.thin)?,
                alloc as usize,
            )),
            C::ReportTmf { repd, alloc } => Ok(self.report_tmf(repd, alloc)),
            C::ReportTargetPortGroups { format, alloc } => Ok(self.report_tpg(format, alloc)),
            C::Reserve => self.reserve(nexus),
            C::Release => self.release(nexus),
            C::PrIn { sa, alloc } => self.pr_in(sa, alloc),
            C::PrOut {
                sa,
                scope,
                kind,
                len,
            } => {
                self.pr_out(nexus, sa, scope, kind, len, &buf)?;
                let preempted = self.abort_preempted(nexus).await;
                return Ok((Bytes::new(), empty(buf), preempted));
            }
            C::Read(rw) => return self.read(rw).await.map(|data| (data, buf, Vec::new())),
            C::Write(rw) => self.write(rw, buf).await,
            C::Verify(rw) => self.verify(rw, buf).await,
            C::WriteVerify(rw) => self.write_verify(rw, buf).await,
            C::CompareAndWrite(rw) => self.compare_and_write(rw, buf).await,
            C::OrWrite(rw) => self.orwrite(rw, buf).await,
            C::SyncCache(rw) => self.sync_cache(rw, buf).await,
            C::PreFetch(rw) => self.prefetch(rw, buf),
            C::ReadCapacity10 { lba, pmi } => Ok(self.read_capacity10(lba, pmi)),
            C::ReadCapacity16 { alloc } => Ok(self.read_capacity16(alloc)),
            C::GetLbaStatus { lba, alloc } => self.get_lba_status(lba, alloc),
            C::Unmap { anchor, len } => self.unmap(anchor, len, buf).await,
            C::WriteSame(ws) => self.write_same(ws, buf).await,
            C::ExtendedCopy { len } => self.extended_copy(nexus, len, buf).await,
            C::ReceiveCopyResults { sa, list_id, alloc } => {
                self.receive_copy_results(nexus, sa, list_id, alloc)
            }
            C::Sanitize {
                sa,
                immed,
                ause: _,
                len,
            } => self.sanitize(sa, immed, len, buf).await,
            C::ReadDefectData {
                twelve,
                plist,
                glist,
                format,
                alloc,
            } => Ok(self.read_defect_data(twelve, plist, glist, format, alloc)),
        };
        // A handler that returns no data hands back the Data-Out allocation (emptied).
        out.map(|v| {
            if v.is_empty() {
                (Bytes::new(), v, Vec::new())
            } else {
                (Bytes::from(v), Vec::new(), Vec::new())
            }
        })
    }
}

/// An empty Data-In that keeps the Data-Out allocation.
pub(super) fn empty(mut buf: Vec<u8>) -> Vec<u8> {
    buf.clear();
    buf
}
