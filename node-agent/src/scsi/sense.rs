//! The one sense-data builder (SPC-4 4.5): a [`Sense`] value becomes fixed-format (70h) or
//! descriptor-format (72h) bytes. Every CHECK CONDITION in the SCSI layer is built here.

/// Sense keys (SPC-4 table 27) used by this target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SenseKey {
    NoSense = 0x0,
    NotReady = 0x2,
    MediumError = 0x3,
    HardwareError = 0x4,
    IllegalRequest = 0x5,
    UnitAttention = 0x6,
    DataProtect = 0x7,
    CopyAborted = 0xA,
    AbortedCommand = 0xB,
    Miscompare = 0xE,
}

/// An additional sense code and qualifier pair (ASC/ASCQ).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Asc(pub u8, pub u8);

/// Data phase error (a Data-Out sequence error the transport could not recover).
pub const DATA_PHASE_ERROR: Asc = Asc(0x4B, 0x00);
/// Data offset error (a Data-Out at the wrong buffer offset).
pub const DATA_OFFSET_ERROR: Asc = Asc(0x4B, 0x05);
/// No additional sense information.
pub const NO_ADDITIONAL_SENSE: Asc = Asc(0x00, 0x00);
/// Logical unit not ready, initializing command required (a stopped unit).
pub const LU_NOT_READY_INIT_REQUIRED: Asc = Asc(0x04, 0x02);
/// Logical unit not ready, sanitize in progress.
pub const SANITIZE_IN_PROGRESS: Asc = Asc(0x04, 0x1B);
/// SANITIZE COMMAND FAILED: a sanitize did not complete; the unit stays in failure mode
/// until a SANITIZE succeeds or EXIT FAILURE MODE.
pub const SANITIZE_COMMAND_FAILED: Asc = Asc(0x31, 0x03);
/// Write error.
pub const WRITE_ERROR: Asc = Asc(0x0C, 0x00);
/// Invalid field in command information unit (Data-Out does not match the CDB).
pub const INVALID_FIELD_IN_INFORMATION_UNIT: Asc = Asc(0x0E, 0x03);
/// Unrecovered read error.
pub const UNRECOVERED_READ_ERROR: Asc = Asc(0x11, 0x00);
/// Parameter list length error.
pub const PARAMETER_LIST_LENGTH_ERROR: Asc = Asc(0x1A, 0x00);
/// Miscompare during verify operation (INFORMATION holds the offset of the first mismatch).
pub const MISCOMPARE_DURING_VERIFY: Asc = Asc(0x1D, 0x00);
/// Invalid command operation code.
pub const INVALID_COMMAND_OPERATION_CODE: Asc = Asc(0x20, 0x00);
/// Logical block address out of range.
pub const LBA_OUT_OF_RANGE: Asc = Asc(0x21, 0x00);
/// Invalid field in CDB.
pub const INVALID_FIELD_IN_CDB: Asc = Asc(0x24, 0x00);
/// Logical unit not supported.
pub const LOGICAL_UNIT_NOT_SUPPORTED: Asc = Asc(0x25, 0x00);
/// Invalid field in parameter list.
pub const INVALID_FIELD_IN_PARAMETER_LIST: Asc = Asc(0x26, 0x00);
/// Parameter not supported (MODE SELECT of an unknown page).
pub const PARAMETER_NOT_SUPPORTED: Asc = Asc(0x26, 0x01);
/// Invalid parameter value in a parameter list.
pub const INVALID_PARAMETER_VALUE: Asc = Asc(0x26, 0x02);
/// Write protected.
pub const WRITE_PROTECTED: Asc = Asc(0x27, 0x00);
/// Power on, reset, or bus device reset occurred.
pub const POWER_ON_RESET: Asc = Asc(0x29, 0x00);
/// Power on occurred.
pub const POWER_ON_OCCURRED: Asc = Asc(0x29, 0x01);
/// SCSI bus reset occurred.
pub const SCSI_BUS_RESET: Asc = Asc(0x29, 0x02);
/// Bus device reset function occurred (LUN RESET).
pub const BUS_DEVICE_RESET: Asc = Asc(0x29, 0x03);
/// I_T nexus loss occurred.
pub const I_T_NEXUS_LOSS: Asc = Asc(0x29, 0x07);
/// Mode parameters changed (by another I_T nexus).
pub const MODE_PARAMETERS_CHANGED: Asc = Asc(0x2A, 0x01);
/// Reservations preempted.
pub const RESERVATIONS_PREEMPTED: Asc = Asc(0x2A, 0x03);
/// Reservations released.
pub const RESERVATIONS_RELEASED: Asc = Asc(0x2A, 0x04);
/// Registrations preempted.
pub const REGISTRATIONS_PREEMPTED: Asc = Asc(0x2A, 0x05);
/// Capacity data has changed.
pub const CAPACITY_DATA_HAS_CHANGED: Asc = Asc(0x2A, 0x09);
/// Commands cleared by another initiator.
pub const COMMANDS_CLEARED_BY_ANOTHER_INITIATOR: Asc = Asc(0x2F, 0x00);
/// Saving parameters not supported.
pub const SAVING_PARAMETERS_NOT_SUPPORTED: Asc = Asc(0x39, 0x00);
/// Medium not present.
pub const MEDIUM_NOT_PRESENT: Asc = Asc(0x3A, 0x00);
/// Reported LUNs data has changed.
pub const REPORTED_LUNS_DATA_HAS_CHANGED: Asc = Asc(0x3F, 0x0E);
/// Internal target failure.
pub const INTERNAL_TARGET_FAILURE: Asc = Asc(0x44, 0x00);
/// Insufficient registration resources.
pub const INSUFFICIENT_REGISTRATION_RESOURCES: Asc = Asc(0x55, 0x04);
/// Medium removal prevented.
pub const MEDIUM_REMOVAL_PREVENTED: Asc = Asc(0x53, 0x02);

