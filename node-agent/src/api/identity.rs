//! The agent's own identity on the API: a serving key made when the agent starts, kept in
//! memory only, and its fingerprint, which the agent publishes in its Lease (the Lease only
//! this node's agent may write, see the chart's admission policy). The operator accepts the
//! agent's certificate only if its key has that fingerprint, so a certificate from another node
//! (or a copy of a shared one) does not get this node's orders.
//!
//! In memory, not on disk: a restart makes a new key and publishes it before it could be asked
//! for anything, so nothing is gained by keeping one, and a key that never touches the data dir
//! cannot be copied from it (a backup, a reimaged disk, a hostPath shared by mistake).

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spindle_agent_api::identity;

/// The agent's serving certificate, its key and the key's fingerprint.
pub struct ServingKey {
    /// The certificate chain presented (one self-signed certificate, or the chain of a file).
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// [`identity::fingerprint`] of the certificate's public key.
    pub fingerprint: String,
}

impl std::fmt::Debug for ServingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// The serving key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("generating the agent's serving key: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the agent's certificate: {0}")]
    Certificate(String),
}

impl ServingKey {
    /// A fresh ECDSA P-256 key and a self-signed certificate for it naming the node (the name
    /// is for people reading it; the operator checks the key).
    pub fn generate(node: &str) -> Result<Self, IdentityError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(vec![identity::AGENT_SERVER_NAME.into()])?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("{} {node}", identity::AGENT_SERVER_NAME),
        );
        let cert = params.self_signed(&pair)?;
        let der = cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pair.serialize_der()));
        Self::new(vec![der], key)
    }

    /// A key read from files (`--tls-cert`, `--tls-key`): its fingerprint is published the same
    /// way. Every agent must have its own: the operator refuses a key two nodes publish.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, IdentityError> {
        let leaf = chain
            .first()
            .ok_or_else(|| IdentityError::Certificate("no certificate".into()))?;
        let fingerprint = fingerprint_of(leaf)?;
        Ok(Self {
            chain,
            key,
            fingerprint,
        })
    }
}

/// The fingerprint of a certificate's public key.
pub fn fingerprint_of(cert: &CertificateDer<'_>) -> Result<String, IdentityError> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
    Ok(identity::fingerprint(
        parsed.subject_public_key_info().as_ref(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_start_makes_a_new_key_with_a_fingerprint_of_its_certificate() {
        let a = ServingKey::generate("node-a").expect("key");
        let b = ServingKey::generate("node-a").expect("key");
        assert!(identity::is_fingerprint(&a.fingerprint), "{a:?}");
        assert_ne!(a.fingerprint, b.fingerprint);
        assert_eq!(fingerprint_of(&a.chain[0]).expect("parse"), a.fingerprint);
        assert!(!format!("{a:?}").contains("key:"), "{a:?}");
    }
}
