//! PDUs a target sends, with their codecs.

use bytes::{BufMut, Bytes, BytesMut};

use super::bhs::{Header, opcode};
use super::from_initiator::{Stage, login_flags, parse_login_flags};
use super::{Body, Encoded, PduError, expect_no_data};

const F_BIT: u8 = 0x80;
const C_BIT: u8 = 0x40;
const ACK_BIT: u8 = 0x40;
const BIDI_OVERFLOW: u8 = 0x10;
const BIDI_UNDERFLOW: u8 = 0x08;
const OVERFLOW: u8 = 0x04;
const UNDERFLOW: u8 = 0x02;
const STATUS_BIT: u8 = 0x01;

/// The ITT of target-initiated PDUs that answer no task (Async Message, Reject, unsolicited
/// NOP-In), and the TTT that means "no target transfer tag".
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// A residual as carried by SCSI Response and Data-In: the O/U bits plus the residual count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Residual {
    /// The transfer matched the expected length.
    #[default]
    None,
    /// The command wanted more than the initiator's expected length; the count of bytes that
    /// were not transferred.
    Overflow(u32),
    /// Less was transferred than expected; the count of bytes missing.
    Underflow(u32),
}

impl Residual {
    /// The residual for a command that would move `wanted` bytes, given the initiator's
    /// expected length `expected`.
    pub fn of(expected: u32, wanted: u32) -> Self {
        match wanted.cmp(&expected) {
            std::cmp::Ordering::Equal => Self::None,
            std::cmp::Ordering::Greater => Self::Overflow(wanted - expected),
            std::cmp::Ordering::Less => Self::Underflow(expected - wanted),
        }
    }

    fn bits(self, overflow: u8, underflow: u8) -> u8 {
        match self {
            Self::None => 0,
            Self::Overflow(_) => overflow,
            Self::Underflow(_) => underflow,
        }
    }

    fn count(self) -> u32 {
        match self {
            Self::None => 0,
            Self::Overflow(n) | Self::Underflow(n) => n,
        }
    }

    fn from_bits(flags: u8, count: u32, overflow: u8, underflow: u8) -> Result<Self, PduError> {
        match (flags & overflow != 0, flags & underflow != 0) {
            (false, false) => Ok(Self::None),
            (true, false) => Ok(Self::Overflow(count)),
            (false, true) => Ok(Self::Underflow(count)),
            (true, true) => Err(PduError::BadField("both overflow and underflow set")),
        }
    }
}

/// Splits a sense-carrying data segment (SenseLength, sense, trailing data).
fn split_sense(data: &Bytes) -> Result<(Bytes, Bytes), PduError> {
    if data.is_empty() {
        return Ok((Bytes::new(), Bytes::new()));
    }
    let [a, b, ..] = data[..] else {
        return Err(PduError::BadDataSegment("sense length truncated"));
    };
    let sense_len = usize::from(u16::from_be_bytes([a, b]));
    let end = 2 + sense_len;
    if end > data.len() {
        return Err(PduError::BadDataSegment("sense length beyond data segment"));
    }
    Ok((data.slice(2..end), data.slice(end..)))
}

/// Builds a sense-carrying data segment; empty when both parts are.
fn join_sense(sense: &Bytes, rest: &Bytes) -> Bytes {
    if sense.is_empty() && rest.is_empty() {
        return Bytes::new();
    }
    let mut out = BytesMut::with_capacity(2 + sense.len() + rest.len());
    out.put_u16(u16::try_from(sense.len()).unwrap_or(u16::MAX));
    out.extend_from_slice(sense);
    out.extend_from_slice(rest);
    out.freeze()
}

/// The three sequence numbers every target response carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sns {
    pub stat_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

impl Sns {
    fn decode(h: &Header) -> Self {
        Self {
            stat_sn: h.u32_at::<24>(),
            exp_cmd_sn: h.u32_at::<28>(),
            max_cmd_sn: h.u32_at::<32>(),
        }
    }

    fn encode(&self, h: &mut Header) {
        h.set_u32_at::<24>(self.stat_sn);
        h.set_u32_at::<28>(self.exp_cmd_sn);
        h.set_u32_at::<32>(self.max_cmd_sn);
    }
}

/// NOP-In (0x20): the answer to a NOP-Out, or a target ping (then `itt` is
/// [`RESERVED_TAG`] and `ttt` asks for an answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NopIn {
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub sns: Sns,
    pub data: Bytes,
}

