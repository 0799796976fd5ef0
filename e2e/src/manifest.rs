//! Device and Target manifests as the tests apply them (`kubectl apply -f -`): [`Manifest`] builds
//! any of them spec line by spec line; [`device_yaml`] and [`target_yaml`] are the common shapes.

/// A Spindle object's manifest: its kind, name, namespace (none: kubectl's `-n`) and spec lines.
#[derive(Debug, Clone)]
pub struct Manifest {
    kind: &'static str,
    name: String,
    namespace: Option<String>,
    spec: String,
}

impl Manifest {
    /// A Device named `name` on `node`, no source yet.
    pub fn device(name: &str, node: &str) -> Self {
        Self::new("Device", name).spec(&format!("  nodeName: {node}\n"))
    }

    /// A Target named `name`, empty spec.
    pub fn target(name: &str) -> Self {
        Self::new("Target", name)
    }

    fn new(kind: &'static str, name: &str) -> Self {
        Self {
            kind,
            name: name.to_owned(),
            namespace: None,
            spec: String::new(),
        }
    }

    /// In namespace `ns` (written into the metadata).
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.to_owned());
        self
    }

    /// Appends spec lines as written (each indented by two spaces, ending in a newline).
    pub fn spec(mut self, lines: &str) -> Self {
        self.spec.push_str(lines);
        self
    }

    /// A Device's source: a file at `path` (relative to the data dir) of `size` bytes.
    pub fn file(self, path: &str, size: u64) -> Self {
        self.spec(&format!("  source: {}\n", file_source(path, size)))
    }

    /// A Target's LUNs: (number, Device name).
    pub fn luns(self, luns: &[(u64, &str)]) -> Self {
        if luns.is_empty() {
            return self.spec("  luns: []\n");
        }
        let mut lines = "  luns:\n".to_owned();
        for (lun, dev) in luns {
            lines.push_str(&format!("    - {{lun: {lun}, deviceRef: {dev}}}\n"));
        }
        self.spec(&lines)
    }

    /// The manifest's YAML.
    pub fn yaml(&self) -> String {
        let namespace = self
            .namespace
            .as_deref()
            .map(|ns| format!(", namespace: {ns}"))
            .unwrap_or_default();
        format!(
            "apiVersion: spindle.dev/v1alpha1\nkind: {}\nmetadata: {{name: {}{namespace}}}\nspec:\n{}",
            self.kind, self.name, self.spec
        )
    }
}

/// A file source in flow style: `path` (relative to the data dir) of `size` bytes.
pub fn file_source(path: &str, size: u64) -> String {
    format!("{{file: {{path: {path}, sizeBytes: {size}}}}}")
}

/// A Device manifest: a file `NAME.img` of `size` bytes on `node`, with extra spec lines.
pub fn device_yaml(name: &str, node: &str, size: u64, extra: &str) -> String {
    Manifest::device(name, node)
        .file(&format!("{name}.img"), size)
        .spec(extra)
        .yaml()
}

/// A Target manifest with `luns` (number, Device) and extra spec lines (default ACL: allow all).
pub fn target_yaml(name: &str, luns: &[(u64, &str)], extra: &str) -> String {
    Manifest::target(name)
        .luns(luns)
        .spec(if extra.is_empty() {
            "  acl: {allowAll: true}\n"
        } else {
            extra
        })
        .yaml()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_and_target_shapes() {
        assert_eq!(
            device_yaml("d", "node-a", 512, "  reclaimPolicy: Retain\n"),
            "apiVersion: spindle.dev/v1alpha1\nkind: Device\nmetadata: {name: d}\nspec:\n  \
             nodeName: node-a\n  source: {file: {path: d.img, sizeBytes: 512}}\n  \
             reclaimPolicy: Retain\n"
        );
        assert_eq!(
            target_yaml("t", &[(0, "d")], ""),
            "apiVersion: spindle.dev/v1alpha1\nkind: Target\nmetadata: {name: t}\nspec:\n  \
             luns:\n    - {lun: 0, deviceRef: d}\n  acl: {allowAll: true}\n"
        );
        assert!(target_yaml("t", &[], "").contains("  luns: []\n"));
        assert!(
            Manifest::target("t0")
                .namespace("ns")
                .yaml()
                .contains("metadata: {name: t0, namespace: ns}\n")
        );
    }
}
