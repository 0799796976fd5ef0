//! CHAP for iSCSI login (RFC 7143 §12.1.3, RFC 1994) with MD5, SHA-1, SHA-256 or SHA3-256
//! (CHAP_A 5 to 8): the target's challenge, checking the initiator's response, and answering
//! the initiator's challenge for mutual authentication with the same algorithm.

mod algorithm;

use rand::RngCore;
pub use spindle_chap::ChapAlgorithm;
use thiserror::Error;

pub use self::algorithm::{challenge_len, response, response_len, select};
use super::text::{self, Pairs};

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
    /// The digests the target accepts (records written before the setting existed: all).
    #[serde(default = "ChapAlgorithm::default_allowed")]
    pub algorithms: Vec<ChapAlgorithm>,
}

/// Why CHAP failed (login status 0x0201, authentication failure).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ChapError {
    #[error(
        "no allowed CHAP algorithm offered: the initiator offered CHAP_A={offered}, the target allows {allowed}"
    )]
    NoAlgorithm { offered: String, allowed: String },
    #[error("CHAP_N or CHAP_R missing")]
    MissingResponse,
    #[error("CHAP_R is not a binary value of {0} bytes")]
    MalformedResponse(usize),
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

/// Equality that takes the same time wherever the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The challenge the target sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub algorithm: ChapAlgorithm,
    pub id: u8,
    pub bytes: Vec<u8>,
}

impl Challenge {
    /// A fresh random identifier and challenge for `algorithm`.
    pub fn generate(algorithm: ChapAlgorithm, rng: &mut dyn RngCore) -> Self {
        let mut bytes = vec![0u8; challenge_len(algorithm)];
        rng.fill_bytes(&mut bytes);
        let mut id = [0u8; 1];
        rng.fill_bytes(&mut id);
        Self {
            algorithm,
            id: id[0],
            bytes,
        }
    }

    /// CHAP_A, CHAP_I and CHAP_C keys for the login response.
    pub fn keys(&self) -> Pairs {
        vec![
            ("CHAP_A".to_owned(), self.algorithm.code().to_string()),
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
        let len = response_len(self.algorithm);
        let received = text::decode_binary(r)
            .filter(|r| r.len() == len)
            .ok_or(ChapError::MalformedResponse(len))?;
        let wanted = response(
            self.algorithm,
            self.id,
            expected.secret.as_bytes(),
            &self.bytes,
        );
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
    /// with the target's credentials, in the algorithm this login agreed on. Refuses a challenge equal to ours (reflection).
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
        let answer = response(self.algorithm, id, target.secret.as_bytes(), &challenge);
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

    #[test]
    fn challenges_are_random_and_sized_for_the_algorithm() {
        let mut rng = StdRng::seed_from_u64(1);
        for alg in ChapAlgorithm::ALL {
            let a = Challenge::generate(alg, &mut rng);
            let b = Challenge::generate(alg, &mut rng);
            assert_eq!(a.bytes.len(), challenge_len(alg));
            assert_ne!(a.bytes, b.bytes);
            let keys = a.keys();
            let code = alg.code().to_string();
            assert_eq!(text::get(&keys, "CHAP_A"), Some(code.as_str()));
            let c = text::get(&keys, "CHAP_C").expect("challenge");
            assert_eq!(text::decode_binary(c), Some(a.bytes.clone()));
        }
    }

    #[test]
    fn verify_accepts_right_and_refuses_wrong() {
        let mut rng = StdRng::seed_from_u64(2);
        let ch = Challenge::generate(ChapAlgorithm::Md5, &mut rng);
        let good = creds("alice", "twelve-bytes-secret");
        let md5 = ChapAlgorithm::Md5;
        let r = text::encode_hex(&response(md5, ch.id, good.secret.as_bytes(), &ch.bytes));
        assert_eq!(ch.verify(&good, Some("alice"), Some(&r)), Ok(()));
        let upper = r.to_uppercase().replacen("0X", "0x", 1);
        assert_eq!(ch.verify(&good, Some("alice"), Some(&upper)), Ok(()));
        assert_eq!(
            ch.verify(&good, Some("bob"), Some(&r)),
            Err(ChapError::WrongUser)
        );
        let wrong = text::encode_hex(&response(md5, ch.id, b"guess", &ch.bytes));
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
            Err(ChapError::MalformedResponse(16))
        );
        assert_eq!(
            ch.verify(&good, Some("alice"), Some("plain")),
            Err(ChapError::MalformedResponse(16))
        );
    }

    // Each algorithm accepts its own response and nothing of another length: a CHAP_R of every
    // length from 0 to 80 bytes (hex and base64), garbage, a response of a weaker digest.
    #[test]
    fn responses_of_every_length_are_refused_but_the_digests_own() {
        let mut rng = StdRng::seed_from_u64(4);
        let good = creds("alice", "twelve-bytes-secret");
        for alg in ChapAlgorithm::ALL {
            let ch = Challenge::generate(alg, &mut rng);
            let right = response(alg, ch.id, good.secret.as_bytes(), &ch.bytes);
            let ok = text::encode_hex(&right);
            assert_eq!(ch.verify(&good, Some("alice"), Some(&ok)), Ok(()), "{alg}");
            let want = response_len(alg);
            for n in 0..=80 {
                let bytes = vec![0xa5; n];
                for r in [text::encode_hex(&bytes), format!("0b{}", b64(&bytes))] {
                    let got = ch.verify(&good, Some("alice"), Some(&r));
                    if n == want {
                        assert_eq!(got, Err(ChapError::WrongResponse), "{alg} {n}");
                    } else {
                        assert_eq!(got, Err(ChapError::MalformedResponse(want)), "{alg} {n}");
                    }
                }
            }
            for junk in ["", "0x", "0b", "0xzz", "0b!!!!", "0x1", &"f".repeat(5000)] {
                assert!(
                    ch.verify(&good, Some("alice"), Some(junk)).is_err(),
                    "{alg} {junk:.8}"
                );
            }
            for other in ChapAlgorithm::ALL.into_iter().filter(|o| *o != alg) {
                let r = response(other, ch.id, good.secret.as_bytes(), &ch.bytes);
                let got = ch.verify(&good, Some("alice"), Some(&text::encode_hex(&r)));
                assert!(got.is_err(), "{alg} accepted a {other} response");
            }
        }
    }

    /// Standard base64 with padding (RFC 4648), enough for the tests' binary values.
    fn b64(bytes: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn mutual_answer_and_reflection() {
        let mut rng = StdRng::seed_from_u64(3);
        let target = creds("target-user", "target-secret-1");
        let their = [9u8; 20];
        for alg in ChapAlgorithm::ALL {
            let ch = Challenge::generate(alg, &mut rng);
            let keys = ch
                .answer_mutual(Some(&target), "77", &text::encode_hex(&their))
                .expect("answers");
            assert_eq!(text::get(&keys, "CHAP_N"), Some("target-user"));
            let r = text::get(&keys, "CHAP_R").and_then(text::decode_binary);
            assert_eq!(
                r,
                Some(response(alg, 77, b"target-secret-1", &their)),
                "{alg}"
            );
        }
        let ch = Challenge::generate(ChapAlgorithm::Sha256, &mut rng);

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
    fn records_written_before_the_algorithm_setting_allow_all() {
        let old = r#"{"initiator":{"user":"u","secret":"0123456789ab"},"target":null}"#;
        let s: ChapSecrets = serde_json::from_str(old).expect("old record loads");
        assert_eq!(s.algorithms, ChapAlgorithm::ALL);
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let c = creds("u", "hunter2hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
