//! CHAP with MD5 (CHAP_A=5) for iSCSI login (RFC 7143 §12.1.3, RFC 1994): the target's
//! challenge, checking the initiator's response, and answering the initiator's challenge for
//! mutual authentication.

use md5::{Digest, Md5};
use rand::RngCore;
use thiserror::Error;

use super::text::{self, Pairs};

/// CHAP_A value for MD5, the only algorithm offered.
pub const CHAP_MD5: u32 = 5;
/// Bytes in a challenge the target sends.
pub const CHALLENGE_LEN: usize = 32;
/// Bytes of an MD5 CHAP response.
pub const RESPONSE_LEN: usize = 16;
/// Largest challenge accepted from an initiator.
pub const MAX_PEER_CHALLENGE_LEN: usize = 1024;

/// A user name and secret.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    pub user: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// CHAP configuration of a target.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChapSecrets {
    /// What the initiator must prove it knows.
    pub initiator: Credentials,
    /// What the target answers with when the initiator asks for mutual authentication; None
    /// refuses mutual CHAP.
    pub target: Option<Credentials>,
}

/// Why CHAP failed (login status 0x0201, authentication failure).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ChapError {
    #[error("no supported CHAP algorithm offered (only MD5, 5)")]
    NoAlgorithm,
    #[error("CHAP_N or CHAP_R missing")]
    MissingResponse,
    #[error("CHAP_R is not a 16-byte binary value")]
    MalformedResponse,
    #[error("unknown CHAP user")]
    WrongUser,
    #[error("wrong CHAP response")]
    WrongResponse,
    #[error("initiator asked for mutual CHAP but the target has no credentials for it")]
    MutualNotConfigured,
    #[error("malformed CHAP_I or CHAP_C from the initiator")]
    MalformedChallenge,
    #[error("the initiator sent the target's own challenge back")]
    ReflectedChallenge,
}

/// MD5 CHAP response: MD5(identifier || secret || challenge).
pub fn response(id: u8, secret: &[u8], challenge: &[u8]) -> [u8; RESPONSE_LEN] {
    let mut h = Md5::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    h.finalize().into()
}

/// Equality that takes the same time wherever the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Picks MD5 from the initiator's CHAP_A list.
pub fn select_algorithm(chap_a: &str) -> Result<u32, ChapError> {
    text::list(chap_a)
        .filter_map(text::parse_number)
        .find(|&a| a == u64::from(CHAP_MD5))
        .map(|_| CHAP_MD5)
        .ok_or(ChapError::NoAlgorithm)
}

/// The challenge the target sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub id: u8,
    pub bytes: Vec<u8>,
}

impl Challenge {
    /// A fresh random identifier and challenge.
    pub fn generate(rng: &mut dyn RngCore) -> Self {
        let mut bytes = vec![0u8; CHALLENGE_LEN];
        rng.fill_bytes(&mut bytes);
        let mut id = [0u8; 1];
        rng.fill_bytes(&mut id);
        Self { id: id[0], bytes }
    }

    /// CHAP_A, CHAP_I and CHAP_C keys for the login response.
    pub fn keys(&self) -> Pairs {
        vec![
            ("CHAP_A".to_owned(), CHAP_MD5.to_string()),
            ("CHAP_I".to_owned(), self.id.to_string()),
            ("CHAP_C".to_owned(), text::encode_hex(&self.bytes)),
        ]
    }

    /// Checks CHAP_N and CHAP_R against `expected`.
    pub fn verify(
        &self,
        expected: &Credentials,
        chap_n: Option<&str>,
        chap_r: Option<&str>,
    ) -> Result<(), ChapError> {
        let (Some(name), Some(r)) = (chap_n, chap_r) else {
            return Err(ChapError::MissingResponse);
        };
        let received = text::decode_binary(r).ok_or(ChapError::MalformedResponse)?;
        if received.len() != RESPONSE_LEN {
            return Err(ChapError::MalformedResponse);
        }
        let wanted = response(self.id, expected.secret.as_bytes(), &self.bytes);
        // Check both before deciding, so timing does not tell which one was wrong.
        let user_ok = constant_time_eq(name.as_bytes(), expected.user.as_bytes());
        let response_ok = constant_time_eq(&received, &wanted);
        match (user_ok, response_ok) {
            (true, true) => Ok(()),
            (false, _) => Err(ChapError::WrongUser),
            (true, false) => Err(ChapError::WrongResponse),
        }
    }

