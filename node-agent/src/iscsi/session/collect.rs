//! Collecting a write command's Data-Out (RFC 7143 §4.2.5.2): immediate data, the unsolicited
//! sequence, then R2T sequences, placed into one buffer of the Expected Data Transfer Length.

use thiserror::Error;

use crate::iscsi::pdu::{DataOut, RESERVED_TAG};

/// Why a Data-Out cannot be accepted. At ErrorRecoveryLevel 0 each of these ends the
/// connection (there is no within-command recovery).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub(crate) enum DataError {
    #[error("DataSN {got} where {expected} was expected")]
    DataSn { expected: u32, got: u32 },
    #[error("buffer offset {got} where {expected} was expected")]
    Offset { expected: u64, got: u32 },
    #[error("{len} bytes at offset {offset} run past the end of the sequence")]
    Overrun { offset: u32, len: usize },
    #[error("sequence ended (F bit) after {got} of {len} bytes")]
    ShortSequence { got: u32, len: u32 },
    #[error("unsolicited Data-Out while no unsolicited data is expected")]
    NoUnsolicited,
}

/// An R2T the session should send: its transfer tag and the range it asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct R2tPlan {
    pub(crate) ttt: u32,
    pub(crate) offset: u32,
    pub(crate) len: u32,
}

/// One data sequence: the unsolicited one (TTT 0xffffffff) or the answer to one R2T.
#[derive(Clone, Debug)]
struct Sequence {
    ttt: u32,
    start: u32,
    len: u32,
    got: u32,
    next_data_sn: u32,
}

impl Sequence {
    fn new(ttt: u32, start: u32, len: u32) -> Self {
        Self {
            ttt,
            start,
            len,
            got: 0,
            next_data_sn: 0,
        }
    }

    /// Checks a Data-Out against this sequence and returns where its data goes.
    fn place(&self, d: &DataOut, in_order: bool) -> Result<(usize, usize), DataError> {
        if d.data_sn != self.next_data_sn {
            return Err(DataError::DataSn {
                expected: self.next_data_sn,
                got: d.data_sn,
            });
        }
        let start = u64::from(self.start);
        let end = start + u64::from(self.len);
        let expected = start + u64::from(self.got);
        let offset = u64::from(d.buffer_offset);
        if (in_order && offset != expected) || offset < start || offset > end {
            return Err(DataError::Offset {
                expected,
                got: d.buffer_offset,
            });
        }
        let len = d.data.len();
        let data_end = offset + len as u64;
        if data_end > end || u64::from(self.got) + len as u64 > u64::from(self.len) {
            return Err(DataError::Overrun {
                offset: d.buffer_offset,
                len,
            });
        }
        let from = usize::try_from(offset).map_err(|_| DataError::Overrun {
            offset: d.buffer_offset,
            len,
        })?;
        Ok((from, from + len))
    }
}

/// Copies `data` into `buf` at `at`, growing it: only bytes that arrived (and, when data
/// arrives out of order, the gap before them) take memory.
fn put(buf: &mut Vec<u8>, at: usize, data: &[u8]) {
    if at > buf.len() {
        buf.resize(at, 0);
    }
    let overlap = (buf.len() - at).min(data.len());
    if let (Some(dst), Some(src)) = (buf.get_mut(at..at + overlap), data.get(..overlap)) {
        dst.copy_from_slice(src);
    }
    buf.extend_from_slice(data.get(overlap..).unwrap_or_default());
}

/// The Data-Out of one write command being put together.
#[derive(Debug)]
pub(crate) struct Assembly {
    /// The bytes received so far, in place (Expected Data Transfer Length long once
    /// complete). Its capacity is reserved up front but its pages are touched only as data
    /// arrives.
    buf: Vec<u8>,
    /// The unsolicited sequence while it is open.
    unsolicited: Option<Sequence>,
    /// R2T sequences sent and not yet complete.
    r2ts: Vec<Sequence>,
    /// First byte no sequence covers yet.
    next_offset: u32,
    edtl: u32,
}

impl Assembly {
    /// Starts collecting `edtl` bytes into `buf` (reused: its old content is discarded).
    /// `immediate` is the data carried by the command PDU; `unsolicited` is the end offset of
    /// the unsolicited Data-Out sequence that follows, if one does (command F bit clear).
    pub(crate) fn new(
        mut buf: Vec<u8>,
        edtl: u32,
        immediate: &[u8],
        unsolicited: Option<u32>,
    ) -> Self {
        let len = usize::try_from(edtl).unwrap_or(usize::MAX);
        buf.clear();
        let imm_len = immediate.len().min(len);
        buf.extend_from_slice(immediate.get(..imm_len).unwrap_or_default());
        let imm_end = u32::try_from(imm_len).unwrap_or(edtl);
        let unsolicited = unsolicited.map(|end| {
            let end = end.clamp(imm_end, edtl);
            Sequence::new(RESERVED_TAG, imm_end, end - imm_end)
        });
        Self {
            buf,
            unsolicited,
            r2ts: Vec::new(),
            next_offset: imm_end,
            edtl,
        }
    }

