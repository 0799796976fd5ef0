//! Keeping file-backed Devices inside the agent's data dir.

use std::path::{Component, Path, PathBuf};

use super::StoreError;

/// Joins `rel` onto `data_dir`, refusing absolute paths, `..` and symlinks that lead outside.
/// The file itself need not exist; its parent directories are created by the caller.
pub fn resolve_in_data_dir(data_dir: &Path, rel: &str) -> Result<PathBuf, StoreError> {
    let rel_path = Path::new(rel);
    if rel_path.is_absolute() {
        return Err(StoreError::Absolute(rel.to_string()));
    }
    let escapes = || StoreError::Escapes {
        path: rel.to_string(),
        data_dir: data_dir.display().to_string(),
    };
    if rel.is_empty()
        || rel_path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(escapes());
    }
    let joined = data_dir.join(rel_path);
    // A symlink inside the data dir may still point outside: check the deepest existing
    // ancestor once it is resolved.
    let root = data_dir.canonicalize().map_err(|source| StoreError::Io {
        what: "resolving data dir",
        path: data_dir.display().to_string(),
        source,
    })?;
    let mut probe = joined.as_path();
    loop {
        if let Ok(real) = probe.canonicalize() {
            if !real.starts_with(&root) {
                return Err(escapes());
            }
            break;
        }
        match probe.parent() {
            Some(p) => probe = p,
            None => break,
        }
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_paths_stay_inside() {
        let d = tempfile::tempdir().unwrap();
        let p = resolve_in_data_dir(d.path(), "a/b.img").unwrap();
        assert_eq!(p, d.path().join("a/b.img"));
    }

    #[test]
    fn dotdot_absolute_and_empty_are_refused() {
        let d = tempfile::tempdir().unwrap();
        for bad in ["../x.img", "a/../../x.img", ""] {
            assert!(
                matches!(
                    resolve_in_data_dir(d.path(), bad),
                    Err(StoreError::Escapes { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            resolve_in_data_dir(d.path(), "/etc/passwd"),
            Err(StoreError::Absolute(_))
        ));
    }

    #[test]
    fn symlink_out_of_the_data_dir_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("link")).unwrap();
        assert!(matches!(
            resolve_in_data_dir(d.path(), "link/x.img"),
            Err(StoreError::Escapes { .. })
        ));
    }
}
