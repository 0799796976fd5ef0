//! PDUs an initiator sends (and the target receives), with their codecs.

use bytes::{BufMut, Bytes, BytesMut};

use super::bhs::{Header, opcode, padded};
use super::{Body, Encoded, PduError, expect_no_data};

const F_BIT: u8 = 0x80;
const C_BIT: u8 = 0x40;
const READ_BIT: u8 = 0x40;
const WRITE_BIT: u8 = 0x20;
const ATTR_MASK: u8 = 0x07;
const LOW7_MASK: u8 = 0x7f;

/// AHS type of an extended CDB (RFC 7143 §11.2.2.3).
pub const AHS_EXTENDED_CDB: u8 = 1;
/// AHS type of the expected bidirectional read data length (RFC 7143 §11.2.2.4).
pub const AHS_BIDI_READ_LEN: u8 = 2;

/// Login stage (CSG / NSG), RFC 7143 §11.12.3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// 0: security negotiation.
    Security,
    /// 1: login operational negotiation.
    Operational,
    /// 2: reserved; a login carrying it is an initiator error.
    Reserved,
    /// 3: full feature phase.
    FullFeature,
}

impl Stage {
    /// The stage of a 2-bit field.
    pub fn from_bits(bits: u8) -> Self {
        match bits & 0x03 {
            0 => Self::Security,
            1 => Self::Operational,
            2 => Self::Reserved,
            _ => Self::FullFeature,
        }
    }

    /// The 2-bit field of the stage.
    pub fn bits(self) -> u8 {
        match self {
            Self::Security => 0,
            Self::Operational => 1,
            Self::Reserved => 2,
            Self::FullFeature => 3,
        }
    }
}

/// The 8-bit login flags shared by Login Request and Response: T, C, CSG, NSG.
pub(crate) fn login_flags(transit: bool, cont: bool, csg: Stage, nsg: Stage) -> u8 {
    (if transit { F_BIT } else { 0 })
        | (if cont { C_BIT } else { 0 })
        | (csg.bits() << 2)
        | nsg.bits()
}

pub(crate) fn parse_login_flags(flags: u8) -> (bool, bool, Stage, Stage) {
    (
        flags & F_BIT != 0,
        flags & C_BIT != 0,
        Stage::from_bits(flags >> 2),
        Stage::from_bits(flags),
    )
}

/// SCSI task attribute of a command (SAM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskAttr {
    Untagged,
    Simple,
    Ordered,
    HeadOfQueue,
    Aca,
    /// A reserved value (5..7), kept so it can be rejected by the SCSI layer.
    Reserved(u8),
}

impl TaskAttr {
    fn from_bits(bits: u8) -> Self {
        match bits & ATTR_MASK {
            0 => Self::Untagged,
            1 => Self::Simple,
            2 => Self::Ordered,
            3 => Self::HeadOfQueue,
            4 => Self::Aca,
            other => Self::Reserved(other),
        }
    }

    fn bits(self) -> u8 {
        match self {
            Self::Untagged => 0,
            Self::Simple => 1,
            Self::Ordered => 2,
            Self::HeadOfQueue => 3,
            Self::Aca => 4,
            Self::Reserved(v) => v & ATTR_MASK,
        }
    }
}

/// Task management function (RFC 7143 §11.5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskFunction {
    AbortTask,
    AbortTaskSet,
    ClearAca,
    ClearTaskSet,
    LogicalUnitReset,
    TargetWarmReset,
    TargetColdReset,
    TaskReassign,
    /// Any other value; answered with "function not supported".
    Other(u8),
}

impl TaskFunction {
    fn from_bits(bits: u8) -> Self {
        match bits & LOW7_MASK {
            1 => Self::AbortTask,
            2 => Self::AbortTaskSet,
            3 => Self::ClearAca,
            4 => Self::ClearTaskSet,
            5 => Self::LogicalUnitReset,
            6 => Self::TargetWarmReset,
            7 => Self::TargetColdReset,
            8 => Self::TaskReassign,
            other => Self::Other(other),
        }
    }

    fn bits(self) -> u8 {
        match self {
            Self::AbortTask => 1,
            Self::AbortTaskSet => 2,
            Self::ClearAca => 3,
            Self::ClearTaskSet => 4,
            Self::LogicalUnitReset => 5,
            Self::TargetWarmReset => 6,
            Self::TargetColdReset => 7,
            Self::TaskReassign => 8,
            Self::Other(v) => v & LOW7_MASK,
        }
    }
}

/// Logout reason code (RFC 7143 §11.14.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogoutReason {
    CloseSession,
    CloseConnection,
    RemoveConnectionForRecovery,
    Other(u8),
}