    /// Whether `ttt` names a sequence this assembly expects data for.
    pub(crate) fn expects(&self, ttt: u32) -> bool {
        if ttt == RESERVED_TAG {
            self.unsolicited.is_some()
        } else {
            self.r2ts.iter().any(|s| s.ttt == ttt)
        }
    }

    /// Takes one Data-Out whose TTT [`Self::expects`]. `in_order` is DataPDUInOrder.
    pub(crate) fn on_data(&mut self, d: &DataOut, in_order: bool) -> Result<(), DataError> {
        let unsolicited = d.ttt == RESERVED_TAG;
        let seq = if unsolicited {
            self.unsolicited.as_mut().ok_or(DataError::NoUnsolicited)?
        } else {
            // The caller checked the TTT; an unknown one is not a sequence of ours.
            let Some(seq) = self.r2ts.iter_mut().find(|s| s.ttt == d.ttt) else {
                return Err(DataError::NoUnsolicited);
            };
            seq
        };
        let (from, to) = seq.place(d, in_order)?;
        if let Ok(len) = u32::try_from(to - from) {
            put(&mut self.buf, from, &d.data);
            seq.got += len;
        }
        seq.next_data_sn = seq.next_data_sn.wrapping_add(1);
        let full = seq.got == seq.len;
        if d.final_ && !full && !unsolicited {
            return Err(DataError::ShortSequence {
                got: seq.got,
                len: seq.len,
            });
        }
        if unsolicited && (d.final_ || full) {
            // The initiator may send less unsolicited data than allowed; R2Ts ask for the
            // rest from where it stopped (unsolicited data is contiguous from offset 0).
            self.next_offset = seq.start + seq.got;
            self.unsolicited = None;
        } else if full {
            let ttt = seq.ttt;
            self.r2ts.retain(|s| s.ttt != ttt);
        }
        Ok(())
    }

    /// Plans the R2Ts to send now: once the unsolicited data is in, up to
    /// `max_outstanding` outstanding, each for at most `max_burst` bytes, in offset order.
    /// `next_ttt` hands out fresh target transfer tags.
    pub(crate) fn plan_r2ts(
        &mut self,
        max_outstanding: u32,
        max_burst: u32,
        mut next_ttt: impl FnMut() -> u32,
    ) -> Vec<R2tPlan> {
        let mut plans = Vec::new();
        if self.unsolicited.is_some() {
            return plans;
        }
        let max_outstanding = usize::try_from(max_outstanding.max(1)).unwrap_or(1);
        while self.r2ts.len() < max_outstanding && self.next_offset < self.edtl {
            let len = (self.edtl - self.next_offset).min(max_burst.max(1));
            let plan = R2tPlan {
                ttt: next_ttt(),
                offset: self.next_offset,
                len,
            };
            self.r2ts
                .push(Sequence::new(plan.ttt, plan.offset, plan.len));
            self.next_offset += len;
            plans.push(plan);
        }
        plans
    }

    /// Whether the unsolicited data is in and bytes remain that only R2Ts can ask for.
    pub(crate) fn r2t_due(&self) -> bool {
        self.unsolicited.is_none() && self.next_offset < self.edtl
    }

    /// Whether every byte has arrived.
    pub(crate) fn is_complete(&self) -> bool {
        self.unsolicited.is_none() && self.r2ts.is_empty() && self.next_offset >= self.edtl
    }

    /// The collected data (its length is the Expected Data Transfer Length).
    pub(crate) fn into_buf(self) -> Vec<u8> {
        let mut buf = self.buf;
        buf.resize(usize::try_from(self.edtl).unwrap_or(usize::MAX), 0);
        buf
    }

    /// The buffer of an assembly given up on, for reuse.
    pub(crate) fn into_spare(self) -> Vec<u8> {
        self.buf
    }

    /// Bytes of data in memory so far.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod lazy_tests {
    use super::*;

