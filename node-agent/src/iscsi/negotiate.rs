//! Operational parameter negotiation (RFC 7143 §6.2, §13) as a pure state machine: the
//! initiator's keys in, response keys out, [`SessionParams`] at the end.
//!
//! Results follow each key's function: list (digests: the first value of the initiator's list
//! that the target accepts), minimum, maximum, boolean OR / AND, and declarations
//! (MaxRecvDataSegmentLength, one per direction). Keys irrelevant in a discovery session get
//! `Irrelevant`, unknown keys `NotUnderstood`, values outside the RFC range `Reject`.
//!
//! Login and security keys (InitiatorName, TargetName, SessionType, AuthMethod, CHAP_*) are the
//! login machine's and never come here.

use std::collections::{HashMap, HashSet};

use thiserror::Error;

use super::params::{
    DEFAULT_MAX_RECV_DATA_SEGMENT_LEN, DigestKind, DigestPolicy, MAX_SEGMENT_LEN, MIN_SEGMENT_LEN,
    SessionParams, SessionType, TargetLimits,
};
use super::text::{self, IRRELEVANT, NOT_UNDERSTOOD, Pairs, REJECT};

/// Why negotiation fails the login (status 0x0200, initiator error).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NegotiateError {
    #[error("key {0} negotiated again with a different value")]
    Renegotiated(String),
    #[error("invalid MaxRecvDataSegmentLength declaration `{0}`")]
    BadDeclaration(String),
    #[error("{0} must be CRC32C on this target")]
    DigestRequired(&'static str),
}

/// How a key is negotiated on this session.
#[derive(Clone, Copy, Debug)]
enum Rule {
    Digest(DigestPolicy),
    Min {
        lo: u64,
        hi: u64,
        ours: u64,
    },
    Max {
        lo: u64,
        hi: u64,
        ours: u64,
    },
    Or(bool),
    And(bool),
    /// The initiator's MaxRecvDataSegmentLength.
    Declaration,
    /// A list where we accept only one value.
    OneOf(&'static str),
    Answer(&'static str),
}

/// A negotiated value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    Num(u64),
    Bool(bool),
    Digest(DigestKind),
}

impl Value {
    fn text(self) -> String {
        match self {
            Self::Num(n) => n.to_string(),
            Self::Bool(b) => text::bool_value(b).to_owned(),
            Self::Digest(DigestKind::None) => "None".to_owned(),
            Self::Digest(DigestKind::Crc32c) => "CRC32C".to_owned(),
        }
    }
}

fn digest_kind(name: &str) -> Option<DigestKind> {
    match name {
        "None" => Some(DigestKind::None),
        "CRC32C" => Some(DigestKind::Crc32c),
        _ => None,
    }
}

const SEGMENT: (u64, u64) = (MIN_SEGMENT_LEN as u64, MAX_SEGMENT_LEN as u64);

/// Keys whose result the target may need to offer itself when the RFC default is outside its
/// limits, in the order they are offered.
const OFFERABLE: [&str; 9] = [
    "HeaderDigest",
    "DataDigest",
    "InitialR2T",
    "ImmediateData",
    "MaxBurstLength",
    "FirstBurstLength",
    "MaxOutstandingR2T",
    "DefaultTime2Wait",
    "DefaultTime2Retain",
];

/// Negotiation state of one login.
#[derive(Debug, Clone)]
pub struct Negotiator {
    limits: TargetLimits,
    session_type: SessionType,
    params: SessionParams,
    /// Keys the initiator offered, with its value and our answer (to repeat on an identical
    /// re-offer, as libiscsi does after a T=0 response).
    answered: HashMap<String, (String, Option<String>)>,
    /// Keys we offered and await an answer for.
    offered: HashSet<String>,
    declared: bool,
}

impl Negotiator {
    /// A negotiation against `limits` for a session of `session_type`.
    pub fn new(limits: TargetLimits, session_type: SessionType) -> Self {
        Self {
            limits,
            session_type,
            params: SessionParams {
                session_type,
                ..SessionParams::default()
            },
            answered: HashMap::new(),
            offered: HashSet::new(),
            declared: false,
        }
    }

