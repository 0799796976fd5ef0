//! The CHAP digests (RFC 1994's response, with the hash CHAP_A names) and the choice of one from
//! the initiator's CHAP_A list.

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use sha3::Sha3_256;
use spindle_chap::ChapAlgorithm;

use super::ChapError;
use crate::iscsi::text;

/// Bytes of a challenge the target sends: at least the digest's output (what LIO sends), and
/// never below the 32 bytes MD5 logins always got (256 random bits, more than any of these
/// digests can use).
pub fn challenge_len(a: ChapAlgorithm) -> usize {
    response_len(a).max(32)
}

/// Bytes of a CHAP_R with algorithm `a`.
pub fn response_len(a: ChapAlgorithm) -> usize {
    match a {
        ChapAlgorithm::Md5 => 16,
        ChapAlgorithm::Sha1 => 20,
        ChapAlgorithm::Sha256 | ChapAlgorithm::Sha3_256 => 32,
    }
}

fn hash<D: Digest>(id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
    let mut h = D::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    h.finalize().to_vec()
}

/// The CHAP response: H(identifier || secret || challenge), H the digest `a` names.
pub fn response(a: ChapAlgorithm, id: u8, secret: &[u8], challenge: &[u8]) -> Vec<u8> {
    match a {
        ChapAlgorithm::Md5 => hash::<Md5>(id, secret, challenge),
        ChapAlgorithm::Sha1 => hash::<Sha1>(id, secret, challenge),
        ChapAlgorithm::Sha256 => hash::<Sha256>(id, secret, challenge),
        ChapAlgorithm::Sha3_256 => hash::<Sha3_256>(id, secret, challenge),
    }
}

/// The first algorithm of the initiator's CHAP_A list that `allowed` holds. The initiator's
/// order wins (RFC 7143 section 6.2: a responder answers a list with the first value it
/// supports; LIO does the same); the Target's minimum is what `allowed` leaves out. Values
/// that are not numbers, or numbers Spindle does not know, are skipped.
pub fn select(chap_a: &str, allowed: &[ChapAlgorithm]) -> Result<ChapAlgorithm, ChapError> {
    text::list(chap_a)
        .filter_map(text::parse_number)
        .filter_map(ChapAlgorithm::from_code)
        .find(|a| allowed.contains(a))
        .ok_or_else(|| ChapError::NoAlgorithm {
            offered: chap_a.chars().take(64).collect(),
            allowed: allowed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChapAlgorithm::{Md5, Sha1, Sha3_256, Sha256};

    // Vectors computed outside this code, with Python's hashlib:
    //   hashlib.new(name, bytes([7]) + b"secret-12-bytes" + bytes(range(32))).hexdigest()
    #[test]
    fn responses_match_independent_vectors() {
        let challenge: Vec<u8> = (0..32).collect();
        let cases = [
            (Md5, "8cc9f718ee588887f8b0ef398c3ba138"),
            (Sha1, "feb792e9f25f87ce0b1f08fdfa185c216b484e20"),
            (
                Sha256,
                "321d848d3345c68821301d0cd734c9340085409d10c84c2dd6aaa306f780ed6c",
            ),
            (
                Sha3_256,
                "5828a7f85cf9c2bfd3a09581b429c94d72fca7f2347835b415a93cc26de2e35c",
            ),
        ];
        for (a, want) in cases {
            let r = response(a, 7, b"secret-12-bytes", &challenge);
            assert_eq!(hex::encode(&r), want, "{a}");
            assert_eq!(r.len(), response_len(a), "{a}");
        }
    }

    // The well-known digests of "abc" (FIPS 180 / FIPS 202 examples): id 'a', secret "b",
    // challenge "c".
    #[test]
    fn responses_of_abc_are_the_published_digests() {
        let abc = |a| hex::encode(response(a, b'a', b"b", b"c"));
        assert_eq!(abc(Md5), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(abc(Sha1), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            abc(Sha256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            abc(Sha3_256),
            "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"
        );
    }

    #[test]
    fn challenges_are_at_least_as_long_as_the_digest() {
        for a in ChapAlgorithm::ALL {
            assert!(challenge_len(a) >= response_len(a), "{a}");
        }
        assert_eq!(challenge_len(Md5), 32);
    }

    #[test]
    fn the_initiators_order_picks_among_the_allowed() {
        let all = ChapAlgorithm::ALL;
        assert_eq!(select("5", &all), Ok(Md5));
        assert_eq!(select("7,6,5", &all), Ok(Sha256));
        assert_eq!(select("5,8", &all), Ok(Md5));
        assert_eq!(select("8,7,6,5", &all), Ok(Sha3_256));
        assert_eq!(select("5,7", &[Sha256, Sha3_256]), Ok(Sha256));
        // Unknown numbers and junk are skipped, not fatal.
        assert_eq!(select("99,x,,6", &all), Ok(Sha1));
        assert_eq!(select("18446744073709551621,6", &all), Ok(Sha1));
    }

    #[test]
    fn nothing_allowed_names_what_was_offered_and_allowed() {
        let e = select("5,6", &[Sha3_256, Sha256]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no allowed CHAP algorithm offered: the initiator offered CHAP_A=5,6, the target \
             allows SHA3-256 (8), SHA256 (7)"
        );
        assert!(matches!(
            select("", &[Md5]),
            Err(ChapError::NoAlgorithm { .. })
        ));
        assert!(matches!(
            select("x", &[Md5]),
            Err(ChapError::NoAlgorithm { .. })
        ));
        // A long offer is cut in the message, not echoed whole.
        let long = "9,".repeat(1000);
        let e = select(&long, &[Md5]).unwrap_err().to_string();
        assert!(e.len() < 200, "{e}");
    }
}
