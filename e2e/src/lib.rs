//! End-to-end test support: a real Kubernetes control plane (etcd + kube-apiserver built from
//! source by `e2e/cluster/build`) started per test binary, and kubectl driven against it; Spindle
//! on it (agents and operator, see [`runtime`]), the CSI driver ([`csi`]) and real initiators.

pub mod agent;
pub mod checks;
pub mod cluster;
pub mod csi;
pub mod initiator;
pub mod manifest;
pub mod probe;
pub mod runtime;
pub mod spindle;
pub mod wait;
