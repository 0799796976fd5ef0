//! Reservations: RESERVE/RELEASE (6/10, SPC-2 style) and PERSISTENT RESERVE IN/OUT
//! (SPC-4 5.13, 6.15, 6.16), with the RESERVATION CONFLICT gating of other commands.
//!
//! Registrations are keyed by the initiator port name the engine gives with
//! [`LogicalUnit::nexus_named`] (so they survive a session being re-established). A unit
//! with a reservation file (`LuConfig::pr_file`) can persist through power loss (PTPL_C):
//! while the last REGISTER carried APTPL=1, or always under `LuConfig::pr_always`, each
//! change is written to the file before the command completes (`pr_persist.rs`).

use super::command::Command;
use super::lu::{Fail, LogicalUnit, Out};
use super::opcodes::Access;
use super::sense::{
    INVALID_FIELD_IN_PARAMETER_LIST, PARAMETER_LIST_LENGTH_ERROR, REGISTRATIONS_PREEMPTED,
    RESERVATIONS_PREEMPTED, RESERVATIONS_RELEASED, Sense,
};
use super::{Backend, NexusId, truncate};

/// ILLEGAL REQUEST, INVALID RELEASE OF PERSISTENT RESERVATION.
const INVALID_RELEASE: super::sense::Asc = super::sense::Asc(0x26, 0x04);

/// Persistent reservation types (SPC-4 table 169).
const WRITE_EXCLUSIVE: u8 = 1;
const EXCLUSIVE_ACCESS: u8 = 3;
const WRITE_EXCLUSIVE_RO: u8 = 5;
const EXCLUSIVE_ACCESS_RO: u8 = 6;
const WRITE_EXCLUSIVE_AR: u8 = 7;
const EXCLUSIVE_ACCESS_AR: u8 = 8;

pub(super) fn valid_type(t: u8) -> bool {
    matches!(
        t,
        WRITE_EXCLUSIVE
            | EXCLUSIVE_ACCESS
            | WRITE_EXCLUSIVE_RO
            | EXCLUSIVE_ACCESS_RO
            | WRITE_EXCLUSIVE_AR
            | EXCLUSIVE_ACCESS_AR
    )
}

/// Whether every registrant holds a reservation of this type.
pub(super) fn all_registrants(t: u8) -> bool {
    matches!(t, WRITE_EXCLUSIVE_AR | EXCLUSIVE_ACCESS_AR)
}

/// Whether registered non-holders get full access under this type.
fn registrants_access(t: u8) -> bool {
    matches!(
        t,
        WRITE_EXCLUSIVE_RO | EXCLUSIVE_ACCESS_RO | WRITE_EXCLUSIVE_AR | EXCLUSIVE_ACCESS_AR
    )
}

/// Whether reads by unprivileged nexuses conflict.
fn exclusive_access(t: u8) -> bool {
    matches!(
        t,
        EXCLUSIVE_ACCESS | EXCLUSIVE_ACCESS_RO | EXCLUSIVE_ACCESS_AR
    )
}

/// One registered I_T nexus (by initiator port name; `port`: the target port name it
/// registered through) and its reservation key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Registrant {
    pub(super) name: String,
    pub(super) port: String,
    pub(super) key: u64,
}

/// A persistent reservation: who made it (through which target port) and of which type
/// (scope is always LU).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Held {
    pub(super) holder: String,
    pub(super) port: String,
    pub(super) kind: u8,
}

/// Reservation state of one logical unit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reservations {
    /// The nexus holding a RESERVE(6/10) reservation.
    pub(super) legacy: Option<NexusId>,
    pub(super) generation: u32,
    /// The APTPL bit of the last REGISTER: persist through power loss.
    pub(super) aptpl: bool,
    pub(super) registrants: Vec<Registrant>,
    pub(super) reservation: Option<Held>,
}

impl Reservations {
    /// I_T nexus loss releases its RESERVE(6/10) reservation.
    pub fn nexus_lost(&mut self, nexus: NexusId) {
        if self.legacy == Some(nexus) {
            self.legacy = None;
        }
    }