    /// For mutual CHAP: the CHAP_N and CHAP_R that answer the initiator's CHAP_I / CHAP_C
    /// with the target's credentials. Refuses a challenge equal to ours (reflection).
    pub fn answer_mutual(
        &self,
        target: Option<&Credentials>,
        chap_i: &str,
        chap_c: &str,
    ) -> Result<Pairs, ChapError> {
        let id = text::parse_number(chap_i)
            .and_then(|n| u8::try_from(n).ok())
            .ok_or(ChapError::MalformedChallenge)?;
        let challenge = text::decode_binary(chap_c)
            .filter(|c| !c.is_empty() && c.len() <= MAX_PEER_CHALLENGE_LEN)
            .ok_or(ChapError::MalformedChallenge)?;
        if constant_time_eq(&challenge, &self.bytes) {
            return Err(ChapError::ReflectedChallenge);
        }
        let target = target.ok_or(ChapError::MutualNotConfigured)?;
        let answer = response(id, target.secret.as_bytes(), &challenge);
        Ok(vec![
            ("CHAP_N".to_owned(), target.user.clone()),
            ("CHAP_R".to_owned(), text::encode_hex(&answer)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    fn creds(user: &str, secret: &str) -> Credentials {
        Credentials {
            user: user.into(),
            secret: secret.into(),
        }
    }

    // RFC 1994 MD5 over id || secret || challenge, checked against an independent MD5 of the
    // concatenation.
    #[test]
    fn response_is_md5_of_id_secret_challenge() {
        let challenge = [0xde, 0xad, 0xbe, 0xef];
        let mut joined = vec![7u8];
        joined.extend_from_slice(b"secret");
        joined.extend_from_slice(&challenge);
        let expected: [u8; 16] = Md5::digest(&joined).into();
        assert_eq!(response(7, b"secret", &challenge), expected);
        // With id 'a', secret "b", challenge "c" the input is "abc", whose MD5 is well known.
        assert_eq!(
            hex::encode(response(b'a', b"b", b"c")),
            "900150983cd24fb0d6963f7d28e17f72"
        );
    }

    #[test]
    fn challenges_are_random_and_long_enough() {
        let mut rng = StdRng::seed_from_u64(1);
        let a = Challenge::generate(&mut rng);
        let b = Challenge::generate(&mut rng);
        assert!(a.bytes.len() >= 16);
        assert_ne!(a.bytes, b.bytes);
        let keys = a.keys();
        assert_eq!(text::get(&keys, "CHAP_A"), Some("5"));
        let c = text::get(&keys, "CHAP_C").expect("challenge");
        assert_eq!(text::decode_binary(c), Some(a.bytes.clone()));
    }

    #[test]
    fn algorithm_selection() {
        assert_eq!(select_algorithm("5"), Ok(5));
        assert_eq!(select_algorithm("7,6,5"), Ok(5));
        assert_eq!(select_algorithm("7"), Err(ChapError::NoAlgorithm));
        assert_eq!(select_algorithm("x"), Err(ChapError::NoAlgorithm));
    }

    #[test]
    fn verify_accepts_right_and_refuses_wrong() {
        let mut rng = StdRng::seed_from_u64(2);
        let ch = Challenge::generate(&mut rng);
        let good = creds("alice", "twelve-bytes-secret");
        let r = text::encode_hex(&response(ch.id, good.secret.as_bytes(), &ch.bytes));
        assert_eq!(ch.verify(&good, Some("alice"), Some(&r)), Ok(()));
        let upper = r.to_uppercase().replacen("0X", "0x", 1);
        assert_eq!(ch.verify(&good, Some("alice"), Some(&upper)), Ok(()));
        assert_eq!(
            ch.verify(&good, Some("bob"), Some(&r)),
            Err(ChapError::WrongUser)
        );
        let wrong = text::encode_hex(&response(ch.id, b"guess", &ch.bytes));
        assert_eq!(
            ch.verify(&good, Some("alice"), Some(&wrong)),
            Err(ChapError::WrongResponse)
        );
        assert_eq!(
            ch.verify(&good, Some("alice"), None),
            Err(ChapError::MissingResponse)
        );
        assert_eq!(
            ch.verify(&good, Some("alice"), Some("0x1234")),
            Err(ChapError::MalformedResponse)
        );
        assert_eq!(
            ch.verify(&good, Some("alice"), Some("plain")),
            Err(ChapError::MalformedResponse)
        );
    }

    #[test]
    fn mutual_answer_and_reflection() {
        let mut rng = StdRng::seed_from_u64(3);
        let ch = Challenge::generate(&mut rng);
        let target = creds("target-user", "target-secret-1");
        let their = [9u8; 20];
        let keys = ch
            .answer_mutual(Some(&target), "77", &text::encode_hex(&their))
            .expect("answers");
        assert_eq!(text::get(&keys, "CHAP_N"), Some("target-user"));
        let r = text::get(&keys, "CHAP_R").and_then(text::decode_binary);
        assert_eq!(r, Some(response(77, b"target-secret-1", &their).to_vec()));

        let ours = text::encode_hex(&ch.bytes);
        assert_eq!(
            ch.answer_mutual(Some(&target), "1", &ours),
            Err(ChapError::ReflectedChallenge)
        );
        assert_eq!(
            ch.answer_mutual(None, "1", "0x0102"),
            Err(ChapError::MutualNotConfigured)
        );
        assert_eq!(
            ch.answer_mutual(Some(&target), "256", "0x0102"),
            Err(ChapError::MalformedChallenge)
        );
        assert_eq!(
            ch.answer_mutual(Some(&target), "1", "0x"),
            Err(ChapError::MalformedChallenge)
        );
    }

    #[test]
    fn constant_time_eq_matches_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let c = creds("u", "hunter2hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