/// Sense-key-specific information (SPC-4 4.5.2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sks {
    /// Which field was invalid: in the CDB (`cdb: true`) or in the parameter list, at `byte`,
    /// and optionally at `bit` within it.
    Field {
        cdb: bool,
        byte: u16,
        bit: Option<u8>,
    },
    /// How far a long operation got, in 65536ths (NOT READY while it runs).
    Progress(u16),
}

impl Sks {
    /// The three sense-key-specific bytes, with SKSV set.
    fn bytes(self) -> [u8; 3] {
        match self {
            Sks::Field { cdb, byte, bit } => {
                let mut b0 = 0x80;
                if cdb {
                    b0 |= 0x40;
                }
                if let Some(bit) = bit {
                    b0 |= 0x08 | (bit & 0x07);
                }
                let [hi, lo] = byte.to_be_bytes();
                [b0, hi, lo]
            }
            Sks::Progress(p) => {
                let [hi, lo] = p.to_be_bytes();
                [0x80, hi, lo]
            }
        }
    }
}

/// One piece of sense data: what went wrong, in SCSI terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sense {
    /// The sense key.
    pub key: SenseKey,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
    /// The INFORMATION field (e.g. the offset of a miscompare), if any.
    pub info: Option<u64>,
    /// Sense-key-specific information (e.g. a field pointer), if any.
    pub sks: Option<Sks>,
}

/// Length of fixed-format sense data as built here.
pub const FIXED_LEN: usize = 18;

impl Sense {
    /// Sense with a key and an ASC/ASCQ pair, nothing else.
    pub const fn new(key: SenseKey, asc: Asc) -> Self {
        Sense {
            key,
            asc: asc.0,
            ascq: asc.1,
            info: None,
            sks: None,
        }
    }