impl LogoutReason {
    fn from_bits(bits: u8) -> Self {
        match bits & LOW7_MASK {
            0 => Self::CloseSession,
            1 => Self::CloseConnection,
            2 => Self::RemoveConnectionForRecovery,
            other => Self::Other(other),
        }
    }

    fn bits(self) -> u8 {
        match self {
            Self::CloseSession => 0,
            Self::CloseConnection => 1,
            Self::RemoveConnectionForRecovery => 2,
            Self::Other(v) => v & LOW7_MASK,
        }
    }
}

/// NOP-Out (0x00): a ping, or the answer to a target's NOP-In (then `ttt` is the target's tag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NopOut {
    pub immediate: bool,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    /// Ping data, echoed in the NOP-In.
    pub data: Bytes,
}

impl Body for NopOut {
    const OPCODE: u8 = opcode::NOP_OUT;

    fn decode(h: &Header, _ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        Ok(Self {
            immediate: h.immediate(),
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32_at::<20>(),
            cmd_sn: h.u32_at::<24>(),
            exp_stat_sn: h.u32_at::<28>(),
            data,
        })
    }

    fn encode(&self, h: &mut Header) -> Encoded {
        h.set_flags(F_BIT);
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_at::<20>(self.ttt);
        h.set_u32_at::<24>(self.cmd_sn);
        h.set_u32_at::<28>(self.exp_stat_sn);
        Encoded::data(self.data.clone())
    }

    fn immediate(&self) -> bool {
        self.immediate
    }
}

/// SCSI Command (0x01).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScsiCommand {
    pub immediate: bool,
    /// F: no unsolicited Data-Out follows this PDU.
    pub final_: bool,
    /// R: data flows to the initiator.
    pub read: bool,
    /// W: data flows to the target.
    pub write: bool,
    pub attr: TaskAttr,
    pub lun: u64,
    pub itt: u32,
    /// Expected Data Transfer Length (for bidirectional commands, the write length).
    pub expected_data_len: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    /// The whole CDB: the 16 bytes of the BHS followed by the extended-CDB AHS, if any. After
    /// decoding it is at least 16 bytes long (short CDBs are zero padded in the BHS).
    pub cdb: Bytes,
    /// Expected read length of a bidirectional command (its AHS), if present.
    pub bidi_read_len: Option<u32>,
    /// Immediate data.
    pub data: Bytes,
}

impl ScsiCommand {
    fn decode_ahs(mut ahs: &[u8], cdb: &mut BytesMut) -> Result<Option<u32>, PduError> {
        let mut bidi = None;
        let mut seen_ext = false;
        while !ahs.is_empty() {
            let [l0, l1, kind, ..] = *ahs else {
                return Err(PduError::BadAhs("AHS shorter than its header"));
            };
            let len = usize::from(u16::from_be_bytes([l0, l1]));
            // AHSLength counts the bytes after the 3-byte length/type, reserved byte included.
            let total = padded(3 + len);
            let body = ahs
                .get(3..3 + len)
                .ok_or(PduError::BadAhs("AHS longer than TotalAHSLength"))?;
            match kind {
                AHS_EXTENDED_CDB if !seen_ext && len > 1 => {
                    seen_ext = true;
                    cdb.extend_from_slice(body.get(1..).unwrap_or_default());
                }
                AHS_BIDI_READ_LEN if bidi.is_none() && len == 5 => {
                    let [_, a, b, c, d] = *body else {
                        return Err(PduError::BadAhs("bad bidirectional read length AHS"));
                    };
                    bidi = Some(u32::from_be_bytes([a, b, c, d]));
                }
                _ => return Err(PduError::BadAhs("unknown, duplicate or malformed AHS")),
            }
            ahs = ahs.get(total..).unwrap_or_default();
        }
        Ok(bidi)
    }
}

impl Body for ScsiCommand {
    const OPCODE: u8 = opcode::SCSI_COMMAND;

    fn decode(h: &Header, ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        let flags = h.flags();
        let mut cdb = BytesMut::with_capacity(16 + ahs.len());
        cdb.extend_from_slice(&h.bytes_at::<32, 16>());
        let bidi_read_len = Self::decode_ahs(ahs, &mut cdb)?;
        Ok(Self {
            immediate: h.immediate(),
            final_: flags & F_BIT != 0,
            read: flags & READ_BIT != 0,
            write: flags & WRITE_BIT != 0,
            attr: TaskAttr::from_bits(flags),
            lun: h.lun(),
            itt: h.itt(),
            expected_data_len: h.u32_at::<20>(),
            cmd_sn: h.u32_at::<24>(),
            exp_stat_sn: h.u32_at::<28>(),
            cdb: cdb.freeze(),
            bidi_read_len,
            data,
        })
    }