impl Body for NopIn {
    const OPCODE: u8 = opcode::NOP_IN;

    fn decode(h: &Header, _ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        Ok(Self {
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32_at::<20>(),
            sns: Sns::decode(h),
            data,
        })
    }

    fn encode(&self, h: &mut Header) -> Encoded {
        h.set_flags(F_BIT);
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_at::<20>(self.ttt);
        self.sns.encode(h);
        Encoded::data(self.data.clone())
    }
}

/// SCSI Response (0x21).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScsiResponse {
    /// iSCSI response code, see [`scsi_response`].
    pub response: u8,
    /// SCSI status byte (valid when `response` is "completed at target").
    pub status: u8,
    pub residual: Residual,
    /// Residual of the read part of a bidirectional command.
    pub bidi_residual: Residual,
    pub itt: u32,
    pub snack_tag: u32,
    pub sns: Sns,
    pub exp_data_sn: u32,
    /// Sense data (without the 2-byte SenseLength, which the codec adds).
    pub sense: Bytes,
    /// Response data following the sense data (normally empty).
    pub response_data: Bytes,
}

impl Body for ScsiResponse {
    const OPCODE: u8 = opcode::SCSI_RESPONSE;

    fn decode(h: &Header, _ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        let flags = h.flags();
        let (sense, response_data) = split_sense(&data)?;
        Ok(Self {
            response: h.u8_at::<2>(),
            status: h.u8_at::<3>(),
            residual: Residual::from_bits(flags, h.u32_at::<44>(), OVERFLOW, UNDERFLOW)?,
            bidi_residual: Residual::from_bits(
                flags,
                h.u32_at::<40>(),
                BIDI_OVERFLOW,
                BIDI_UNDERFLOW,
            )?,
            itt: h.itt(),
            snack_tag: h.u32_at::<20>(),
            sns: Sns::decode(h),
            exp_data_sn: h.u32_at::<36>(),
            sense,
            response_data,
        })
    }

    fn encode(&self, h: &mut Header) -> Encoded {
        h.set_flags(
            F_BIT
                | self.residual.bits(OVERFLOW, UNDERFLOW)
                | self.bidi_residual.bits(BIDI_OVERFLOW, BIDI_UNDERFLOW),
        );
        h.set_u8_at::<2>(self.response);
        h.set_u8_at::<3>(self.status);
        h.set_itt(self.itt);
        h.set_u32_at::<20>(self.snack_tag);
        self.sns.encode(h);
        h.set_u32_at::<36>(self.exp_data_sn);
        h.set_u32_at::<40>(self.bidi_residual.count());
        h.set_u32_at::<44>(self.residual.count());
        Encoded::data(join_sense(&self.sense, &self.response_data))
    }
}

/// SCSI Task Management Function Response (0x22).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    /// Response code, see [`tmf_response`].
    pub response: u8,
    pub itt: u32,
    pub sns: Sns,
}

impl Body for TaskMgmtResponse {
    const OPCODE: u8 = opcode::TASK_MGMT_RESPONSE;

    fn decode(h: &Header, _ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        expect_no_data(Self::OPCODE, &data)?;
        Ok(Self {
            response: h.u8_at::<2>(),
            itt: h.itt(),
            sns: Sns::decode(h),
        })
    }

    fn encode(&self, h: &mut Header) -> Encoded {
        h.set_flags(F_BIT);
        h.set_u8_at::<2>(self.response);
        h.set_itt(self.itt);
        self.sns.encode(h);
        Encoded::default()
    }
}

/// Login Response (0x23).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginResponse {
    pub transit: bool,
    pub cont: bool,
    pub csg: Stage,
    pub nsg: Stage,
    pub version_max: u8,
    pub version_active: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub sns: Sns,
    /// Status-Class in the high byte, Status-Detail in the low byte; see [`login_status`].
    pub status: u16,
    pub data: Bytes,
}

impl Body for LoginResponse {
    const OPCODE: u8 = opcode::LOGIN_RESPONSE;

