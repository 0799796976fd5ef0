//! Sequence numbers of one session on its single connection (RFC 7143 §4.2.2): the CmdSN
//! window the target advertises (ExpCmdSN..=MaxCmdSN) and the StatSN of its responses.

use crate::iscsi::pdu::Sns;

/// `a < b` in 32-bit serial number arithmetic (RFC 1982), as iSCSI compares sequence numbers.
pub(crate) fn sn_lt(a: u32, b: u32) -> bool {
    // The difference taken as a signed 32-bit value says which side of `b` `a` lies on.
    a != b && a.wrapping_sub(b) > u32::MAX / 2
}

/// `a > b` in serial number arithmetic.
pub(crate) fn sn_gt(a: u32, b: u32) -> bool {
    sn_lt(b, a)
}

/// What to do with a command PDU given its CmdSN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// In order (or immediate): process it.
    Accept,
    /// Outside ExpCmdSN..=MaxCmdSN: silently ignore it (RFC 7143 §4.2.2.1).
    OutOfWindow,
    /// Inside the window but not the next one. One connection delivers in order, so a gap
    /// means lost PDUs, which ErrorRecoveryLevel 0 cannot recover: drop the connection.
    Gap,
}

/// The CmdSN window and StatSN counter.
#[derive(Clone, Debug)]
pub(crate) struct Sequencer {
    exp_cmd_sn: u32,
    /// The largest MaxCmdSN advertised so far. It never decreases: initiators ignore a smaller
    /// value, so a command up to it may still arrive and must be accepted.
    max_cmd_sn: u32,
    /// The StatSN the next response carries.
    stat_sn: u32,
    /// The newest ExpStatSN the initiator acknowledged.
    exp_stat_sn: u32,
}

impl Sequencer {
    /// Starts after login: `exp_cmd_sn` is the next CmdSN expected, `stat_sn` the next StatSN
    /// to send, `window` the commands the login allowed (its MaxCmdSN = ExpCmdSN + window − 1).
    pub(crate) fn new(exp_cmd_sn: u32, stat_sn: u32, window: u32) -> Self {
        let window = window.max(1);
        Self {
            exp_cmd_sn,
            max_cmd_sn: exp_cmd_sn.wrapping_add(window - 1),
            stat_sn,
            exp_stat_sn: stat_sn,
        }
    }

    /// Commands the initiator may still send: MaxCmdSN − ExpCmdSN + 1 (0: window closed).
    pub(crate) fn window_free(&self) -> u32 {
        self.max_cmd_sn
            .wrapping_sub(self.exp_cmd_sn)
            .wrapping_add(1)
    }

    /// Opens the window by `slots` more commands (MaxCmdSN moves on; it never moves back).
    pub(crate) fn extend(&mut self, slots: u32) {
        self.max_cmd_sn = self.max_cmd_sn.wrapping_add(slots);
    }

    /// Checks a command's CmdSN and, when it is accepted and not immediate, moves ExpCmdSN
    /// past it.
    pub(crate) fn admit(&mut self, cmd_sn: u32, immediate: bool) -> Admission {
        if immediate {
            return Admission::Accept;
        }
        if sn_lt(cmd_sn, self.exp_cmd_sn) || sn_gt(cmd_sn, self.max_cmd_sn) {
            return Admission::OutOfWindow;
        }
        if cmd_sn != self.exp_cmd_sn {
            return Admission::Gap;
        }
        self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
        Admission::Accept
    }

    /// Consumes the CmdSN of a command that was rejected after decoding failed, if it is the
    /// next expected one, so the window does not stall at ErrorRecoveryLevel 0 (the initiator
    /// fails the task and never resends it).
    pub(crate) fn consume_rejected(&mut self, cmd_sn: u32) {
        if cmd_sn == self.exp_cmd_sn {
            self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
        }
    }

    /// The numbers for an outgoing PDU. With `advance`, the PDU is a response that consumes
    /// its StatSN.
    pub(crate) fn sns(&mut self, advance: bool) -> Sns {
        let sns = Sns {
            stat_sn: self.stat_sn,
            exp_cmd_sn: self.exp_cmd_sn,
            max_cmd_sn: self.max_cmd_sn,
        };
        if advance {
            self.stat_sn = self.stat_sn.wrapping_add(1);
        }
        sns
    }

    /// Records an ExpStatSN from the initiator; values beyond what was sent are ignored.
    pub(crate) fn acknowledge(&mut self, exp_stat_sn: u32) {
        if sn_gt(exp_stat_sn, self.exp_stat_sn) && !sn_gt(exp_stat_sn, self.stat_sn) {
            self.exp_stat_sn = exp_stat_sn;
        }
    }

    pub(crate) fn exp_cmd_sn(&self) -> u32 {
        self.exp_cmd_sn
    }

    pub(crate) fn max_cmd_sn(&self) -> u32 {
        self.max_cmd_sn
    }

    pub(crate) fn stat_sn(&self) -> u32 {
        self.stat_sn
    }

    pub(crate) fn exp_stat_sn(&self) -> u32 {
        self.exp_stat_sn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_comparison_wraps() {
        assert!(sn_lt(1, 2));
        assert!(sn_lt(u32::MAX, 0));
        assert!(sn_gt(3, u32::MAX - 3));
        assert!(!sn_lt(5, 5) && !sn_gt(5, 5));
    }

    #[test]
    fn window_admits_in_order_and_ignores_outside() {
        let mut s = Sequencer::new(10, 100, 4);
        assert_eq!(s.max_cmd_sn(), 13);
        assert_eq!(s.admit(9, false), Admission::OutOfWindow);
        assert_eq!(s.admit(14, false), Admission::OutOfWindow);
        assert_eq!(s.admit(11, false), Admission::Gap);
        assert_eq!(s.admit(10, false), Admission::Accept);
        assert_eq!(s.exp_cmd_sn(), 11);
        // Immediate commands neither need a slot nor advance ExpCmdSN.
        assert_eq!(s.admit(11, true), Admission::Accept);
        assert_eq!(s.exp_cmd_sn(), 11);
    }

    #[test]
    fn the_window_closes_as_commands_arrive_and_opens_only_forward() {
        let mut s = Sequencer::new(0, 0, 4);
        assert_eq!(s.window_free(), 4);
        for sn in 0..4 {
            assert_eq!(s.admit(sn, false), Admission::Accept);
        }
        // Window closed: MaxCmdSN stays at 3 = ExpCmdSN - 1.
        assert_eq!(s.window_free(), 0);
        let sns = s.sns(false);
        assert_eq!((sns.exp_cmd_sn, sns.max_cmd_sn), (4, 3));
        assert_eq!(s.admit(4, false), Admission::OutOfWindow);
        s.extend(2);
        assert_eq!((s.window_free(), s.sns(false).max_cmd_sn), (2, 5));
    }

    #[test]
    fn stat_sn_advances_only_for_responses() {
        let mut s = Sequencer::new(0, u32::MAX, 1);
        assert_eq!(s.sns(false).stat_sn, u32::MAX);
        assert_eq!(s.sns(true).stat_sn, u32::MAX);
        assert_eq!(s.sns(true).stat_sn, 0);
        assert_eq!(s.stat_sn(), 1);
        s.acknowledge(1);
        assert_eq!(s.exp_stat_sn(), 1);
        s.acknowledge(7);
        assert_eq!(s.exp_stat_sn(), 1);
    }
}