    /// The parameters negotiated so far.
    pub fn params(&self) -> &SessionParams {
        &self.params
    }

    fn irrelevant_in_discovery(key: &str) -> bool {
        matches!(
            key,
            "MaxConnections"
                | "InitialR2T"
                | "ImmediateData"
                | "MaxBurstLength"
                | "FirstBurstLength"
                | "MaxOutstandingR2T"
                | "DataPDUInOrder"
                | "DataSequenceInOrder"
        )
    }

    fn rule(&self, key: &str) -> Rule {
        let l = &self.limits;
        if self.session_type == SessionType::Discovery && Self::irrelevant_in_discovery(key) {
            return Rule::Answer(IRRELEVANT);
        }
        match key {
            "HeaderDigest" => Rule::Digest(l.header_digest),
            "DataDigest" => Rule::Digest(l.data_digest),
            "MaxConnections" => Rule::Min {
                lo: 1,
                hi: 65535,
                ours: 1,
            },
            "InitialR2T" => Rule::Or(l.initial_r2t),
            "ImmediateData" => Rule::And(l.immediate_data),
            "MaxRecvDataSegmentLength" => Rule::Declaration,
            "MaxBurstLength" => Rule::Min {
                lo: SEGMENT.0,
                hi: SEGMENT.1,
                ours: u64::from(l.max_burst_len),
            },
            "FirstBurstLength" => Rule::Min {
                lo: SEGMENT.0,
                hi: SEGMENT.1,
                ours: u64::from(l.first_burst_len.min(self.params.max_burst_len)),
            },
            "DefaultTime2Wait" => Rule::Max {
                lo: 0,
                hi: 3600,
                ours: u64::from(l.default_time2wait),
            },
            "DefaultTime2Retain" => Rule::Min {
                lo: 0,
                hi: 3600,
                ours: u64::from(l.default_time2retain),
            },
            "MaxOutstandingR2T" => Rule::Min {
                lo: 1,
                hi: 65535,
                ours: u64::from(l.max_outstanding_r2t.max(1)),
            },
            // We deliver data in order only; OR with our Yes is always Yes.
            "DataPDUInOrder" | "DataSequenceInOrder" => Rule::Or(true),
            "ErrorRecoveryLevel" => Rule::Min {
                lo: 0,
                hi: 2,
                ours: 0,
            },
            // Markers (RFC 3720) are never used: AND with our No.
            "IFMarker" | "OFMarker" | "RDMAExtensions" => Rule::And(false),
            "IFMarkInt" | "OFMarkInt" => Rule::Answer(IRRELEVANT),
            // RFC 7144: level 1 is RFC 7143.
            "iSCSIProtocolLevel" => Rule::Min {
                lo: 0,
                hi: 31,
                ours: 1,
            },
            "TaskReporting" => Rule::OneOf("RFC3720"),
            // Target-declared keys an initiator must not send, and SendTargets outside a
            // full feature phase.
            "TargetAlias" | "TargetAddress" | "TargetPortalGroupTag" => Rule::Answer(REJECT),
            "SendTargets" => Rule::Answer(IRRELEVANT),
            _ => Rule::Answer(NOT_UNDERSTOOD),
        }
    }

