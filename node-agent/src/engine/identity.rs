//! How a Device is named to SCSI initiators: its unit serial number (VPD 80h) and its logical
//! unit designator (VPD 83h). Multipath software keys on these, so they must be
//!
//! - stable for the life of the Device (across agent restarts), and
//! - unique across agents (two agents may both serve a Device called `default/db`).
//!
//! The designator is NAA 3 ("locally assigned", SPC-4 7.8.6.6.4), which needs no IEEE company
//! ID: 60 bits of a hash of the Device's Kubernetes uid (unique everywhere and kept for the
//! Device's life), or, for a Device from a manifest (which has no uid), of the agent's
//! identity and the Device's name. The agent's identity is 128 random bits made once and kept
//! in its data dir (`.spindle-agent-id`, `node::agent_id`).

/// The SCSI identity of the Device named `name` (unique within `scope`: an empty scope for a
/// Kubernetes uid, the agent's identity for a manifest's `namespace/name`): its unit serial
/// number (16 hex digits) and its NAA 3 designator (8 bytes), both from the same 60 bits.
pub fn device_identity(scope: &[u8], name: &str) -> (String, [u8; 8]) {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(scope);
    h.update([0]);
    h.update(name.as_bytes());
    let h: [u8; 16] = h.finalize().into();
    let mut naa = [0u8; 8];
    naa.copy_from_slice(&h[..8]);
    // NAA 3h: locally assigned; the other 60 bits are the hash.
    naa[0] = 0x30 | (naa[0] & 0x0F);
    (hex::encode(naa), naa)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn designators_are_naa3_stable_and_differ_across_agents_and_devices() {
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let (serial, naa) = device_identity(&a, "default/db");
        assert_eq!(naa[0] >> 4, 3, "NAA 3: locally assigned");
        assert_eq!(serial, hex::encode(naa));
        assert_eq!(device_identity(&a, "default/db"), (serial, naa), "stable");
        assert_ne!(device_identity(&b, "default/db").1, naa, "other agent");
        assert_ne!(device_identity(&a, "default/db2").1, naa, "other device");
        assert_ne!(
            device_identity(&[], "5c1f...uid").1,
            naa,
            "a uid needs no scope"
        );
    }
}
