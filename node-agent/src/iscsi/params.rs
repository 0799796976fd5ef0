//! Session and connection parameters: what login negotiated ([`SessionParams`]) and what a
//! target offers or allows ([`TargetLimits`]). Defaults are RFC 7143 §13's.

/// Normal (SCSI I/O) or discovery (SendTargets only) session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionType {
    #[default]
    Normal,
    Discovery,
}

/// A digest as negotiated for one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DigestKind {
    #[default]
    None,
    Crc32c,
}

/// What a target accepts for HeaderDigest or DataDigest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DigestPolicy {
    /// Only None.
    Off,
    /// Either, in the initiator's order of preference.
    #[default]
    Allow,
    /// Only CRC32C.
    Require,
}

impl DigestPolicy {
    /// Whether this policy accepts `kind`.
    pub fn accepts(self, kind: DigestKind) -> bool {
        match self {
            Self::Off => kind == DigestKind::None,
            Self::Allow => true,
            Self::Require => kind == DigestKind::Crc32c,
        }
    }
}

/// RFC 7143 §13 default for MaxRecvDataSegmentLength (also the limit during login).
pub const DEFAULT_MAX_RECV_DATA_SEGMENT_LEN: u32 = 8192;
/// Smallest legal MaxRecvDataSegmentLength / MaxBurstLength / FirstBurstLength.
pub const MIN_SEGMENT_LEN: u32 = 512;
/// Largest legal MaxRecvDataSegmentLength / MaxBurstLength / FirstBurstLength.
pub const MAX_SEGMENT_LEN: u32 = (1 << 24) - 1;

/// The operational parameters of a session and its (single) connection after login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionParams {
    pub session_type: SessionType,
    /// TargetName the initiator logged in to (empty for discovery sessions).
    pub target_name: String,
    pub initiator_name: String,
    pub initiator_alias: Option<String>,
    pub header_digest: DigestKind,
    pub data_digest: DigestKind,
    /// MaxRecvDataSegmentLength the target declared: the largest data segment the initiator
    /// may send us.
    pub max_recv_data_segment_len: u32,
    /// MaxRecvDataSegmentLength the initiator declared: the largest data segment we may send
    /// (Data-In, Text Response, NOP-In...).
    pub max_send_data_segment_len: u32,
    /// Largest solicited or unsolicited Data-Out sequence / Data-In sequence, in bytes.
    pub max_burst_len: u32,
    /// Largest unsolicited data (immediate plus unsolicited Data-Out) of one command.
    pub first_burst_len: u32,
    /// Yes: no unsolicited Data-Out PDUs (immediate data still allowed if `immediate_data`).
    pub initial_r2t: bool,
    pub immediate_data: bool,
    pub max_outstanding_r2t: u32,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u8,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub max_connections: u16,
}

impl Default for SessionParams {
    fn default() -> Self {
        Self {
            session_type: SessionType::Normal,
            target_name: String::new(),
            initiator_name: String::new(),
            initiator_alias: None,
            header_digest: DigestKind::None,
            data_digest: DigestKind::None,
            max_recv_data_segment_len: DEFAULT_MAX_RECV_DATA_SEGMENT_LEN,
            max_send_data_segment_len: DEFAULT_MAX_RECV_DATA_SEGMENT_LEN,
            max_burst_len: 262_144,
            first_burst_len: 65_536,
            initial_r2t: true,
            immediate_data: true,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            default_time2wait: 2,
            default_time2retain: 20,
            max_connections: 1,
        }
    }
}

impl SessionParams {
    /// The digests a connection of this session uses in full feature phase.
    pub fn digests(&self) -> crate::iscsi::pdu::Digests {
        crate::iscsi::pdu::Digests {
            header: self.header_digest == DigestKind::Crc32c,
            data: self.data_digest == DigestKind::Crc32c,
        }
    }

    /// Largest data segment we may put in one Data-In: the initiator's
    /// MaxRecvDataSegmentLength.
    pub fn max_data_in_segment(&self) -> u32 {
        self.max_send_data_segment_len
    }
}

/// What one target offers in negotiation (from the Target manifest's iSCSI parameters). The
/// negotiated result never exceeds these.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TargetLimits {
    pub header_digest: DigestPolicy,
    pub data_digest: DigestPolicy,
    /// MaxRecvDataSegmentLength we declare (512..=2^24-1).
    pub max_recv_data_segment_len: u32,
    /// Upper bound for MaxBurstLength.
    pub max_burst_len: u32,
    /// Upper bound for FirstBurstLength.
    pub first_burst_len: u32,
    /// Our InitialR2T wish (the result is the OR with the initiator's).
    pub initial_r2t: bool,
    /// Our ImmediateData wish (the result is the AND with the initiator's).
    pub immediate_data: bool,
    /// Upper bound for MaxOutstandingR2T.
    pub max_outstanding_r2t: u32,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    /// TargetPortalGroupTag sent during login of a normal session.
    pub portal_group_tag: u16,
    /// TargetAlias sent during login, if any.
    pub alias: Option<String>,
}

impl Default for TargetLimits {
    fn default() -> Self {
        Self {
            header_digest: DigestPolicy::Allow,
            data_digest: DigestPolicy::Allow,
            max_recv_data_segment_len: 262_144,
            max_burst_len: 1_048_576,
            first_burst_len: 262_144,
            initial_r2t: false,
            immediate_data: true,
            max_outstanding_r2t: 16,
            default_time2wait: 2,
            default_time2retain: 20,
            portal_group_tag: 1,
            alias: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_defaults_are_rfc_defaults() {
        let p = SessionParams::default();
        assert_eq!(p.max_recv_data_segment_len, 8192);
        assert_eq!(p.max_send_data_segment_len, 8192);
        assert_eq!(p.max_burst_len, 262_144);
        assert_eq!(p.first_burst_len, 65_536);
        assert!(p.initial_r2t && p.immediate_data);
        assert!(p.data_pdu_in_order && p.data_sequence_in_order);
        assert_eq!(p.max_outstanding_r2t, 1);
        assert_eq!(p.error_recovery_level, 0);
        assert_eq!((p.default_time2wait, p.default_time2retain), (2, 20));
        assert_eq!(p.digests(), crate::iscsi::pdu::Digests::default());
    }

    #[test]
    fn digest_policy() {
        assert!(DigestPolicy::Off.accepts(DigestKind::None));
        assert!(!DigestPolicy::Off.accepts(DigestKind::Crc32c));
        assert!(DigestPolicy::Allow.accepts(DigestKind::Crc32c));
        assert!(!DigestPolicy::Require.accepts(DigestKind::None));
    }
}
