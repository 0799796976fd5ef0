//! What the engine serves: the desired state of one Target, whoever computed it (standalone
//! manifests today, the operator over gRPC later).

use super::drain::DrainState;
use super::token_bucket::QosLimits;
use crate::iscsi::chap::ChapSecrets;
use crate::iscsi::login::AclPolicy;
use crate::iscsi::params::TargetLimits;
use crate::scsi::pr_record::PrRecord;
use crate::store::{OpenedStore, StoreSpec};

/// Commands per session the CmdSN window allows at most (MaxCmdSN - ExpCmdSN + 1 when idle).
pub const QUEUE_DEPTH: u32 = 128;

/// The window the final Login Response advertises; the session opens it towards
/// [`QUEUE_DEPTH`] as write memory allows (each slot may bring FirstBurstLength of
/// unsolicited data, which the login promises without asking the memory bound).
pub const LOGIN_WINDOW: u32 = 8;

/// One LUN of a target and the Device behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LunConfig {
    pub lun: u64,
    /// `namespace/name` of the Device.
    pub device: String,
    pub store: StoreSpec,
    pub write_cache: bool,
    pub thin: bool,
    /// log2(physical / logical block size).
    pub physical_block_exp: u8,
}

/// One target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetConfig {
    /// `namespace/name` of the Target object.
    pub name: String,
    pub iqn: String,
    /// TCP port of the target's portal (on the agent's iSCSI address).
    pub port: u16,
    pub acl: AclPolicy,
    /// Some: initiators must authenticate with CHAP.
    pub chap: Option<ChapSecrets>,
    /// What the target offers in login negotiation.
    pub limits: TargetLimits,
    /// Its weight in the fair share of its ring (`spec.qos.weight`, 1..=1000): a busy target
    /// of weight 2 is admitted twice as often as one of weight 1, and gets twice the window.
    pub weight: u32,
    /// QoS limits (`spec.qos`); the default is unlimited.
    pub qos: QosLimits,
    pub luns: Vec<LunConfig>,
}

/// A LUN as handed to a target's thread: its config, its opened store, where its Device is in
/// the drain (a Device fenced before a restart stays fenced), and its SCSI identity.
#[derive(Debug)]
pub struct LunSetup {
    pub config: LunConfig,
    pub store: OpenedStore,
    pub state: DrainState,
    pub identity: DeviceIdentity,
    pub reservations: PrSetup,
}

/// A LUN's persistent reservations: where they persist through power loss and the state the
/// logical unit starts with (persisted, or carried over from the unit it replaces).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrSetup {
    /// None: they never persist (PTPL_C 0).
    pub file: Option<std::path::PathBuf>,
    /// Persist whatever the initiator's APTPL says.
    pub always: bool,
    pub restored: Option<PrRecord>,
}

/// How a Device shows itself over SCSI: the unit serial number (VPD 80h) and the NAA
/// designator (VPD 83h). Stable for the life of the Device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub serial: String,
    /// NAA 3 designator ([`super::identity::device_identity`]).
    pub naa: [u8; 8],
}