    /// LUN RESET releases RESERVE(6/10) reservations (persistent ones survive).
    pub fn reset(&mut self) {
        self.legacy = None;
    }

    fn key_of(&self, name: &str) -> Option<u64> {
        self.registrants
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.key)
    }

    fn is_holder(&self, name: &str) -> bool {
        match &self.reservation {
            Some(h) if all_registrants(h.kind) => self.key_of(name).is_some(),
            Some(h) => h.holder == name,
            None => false,
        }
    }

    /// Whether a command of class `access` from `name` conflicts with the persistent
    /// reservation.
    fn conflicts(&self, name: &str, access: Access) -> bool {
        let Some(h) = &self.reservation else {
            return false;
        };
        if self.is_holder(name) {
            return false;
        }
        let privileged = registrants_access(h.kind) && self.key_of(name).is_some();
        match access {
            Access::Always => false,
            Access::Reserve => true,
            Access::Read => !privileged && exclusive_access(h.kind),
            Access::Write => !privileged,
        }
    }

    /// Removes a registration; releases the reservation if it goes with it. Returns the
    /// names that must be told RESERVATIONS RELEASED.
    fn unregister(&mut self, name: &str) -> Vec<String> {
        self.registrants.retain(|r| r.name != name);
        let released = match &self.reservation {
            Some(h) if all_registrants(h.kind) => self.registrants.is_empty(),
            Some(h) => h.holder == name,
            None => false,
        };
        if !released {
            return Vec::new();
        }
        let kind = self.reservation.take().map(|h| h.kind).unwrap_or(0);
        if matches!(kind, WRITE_EXCLUSIVE_RO | EXCLUSIVE_ACCESS_RO) {
            self.registrants.iter().map(|r| r.name.clone()).collect()
        } else {
            Vec::new()
        }
    }
}

/// The basic PERSISTENT RESERVE OUT parameter list (SPC-4 6.16.2).
#[derive(Debug)]
struct ProutParams {
    key: u64,
    sa_key: u64,
    aptpl: bool,
}

/// `ptpl_c`: the unit can persist through power loss (else APTPL=1 is refused).
fn parse_prout(data: &[u8], ptpl_c: bool) -> Result<ProutParams, Sense> {
    if data.len() != 24 {
        return Err(Sense::illegal(PARAMETER_LIST_LENGTH_ERROR));
    }
    let flags = data[20];
    if flags & 0x08 != 0 {
        return Err(Sense::invalid_param_field(20, Some(3))); // SPEC_I_PT
    }
    if flags & 0x04 != 0 {
        return Err(Sense::invalid_param_field(20, Some(2))); // ALL_TG_PT
    }
    let aptpl = flags & 0x01 != 0;
    if aptpl && !ptpl_c {
        return Err(Sense::invalid_param_field(20, Some(0)));
    }
    Ok(ProutParams {
        key: u64::from_be_bytes(data[0..8].try_into().unwrap_or_default()),
        sa_key: u64::from_be_bytes(data[8..16].try_into().unwrap_or_default()),
        aptpl,
    })
}

/// An iSCSI TransportID (SPC-4 7.6.4.6) for an initiator port name.
fn transport_id(name: &str) -> Vec<u8> {
    let with_isid = name.contains(",i,0x");
    let mut v = vec![if with_isid { 0x45 } else { 0x05 }, 0, 0, 0];
    v.extend(name.bytes().take(220));
    v.push(0);
    while v.len() < 24 || !v.len().is_multiple_of(4) {
        v.push(0);
    }
    let len = (v.len() - 4) as u16;
    v[2..4].copy_from_slice(&len.to_be_bytes());
    v
}

