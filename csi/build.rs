//! Compiles the gRPC APIs the driver serves from their upstream `.proto` files:
//! - the CSI spec's `csi.proto` (module `github.com/container-storage-interface/spec`);
//! - kubelet's plugin registration `api.proto` (`pluginregistration/v1` of module
//!   `k8s.io/kubelet`), which the node mode answers itself (node-driver-registrar is not used).
//!
//! Neither file is kept in this repository: each is its module's own file, taken from the Go
//! module proxy (`go mod download`, which checks it against the Go checksum database) at the
//! version pinned below, and verified against the pinned module hash. Set `SPINDLE_CSI_PROTO`
//! to a `csi.proto` and `SPINDLE_KUBELET_REGISTRATION_PROTO` to the registration `api.proto` to
//! build without Go (they are then used as given).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A Go module holding a `.proto`, pinned.
struct Pinned {
    module: &'static str,
    version: &'static str,
    /// The module's hash as go.sum records it (`h1:` of the module zip).
    sum: &'static str,
    /// The `.proto` inside the module.
    path: &'static str,
    /// Environment variable naming a local copy instead.
    env: &'static str,
}

/// The CSI spec release the driver implements.
const CSI_SPEC: Pinned = Pinned {
    module: "github.com/container-storage-interface/spec",
    version: "v1.14.0",
    sum: "h1:lVswmW9+n0J6FrdO4eVg28s8CEyfo//BEuwclY6FBsQ=",
    path: "csi.proto",
    env: "SPINDLE_CSI_PROTO",
};

/// Kubelet's plugin registration API, at the pinned Kubernetes version (v1.34.10).
const KUBELET_REGISTRATION: Pinned = Pinned {
    module: "k8s.io/kubelet",
    version: "v0.34.10",
    sum: "h1:pGcfwM9/SIlkXC2Q1H2sskq85dXKs5HFWwVB/hk26zE=",
    path: "pkg/apis/pluginregistration/v1/api.proto",
    env: "SPINDLE_KUBELET_REGISTRATION_PROTO",
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let csi = locate(&CSI_SPEC)?;
    let dir = csi.parent().ok_or("csi.proto has no folder")?;
    let fds = protox::compile([csi.file_name().ok_or("no file name")?], [dir])?;
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

    let registration = locate(&KUBELET_REGISTRATION)?;
    let dir = registration.parent().ok_or("api.proto has no folder")?;
    let fds = protox::compile([registration.file_name().ok_or("no file name")?], [dir])?;
    tonic_prost_build::configure()
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}

/// The pinned `.proto`: the local copy its environment variable names, else the module's own
/// file from the Go module cache (downloaded if missing).
fn locate(p: &Pinned) -> Result<PathBuf, Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed={}", p.env);
    let file = match std::env::var_os(p.env) {
        Some(path) => PathBuf::from(path),
        None => from_go_proxy(p)?,
    };
    println!("cargo:rerun-if-changed={}", file.display());
    Ok(file)
}

/// `go mod download` of the pinned module, hash-checked; the path of its `.proto`.
fn from_go_proxy(p: &Pinned) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let module = format!("{}@{}", p.module, p.version);
    let out = Command::new("go")
        .args(["mod", "download", "-json", &module])
        .output()
        .map_err(|e| {
            format!(
                "running `go mod download {module}` to fetch {}: {e}; install Go \
                 (https://go.dev/dl) or set {} to a copy of it",
                p.path, p.env
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
    if sum != p.sum {
        return Err(format!("{module} has hash {sum}, expected {}", p.sum).into());
    }
    let dir = field("Dir").ok_or("`go mod download -json` printed no Dir")?;
    Ok(Path::new(&dir).join(p.path))
}
