//! Spindle's CSI driver.
//!
//! - [`controller`]: CreateVolume/DeleteVolume/ControllerPublish… as Spindle Devices and Targets
//!   in the driver's namespace (the operator and the agents do the rest).
//! - [`node`]: NodeStage/NodePublish… with the node's open-iscsi (`iscsiadm`), checking the
//!   disk's NAA before touching it.
//! - [`identity`]: the Identity service both modes serve.
//! - [`volume`]: what the controller hands the node (volume context keys, names, the driver
//!   name) — the contract between the two modes.
//! - [`endpoint`]: where a mode listens (`unix://` or `tcp://`); [`health`]: `/healthz`.

pub mod controller;
pub mod endpoint;
pub mod error;
pub mod health;
pub mod identity;
pub mod node;
pub mod proto;
pub mod volume;

pub use error::Error;
