//! The engine: one thread with its own ring per Target, the acceptor that logs connections in
//! and hands them over, the per-connection pump, and the drain.

pub mod config;
pub mod drain;
pub mod framing;