    fn encode(&self, h: &mut Header) -> Encoded {
        h.set_flags(
            (if self.final_ { F_BIT } else { 0 })
                | (if self.read { READ_BIT } else { 0 })
                | (if self.write { WRITE_BIT } else { 0 })
                | self.attr.bits(),
        );
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_at::<20>(self.expected_data_len);
        h.set_u32_at::<24>(self.cmd_sn);
        h.set_u32_at::<28>(self.exp_stat_sn);
        let (first, rest) = self.cdb.split_at(self.cdb.len().min(16));
        let mut bhs_cdb = [0u8; 16];
        if let Some(dst) = bhs_cdb.get_mut(..first.len()) {
            dst.copy_from_slice(first);
        }
        h.set_bytes_at::<32, 16>(&bhs_cdb);
        let mut ahs = BytesMut::new();
        if !rest.is_empty() {
            let len = u16::try_from(rest.len() + 1).unwrap_or(u16::MAX);
            ahs.put_u16(len);
            ahs.put_u8(AHS_EXTENDED_CDB);
            ahs.put_u8(0);
            ahs.extend_from_slice(rest);
            ahs.resize(padded(ahs.len()), 0);
        }
        if let Some(len) = self.bidi_read_len {
            ahs.put_u16(5);
            ahs.put_u8(AHS_BIDI_READ_LEN);
            ahs.put_u8(0);
            ahs.put_u32(len);
        }
        Encoded {
            ahs: ahs.freeze(),
            data: self.data.clone(),
        }
    }

    fn immediate(&self) -> bool {
        self.immediate
    }
}

/// SCSI Task Management Function Request (0x02).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    pub immediate: bool,
    pub function: TaskFunction,
    pub lun: u64,
    pub itt: u32,
    /// ITT of the task to abort (ABORT TASK), else 0xffffffff.
    pub ref_task_tag: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub ref_cmd_sn: u32,
    pub exp_data_sn: u32,
}

impl Body for TaskMgmtRequest {
    const OPCODE: u8 = opcode::TASK_MGMT_REQUEST;

    fn decode(h: &Header, _ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        expect_no_data(Self::OPCODE, &data)?;
        Ok(Self {
            immediate: h.immediate(),
            function: TaskFunction::from_bits(h.flags()),
            lun: h.lun(),
            itt: h.itt(),
            ref_task_tag: h.u32_at::<20>(),
            cmd_sn: h.u32_at::<24>(),
            exp_stat_sn: h.u32_at::<28>(),
            ref_cmd_sn: h.u32_at::<32>(),
            exp_data_sn: h.u32_at::<36>(),
        })
    }

    fn encode(&self, h: &mut Header) -> Encoded {
        h.set_flags(F_BIT | self.function.bits());
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_at::<20>(self.ref_task_tag);
        h.set_u32_at::<24>(self.cmd_sn);
        h.set_u32_at::<28>(self.exp_stat_sn);
        h.set_u32_at::<32>(self.ref_cmd_sn);
        h.set_u32_at::<36>(self.exp_data_sn);
        Encoded::default()
    }

    fn immediate(&self) -> bool {
        self.immediate
    }
}

/// Login Request (0x03). Always sent with the I bit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRequest {
    /// T: the initiator is ready to move to `nsg`.
    pub transit: bool,
    /// C: the text in `data` continues in the next PDU.
    pub cont: bool,
    pub csg: Stage,
    pub nsg: Stage,
    pub version_max: u8,
    pub version_min: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    /// Text keys (`key=value\0`...).
    pub data: Bytes,
}

impl Body for LoginRequest {
    const OPCODE: u8 = opcode::LOGIN_REQUEST;

    fn decode(h: &Header, _ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        let (transit, cont, csg, nsg) = parse_login_flags(h.flags());
        Ok(Self {
            transit,
            cont,
            csg,
            nsg,
            version_max: h.u8_at::<2>(),
            version_min: h.u8_at::<3>(),
            isid: h.bytes_at::<8, 6>(),
            tsih: h.u16_at::<14>(),
            itt: h.itt(),
            cid: h.u16_at::<20>(),
            cmd_sn: h.u32_at::<24>(),
            exp_stat_sn: h.u32_at::<28>(),
            data,
        })
    }

    fn encode(&self, h: &mut Header) -> Encoded {
        h.set_flags(login_flags(self.transit, self.cont, self.csg, self.nsg));
        h.set_u8_at::<2>(self.version_max);
        h.set_u8_at::<3>(self.version_min);
        h.set_bytes_at::<8, 6>(&self.isid);
        h.set_u16_at::<14>(self.tsih);
        h.set_itt(self.itt);
        h.set_u16_at::<20>(self.cid);
        h.set_u32_at::<24>(self.cmd_sn);
        h.set_u32_at::<28>(self.exp_stat_sn);
        Encoded::data(self.data.clone())
    }

