//! What the engine serves: the desired state of one Target, whoever computed it (standalone
//! manifests today, the operator over gRPC later).

use crate::iscsi::chap::ChapSecrets;
use crate::iscsi::login::AclPolicy;
use crate::iscsi::params::TargetLimits;
use crate::store::StoreSpec;

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
}

/// One target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetConfig {
    /// `namespace/name` of the Target object.
    pub name: String,
    pub iqn: String,
    pub acl: AclPolicy,
    /// Some: initiators must authenticate with CHAP.
    pub chap: Option<ChapSecrets>,
    /// What the target offers in login negotiation.
    pub limits: TargetLimits,
    pub luns: Vec<LunConfig>,
}
