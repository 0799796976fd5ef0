//! CRC32C header and data digests (RFC 7143 §13.1, RFC 3720 appendix B.4).
//!
//! The digest is the CRC32C (Castagnoli) of the covered bytes; on the wire its four bytes go
//! least significant first, which is what RFC 3720's test vectors show.

/// Length of a digest on the wire.
pub const DIGEST_LEN: usize = 4;

/// CRC32C of `parts`, concatenated, as a number (uses the CPU's CRC instruction when present).
pub fn crc32c(parts: &[&[u8]]) -> u32 {
    parts
        .iter()
        .fold(0, |crc, part| crc32c::crc32c_append(crc, part))
}

/// The four digest bytes for `parts`, concatenated, in wire order.
pub fn digest(parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    crc32c(parts).to_le_bytes()
}

/// Whether `received` is the digest of `parts` concatenated.
pub fn verify(parts: &[&[u8]], received: &[u8]) -> bool {
    received == digest(parts).as_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_bytes(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).expect("test vector is hex")
    }

    // RFC 3720 appendix B.4, the four byte-pattern vectors.
    #[test]
    fn rfc3720_vectors() {
        let zeros = [0u8; 32];
        assert_eq!(digest(&[&zeros]).to_vec(), hex_bytes("aa 36 91 8a"));
        let ones = [0xffu8; 32];
        assert_eq!(digest(&[&ones]).to_vec(), hex_bytes("43 ab a8 62"));
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(digest(&[&inc]).to_vec(), hex_bytes("4e 79 dd 46"));
        let dec: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(digest(&[&dec]).to_vec(), hex_bytes("5c db 3f 11"));
    }

    // RFC 3720 appendix B.4, the iSCSI Read (10) command PDU.
    #[test]
    fn rfc3720_scsi_read_pdu() {
        let pdu = hex_bytes(
            "01 c0 00 00 00 00 00 00 00 00 00 00 00 00 00 00
             14 00 00 00 00 00 04 00 00 00 00 14 00 00 00 18
             28 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00",
        );
        assert_eq!(digest(&[&pdu]).to_vec(), hex_bytes("56 3a 96 d9"));
    }

    #[test]
    fn split_input_gives_same_digest() {
        let data: Vec<u8> = (0u8..=255).collect();
        let (a, b) = data.split_at(77);
        assert_eq!(crc32c(&[a, b]), crc32c(&[&data]));
    }

    #[test]
    fn verify_detects_corruption() {
        let data = b"spindle data segment";
        let good = digest(&[data]);
        assert!(verify(&[data], &good));
        let mut bad = good;
        bad[0] ^= 1;
        assert!(!verify(&[data], &bad));
        assert!(!verify(&[data], &good[..3]));
    }
}
