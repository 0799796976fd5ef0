//! The iSCSI protocol (RFC 7143, ErrorRecoveryLevel 0), pure: no sockets, no async.
//!
//! - [`pdu`]: BHS framing and the typed PDU codec.
//! - [`digest`]: CRC32C header and data digests.
//! - [`params`]: negotiated session parameters and a target's limits.
//! - [`text`]: the `key=value` text format, continuation.
//! - [`negotiate`]: operational parameter negotiation.
//! - [`chap`]: CHAP (MD5) one-way and mutual.
//! - [`login`]: the login phase as a state machine.
//! - [`discovery`]: SendTargets responses.
//! - [`session`]: the full-feature phase of one session as a state machine.

pub mod chap;
pub mod digest;
pub mod discovery;
pub mod login;
pub mod negotiate;
pub mod params;
pub mod pdu;
pub mod session;
pub mod text;

#[cfg(test)]
mod test_vectors;
#[cfg(test)]
mod transcript_tests;