    fn decode(h: &Header, _ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        let (transit, cont, csg, nsg) = parse_login_flags(h.flags());
        Ok(Self {
            transit,
            cont,
            csg,
            nsg,
            version_max: h.u8_at::<2>(),
            version_active: h.u8_at::<3>(),
            isid: h.bytes_at::<8, 6>(),
            tsih: h.u16_at::<14>(),
            itt: h.itt(),
            sns: Sns::decode(h),
            status: h.u16_at::<36>(),
            data,
        })
    }

    fn encode(&self, h: &mut Header) -> Encoded {
        h.set_flags(login_flags(self.transit, self.cont, self.csg, self.nsg));
        h.set_u8_at::<2>(self.version_max);
        h.set_u8_at::<3>(self.version_active);
        h.set_bytes_at::<8, 6>(&self.isid);
        h.set_u16_at::<14>(self.tsih);
        h.set_itt(self.itt);
        self.sns.encode(h);
        h.set_u16_at::<36>(self.status);
        Encoded::data(self.data.clone())
    }
}

/// Text Response (0x24).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextResponse {
    pub final_: bool,
    pub cont: bool,
    pub lun: u64,
    pub itt: u32,
    /// [`RESERVED_TAG`] when final, else a tag the initiator returns to get the rest.
    pub ttt: u32,
    pub sns: Sns,
    pub data: Bytes,
}

impl Body for TextResponse {
    const OPCODE: u8 = opcode::TEXT_RESPONSE;

    fn decode(h: &Header, _ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        Ok(Self {
            final_: h.flags() & F_BIT != 0,
            cont: h.flags() & C_BIT != 0,
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32_at::<20>(),
            sns: Sns::decode(h),
            data,
        })
    }

    fn encode(&self, h: &mut Header) -> Encoded {
        h.set_flags((if self.final_ { F_BIT } else { 0 }) | (if self.cont { C_BIT } else { 0 }));
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_at::<20>(self.ttt);
        self.sns.encode(h);
        Encoded::data(self.data.clone())
    }
}

/// SCSI Data-In (0x25). `data` is a slice of the command's read buffer (no copy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataIn {
    /// F: last PDU of the sequence.
    pub final_: bool,
    /// A: asks for a DataACK SNACK (never set at ErrorRecoveryLevel 0).
    pub ack: bool,
    /// S with the SCSI status: this PDU also completes the command (phase collapse); then
    /// `final_` must be set and `residual` and `sns.stat_sn` are meaningful.
    pub status: Option<u8>,
    pub residual: Residual,
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    pub sns: Sns,
    pub data_sn: u32,
    pub buffer_offset: u32,
    pub data: Bytes,
}

impl Body for DataIn {
    const OPCODE: u8 = opcode::DATA_IN;

    fn decode(h: &Header, _ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        let flags = h.flags();
        let has_status = flags & STATUS_BIT != 0;
        let residual = if has_status {
            Residual::from_bits(flags, h.u32_at::<44>(), OVERFLOW, UNDERFLOW)?
        } else {
            Residual::None
        };
        Ok(Self {
            final_: flags & F_BIT != 0,
            ack: flags & ACK_BIT != 0,
            status: has_status.then(|| h.u8_at::<3>()),
            residual,
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32_at::<20>(),
            sns: Sns::decode(h),
            data_sn: h.u32_at::<36>(),
            buffer_offset: h.u32_at::<40>(),
            data,
        })
    }

    fn encode(&self, h: &mut Header) -> Encoded {
        let mut flags = if self.final_ { F_BIT } else { 0 } | if self.ack { ACK_BIT } else { 0 };
        if let Some(status) = self.status {
            flags |= STATUS_BIT | self.residual.bits(OVERFLOW, UNDERFLOW);
            h.set_u8_at::<3>(status);
            h.set_u32_at::<44>(self.residual.count());
        }
        h.set_flags(flags);
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_at::<20>(self.ttt);
        self.sns.encode(h);
        h.set_u32_at::<36>(self.data_sn);
        h.set_u32_at::<40>(self.buffer_offset);
        Encoded::data(self.data.clone())
    }
}

/// Logout Response (0x26).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoutResponse {
    /// Response code, see [`logout_response`].
    pub response: u8,
    pub itt: u32,
    pub sns: Sns,
    pub time2wait: u16,
    pub time2retain: u16,
}

impl Body for LogoutResponse {
    const OPCODE: u8 = opcode::LOGOUT_RESPONSE;