    #[test]
    fn only_data_that_arrived_takes_memory() {
        let mut a = Assembly::new(Vec::with_capacity(1 << 20), 1 << 20, &[1; 4096], None);
        assert_eq!(a.buffered(), 4096);
        let ttt = a.plan_r2ts(1, 1 << 20, || 7)[0].ttt;
        let d = DataOut {
            final_: false,
            lun: 0,
            itt: 1,
            ttt,
            exp_stat_sn: 0,
            data_sn: 0,
            buffer_offset: 4096,
            data: bytes::Bytes::from(vec![2; 8192]),
        };
        a.on_data(&d, true).unwrap();
        assert_eq!(a.buffered(), 4096 + 8192, "not the whole megabyte");
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn data_out(ttt: u32, data_sn: u32, offset: u32, data: &[u8], final_: bool) -> DataOut {
        DataOut {
            final_,
            lun: 0,
            itt: 1,
            ttt,
            exp_stat_sn: 0,
            data_sn,
            buffer_offset: offset,
            data: Bytes::copy_from_slice(data),
        }
    }

    fn ttts() -> impl FnMut() -> u32 {
        let mut n = 0;
        move || {
            n += 1;
            n
        }
    }

    #[test]
    fn immediate_then_unsolicited_then_r2t() {
        let mut a = Assembly::new(vec![9; 3], 10, b"ab", Some(6));
        assert!(
            a.plan_r2ts(1, 4, ttts()).is_empty(),
            "no R2T before unsolicited ends"
        );
        a.on_data(&data_out(RESERVED_TAG, 0, 2, b"cd", false), true)
            .unwrap();
        a.on_data(&data_out(RESERVED_TAG, 1, 4, b"ef", true), true)
            .unwrap();
        let plans = a.plan_r2ts(1, 3, ttts());
        assert_eq!(
            plans,
            vec![R2tPlan {
                ttt: 1,
                offset: 6,
                len: 3
            }]
        );
        a.on_data(&data_out(1, 0, 6, b"ghi", true), true).unwrap();
        let plans = a.plan_r2ts(1, 3, ttts());
        assert_eq!(
            plans,
            vec![R2tPlan {
                ttt: 1,
                offset: 9,
                len: 1
            }]
        );
        assert!(!a.is_complete());
        a.on_data(&data_out(1, 0, 9, b"j", true), true).unwrap();
        assert!(a.is_complete());
        assert_eq!(a.into_buf(), b"abcdefghij");
    }

    #[test]
    fn short_unsolicited_burst_is_completed_by_r2t() {
        let mut a = Assembly::new(Vec::new(), 8, b"", Some(8));
        a.on_data(&data_out(RESERVED_TAG, 0, 0, b"ab", true), true)
            .unwrap();
        let plans = a.plan_r2ts(2, 4, ttts());
        assert_eq!(
            plans,
            vec![
                R2tPlan {
                    ttt: 1,
                    offset: 2,
                    len: 4
                },
                R2tPlan {
                    ttt: 2,
                    offset: 6,
                    len: 2
                }
            ]
        );
    }

    #[test]
    fn rejects_bad_datasn_offset_overrun_and_short_sequence() {
        let mut a = Assembly::new(Vec::new(), 8, b"", None);
        let [plan] = a.plan_r2ts(1, 8, ttts())[..] else {
            panic!("one R2T")
        };
        assert!(a.expects(plan.ttt) && !a.expects(RESERVED_TAG));
        assert_eq!(
            a.on_data(&data_out(plan.ttt, 1, 0, b"ab", false), true),
            Err(DataError::DataSn {
                expected: 0,
                got: 1
            })
        );
        assert_eq!(
            a.on_data(&data_out(plan.ttt, 0, 2, b"ab", false), true),
            Err(DataError::Offset {
                expected: 0,
                got: 2
            })
        );
        assert_eq!(
            a.on_data(&data_out(plan.ttt, 0, 0, b"abcdefghi", false), true),
            Err(DataError::Overrun { offset: 0, len: 9 })
        );
        assert_eq!(
            a.on_data(&data_out(plan.ttt, 0, 0, b"ab", true), true),
            Err(DataError::ShortSequence { got: 2, len: 8 })
        );
        assert_eq!(
            a.on_data(&data_out(RESERVED_TAG, 0, 0, b"ab", false), true),
            Err(DataError::NoUnsolicited)
        );
    }

    #[test]
    fn out_of_order_pdus_are_placed_when_allowed() {
        let mut a = Assembly::new(Vec::new(), 4, b"", None);
        let [plan] = a.plan_r2ts(1, 4, ttts())[..] else {
            panic!("one R2T")
        };
        a.on_data(&data_out(plan.ttt, 0, 2, b"cd", false), false)
            .unwrap();
        a.on_data(&data_out(plan.ttt, 1, 0, b"ab", true), false)
            .unwrap();
        assert!(a.is_complete());
        assert_eq!(a.into_buf(), b"abcd");
    }
}