impl<B: Backend> LogicalUnit<B> {
    /// Whether `command` from `nexus` conflicts with a reservation held elsewhere.
    pub(super) fn conflicts(&self, nexus: NexusId, access: Access, command: &Command) -> bool {
        let r = self.reservations.borrow();
        if let Some(holder) = r.legacy {
            // SPC-2: only these pass a reservation held through another nexus.
            return holder != nexus
                && !matches!(
                    command,
                    Command::Inquiry { .. }
                        | Command::ReportLuns { .. }
                        | Command::RequestSense { .. }
                        | Command::Release
                        | Command::PrIn { .. }
                        | Command::ReportOpcodes { .. }
                        | Command::ReportTmf { .. }
                        | Command::ReportTargetPortGroups { .. }
                );
        }
        let name = self.nexuses.borrow().name(nexus);
        r.conflicts(&name, access)
    }

    pub(super) fn reserve(&self, nexus: NexusId) -> Out {
        let mut r = self.reservations.borrow_mut();
        if r.reservation.is_some() {
            return Err(Fail::Conflict);
        }
        match r.legacy {
            Some(holder) if holder != nexus => Err(Fail::Conflict),
            _ => {
                r.legacy = Some(nexus);
                Ok(Vec::new())
            }
        }
    }

    /// RELEASE(6/10): releases this nexus's reservation; GOOD without effect otherwise.
    pub(super) fn release(&self, nexus: NexusId) -> Out {
        let mut r = self.reservations.borrow_mut();
        if r.legacy == Some(nexus) {
            r.legacy = None;
        }
        Ok(Vec::new())
    }

    pub(super) fn pr_in(&self, sa: u8, alloc: u16) -> Out {
        let r = self.reservations.borrow();
        let mut d = Vec::with_capacity(64);
        match sa {
            0 => {
                d.extend_from_slice(&r.generation.to_be_bytes());
                d.extend_from_slice(&((r.registrants.len() * 8) as u32).to_be_bytes());
                for reg in &r.registrants {
                    d.extend_from_slice(&reg.key.to_be_bytes());
                }
            }
            1 => {
                d.extend_from_slice(&r.generation.to_be_bytes());
                match &r.reservation {
                    None => d.extend_from_slice(&0u32.to_be_bytes()),
                    Some(h) => {
                        d.extend_from_slice(&16u32.to_be_bytes());
                        let key = if all_registrants(h.kind) {
                            0
                        } else {
                            r.key_of(&h.holder).unwrap_or(0)
                        };
                        d.extend_from_slice(&key.to_be_bytes());
                        d.extend_from_slice(&[0, 0, 0, 0, 0, h.kind & 0x0F, 0, 0]);
                    }
                }
            }
            2 => {
                // CRH, PTPL_C; TMV, PTPL_A; type mask: WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC,
                // WR_EX / EX_AC_AR.
                let ptpl_c = u8::from(self.cfg.pr_file.is_some());
                let ptpl_a = u8::from(self.persists(&r));
                d.extend_from_slice(&[0, 8, 0x10 | ptpl_c, 0x80 | ptpl_a, 0xEA, 0x01, 0, 0]);
            }
            3 => {
                d.extend_from_slice(&r.generation.to_be_bytes());
                d.extend_from_slice(&[0; 4]);
                for reg in &r.registrants {
                    d.extend_from_slice(&reg.key.to_be_bytes());
                    d.extend_from_slice(&[0; 4]);
                    let holder = r.is_holder(&reg.name);
                    d.push(if holder { 0x01 } else { 0 });
                    d.push(match (&r.reservation, holder) {
                        (Some(h), true) => h.kind & 0x0F,
                        _ => 0,
                    });
                    d.extend_from_slice(&[0; 4]);
                    d.extend_from_slice(&self.cfg.relative_port.to_be_bytes());
                    let tid = transport_id(&reg.name);
                    d.extend_from_slice(&(tid.len() as u32).to_be_bytes());
                    d.extend_from_slice(&tid);
                }
                let len = (d.len() - 8) as u32;
                d[4..8].copy_from_slice(&len.to_be_bytes());
            }
            _ => return Err(Sense::invalid_cdb_field(1, Some(4)).into()),
        }
        Ok(truncate(d, usize::from(alloc)))
    }