    fn decode(h: &Header, _ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        expect_no_data(Self::OPCODE, &data)?;
        Ok(Self {
            response: h.u8_at::<2>(),
            itt: h.itt(),
            sns: Sns::decode(h),
            time2wait: h.u16_at::<40>(),
            time2retain: h.u16_at::<42>(),
        })
    }

    fn encode(&self, h: &mut Header) -> Encoded {
        h.set_flags(F_BIT);
        h.set_u8_at::<2>(self.response);
        h.set_itt(self.itt);
        self.sns.encode(h);
        h.set_u16_at::<40>(self.time2wait);
        h.set_u16_at::<42>(self.time2retain);
        Encoded::default()
    }
}

/// Ready To Transfer (0x31).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct R2t {
    pub lun: u64,
    pub itt: u32,
    pub ttt: u32,
    /// StatSN is the next one, not advanced by the R2T.
    pub sns: Sns,
    pub r2t_sn: u32,
    pub buffer_offset: u32,
    pub desired_len: u32,
}

impl Body for R2t {
    const OPCODE: u8 = opcode::R2T;

    fn decode(h: &Header, _ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        expect_no_data(Self::OPCODE, &data)?;
        Ok(Self {
            lun: h.lun(),
            itt: h.itt(),
            ttt: h.u32_at::<20>(),
            sns: Sns::decode(h),
            r2t_sn: h.u32_at::<36>(),
            buffer_offset: h.u32_at::<40>(),
            desired_len: h.u32_at::<44>(),
        })
    }

    fn encode(&self, h: &mut Header) -> Encoded {
        h.set_flags(F_BIT);
        h.set_lun(self.lun);
        h.set_itt(self.itt);
        h.set_u32_at::<20>(self.ttt);
        self.sns.encode(h);
        h.set_u32_at::<36>(self.r2t_sn);
        h.set_u32_at::<40>(self.buffer_offset);
        h.set_u32_at::<44>(self.desired_len);
        Encoded::default()
    }
}

/// Asynchronous Message (0x32). The ITT is always [`RESERVED_TAG`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsyncMessage {
    pub lun: u64,
    pub sns: Sns,
    /// AsyncEvent, see [`async_event`].
    pub event: u8,
    pub vcode: u8,
    pub param1: u16,
    pub param2: u16,
    pub param3: u16,
    /// Sense data of a SCSI asynchronous event (without SenseLength).
    pub sense: Bytes,
    /// iSCSI event data following the sense data.
    pub event_data: Bytes,
}

impl Body for AsyncMessage {
    const OPCODE: u8 = opcode::ASYNC_MESSAGE;

    fn decode(h: &Header, _ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        let (sense, event_data) = split_sense(&data)?;
        Ok(Self {
            lun: h.lun(),
            sns: Sns::decode(h),
            event: h.u8_at::<36>(),
            vcode: h.u8_at::<37>(),
            param1: h.u16_at::<38>(),
            param2: h.u16_at::<40>(),
            param3: h.u16_at::<42>(),
            sense,
            event_data,
        })
    }

    fn encode(&self, h: &mut Header) -> Encoded {
        h.set_flags(F_BIT);
        h.set_lun(self.lun);
        h.set_itt(RESERVED_TAG);
        self.sns.encode(h);
        h.set_u8_at::<36>(self.event);
        h.set_u8_at::<37>(self.vcode);
        h.set_u16_at::<38>(self.param1);
        h.set_u16_at::<40>(self.param2);
        h.set_u16_at::<42>(self.param3);
        Encoded::data(join_sense(&self.sense, &self.event_data))
    }
}

/// Reject (0x3f). The ITT is always [`RESERVED_TAG`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    /// Reason, see [`reject_reason`].
    pub reason: u8,
    pub sns: Sns,
    /// DataSN/R2TSN (only for data/R2T SNACK rejects), else 0.
    pub data_sn: u32,
    /// The complete header (BHS) of the rejected PDU.
    pub header: Bytes,
}

impl Body for Reject {
    const OPCODE: u8 = opcode::REJECT;

    fn decode(h: &Header, _ahs: &[u8], data: Bytes) -> Result<Self, PduError> {
        Ok(Self {
            reason: h.u8_at::<2>(),
            sns: Sns::decode(h),
            data_sn: h.u32_at::<36>(),
            header: data,
        })
    }

