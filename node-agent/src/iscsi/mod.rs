//! The iSCSI protocol (RFC 7143, ErrorRecoveryLevel 0), pure: no sockets, no async.
//!
//! - [`pdu`]: BHS framing and the typed PDU codec.
//! - [`digest`]: CRC32C header and data digests.
//! - [`params`]: negotiated session parameters and a target's limits.

pub mod digest;
pub mod params;
pub mod pdu;
pub mod session;
