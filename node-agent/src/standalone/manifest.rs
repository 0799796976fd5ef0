//! Reading Device, Target and Secret manifests from a folder: every `*.yaml`/`*.yml` file, every
//! document in it. A bad document becomes a [`Problem`] (one line naming the file, the object
//! and the field); the good ones are kept.

use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use serde::de::DeserializeOwned;
use spindle_crds::{Device, Target};

/// One thing wrong with one manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// e.g. `Target default/demo`, or `document 2` when the object has no name yet.
    pub object: String,
    /// e.g. `spec.luns[1].lun`; empty when the whole document is at fault.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: ", self.file.display(), self.object)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Where an object came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub document: usize,
}

/// The objects read from a folder, and what was wrong with the rest.
#[derive(Debug, Default)]
pub struct Manifests {
    pub devices: Vec<(Origin, Device)>,
    pub targets: Vec<(Origin, Target)>,
    pub secrets: Vec<(Origin, Secret)>,
    pub problems: Vec<Problem>,
}

/// Why the folder itself could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading manifests from {dir}: {source}")]
pub struct LoadError {
    dir: String,
    #[source]
    source: std::io::Error,
}

/// The group/version Spindle's kinds must carry.
pub const API_VERSION: &str = "spindle.dev/v1alpha1";

/// Reads every YAML file in `dir` (not recursive), in name order.
pub fn load_dir(dir: &Path) -> Result<Manifests, LoadError> {
    let err = |source| LoadError {
        dir: dir.display().to_string(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml") | Some("yml")
                )
        })
        .collect();
    files.sort();
    let mut m = Manifests::default();
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(text) => parse_into(&f, &text, &mut m),
            Err(e) => m.problems.push(Problem {
                file: f.clone(),
                object: "file".into(),
                field: String::new(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    Ok(m)
}

fn str_at<'a>(v: &'a serde_yaml::Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for k in path {
        cur = cur.get(*k)?;
    }
    cur.as_str()
}

fn typed<T: DeserializeOwned>(
    doc: serde_yaml::Value,
    origin: &Origin,
    object: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(doc) {
        Ok(t) => Some(t),
        Err(e) => {
            let path = e.path().to_string();
            problems.push(Problem {
                file: origin.file.clone(),
                object: object.to_string(),
                field: if path == "." { String::new() } else { path },
                message: e.into_inner().to_string(),
            });
            None
        }
    }
}

/// Parses the documents of one file into `m`.
pub fn parse_into(file: &Path, text: &str, m: &mut Manifests) {
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let origin = Origin {
            file: file.to_path_buf(),
            document: i + 1,
        };
        let problem = |object: String, field: &str, message: String| Problem {
            file: file.to_path_buf(),
            object,
            field: field.to_string(),
            message,
        };
        let doc = match serde_yaml::Value::deserialize(de) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                m.problems.push(problem(
                    format!("document {}", i + 1),
                    "",
                    format!("not valid YAML: {e}"),
                ));
                // A syntax error ends the stream: nothing after it can be trusted.
                break;
            }
        };
        let kind = str_at(&doc, &["kind"]).unwrap_or("").to_string();
        let name = str_at(&doc, &["metadata", "name"]).unwrap_or("");
        let ns = str_at(&doc, &["metadata", "namespace"]).unwrap_or("default");
        let object = if name.is_empty() {
            format!(
                "{} (document {})",
                if kind.is_empty() { "object" } else { &kind },
                i + 1
            )
        } else {
            format!("{kind} {ns}/{name}")
        };
        if name.is_empty() {
            m.problems
                .push(problem(object, "metadata.name", "is required".into()));
            continue;
        }
        let api = str_at(&doc, &["apiVersion"]).unwrap_or("");
        match kind.as_str() {
            "Device" | "Target" if api != API_VERSION => {
                m.problems.push(problem(
                    object,
                    "apiVersion",
                    format!("is {api:?}, expected {API_VERSION:?}"),
                ));
            }
            "Device" => {
                if let Some(d) = typed::<Device>(doc, &origin, &object, &mut m.problems) {
                    m.devices.push((origin, d));
                }
            }
            "Target" => {
                if let Some(t) = typed::<Target>(doc, &origin, &object, &mut m.problems) {
                    m.targets.push((origin, t));
                }
            }
            "Secret" if api == "v1" => {
                if let Some(s) = typed::<Secret>(doc, &origin, &object, &mut m.problems) {
                    m.secrets.push((origin, s));
                }
            }
            _ => m.problems.push(problem(
                object,
                "kind",
                format!(
                    "{kind:?} ({api}) is not served in standalone mode (Device, Target, v1 Secret)"
                ),
            )),
        }
    }
}

use serde::Deserialize as _;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Manifests {
        let mut m = Manifests::default();
        parse_into(Path::new("t.yaml"), text, &mut m);
        m
    }

    #[test]
    fn the_demo_example_parses_cleanly() {
        let text = include_str!("../../../examples/standalone/demo.yaml");
        let m = parse(text);
        assert!(m.problems.is_empty(), "{:?}", m.problems);
        assert_eq!(m.devices.len(), 1);
        assert_eq!(m.targets.len(), 1);
        assert_eq!(
            m.devices[0].1.spec.source.file.as_ref().unwrap().size_bytes,
            1 << 30
        );
    }

    #[test]
    fn a_bad_document_is_one_line_naming_file_object_and_field_and_the_rest_survive() {
        let m = parse(
            "apiVersion: spindle.dev/v1alpha1\nkind: Target\nmetadata: {name: t1}\nspec:\n  luns:\n  - {lun: 0}\n---\n\
             apiVersion: spindle.dev/v1alpha1\nkind: Device\nmetadata: {name: d}\nspec: {nodeName: n, source: {file: {path: d.img, sizeBytes: 1048576}}}\n",
        );
        assert_eq!(m.devices.len(), 1, "the good document is kept");
        assert_eq!(m.problems.len(), 1);
        let line = m.problems[0].to_string();
        assert!(
            line.starts_with("t.yaml: Target default/t1: spec.luns[0]"),
            "{line}"
        );
        assert!(line.contains("deviceRef"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn unknown_kinds_wrong_api_versions_and_missing_names_are_reported() {
        let m = parse(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n\
             apiVersion: spindle.dev/v1\nkind: Device\nmetadata: {name: d}\n---\n\
             kind: Device\nmetadata: {}\n",
        );
        let fields: Vec<_> = m.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["kind", "apiVersion", "metadata.name"]);
    }

    #[test]
    fn broken_yaml_is_a_problem_not_a_panic() {
        let m = parse("kind: Device\nmetadata: {name: [\n");
        assert_eq!(m.problems.len(), 1);
        assert!(m.problems[0].message.contains("not valid YAML"));
    }
}