    /// Applies `rule` to an offered `value`: the result, or None when the value is
    /// unacceptable (answer Reject).
    fn resolve(rule: Rule, value: &str) -> Option<Value> {
        match rule {
            Rule::Digest(policy) => text::list(value)
                .filter_map(digest_kind)
                .find(|&k| policy.accepts(k))
                .map(Value::Digest),
            Rule::Min { lo, hi, ours } => text::parse_number(value)
                .filter(|n| (lo..=hi).contains(n))
                .map(|n| Value::Num(n.min(ours))),
            Rule::Max { lo, hi, ours } => text::parse_number(value)
                .filter(|n| (lo..=hi).contains(n))
                .map(|n| Value::Num(n.max(ours))),
            Rule::Or(ours) => text::parse_bool(value).map(|b| Value::Bool(b || ours)),
            Rule::And(ours) => text::parse_bool(value).map(|b| Value::Bool(b && ours)),
            Rule::Declaration | Rule::OneOf(_) | Rule::Answer(_) => None,
        }
    }

    fn store(&mut self, key: &str, value: Value) {
        let p = &mut self.params;
        let num = |v: Value| match v {
            Value::Num(n) => n,
            _ => 0,
        };
        let flag = |v: Value| matches!(v, Value::Bool(true));
        let sat16 = |n: u64| u16::try_from(n).unwrap_or(u16::MAX);
        let sat32 = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        match (key, value) {
            ("HeaderDigest", Value::Digest(d)) => p.header_digest = d,
            ("DataDigest", Value::Digest(d)) => p.data_digest = d,
            ("MaxConnections", v) => p.max_connections = sat16(num(v)),
            ("InitialR2T", v) => p.initial_r2t = flag(v),
            ("ImmediateData", v) => p.immediate_data = flag(v),
            ("MaxBurstLength", v) => p.max_burst_len = sat32(num(v)),
            ("FirstBurstLength", v) => p.first_burst_len = sat32(num(v)),
            ("DefaultTime2Wait", v) => p.default_time2wait = sat16(num(v)),
            ("DefaultTime2Retain", v) => p.default_time2retain = sat16(num(v)),
            ("MaxOutstandingR2T", v) => p.max_outstanding_r2t = sat32(num(v)),
            ("DataPDUInOrder", v) => p.data_pdu_in_order = flag(v),
            ("DataSequenceInOrder", v) => p.data_sequence_in_order = flag(v),
            ("ErrorRecoveryLevel", v) => p.error_recovery_level = u8::try_from(num(v)).unwrap_or(0),
            _ => {}
        }
    }

    /// The answer to one offered key (None: no answer is sent).
    fn answer(&mut self, key: &str, value: &str) -> Result<Option<String>, NegotiateError> {
        let rule = self.rule(key);
        Ok(Some(match rule {
            Rule::Declaration => {
                let n = text::parse_number(value)
                    .filter(|n| (SEGMENT.0..=SEGMENT.1).contains(n))
                    .ok_or_else(|| NegotiateError::BadDeclaration(value.to_owned()))?;
                self.params.max_send_data_segment_len = u32::try_from(n).unwrap_or(MAX_SEGMENT_LEN);
                return Ok(None);
            }
            Rule::Answer(answer) => answer.to_owned(),
            Rule::OneOf(only) => {
                if text::list(value).any(|v| v == only) {
                    only.to_owned()
                } else {
                    REJECT.to_owned()
                }
            }
            _ => match Self::resolve(rule, value) {
                Some(result) => {
                    self.store(key, result);
                    result.text()
                }
                None => REJECT.to_owned(),
            },
        }))
    }

    /// The initiator answers a key we offered: take the function of both values.
    fn take_answer(&mut self, key: &str, value: &str) {
        let result = match self.rule(key) {
            Rule::Digest(policy) => digest_kind(value)
                .filter(|&k| policy.accepts(k))
                .map(Value::Digest),
            rule => Self::resolve(rule, value),
        };
        // A Reject, NotUnderstood or unacceptable answer leaves the default in place; finish()
        // refuses the login if the default is not acceptable.
        if let Some(result) = result {
            self.store(key, result);
        }
    }