    pub(super) fn pr_out(
        &self,
        nexus: NexusId,
        sa: u8,
        scope: u8,
        kind: u8,
        len: u32,
        data: &[u8],
    ) -> Out {
        let Some(list) = data.get(..len as usize) else {
            return Err(Sense::illegal(PARAMETER_LIST_LENGTH_ERROR).into());
        };
        let p = parse_prout(list, self.cfg.pr_file.is_some())?;
        let name = self.nexuses.borrow().name(nexus);
        let needs_type = matches!(sa, 1 | 2 | 4 | 5);
        if needs_type {
            if scope != 0 {
                return Err(Sense::invalid_cdb_field(2, Some(7)).into());
            }
            // PREEMPT may leave TYPE zero when it only removes registrations.
            let type_ok = valid_type(kind) || (matches!(sa, 4 | 5) && kind == 0);
            if !type_ok {
                return Err(Sense::invalid_cdb_field(2, Some(3)).into());
            }
        }
        // The state before: what stays if the change cannot be made durable.
        let before = self.reservations.borrow().clone();
        let out = match sa {
            0 | 6 => self.pr_register(nexus, &name, &p, sa == 6),
            1 => self.pr_reserve(&name, &p, kind),
            2 => self.pr_release(nexus, &name, &p, kind),
            3 => self.pr_clear(nexus, &name, &p),
            4 | 5 => self.pr_preempt(nexus, &name, &p, kind, sa == 5),
            _ => Err(Sense::invalid_cdb_field(1, Some(4)).into()),
        };
        let notes = std::mem::take(&mut *self.pr_notes.borrow_mut());
        let out = out.and_then(|d| self.persist_change(&before).map(|()| d));
        if out.is_err() {
            *self.reservations.borrow_mut() = before;
            self.preempted.borrow_mut().clear();
            return out;
        }
        let mut n = self.nexuses.borrow_mut();
        for (names, asc) in notes {
            for name in names {
                n.establish_named(&name, asc, Some(nexus));
            }
        }
        out
    }

    /// Tells the nexuses of `names` (other than the issuer's) `asc` once the command's
    /// change stands (it is durable when it persists).
    fn notify(&self, names: &[String], asc: super::sense::Asc, _except: NexusId) {
        if !names.is_empty() {
            self.pr_notes.borrow_mut().push((names.to_vec(), asc));
        }
    }

    /// REGISTER / REGISTER AND IGNORE EXISTING KEY.
    fn pr_register(&self, nexus: NexusId, name: &str, p: &ProutParams, ignore: bool) -> Out {
        let mut r = self.reservations.borrow_mut();
        let port = self.cfg.target_port_name();
        let released = match r.key_of(name) {
            None => {
                if !ignore && p.key != 0 {
                    return Err(Fail::Conflict);
                }
                if p.sa_key == 0 {
                    return Ok(Vec::new());
                }
                r.registrants.push(Registrant {
                    name: name.to_owned(),
                    port,
                    key: p.sa_key,
                });
                Vec::new()
            }
            Some(key) => {
                if !ignore && p.key != key {
                    return Err(Fail::Conflict);
                }
                if p.sa_key == 0 {
                    r.unregister(name)
                } else {
                    if let Some(reg) = r.registrants.iter_mut().find(|x| x.name == name) {
                        reg.key = p.sa_key;
                    }
                    Vec::new()
                }
            }
        };
        // SPC-4 6.16.2: the last APTPL received decides whether the state persists.
        r.aptpl = p.aptpl;
        r.generation = r.generation.wrapping_add(1);
        drop(r);
        self.notify(&released, RESERVATIONS_RELEASED, nexus);
        Ok(Vec::new())
    }

    fn pr_reserve(&self, name: &str, p: &ProutParams, kind: u8) -> Out {
        let mut r = self.reservations.borrow_mut();
        if r.key_of(name) != Some(p.key) || r.legacy.is_some() {
            return Err(Fail::Conflict);
        }
        match &r.reservation {
            None => {
                r.reservation = Some(Held {
                    holder: name.to_owned(),
                    port: self.cfg.target_port_name(),
                    kind,
                });
                Ok(Vec::new())
            }
            Some(h) if r.is_holder(name) && h.kind == kind => Ok(Vec::new()),
            Some(_) => Err(Fail::Conflict),
        }
    }

