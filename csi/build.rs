//! Compiles the CSI spec's `csi.proto` into the gRPC services the driver serves.
//!
//! The proto is not kept in this repository: it is the spec module's own file, taken from the Go
//! module proxy (`go mod download`, which checks it against the Go checksum database) at the
//! version pinned below, and verified against the pinned module hash. Set `SPINDLE_CSI_PROTO` to
//! a `csi.proto` to build without Go (it is then used as given).

use std::path::PathBuf;
use std::process::Command;

/// The CSI spec release the driver implements.
const SPEC_MODULE: &str = "github.com/container-storage-interface/spec";
const SPEC_VERSION: &str = "v1.14.0";
/// The module's hash as go.sum records it (`h1:` of the module zip).
const SPEC_SUM: &str = "h1:lVswmW9+n0J6FrdO4eVg28s8CEyfo//BEuwclY6FBsQ=";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=SPINDLE_CSI_PROTO");
    let proto = match std::env::var_os("SPINDLE_CSI_PROTO") {
        Some(path) => PathBuf::from(path),
        None => spec_from_go_proxy()?,
    };
    println!("cargo:rerun-if-changed={}", proto.display());
    let dir = proto.parent().ok_or("SPINDLE_CSI_PROTO has no folder")?;
    let fds = protox::compile([proto.file_name().ok_or("no file name")?], [dir])?;
    tonic_prost_build::configure()
        // Secrets (CHAP credentials among them) must never reach a log.
        .skip_debug([
            "csi.v1.CreateVolumeRequest",
            "csi.v1.DeleteVolumeRequest",
            "csi.v1.ControllerPublishVolumeRequest",
            "csi.v1.ControllerUnpublishVolumeRequest",
            "csi.v1.ControllerExpandVolumeRequest",
            "csi.v1.NodeStageVolumeRequest",
            "csi.v1.NodePublishVolumeRequest",
            "csi.v1.NodeExpandVolumeRequest",
            "csi.v1.ValidateVolumeCapabilitiesRequest",
            "csi.v1.ListSnapshotsRequest",
            "csi.v1.CreateSnapshotRequest",
            "csi.v1.DeleteSnapshotRequest",
            "csi.v1.ControllerModifyVolumeRequest",
        ])
        .compile_fds(fds)?;
    Ok(())
}

/// `csi.proto` of the pinned spec module, from the Go module cache (downloaded if missing).
fn spec_from_go_proxy() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let module = format!("{SPEC_MODULE}@{SPEC_VERSION}");
    let out = Command::new("go")
        .args(["mod", "download", "-json", &module])
        .output()
        .map_err(|e| {
            format!(
                "running `go mod download {module}` to fetch csi.proto: {e}; install Go \
                 (https://go.dev/dl) or set SPINDLE_CSI_PROTO to a copy of the spec's csi.proto"
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "`go mod download {module}` failed: {}{}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    let field = |name: &str| -> Option<String> {
        let key = format!("\"{name}\": \"");
        let start = text.find(&key)? + key.len();
        let end = start + text[start..].find('"')?;
        Some(text[start..end].to_string())
    };
    let sum = field("Sum").ok_or("`go mod download -json` printed no Sum")?;
    if sum != SPEC_SUM {
        return Err(format!("{module} has hash {sum}, expected {SPEC_SUM}").into());
    }
    let dir = field("Dir").ok_or("`go mod download -json` printed no Dir")?;
    Ok(PathBuf::from(dir).join("csi.proto"))
}