    fn immediate(&self) -> bool {
        true
    }
}

/// Text Request (0x04).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextRequest {
    pub immediate: bool,
    pub final_: bool,
    pub cont: bool,
    pub lun: u64,
    pub itt: u32,
    /// 0xffffffff on a new request, else the TTT of the target's continued response.
    pub ttt: u32,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub data: Bytes,
}

impl Body for TextRequest {
    const OPCODE: u8 = opcode::TEXT_REQUEST;

    fn decode(h: &Header, _ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        Ok(Self {
            immediate: h.immediate(),
            final_: h.flags() & F_BIT != 0,
            cont: h.flags() & C_BIT != 0,
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32_at::<20>(),
            cmd_sn: h.u32_at::<24>(),
            exp_stat_sn: h.u32_at::<28>(),
            data,
        })
    }

    fn encode(&self, h: &mut Header) -> Encoded {
        h.set_flags((if self.final_ { F_BIT } else { 0 }) | (if self.cont { C_BIT } else { 0 }));
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_at::<20>(self.ttt);
        h.set_u32_at::<24>(self.cmd_sn);
        h.set_u32_at::<28>(self.exp_stat_sn);
        Encoded::data(self.data.clone())
    }

    fn immediate(&self) -> bool {
        self.immediate
    }
}

/// SCSI Data-Out (0x05).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataOut {
    /// F: last PDU of this sequence (of the unsolicited burst or of the R2T).
    pub final_: bool,
    pub lun: u64,
    pub itt: u32,
    /// The R2T's TTT, or 0xffffffff for unsolicited data.
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub data_sn: u32,
    pub buffer_offset: u32,
    pub data: Bytes,
}

impl Body for DataOut {
    const OPCODE: u8 = opcode::DATA_OUT;

    fn decode(h: &Header, _ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        Ok(Self {
            final_: h.flags() & F_BIT != 0,
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32_at::<20>(),
            exp_stat_sn: h.u32_at::<28>(),
            data_sn: h.u32_at::<36>(),
            buffer_offset: h.u32_at::<40>(),
            data,
        })
    }

    fn encode(&self, h: &mut Header) -> Encoded {
        h.set_flags(if self.final_ { F_BIT } else { 0 });
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_at::<20>(self.ttt);
        h.set_u32_at::<28>(self.exp_stat_sn);
        h.set_u32_at::<36>(self.data_sn);
        h.set_u32_at::<40>(self.buffer_offset);
        Encoded::data(self.data.clone())
    }
}

/// Logout Request (0x06).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoutRequest {
    pub immediate: bool,
    pub reason: LogoutReason,
    pub itt: u32,
    pub cid: u16,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
}

impl Body for LogoutRequest {
    const OPCODE: u8 = opcode::LOGOUT_REQUEST;

    fn decode(h: &Header, _ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        expect_no_data(Self::OPCODE, &data)?;
        Ok(Self {
            immediate: h.immediate(),
            reason: LogoutReason::from_bits(h.flags()),
            itt: h.itt(),
            cid: h.u16_at::<20>(),
            cmd_sn: h.u32_at::<24>(),
            exp_stat_sn: h.u32_at::<28>(),
        })
    }

    fn encode(&self, h: &mut Header) -> Encoded {
        h.set_flags(F_BIT | self.reason.bits());
        h.set_itt(self.itt);
        h.set_u16_at::<20>(self.cid);
        h.set_u32_at::<24>(self.cmd_sn);
        h.set_u32_at::<28>(self.exp_stat_sn);
        Encoded::default()
    }

    fn immediate(&self) -> bool {
        self.immediate
    }
}

/// SNACK Request (0x10). Parsed only so it can be rejected: ErrorRecoveryLevel 0 has no SNACK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnackRequest {
    /// SNACK type (low 4 bits of byte 1).
    pub kind: u8,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub exp_stat_sn: u32,
    pub beg_run: u32,
    pub run_length: u32,
}

impl Body for SnackRequest {
    const OPCODE: u8 = opcode::SNACK_REQUEST;

    fn decode(h: &Header, _ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        expect_no_data(Self::OPCODE, &data)?;
        Ok(Self {
            kind: h.flags() & 0x0f,
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32_at::<20>(),
            exp_stat_sn: h.u32_at::<28>(),
            beg_run: h.u32_at::<40>(),
            run_length: h.u32_at::<44>(),
        })
    }

    fn encode(&self, h: &mut Header) -> Encoded {
        h.set_flags(F_BIT | (self.kind & 0x0f));
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_at::<20>(self.ttt);
        h.set_u32_at::<28>(self.exp_stat_sn);
        h.set_u32_at::<40>(self.beg_run);
        h.set_u32_at::<44>(self.run_length);
        Encoded::default()
    }
}
