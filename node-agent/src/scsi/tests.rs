//! Behaviour tests of the logical unit over an in-memory backend, one file per area.

mod block;
mod capacity;
mod compare;
mod copy;
mod core;
mod mode;
mod provisioning;
mod reservations;
mod reservations_persist;
mod sanitize;
mod spc;
mod tasks;
