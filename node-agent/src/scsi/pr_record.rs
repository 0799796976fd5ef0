//! A logical unit's persistent reservations as kept on disk when they persist through power
//! loss (the initiator's APTPL, or the Device's `reservationPersistence: Always`): every
//! registration (its I_T nexus: initiator port name with the ISID, target port name; and its
//! key), the reservation (holder and type) and the generation. Pure: bytes in, bytes out;
//! [`decode`] refuses anything a logical unit could not have written.

use serde::{Deserialize, Serialize};

use super::pr::{Held, Registrant, Reservations, all_registrants, valid_type};

/// Format of the record.
pub const VERSION: u32 = 1;

/// Longest port name kept (an iSCSI name is at most 223 bytes, plus `,i,0x` and the ISID).
const MAX_NAME: usize = 255;

/// Registrations kept at most (far above what a cluster registers).
const MAX_REGISTRANTS: usize = 1024;

/// The persisted state of one logical unit's persistent reservations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrRecord {
    pub version: u32,
    /// PRgeneration (SPC-4 6.15.2).
    pub generation: u32,
    /// The most recent APTPL an initiator sent with REGISTER.
    pub aptpl: bool,
    pub registrants: Vec<RegistrationRecord>,
    pub reservation: Option<ReservationRecord>,
}

/// One registered I_T nexus and its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrationRecord {
    /// Initiator port name: `iqn...,i,0x<isid>`.
    pub initiator: String,
    /// Target port name: `iqn...,t,0x<tpgt>`.
    pub target_port: String,
    pub key: u64,
}

/// The persistent reservation: its holder (the nexus that made it) and type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReservationRecord {
    pub initiator: String,
    pub target_port: String,
    #[serde(rename = "type")]
    pub kind: u8,
}

/// Why persisted bytes are not a reservation record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrRecordError {
    #[error("not a reservation record: {0}")]
    Syntax(String),
    #[error("format version {0} is not {VERSION}")]
    Version(u32),
    #[error("{0}")]
    Invalid(String),
}

/// The record's bytes (JSON).
pub fn encode(r: &PrRecord) -> Vec<u8> {
    // Plain data of strings and integers: serialising it cannot fail.
    serde_json::to_vec_pretty(r).unwrap_or_default()
}

/// Reads a record, checking that it describes a state a logical unit can be in.
pub fn decode(bytes: &[u8]) -> Result<PrRecord, PrRecordError> {
    let r: PrRecord =
        serde_json::from_slice(bytes).map_err(|e| PrRecordError::Syntax(e.to_string()))?;
    if r.version != VERSION {
        return Err(PrRecordError::Version(r.version));
    }
    let bad = |m: String| Err(PrRecordError::Invalid(m));
    if r.registrants.len() > MAX_REGISTRANTS {
        return bad(format!("{} registrations", r.registrants.len()));
    }
    for (i, g) in r.registrants.iter().enumerate() {
        check_name(&g.initiator, &format!("registrants[{i}].initiator"))?;
        check_name(&g.target_port, &format!("registrants[{i}].targetPort"))?;
        if g.key == 0 {
            return bad(format!(
                "registrants[{i}].key is 0 (a registration has a key)"
            ));
        }
        if r.registrants[..i]
            .iter()
            .any(|o| o.initiator == g.initiator && o.target_port == g.target_port)
        {
            return bad(format!("registrants[{i}] registers its I_T nexus twice"));
        }
    }
    if let Some(h) = &r.reservation {
        check_name(&h.initiator, "reservation.initiator")?;
        check_name(&h.target_port, "reservation.targetPort")?;
        if !valid_type(h.kind) {
            return bad(format!(
                "reservation.type {} is not a reservation type",
                h.kind
            ));
        }
        let registered = r
            .registrants
            .iter()
            .any(|g| g.initiator == h.initiator && g.target_port == h.target_port);
        // An all-registrants reservation lives as long as any registration; any other is
        // held by a registered nexus.
        let holds = if all_registrants(h.kind) {
            !r.registrants.is_empty()
        } else {
            registered
        };
        if !holds {
            return bad("reservation is held by no registered I_T nexus".into());
        }
    }
    Ok(r)
}

fn check_name(n: &str, what: &str) -> Result<(), PrRecordError> {
    if n.is_empty() || n.len() > MAX_NAME || n.chars().any(|c| c.is_control()) {
        return Err(PrRecordError::Invalid(format!(
            "{what} is not a port name ({} bytes)",
            n.len()
        )));
    }
    Ok(())
}

