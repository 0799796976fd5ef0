//! Writes the CRD manifests (`device.yaml`, `target.yaml`) next to this crate's Cargo.toml and
//! into the Helm chart (`charts/spindle/crds/`, which must hold the same files), or only into
//! the folder given as the only argument.

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    // `cargo run` names the checkout at run time; the compiled-in path may be another checkout's
    // when builds share one CARGO_TARGET_DIR.
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let dirs = match std::env::args_os().nth(1) {
        Some(dir) => vec![PathBuf::from(dir)],
        None => vec![crate_dir.clone(), crate_dir.join("../charts/spindle/crds")],
    };
    for manifest in spindle_crds::manifest::manifests()? {
        for dir in &dirs {
            let path = dir.join(manifest.file_name);
            std::fs::write(&path, &manifest.yaml)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