    /// ILLEGAL REQUEST with the given ASC/ASCQ.
    pub const fn illegal(asc: Asc) -> Self {
        Sense::new(SenseKey::IllegalRequest, asc)
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN CDB, pointing at `byte` (and `bit`) of the CDB.
    pub const fn invalid_cdb_field(byte: u16, bit: Option<u8>) -> Self {
        Sense::illegal(INVALID_FIELD_IN_CDB).with_sks(Sks::Field {
            cdb: true,
            byte,
            bit,
        })
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST, pointing at `byte` (and `bit`).
    pub const fn invalid_param_field(byte: u16, bit: Option<u8>) -> Self {
        Sense::illegal(INVALID_FIELD_IN_PARAMETER_LIST).with_sks(Sks::Field {
            cdb: false,
            byte,
            bit,
        })
    }

    /// ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const fn lba_out_of_range() -> Self {
        Sense::illegal(LBA_OUT_OF_RANGE)
    }

    /// UNIT ATTENTION with the given ASC/ASCQ.
    pub const fn unit_attention(asc: Asc) -> Self {
        Sense::new(SenseKey::UnitAttention, asc)
    }

    /// This sense with an INFORMATION field.
    pub const fn with_info(mut self, info: u64) -> Self {
        self.info = Some(info);
        self
    }

    /// This sense with sense-key-specific information.
    pub const fn with_sks(mut self, sks: Sks) -> Self {
        self.sks = Some(sks);
        self
    }

    /// The ASC/ASCQ pair.
    pub const fn asc(&self) -> Asc {
        Asc(self.asc, self.ascq)
    }

    /// Encodes this sense data: descriptor format (72h) when `descriptor`, else fixed (70h).
    pub fn to_bytes(&self, descriptor: bool) -> Vec<u8> {
        if descriptor {
            self.descriptor_bytes()
        } else {
            self.fixed_bytes()
        }
    }

    fn fixed_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; FIXED_LEN];
        b[0] = 0x70;
        b[2] = self.key as u8;
        if let Some(info) = self.info {
            // The fixed format has 4 bytes of INFORMATION; VALID only when it fits.
            if let Ok(v) = u32::try_from(info) {
                b[0] |= 0x80;
                b[3..7].copy_from_slice(&v.to_be_bytes());
            }
        }
        b[7] = (FIXED_LEN - 8) as u8;
        b[12] = self.asc;
        b[13] = self.ascq;
        if let Some(sks) = self.sks {
            b[15..18].copy_from_slice(&sks.bytes());
        }
        b
    }

    fn descriptor_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + 12 + 8);
        b.extend_from_slice(&[0x72, self.key as u8, self.asc, self.ascq, 0, 0, 0, 0]);
        if let Some(info) = self.info {
            // Information descriptor (type 00h), VALID set.
            b.extend_from_slice(&[0x00, 0x0A, 0x80, 0x00]);
            b.extend_from_slice(&info.to_be_bytes());
        }
        if let Some(sks) = self.sks {
            // Sense key specific descriptor (type 02h).
            b.extend_from_slice(&[0x02, 0x06, 0x00, 0x00]);
            b.extend_from_slice(&sks.bytes());
            b.push(0);
        }
        b[7] = (b.len() - 8) as u8;
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format_layout() {
        let s = Sense::illegal(LBA_OUT_OF_RANGE);
        let b = s.to_bytes(false);
        assert_eq!(b.len(), 18);
        assert_eq!(b[0], 0x70);
        assert_eq!(b[2], 0x05);
        assert_eq!(b[7], 10);
        assert_eq!((b[12], b[13]), (0x21, 0x00));
        assert_eq!(&b[15..18], &[0, 0, 0]);
    }

    #[test]
    fn fixed_format_info_and_field_pointer() {
        let s = Sense::new(SenseKey::Miscompare, MISCOMPARE_DURING_VERIFY).with_info(0x1234);
        let b = s.to_bytes(false);
        assert_eq!(b[0], 0xF0, "VALID set with INFORMATION");
        assert_eq!(&b[3..7], &[0, 0, 0x12, 0x34]);
        let s = Sense::invalid_cdb_field(2, Some(5));
        let b = s.to_bytes(false);
        assert_eq!(b[15], 0x80 | 0x40 | 0x08 | 5);
        assert_eq!(&b[16..18], &[0, 2]);
        let s = Sense::invalid_param_field(0x102, None);
        let b = s.to_bytes(false);
        assert_eq!(&b[15..18], &[0x80, 0x01, 0x02]);
    }

    #[test]
    fn fixed_format_info_too_large_is_not_valid() {
        let b = Sense::illegal(LBA_OUT_OF_RANGE)
            .with_info(1 << 40)
            .to_bytes(false);
        assert_eq!(b[0], 0x70);
        assert_eq!(&b[3..7], &[0, 0, 0, 0]);
    }

    #[test]
    fn descriptor_format_layout() {
        let b = Sense::unit_attention(POWER_ON_RESET).to_bytes(true);
        assert_eq!(b, vec![0x72, 0x06, 0x29, 0x00, 0, 0, 0, 0]);

        let s = Sense::new(SenseKey::Miscompare, MISCOMPARE_DURING_VERIFY)
            .with_info(1 << 40)
            .with_sks(Sks::Field {
                cdb: true,
                byte: 1,
                bit: None,
            });
        let b = s.to_bytes(true);
        assert_eq!(b.len(), 8 + 12 + 8);
        assert_eq!(b[7] as usize, b.len() - 8);
        assert_eq!(&b[8..12], &[0x00, 0x0A, 0x80, 0x00]);
        assert_eq!(u64::from_be_bytes(b[12..20].try_into().unwrap()), 1 << 40);
        assert_eq!(&b[20..28], &[0x02, 0x06, 0, 0, 0xC0, 0x00, 0x01, 0x00]);
    }
}
