//! Test vectors shared by the iSCSI unit tests.

/// The operational keys libiscsi sends in its login (lib/login.c), in its order, with the
/// HeaderDigest offer given.
pub(crate) fn libiscsi_operational_keys(header_digest: &str) -> Vec<(&str, &str)> {
    vec![
        ("HeaderDigest", header_digest),
        ("DataDigest", "None"),
        ("InitialR2T", "Yes"),
        ("ImmediateData", "Yes"),
        ("MaxBurstLength", "262144"),
        ("FirstBurstLength", "262144"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "0"),
        ("MaxOutstandingR2T", "1"),
        ("ErrorRecoveryLevel", "0"),
        ("IFMarker", "No"),
        ("OFMarker", "No"),
        ("MaxConnections", "1"),
        ("MaxRecvDataSegmentLength", "262144"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
    ]
}
