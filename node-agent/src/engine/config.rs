//! What the engine serves: the desired state of one Target, whoever computed it (standalone
//! manifests today, the operator over gRPC later).

use crate::iscsi::chap::ChapSecrets;
use crate::iscsi::login::AclPolicy;
use crate::iscsi::params::TargetLimits;
use crate::store::StoreSpec;

/// Commands per session the CmdSN window allows (MaxCmdSN - ExpCmdSN + 1 when idle).
pub const QUEUE_DEPTH: u32 = 128;

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
