//! Spindle's node agent as a library: the pieces the `spindle-agent` binary wires together.
//!
//! - [`api`]: the agent API (gRPC over mutual TLS) and the Lease that registers the agent.
//! - [`iscsi`]: the iSCSI protocol (RFC 7143), pure: PDU and text codecs, digests, login and
//!   negotiation, CHAP, and the full-feature-phase session as a state machine with no I/O.
//! - [`scsi`]: the SCSI command set (SPC-4, SBC-3) over a [`scsi::Backend`]: CDB decoding, one
//!   sense-data builder, one opcode table.
//! - [`ring`]: the io_uring driver (one ring per ring thread, on the `io-uring` crate) and the
//!   runtime, files and TCP the engine uses; the only module that touches io_uring.
//! - [`store`]: backing stores (file or block device) implementing [`scsi::Backend`] on the ring.
//! - [`engine`]: one engine thread per Target, the acceptor, connection pumps, the drain.
//! - [`node`]: what this node serves: Devices and Targets applied, removed, drained and
//!   released by idempotent calls, persisted and served again after a restart.
//! - [`standalone`]: Device/Target manifests from a folder, no Kubernetes.
//! - [`metrics`]: Prometheus metrics.
//! - [`seccomp`]: the seccomp profile the agent runs under in a container (io_uring allowed).

#[cfg(feature = "control")]
pub mod api;
pub mod engine;
pub mod iscsi;
pub mod metrics;
#[cfg(feature = "control")]
pub mod node;
pub mod ring;
pub mod scsi;
pub mod seccomp;
#[cfg(feature = "control")]
pub mod standalone;
pub mod store;
