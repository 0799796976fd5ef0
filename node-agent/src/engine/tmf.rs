//! Task management across the sessions of one target. The control mode page says TST=000b
//! (one task set per logical unit for every I_T nexus) and TAS=1, so LOGICAL UNIT RESET,
//! CLEAR TASK SET and TARGET WARM/COLD RESET abort every nexus's tasks on the units they
//! name: other nexuses' aborted commands end with TASK ABORTED, and the function's response
//! goes out only after every aborted task has ended (RFC 7143 4.2.3.3, SAM-5 7).
//!
//! All sessions of a target live on its thread, so reaching them needs no locks.

use std::rc::Rc;

use super::sessions::{Conn, Host, Sessions, decode_lun};
use super::target_state::TargetState;
use crate::iscsi::pdu::{TaskFunction, tmf_response};
use crate::iscsi::session::TmfId;
use crate::ring::{self, TcpStream};
use crate::scsi::NexusId;

/// How long a reinstatement waits for the old session's commands to end.
const REINSTATE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl Sessions {
    /// Session reinstatement (RFC 7143 6.3.5): a new login of `initiator` with `isid` (and
    /// TSIH 0) replaces a session of that I_T nexus still open here. The old session goes
    /// first: its commands waiting in the logical units are aborted, its connection is
    /// closed (the I_T nexus is lost: unit attentions, RESERVE(6/10) and PREVENT go), and
    /// this waits until its commands already at the store have ended.
    pub(super) async fn reinstate(&self, target: &TargetState, initiator: &str, isid: [u8; 6]) {
        let old: Vec<(u64, Rc<TcpStream>)> = self
            .live
            .borrow()
            .iter()
            .filter(|(_, s)| {
                s.info.isid == isid && s.info.initiator_name.eq_ignore_ascii_case(initiator)
            })
            .map(|(id, s)| (*id, s.stream.clone()))
            .collect();
        for (id, stream) in old {
            tracing::info!(
                target = %target.name, session = id, initiator,
                "session reinstatement: closing the old session of this I_T nexus"
            );
            let aborted = target.abort_nexus(NexusId(id));
            let _ = stream.shutdown();
            let done = async {
                self.wait_gone(id).await;
                for (slot, a) in aborted {
                    slot.lu.tasks_ended(a).await;
                }
            };
            if tokio::time::timeout(REINSTATE_WAIT, done).await.is_err() {
                tracing::warn!(
                    target = %target.name, session = id,
                    "the old session's commands did not end in time; going on"
                );
            }
        }
    }
}

/// Starts carrying out task management function `id` on a task of its own ([`Conn::task_mgmt`]).
pub(super) fn start(conn: Rc<Conn>, id: TmfId, function: TaskFunction, raw_lun: u64) {
    ring::spawn(carry_out(conn, id, function, raw_lun));
}

/// Carries out task management function `id` that the session of `conn` handed to the engine
/// (its own tasks are already terminated), then reports it to the session, which answers
/// once its own aborted tasks have ended too.
async fn carry_out(conn: Rc<Conn>, id: TmfId, function: TaskFunction, raw_lun: u64) {
    let response = match &conn.host {
        Host::Target(t) => {
            let lun = decode_lun(raw_lun);
            let whole_target = !matches!(
                function,
                TaskFunction::LogicalUnitReset | TaskFunction::ClearTaskSet
            );
            let slots = match whole_target {
                false => t.slot(lun).into_iter().collect(),
                true => t.slots(),
            };
            if slots.is_empty() {
                tmf_response::LUN_DOES_NOT_EXIST
            } else {
                for other in conn.sessions.others(conn.id) {
                    other.abort_third_party(|raw| whole_target || decode_lun(raw) == lun);
                }
                t.abort_throttled_on((!whole_target).then_some(lun));
                let aborted: Vec<_> = slots
                    .iter()
                    .map(|s| (s.clone(), s.lu.abort_tasks(|_| true)))
                    .collect();
                for (slot, a) in aborted {
                    slot.lu.tasks_ended(a).await;
                }
                for s in &slots {
                    match function {
                        TaskFunction::LogicalUnitReset => s.lu.reset(),
                        TaskFunction::TargetWarmReset | TaskFunction::TargetColdReset => {
                            s.lu.target_reset()
                        }
                        _ => {}
                    }
                }
                if function == TaskFunction::TargetColdReset {
                    // A cold reset ends every session of the target (RFC 7143 11.5.1); the
                    // issuer's closes after its response.
                    for other in conn.sessions.others(conn.id) {
                        other.outbox.close();
                    }
                }
                tmf_response::COMPLETE
            }
        }
        Host::Discovery(_) => tmf_response::COMPLETE,
    };
    let mut out = Vec::new();
    conn.session
        .borrow_mut()
        .on_tmf_done(id, response, &mut out);
    if !conn.run(out) {
        conn.outbox.close();
    }
}
