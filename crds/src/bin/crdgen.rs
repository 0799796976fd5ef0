//! Writes the CRD manifests (`device.yaml`, `target.yaml`) next to this crate's Cargo.toml, or
//! into the folder given as the only argument.

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    for manifest in spindle_crds::manifest::manifests()? {
        let path = dir.join(manifest.file_name);
        std::fs::write(&path, &manifest.yaml)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
