//! End-to-end test support: a real Kubernetes control plane (etcd + kube-apiserver built from
//! source by `e2e/cluster/build`) started per test binary, and kubectl driven against it.

pub mod agent;
pub mod cluster;
pub mod initiator;
pub mod wait;
