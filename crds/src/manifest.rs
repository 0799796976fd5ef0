//! The CRD manifests generated from the types, as committed under `crds/`.

use kube::CustomResourceExt;

use crate::{Device, DeviceSnapshot, Target};

/// Header written at the top of every generated file.
const HEADER: &str =
    "# Generated from the Rust types by `cargo run -p spindle-crds --bin crdgen`; do not edit.\n";

/// Failure to render a CRD as YAML.
#[derive(Debug, thiserror::Error)]
#[error("cannot render the {kind} CRD as YAML: {source}")]
pub struct RenderError {
    kind: &'static str,
    #[source]
    source: serde_yaml::Error,
}

/// One generated manifest: the file name (relative to the `crds/` folder) and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// File name, e.g. `device.yaml`.
    pub file_name: &'static str,
    /// The YAML text.
    pub yaml: String,
}

/// Renders the Device and Target CRDs, one file each (`device.yaml`, `target.yaml`).
pub fn manifests() -> Result<Vec<Manifest>, RenderError> {
    Ok(vec![
        render("device.yaml", "Device", &Device::crd())?,
        render("target.yaml", "Target", &Target::crd())?,
        render(
            "devicesnapshot.yaml",
            "DeviceSnapshot",
            &DeviceSnapshot::crd(),
        )?,
    ])
}

fn render<T: serde::Serialize>(
    file_name: &'static str,
    kind: &'static str,
    crd: &T,
) -> Result<Manifest, RenderError> {
    let body = serde_yaml::to_string(crd).map_err(|source| RenderError { kind, source })?;
    Ok(Manifest {
        file_name,
        yaml: format!("{HEADER}{body}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGENERATE: &str = "run `cargo run -p spindle-crds --bin crdgen` and commit the result";

    #[test]
    fn committed_yaml_matches_the_types() {
        let committed = [
            ("device.yaml", include_str!("../device.yaml")),
            ("target.yaml", include_str!("../target.yaml")),
            (
                "devicesnapshot.yaml",
                include_str!("../devicesnapshot.yaml"),
            ),
        ];
        let generated = manifests().expect("CRDs render");
        assert_eq!(generated.len(), committed.len());
        for (manifest, (name, text)) in generated.iter().zip(committed) {
            assert_eq!(manifest.file_name, name);
            assert!(
                manifest.yaml == text,
                "crds/{name} is out of date with the Rust types: {REGENERATE}"
            );
        }
    }
}
