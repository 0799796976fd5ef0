//! The CHAP credentials a Target's Secret holds: the keys, and the lengths a secret may have.
//! Shared by the operator (which reads the Secret) and the agent (which checks what it is
//! handed, and reads Secrets from manifests in standalone mode). Also the CHAP digest algorithms
//! a Target may allow (`spec.chap.algorithms`).

pub use spindle_chap::ChapAlgorithm;

/// Secret key: the user name the initiator sends (CHAP_N).
pub const USER_KEY: &str = "username";
/// Secret key: the initiator's secret.
pub const SECRET_KEY: &str = "password";
/// Secret key (mutual CHAP): the name the target answers with.
pub const MUTUAL_USER_KEY: &str = "mutualUsername";
/// Secret key (mutual CHAP): the target's secret.
pub const MUTUAL_SECRET_KEY: &str = "mutualPassword";

/// Shortest CHAP secret: 96 bits, the minimum RFC 7143 (section 12.1.3) asks for; shorter
/// secrets fall to a dictionary attack on one captured exchange.
pub const SECRET_MIN_LEN: usize = 12;
/// Longest CHAP secret initiators accept (open-iscsi keeps at most 256 bytes with its NUL).
pub const SECRET_MAX_LEN: usize = 255;

/// Why a CHAP secret of `len` bytes cannot be used, or None if it can.
pub fn secret_length_problem(len: usize) -> Option<String> {
    (!(SECRET_MIN_LEN..=SECRET_MAX_LEN).contains(&len)).then(|| {
        format!("is {len} bytes; a CHAP secret must be {SECRET_MIN_LEN} to {SECRET_MAX_LEN} bytes")
    })
}

/// Why a mutual CHAP setup cannot be used, or None: the target's secret must differ from the
/// initiator's (one secret in both directions lets an attacker reflect challenges).
pub fn mutual_problem(initiator_secret: &str, target_secret: &str) -> Option<String> {
    (initiator_secret == target_secret).then(|| {
        format!("{MUTUAL_SECRET_KEY:?} must differ from {SECRET_KEY:?} (the same secret in both directions allows a reflection attack)")
    })
}

/// Why an allowed-algorithms list cannot be used, or None: it must name at least one algorithm,
/// each once.
pub fn algorithms_problem(allowed: &[ChapAlgorithm]) -> Option<String> {
    if allowed.is_empty() {
        return Some("must allow at least one algorithm (MD5, SHA1, SHA256, SHA3-256); leave it out for all four".into());
    }
    let dup = allowed
        .iter()
        .enumerate()
        .find(|(i, a)| allowed[..*i].contains(a))
        .map(|(_, a)| a.name());
    dup.map(|d| format!("{d} is listed twice"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_codes_are_the_iana_numbers() {
        let codes: Vec<_> = ChapAlgorithm::ALL
            .iter()
            .map(|a| (a.name(), a.code()))
            .collect();
        assert_eq!(
            codes,
            [("SHA3-256", 8), ("SHA256", 7), ("SHA1", 6), ("MD5", 5)]
        );
        for a in ChapAlgorithm::ALL {
            assert_eq!(ChapAlgorithm::from_code(a.code().into()), Some(a));
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.name()));
            assert_eq!(serde_json::from_str::<ChapAlgorithm>(&json).unwrap(), a);
        }
        assert_eq!(ChapAlgorithm::from_code(4), None);
        assert_eq!(ChapAlgorithm::from_code(9), None);
        assert!(serde_json::from_str::<ChapAlgorithm>("\"SHA-256\"").is_err());
    }

    #[test]
    fn allowed_lists_must_be_non_empty_and_unique() {
        assert_eq!(algorithms_problem(&ChapAlgorithm::ALL), None);
        assert_eq!(algorithms_problem(&[ChapAlgorithm::Sha256]), None);
        assert!(algorithms_problem(&[]).unwrap().contains("at least one"));
        let p = algorithms_problem(&[
            ChapAlgorithm::Sha256,
            ChapAlgorithm::Md5,
            ChapAlgorithm::Sha256,
        ]);
        assert_eq!(p.as_deref(), Some("SHA256 is listed twice"));
    }

    #[test]
    fn secrets_must_be_12_to_255_bytes() {
        assert!(secret_length_problem(11).is_some());
        assert!(secret_length_problem(0).is_some());
        assert_eq!(secret_length_problem(12), None);
        assert_eq!(secret_length_problem(255), None);
        let p = secret_length_problem(256).unwrap();
        assert!(p.contains("256 bytes") && p.contains("12 to 255"), "{p}");
    }

    #[test]
    fn mutual_secrets_must_differ() {
        assert!(mutual_problem("0123456789ab", "0123456789ab").is_some());
        assert_eq!(mutual_problem("0123456789ab", "ba9876543210"), None);
    }
}