    fn encode(&self, h: &mut Header) -> Encoded {
        h.set_flags(F_BIT);
        h.set_u8_at::<2>(self.reason);
        h.set_itt(RESERVED_TAG);
        self.sns.encode(h);
        h.set_u32_at::<36>(self.data_sn);
        Encoded::data(self.header.clone())
    }
}

/// iSCSI response codes of a SCSI Response (RFC 7143 §11.4.3).
pub mod scsi_response {
    pub const COMPLETED: u8 = 0x00;
    pub const TARGET_FAILURE: u8 = 0x01;
}

/// Task management response codes (RFC 7143 §11.6.1).
pub mod tmf_response {
    pub const COMPLETE: u8 = 0;
    pub const TASK_DOES_NOT_EXIST: u8 = 1;
    pub const LUN_DOES_NOT_EXIST: u8 = 2;
    pub const TASK_STILL_ALLEGIANT: u8 = 3;
    pub const REASSIGNMENT_NOT_SUPPORTED: u8 = 4;
    pub const NOT_SUPPORTED: u8 = 5;
    pub const AUTHORIZATION_FAILED: u8 = 6;
    pub const REJECTED: u8 = 255;
}

/// Logout response codes (RFC 7143 §11.15.1).
pub mod logout_response {
    pub const CLOSED: u8 = 0;
    pub const CID_NOT_FOUND: u8 = 1;
    pub const RECOVERY_NOT_SUPPORTED: u8 = 2;
    pub const CLEANUP_FAILED: u8 = 3;
}

/// Reject reasons (RFC 7143 §11.17.1).
pub mod reject_reason {
    pub const DATA_DIGEST_ERROR: u8 = 0x02;
    pub const SNACK_REJECT: u8 = 0x03;
    pub const PROTOCOL_ERROR: u8 = 0x04;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x05;
    pub const IMMEDIATE_COMMAND_REJECT: u8 = 0x06;
    pub const TASK_IN_PROGRESS: u8 = 0x07;
    pub const INVALID_DATA_ACK: u8 = 0x08;
    pub const INVALID_PDU_FIELD: u8 = 0x09;
    pub const OUT_OF_RESOURCES: u8 = 0x0a;
    pub const WAITING_FOR_LOGOUT: u8 = 0x0c;
}

/// AsyncEvent codes (RFC 7143 §11.9.1).
pub mod async_event {
    pub const SCSI_EVENT: u8 = 0;
    pub const LOGOUT_REQUEST: u8 = 1;
    pub const CONNECTION_DROP: u8 = 2;
    pub const SESSION_DROP: u8 = 3;
    pub const NEGOTIATION_REQUEST: u8 = 4;
    pub const VENDOR: u8 = 255;
}

/// Login status (Status-Class << 8 | Status-Detail), RFC 7143 §11.13.5.
pub mod login_status {
    pub const SUCCESS: u16 = 0x0000;
    pub const TARGET_MOVED_TEMPORARILY: u16 = 0x0101;
    pub const TARGET_MOVED_PERMANENTLY: u16 = 0x0102;
    /// Initiator error, miscellaneous (bad request, e.g. a stage transition not allowed).
    pub const INITIATOR_ERROR: u16 = 0x0200;
    /// The initiator could not be authenticated (e.g. a wrong CHAP response).
    pub const AUTHENTICATION_FAILURE: u16 = 0x0201;
    /// The initiator may not access the target (ACL).
    pub const AUTHORIZATION_FAILURE: u16 = 0x0202;
    /// No such target.
    pub const NOT_FOUND: u16 = 0x0203;
    pub const TARGET_REMOVED: u16 = 0x0204;
    pub const UNSUPPORTED_VERSION: u16 = 0x0205;
    pub const TOO_MANY_CONNECTIONS: u16 = 0x0206;
    pub const MISSING_PARAMETER: u16 = 0x0207;
    pub const CANT_INCLUDE_IN_SESSION: u16 = 0x0208;
    pub const SESSION_TYPE_NOT_SUPPORTED: u16 = 0x0209;
    pub const SESSION_DOES_NOT_EXIST: u16 = 0x020a;
    pub const INVALID_DURING_LOGIN: u16 = 0x020b;
    pub const TARGET_ERROR: u16 = 0x0300;
    pub const SERVICE_UNAVAILABLE: u16 = 0x0301;
    pub const OUT_OF_RESOURCES: u16 = 0x0302;
}
