//! Logout (RFC 7143 §11.14): closing the session or this connection ends every task, then the
//! Logout Response goes out and the connection closes.

use tracing::debug;

use super::tmf::Reply;
use super::{Action, Session, State};
use crate::iscsi::pdu::{
    LogoutReason, LogoutRequest, LogoutResponse, Pdu, logout_response, reject_reason,
};

impl Session {
    pub(super) fn on_logout(&mut self, l: LogoutRequest, out: &mut Vec<Action>) {
        if !self.admit(l.cmd_sn, l.immediate, l.exp_stat_sn, out) {
            return;
        }
        debug!(reason = ?l.reason, cid = l.cid, "logout");
        let refuse = match l.reason {
            LogoutReason::CloseSession => None,
            LogoutReason::CloseConnection if l.cid == self.config.cid => None,
            LogoutReason::CloseConnection => Some(logout_response::CID_NOT_FOUND),
            // Connection recovery needs ErrorRecoveryLevel 2.
            LogoutReason::RemoveConnectionForRecovery => {
                Some(logout_response::RECOVERY_NOT_SUPPORTED)
            }
            LogoutReason::Other(_) => {
                self.reject(
                    reject_reason::INVALID_PDU_FIELD,
                    &Pdu::LogoutRequest(l),
                    out,
                );
                return;
            }
        };
        if let Some(response) = refuse {
            let sns = self.sns(true);
            let rsp = LogoutResponse {
                response,
                itt: l.itt,
                sns,
                time2wait: 0,
                time2retain: 0,
            };
            self.send(Pdu::LogoutResponse(rsp), out);
            return;
        }
        // With one connection both reasons end the session: every task is terminated and
        // no response is sent for them.
        self.state = State::LoggingOut;
        let ids = self.tasks.select(|_| true);
        let wait = self.terminate(ids, out);
        self.hold(wait, None, Reply::Logout { itt: l.itt }, out);
    }
}
