//! Spindle objects for the unit tests, as the operator leaves them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use spindle_crds::{Condition, ConditionStatus, Device, Target};

use crate::agent::fixtures::now;

/// Device `name` in namespace `ns` on `node`: a 64 MiB file, the finalizer on.
pub fn device(name: &str, node: &str) -> Device {
    let yaml = format!(
        "apiVersion: spindle.dev/v1alpha1\nkind: Device\nmetadata: {{name: {name}, namespace: ns, \
         finalizers: [spindle.dev/flush]}}\nspec:\n  nodeName: {node}\n  source: {{file: {{path: \
         {name}.img, sizeBytes: 67108864}}}}\n"
    );
    serde_yaml::from_str(&yaml).expect("device fixture")
}

/// Target `name` in namespace `ns` with LUN i on `devices[i]`.
pub fn target(name: &str, devices: &[&str]) -> Target {
    let luns: Vec<String> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| format!("{{lun: {i}, deviceRef: {d}}}"))
        .collect();
    let yaml = format!(
        "apiVersion: spindle.dev/v1alpha1\nkind: Target\nmetadata: {{name: {name}, namespace: ns}}\n\
         spec:\n  luns: [{}]\n  acl: {{allowAll: true}}\n",
        luns.join(", ")
    );
    serde_yaml::from_str(&yaml).expect("target fixture")
}

/// A condition that changed 30 seconds before the fixtures' now.
pub fn condition(type_: &str, status: ConditionStatus, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: Some(
            (now() - k8s_openapi::jiff::SignedDuration::from_secs(30)).to_string(),
        ),
        observed_generation: Some(1),
    }
}

/// `d` deleted 90 seconds before the fixtures' now, with these conditions.
pub fn deleting(mut d: Device, conditions: Vec<Condition>) -> Device {
    d.metadata.deletion_timestamp = Some(Time(
        now() - k8s_openapi::jiff::SignedDuration::from_secs(90),
    ));
    d.status.get_or_insert_default().conditions = conditions;
    d
}
