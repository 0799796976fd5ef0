//! What the engine serves: the desired state of one Target, whoever computed it (standalone
//! manifests today, the operator over gRPC later).

use crate::iscsi::params::TargetLimits;
use crate::store::StoreSpec;

/// Who may log in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acl {
    AllowAll,
    /// Only these initiator IQNs (empty: nobody).
    Only(Vec<String>),
}

impl Acl {
    /// Whether `initiator` may log in.
    pub fn allows(&self, initiator: &str) -> bool {
        match self {
            Acl::AllowAll => true,
            Acl::Only(list) => list.iter().any(|i| i.eq_ignore_ascii_case(initiator)),
        }
    }
}

/// CHAP credentials: what the initiator must answer with, and for mutual CHAP what the target
/// answers with.
#[derive(Clone, PartialEq, Eq)]
pub struct ChapConfig {
    pub user: String,
    pub secret: Vec<u8>,
    pub mutual: Option<(String, Vec<u8>)>,
}

impl std::fmt::Debug for ChapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapConfig")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .field("mutual", &self.mutual.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// Commands per session the CmdSN window allows, unless the Target says otherwise.
pub const DEFAULT_QUEUE_DEPTH: u32 = 128;

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
    pub acl: Acl,
    pub chap: Option<ChapConfig>,
    /// What the target offers in login negotiation.
    pub limits: TargetLimits,
    /// Commands per session the CmdSN window allows.
    pub queue_depth: u32,
    pub luns: Vec<LunConfig>,
}
