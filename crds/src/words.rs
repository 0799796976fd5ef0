//! The words of the status: condition types and reasons (the API users read with `kubectl`
//! and match in scripts), and the finalizer and annotation of the delete protocol. The operator
//! writes them; `kubectl spindle` reads them.

/// Condition types.
pub mod kind {
    /// The object is served as its spec says.
    pub const READY: &str = "Ready";
    /// The agent of the object's node renews its Lease.
    pub const AGENT_REACHABLE: &str = "AgentReachable";
    /// The object is being deleted (the delete protocol runs).
    pub const DELETING: &str = "Deleting";
    /// The agent acknowledged the flush of a Device being deleted.
    pub const FLUSHED: &str = "Flushed";
}

/// Condition (and Event) reasons.
pub mod reason {
    /// Ready: the agent serves the object.
    pub const APPLIED: &str = "Applied";
    /// AgentReachable: the Lease is current.
    pub const LEASE_CURRENT: &str = "LeaseCurrent";
    /// The node has no Node object and no agent.
    pub const NODE_NOT_FOUND: &str = "NodeNotFound";
    /// The node has no agent Lease.
    pub const NO_AGENT: &str = "NoAgent";
    /// The agent's Lease expired, or a call to it failed.
    pub const AGENT_UNREACHABLE: &str = "AgentUnreachable";
    /// What answers at the node's agent endpoint is not shown to be that node's agent (its
    /// Lease publishes no key or another one, or the agent names another node): nothing is sent.
    pub const AGENT_UNVERIFIED: &str = "AgentUnverified";
    /// The agent refused the request (its message names the field).
    pub const AGENT_REFUSED: &str = "AgentRefused";
    /// Ready=False: the Device's backing store (the same file, by device and inode, or the
    /// same block device) is held by another Device on the node; the message names it.
    pub const BACKING_STORE_IN_USE: &str = "BackingStoreInUse";
    /// Ready=False: the Device was served before and its backing store is gone from the node;
    /// the agent creates nothing (no blank disk under the old identity).
    pub const BACKING_STORE_MISSING: &str = "BackingStoreMissing";
    /// Ready=False: the Device's file could not grow to its new `spec.source.file.sizeBytes`
    /// (no room on the node's filesystem); the old size is kept and still served.
    pub const NO_SPACE: &str = "NoSpace";
    /// A Target has no LUNs.
    pub const NO_LUNS: &str = "NoLuns";
    /// A LUN names a Device that does not exist.
    pub const DEVICE_NOT_FOUND: &str = "DeviceNotFound";
    /// A LUN names a Device on another node than the Target's.
    pub const DEVICE_ON_OTHER_NODE: &str = "DeviceOnOtherNode";
    /// A LUN names a Device another Target exports.
    pub const DEVICE_CLAIMED: &str = "DeviceClaimed";
    /// A LUN names a Device that is not Ready.
    pub const DEVICE_NOT_READY: &str = "DeviceNotReady";
    /// A LUN names a Device being deleted.
    pub const DEVICE_DELETING: &str = "DeviceDeleting";
    /// `spec.iqn` (or the default IQN) is not a name of the Target's namespace.
    pub const IQN_NOT_ALLOWED: &str = "IqnNotAllowed";
    /// `spec.port` is outside the ports Targets may use.
    pub const PORT_NOT_ALLOWED: &str = "PortNotAllowed";
    /// The CHAP Secret does not exist.
    pub const CHAP_SECRET_NOT_FOUND: &str = "ChapSecretNotFound";
    /// The CHAP Secret lacks a key or a secret has the wrong length.
    pub const CHAP_SECRET_INVALID: &str = "ChapSecretInvalid";
    /// Deleting: the delete protocol runs.
    pub const DELETING: &str = "Deleting";
    /// Flushed=False: the drain has not been acknowledged yet.
    pub const NOT_FLUSHED: &str = "NotFlushed";
    /// Flushed=True: the agent acknowledged the flush.
    pub const FLUSH_ACKNOWLEDGED: &str = "FlushAcknowledged";
    /// Flushed=True: the agent never had the Device, nothing to flush.
    pub const NEVER_SERVED: &str = "NeverServed";
    /// Flushed=False: the flush failed on the node (DATA_LOSS).
    pub const FLUSH_FAILED: &str = "FlushFailed";
    /// Event: the agent closed the store (and removed the file under Delete).
    pub const RELEASED: &str = "Released";
    /// Event: the agent stopped serving the Target.
    pub const REMOVED: &str = "Removed";
    /// Event and Flushed=False: the user skipped the flush with the annotation.
    pub const FLUSH_SKIPPED: &str = "FlushSkipped";
    /// Event and Flushed=False: the Node object was deleted, the disk went with it.
    pub const NODE_GONE: &str = "NodeGone";
}

/// The finalizer on every Device and Target: the operator removes it once the delete protocol
/// is done (for a Device: the agent acknowledged the flush and released the store).
pub const FINALIZER: &str = "spindle.dev/flush";
/// The annotation that lets a delete proceed without the agent (`"true"`).
pub const SKIP_FLUSH_ANNOTATION: &str = "spindle.dev/skip-flush";
