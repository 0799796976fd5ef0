//! The CSI v1 messages and services, generated from the spec's `csi.proto` by build.rs.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("csi.v1");

/// Requests that may carry secrets get a Debug that prints their type only (build.rs skips the
/// derived one), so a request logged by mistake never shows a CHAP secret.
macro_rules! redacted_debug {
    ($($ty:ident),* $(,)?) => {$(
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty)).finish_non_exhaustive()
            }
        }
    )*};
}

redacted_debug!(
    CreateVolumeRequest,
    DeleteVolumeRequest,
    ControllerPublishVolumeRequest,
    ControllerUnpublishVolumeRequest,
    ControllerExpandVolumeRequest,
    NodeStageVolumeRequest,
    NodePublishVolumeRequest,
    NodeExpandVolumeRequest,
    ValidateVolumeCapabilitiesRequest,
    ListSnapshotsRequest,
    CreateSnapshotRequest,
    DeleteSnapshotRequest,
    ControllerModifyVolumeRequest,
);