impl Reservations {
    /// The persistent part of this state (RESERVE(6/10) is not persistent).
    pub(super) fn to_record(&self) -> PrRecord {
        let port_of = |name: &str| {
            self.registrants
                .iter()
                .find(|g| g.name == name)
                .map(|g| g.port.clone())
        };
        PrRecord {
            version: VERSION,
            generation: self.generation,
            aptpl: self.aptpl,
            registrants: self
                .registrants
                .iter()
                .map(|g| RegistrationRecord {
                    initiator: g.name.clone(),
                    target_port: g.port.clone(),
                    key: g.key,
                })
                .collect(),
            reservation: self.reservation.as_ref().map(|h| ReservationRecord {
                initiator: h.holder.clone(),
                target_port: port_of(&h.holder).unwrap_or_else(|| h.port.clone()),
                kind: h.kind,
            }),
        }
    }

    /// The state a record holds (checked by [`decode`]).
    pub(super) fn from_record(r: PrRecord) -> Self {
        Reservations {
            legacy: None,
            generation: r.generation,
            aptpl: r.aptpl,
            registrants: r
                .registrants
                .into_iter()
                .map(|g| Registrant {
                    name: g.initiator,
                    port: g.target_port,
                    key: g.key,
                })
                .collect(),
            reservation: r.reservation.map(|h| Held {
                holder: h.initiator,
                port: h.target_port,
                kind: h.kind,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PrRecord {
        PrRecord {
            version: VERSION,
            generation: 7,
            aptpl: true,
            registrants: vec![
                RegistrationRecord {
                    initiator: "iqn.2026-12.a:host1,i,0x400001370000".into(),
                    target_port: "iqn.2026-11.dev.spindle:t,t,0x0001".into(),
                    key: 0xA1,
                },
                RegistrationRecord {
                    initiator: "iqn.2026-12.a:host2,i,0x400001370001".into(),
                    target_port: "iqn.2026-11.dev.spindle:t,t,0x0001".into(),
                    key: u64::MAX,
                },
            ],
            reservation: Some(ReservationRecord {
                initiator: "iqn.2026-12.a:host1,i,0x400001370000".into(),
                target_port: "iqn.2026-11.dev.spindle:t,t,0x0001".into(),
                kind: 5,
            }),
        }
    }

    #[test]
    fn round_trip_bytes_and_state() {
        let r = sample();
        assert_eq!(decode(&encode(&r)).unwrap(), r);
        // Restoring gives the state that was saved, and saving it again the same bytes.
        let state = Reservations::from_record(r.clone());
        assert_eq!(state.to_record(), r);
        assert_eq!(Reservations::from_record(state.to_record()), state);
        let empty = PrRecord {
            registrants: vec![],
            reservation: None,
            ..r
        };
        assert_eq!(decode(&encode(&empty)).unwrap(), empty);
    }

    #[test]
    fn malformed_records_are_refused() {
        for junk in [
            &b""[..],
            b"{",
            b"null",
            b"[]",
            b"{\"version\":1}",
            &[0xFF, 0xFE],
        ] {
            assert!(
                matches!(decode(junk), Err(PrRecordError::Syntax(_))),
                "{junk:?}"
            );
        }
        let text = String::from_utf8(encode(&sample())).unwrap();
        let extra = text.replacen("\"aptpl\"", "\"surprise\": 1, \"aptpl\"", 1);
        assert!(matches!(
            decode(extra.as_bytes()),
            Err(PrRecordError::Syntax(_))
        ));
        let big_key = text.replacen("18446744073709551615", "18446744073709551616", 1);
        assert!(matches!(
            decode(big_key.as_bytes()),
            Err(PrRecordError::Syntax(_))
        ));

        let mut r = sample();
        r.version = 2;
        assert_eq!(decode(&encode(&r)), Err(PrRecordError::Version(2)));
        type Edit = fn(&mut PrRecord);
        let edits: [(Edit, &str); 7] = [
            (|r| r.registrants[0].key = 0, "key is 0"),
            (|r| r.registrants[1].initiator.clear(), "not a port name"),
            (
                |r| r.registrants[1].target_port = "a\nb".into(),
                "not a port name",
            ),
            (|r| r.registrants[1] = r.registrants[0].clone(), "twice"),
            (
                |r| r.reservation.as_mut().unwrap().kind = 2,
                "not a reservation type",
            ),
            (
                |r| {
                    r.registrants.remove(0);
                },
                "no registered",
            ),
            (
                |r| {
                    r.registrants.clear();
                    r.reservation.as_mut().unwrap().kind = 7;
                },
                "no registered",
            ),
        ];
        for (edit, why) in edits {
            let mut r = sample();
            edit(&mut r);
            match decode(&encode(&r)) {
                Err(PrRecordError::Invalid(m)) => assert!(m.contains(why), "{m} vs {why}"),
                other => panic!("{why}: {other:?}"),
            }
        }
    }
}
