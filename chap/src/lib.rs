//! The CHAP digest algorithms a Target may allow (`spec.chap.algorithms`), in a crate of their
//! own: the CRDs spell them in manifests, the agent's data path negotiates them by their CHAP_A
//! values, and the data path (built alone for the fuzzers) must not depend on the CRD crate.

use serde::{Deserialize, Serialize};

/// A CHAP digest algorithm, spelled as open-iscsi's `node.session.auth.chap_algs` spells it.
/// The numbers are CHAP_A values from the IANA "PPP Authentication Algorithms" registry that
/// RFC 7143 (section 12.1.3) refers to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ChapAlgorithm {
    /// MD5 (CHAP_A=5): what every initiator speaks (libiscsi only this); collisions are cheap.
    #[serde(rename = "MD5")]
    Md5,
    /// SHA-1 (CHAP_A=6).
    #[serde(rename = "SHA1")]
    Sha1,
    /// SHA-256 (CHAP_A=7).
    #[serde(rename = "SHA256")]
    Sha256,
    /// SHA3-256 (CHAP_A=8).
    #[serde(rename = "SHA3-256")]
    Sha3_256,
}

impl ChapAlgorithm {
    /// Every algorithm, strongest first: the default of `spec.chap.algorithms`.
    pub const ALL: [Self; 4] = [Self::Sha3_256, Self::Sha256, Self::Sha1, Self::Md5];

    /// The CHAP_A value (IANA PPP authentication algorithm number).
    pub fn code(self) -> u32 {
        match self {
            Self::Md5 => 5,
            Self::Sha1 => 6,
            Self::Sha256 => 7,
            Self::Sha3_256 => 8,
        }
    }

    /// The algorithm with CHAP_A value `code`, if Spindle knows it.
    pub fn from_code(code: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|a| u64::from(a.code()) == code)
    }

    /// The manifest spelling (`MD5`, `SHA1`, `SHA256`, `SHA3-256`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
            Self::Sha3_256 => "SHA3-256",
        }
    }

    /// `spec.chap.algorithms` when the manifest leaves it out: all four.
    pub fn default_allowed() -> Vec<Self> {
        Self::ALL.to_vec()
    }
}

impl std::fmt::Display for ChapAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}