    /// Answers the operational keys of one login request. Keys already answered may come
    /// again with the same value (the same answer is repeated); a changed value is an error.
    pub fn respond(&mut self, offered: &[(String, String)]) -> Result<Pairs, NegotiateError> {
        let mut response = Pairs::new();
        for (key, value) in offered {
            if self.offered.remove(key) {
                self.take_answer(key, value);
                continue;
            }
            if let Some((previous, answer)) = self.answered.get(key) {
                if previous != value {
                    return Err(NegotiateError::Renegotiated(key.clone()));
                }
                if let Some(answer) = answer {
                    response.push((key.clone(), answer.clone()));
                }
                continue;
            }
            let answer = self.answer(key, value)?;
            self.answered
                .insert(key.clone(), (value.clone(), answer.clone()));
            if let Some(answer) = answer {
                response.push((key.clone(), answer));
            }
        }
        Ok(response)
    }

    /// What the target declares without being asked, once per login: its
    /// MaxRecvDataSegmentLength. Call when answering in the operational stage.
    pub fn declarations(&mut self) -> Pairs {
        if self.declared {
            return Pairs::new();
        }
        self.declared = true;
        let ours = self
            .limits
            .max_recv_data_segment_len
            .clamp(MIN_SEGMENT_LEN, MAX_SEGMENT_LEN);
        self.params.max_recv_data_segment_len = ours;
        vec![("MaxRecvDataSegmentLength".to_owned(), ours.to_string())]
    }

    /// Keys the initiator has not negotiated whose RFC default the target cannot accept; the
    /// target offers its own value and must hear the answer before leaving the operational
    /// stage. Empty when nothing is missing (always, with initiators that offer every key).
    pub fn offers(&mut self) -> Pairs {
        let mut out = Pairs::new();
        for key in OFFERABLE {
            if self.answered.contains_key(key) || self.offered.contains(key) {
                continue;
            }
            let default = Value::text(self.current(key));
            let offer = match self.rule(key) {
                Rule::Digest(DigestPolicy::Require) => Some(Value::Digest(DigestKind::Crc32c)),
                Rule::Digest(_) | Rule::Answer(_) => None,
                rule => Self::resolve(rule, &default).filter(|v| v.text() != default),
            };
            if let Some(value) = offer {
                self.offered.insert(key.to_owned());
                out.push((key.to_owned(), value.text()));
            }
        }
        out
    }

    /// Whether answers to our offers are still outstanding.
    pub fn awaiting_answers(&self) -> bool {
        !self.offered.is_empty()
    }

    fn current(&self, key: &str) -> Value {
        let p = &self.params;
        match key {
            "HeaderDigest" => Value::Digest(p.header_digest),
            "DataDigest" => Value::Digest(p.data_digest),
            "InitialR2T" => Value::Bool(p.initial_r2t),
            "ImmediateData" => Value::Bool(p.immediate_data),
            "MaxBurstLength" => Value::Num(u64::from(p.max_burst_len)),
            "FirstBurstLength" => Value::Num(u64::from(p.first_burst_len)),
            "MaxOutstandingR2T" => Value::Num(u64::from(p.max_outstanding_r2t)),
            "DefaultTime2Wait" => Value::Num(u64::from(p.default_time2wait)),
            "DefaultTime2Retain" => Value::Num(u64::from(p.default_time2retain)),
            _ => Value::Num(0),
        }
    }

    /// The negotiated parameters, checked against the target's requirements.
    pub fn finish(mut self) -> Result<SessionParams, NegotiateError> {
        let p = &mut self.params;
        if !self.limits.header_digest.accepts(p.header_digest) {
            return Err(NegotiateError::DigestRequired("HeaderDigest"));
        }
        if !self.limits.data_digest.accepts(p.data_digest) {
            return Err(NegotiateError::DigestRequired("DataDigest"));
        }
        p.first_burst_len = p.first_burst_len.min(p.max_burst_len);
        if !self.declared {
            p.max_recv_data_segment_len = DEFAULT_MAX_RECV_DATA_SEGMENT_LEN;
        }
        Ok(self.params)
    }
}

#[cfg(test)]
mod tests;
