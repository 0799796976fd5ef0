//! Standalone mode: serve Device and Target manifests from a folder, no Kubernetes.

pub mod manifest;
pub mod plan;