    fn pr_release(&self, nexus: NexusId, name: &str, p: &ProutParams, kind: u8) -> Out {
        let mut r = self.reservations.borrow_mut();
        if r.key_of(name) != Some(p.key) {
            return Err(Fail::Conflict);
        }
        let Some(h) = r.reservation.clone() else {
            return Ok(Vec::new());
        };
        if !r.is_holder(name) {
            return Ok(Vec::new());
        }
        if h.kind != kind {
            return Err(Sense::illegal(INVALID_RELEASE).into());
        }
        r.reservation = None;
        let others: Vec<String> = if matches!(h.kind, WRITE_EXCLUSIVE | EXCLUSIVE_ACCESS) {
            Vec::new()
        } else {
            r.registrants.iter().map(|x| x.name.clone()).collect()
        };
        drop(r);
        self.notify(&others, RESERVATIONS_RELEASED, nexus);
        Ok(Vec::new())
    }

    fn pr_clear(&self, nexus: NexusId, name: &str, p: &ProutParams) -> Out {
        let mut r = self.reservations.borrow_mut();
        if r.key_of(name) != Some(p.key) {
            return Err(Fail::Conflict);
        }
        let others: Vec<String> = r.registrants.iter().map(|x| x.name.clone()).collect();
        r.registrants.clear();
        r.reservation = None;
        r.generation = r.generation.wrapping_add(1);
        drop(r);
        self.notify(&others, RESERVATIONS_PREEMPTED, nexus);
        Ok(Vec::new())
    }

    /// PREEMPT and PREEMPT AND ABORT (`abort`): the registrations go here; the tasks of the
    /// preempted nexuses are aborted by [`LogicalUnit::abort_preempted`] before the command
    /// completes.
    fn pr_preempt(
        &self,
        nexus: NexusId,
        name: &str,
        p: &ProutParams,
        kind: u8,
        abort: bool,
    ) -> Out {
        let mut r = self.reservations.borrow_mut();
        if r.key_of(name) != Some(p.key) {
            return Err(Fail::Conflict);
        }
        let current = r.reservation.clone();
        let holder_key = current
            .as_ref()
            .filter(|h| !all_registrants(h.kind))
            .and_then(|h| r.key_of(&h.holder));
        let removed: Vec<String>;
        match &current {
            // All-registrants reservation preempted with key 0: everyone else goes, and the
            // preempter takes a new reservation.
            Some(h) if all_registrants(h.kind) && p.sa_key == 0 => {
                removed = r
                    .registrants
                    .iter()
                    .filter(|x| x.name != name)
                    .map(|x| x.name.clone())
                    .collect();
                r.registrants.retain(|x| x.name == name);
                r.reservation = Some(Held {
                    holder: name.to_owned(),
                    port: self.cfg.target_port_name(),
                    kind: if kind == 0 { h.kind } else { kind },
                });
            }
            // The holder's key: its registrations go and the preempter takes over.
            Some(h) if holder_key == Some(p.sa_key) => {
                removed = r
                    .registrants
                    .iter()
                    .filter(|x| x.key == p.sa_key && x.name != name)
                    .map(|x| x.name.clone())
                    .collect();
                r.registrants
                    .retain(|x| x.key != p.sa_key || x.name == name);
                r.reservation = Some(Held {
                    holder: name.to_owned(),
                    port: self.cfg.target_port_name(),
                    kind: if kind == 0 { h.kind } else { kind },
                });
            }
            _ => {
                if p.sa_key == 0 {
                    return Err(Sense::illegal(INVALID_FIELD_IN_PARAMETER_LIST).into());
                }
                if !r.registrants.iter().any(|x| x.key == p.sa_key) {
                    return Err(Fail::Conflict);
                }
                removed = r
                    .registrants
                    .iter()
                    .filter(|x| x.key == p.sa_key && x.name != name)
                    .map(|x| x.name.clone())
                    .collect();
                r.registrants
                    .retain(|x| x.key != p.sa_key || x.name == name);
                // An all-registrants reservation ends with its last registrant.
                if r.registrants.is_empty() {
                    r.reservation = None;
                }
            }
        }
        r.generation = r.generation.wrapping_add(1);
        drop(r);
        self.notify(&removed, REGISTRATIONS_PREEMPTED, nexus);
        if abort {
            *self.preempted.borrow_mut() = removed;
        }
        Ok(Vec::new())
    }

