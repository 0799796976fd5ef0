//! Field errors and the small collector the Rust-side validation uses.

use std::fmt::Display;

/// One rule a manifest breaks, located by its JSON path (e.g. `spec.luns[1].lun`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Path of the offending field, in the manifest's (camelCase) spelling.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Accumulates [`FieldError`]s so a manifest reports all its problems at once.
#[derive(Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    /// Records that `field` breaks a rule.
    pub(crate) fn add(&mut self, field: impl Display, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// Records an error unless `ok`.
    pub(crate) fn check(&mut self, ok: bool, field: impl Display, message: impl Into<String>) {
        if !ok {
            self.add(field, message);
        }
    }

    /// The outcome: `Ok` when nothing was recorded.
    pub(crate) fn finish(self) -> Result<(), Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// Checks that `metadata.name` is set and well-formed (the apiserver guarantees it; the standalone
/// agent reads it from files).
pub(crate) fn check_object_name(errors: &mut Errors, name: Option<&str>) {
    match name {
        None | Some("") => errors.add("metadata.name", "required"),
        Some(n) => errors.check(
            crate::names::is_valid_object_name(n),
            "metadata.name",
            format!("{n:?} is not a valid object name (lower-case DNS subdomain)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_field_first() {
        let e = FieldError {
            field: "spec.luns[1].lun".into(),
            message: "duplicate LUN 0".into(),
        };
        assert_eq!(e.to_string(), "spec.luns[1].lun: duplicate LUN 0");
    }

    #[test]
    fn finish_reports_every_error() {
        let mut errors = Errors::default();
        assert!(Errors::default().finish().is_ok());
        errors.check(true, "a", "never");
        errors.check(false, "b", "first");
        errors.add("c", "second");
        let got = errors.finish().unwrap_err();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].field, "b");
        assert_eq!(got[1].field, "c");
    }
}