    /// After a PREEMPT AND ABORT: aborts every task of the preempted I_T nexuses (SPC-4
    /// 5.13.11.2.3) and waits until they have ended, so none of their writes lands after the
    /// command completes. While it waits, their new tasks are aborted on arrival. Returns the
    /// preempted nexuses (empty for any other command).
    pub(super) async fn abort_preempted(&self, issuer: NexusId) -> Vec<NexusId> {
        let names = std::mem::take(&mut *self.preempted.borrow_mut());
        if names.is_empty() {
            return Vec::new();
        }
        let ids = self.nexuses.borrow().named(&names, issuer);
        self.tasks.fence(&ids);
        let aborted = self.tasks.abort(|k| ids.contains(&k.nexus));
        self.tasks.ended(aborted).await;
        self.tasks.unfence(&ids);
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prout_parameter_list_validation() {
        assert!(parse_prout(&[0; 23], true).is_err());
        let mut d = [0u8; 24];
        d[7] = 1;
        d[15] = 2;
        let p = parse_prout(&d, false).unwrap();
        assert_eq!((p.key, p.sa_key, p.aptpl), (1, 2, false));
        d[20] = 0x01;
        assert!(parse_prout(&d, true).unwrap().aptpl, "APTPL where PTPL_C");
        for (bit, flag) in [(3u8, 0x08u8), (2, 0x04), (0, 0x01)] {
            d[20] = flag;
            let e = parse_prout(&d, false).unwrap_err();
            assert_eq!(e.asc(), INVALID_FIELD_IN_PARAMETER_LIST);
            assert_eq!(
                e.sks,
                Some(super::super::sense::Sks::Field {
                    cdb: false,
                    byte: 20,
                    bit: Some(bit)
                })
            );
        }
    }

    #[test]
    fn transport_ids_are_padded() {
        let t = transport_id("iqn.a,i,0x123456789abc");
        assert_eq!(t[0], 0x45);
        assert_eq!(t.len() % 4, 0);
        assert_eq!(usize::from(u16::from_be_bytes([t[2], t[3]])), t.len() - 4);
        let t = transport_id("x");
        assert_eq!((t[0], t.len()), (0x05, 24));
    }

    #[test]
    fn conflict_matrix() {
        let mut r = Reservations::default();
        r.registrants.push(Registrant {
            name: "a".into(),
            port: "t".into(),
            key: 1,
        });
        r.registrants.push(Registrant {
            name: "b".into(),
            port: "t".into(),
            key: 2,
        });
        // (type, registered b reads, registered b writes, unregistered c reads, c writes)
        let table = [
            (WRITE_EXCLUSIVE, true, false, true, false),
            (EXCLUSIVE_ACCESS, false, false, false, false),
            (WRITE_EXCLUSIVE_RO, true, true, true, false),
            (EXCLUSIVE_ACCESS_RO, true, true, false, false),
            (WRITE_EXCLUSIVE_AR, true, true, true, false),
            (EXCLUSIVE_ACCESS_AR, true, true, false, false),
        ];
        for (kind, br, bw, cr, cw) in table {
            r.reservation = Some(Held {
                holder: "a".into(),
                port: "t".into(),
                kind,
            });
            assert!(!r.conflicts("a", Access::Write));
            assert_eq!(!r.conflicts("b", Access::Read), br, "type {kind}");
            assert_eq!(!r.conflicts("b", Access::Write), bw, "type {kind}");
            assert_eq!(!r.conflicts("c", Access::Read), cr, "type {kind}");
            assert_eq!(!r.conflicts("c", Access::Write), cw, "type {kind}");
            assert!(!r.conflicts("c", Access::Always));
        }
    }
}
