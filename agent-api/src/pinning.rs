//! Which process the operator (or a test client) calls for a node, and how it knows that process
//! is the node's agent. Each agent makes its own serving key at start and publishes its fingerprint in the
//! Lease named after its node (a Lease only that node's agent may write: the chart's admission
//! policy). The operator dials the endpoint of that Lease with a TLS client that accepts the
//! server's certificate only if its public key has the published fingerprint (the handshake
//! signature is still checked, so the server holds the private key), then asks the agent which
//! node it is (`GetStatus.node_name`) before sending it anything. A node whose Lease publishes
//! no key (an agent older than this operator), a malformed one, a key another node publishes, a
//! server with another key, or an agent that names another node gets no orders: the objects on
//! that node show reason `AgentUnverified` and their deletes wait, as for an unreachable agent.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::identity;
use crate::lease::API_KEY_ANNOTATION;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tonic::codegen::Service;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

/// Where to call a node's agent, and the key the process answering there must hold (both from
/// the node's Lease).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dial<'a> {
    /// The node whose orders are sent.
    pub node: &'a str,
    /// `host:port` of the agent API.
    pub endpoint: &'a str,
    /// The fingerprint the Lease publishes (empty: none).
    pub key: &'a str,
}

/// Why what answers at a node's endpoint is not trusted as that node's agent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The Lease carries no fingerprint.
    #[error(
        "the Lease of node {node:?} publishes no key (annotation {API_KEY_ANNOTATION}): an agent \
         older than this operator, or a Lease the agent did not write; nothing is sent to it until \
         the node's agent is upgraded (delete its pod)"
    )]
    NoKey {
        /// The node.
        node: String,
    },
    /// The fingerprint is not 64 lowercase hex digits.
    #[error("the Lease of node {node:?} publishes a malformed key {key:?} ({API_KEY_ANNOTATION})")]
    BadKey {
        /// The node.
        node: String,
        /// What it publishes.
        key: String,
    },
    /// Two nodes publish one key: only one process holds it, so at most one is right.
    #[error(
        "the Lease of node {node:?} publishes the key the agent of node {other:?} holds: each \
         agent needs a key of its own (the default; do not give agents one --tls-cert)"
    )]
    SharedKey {
        /// The node refused.
        node: String,
        /// The node already verified with that key.
        other: String,
    },
    /// The server's certificate has another key than the Lease publishes.
    #[error(
        "the server at {endpoint} is not the agent of node {node:?}: its key is {presented}, the \
         node's Lease publishes {published}"
    )]
    WrongKey {
        /// The node.
        node: String,
        /// Where it was dialled.
        endpoint: String,
        /// Fingerprint of the key presented.
        presented: String,
        /// Fingerprint of the Lease.
        published: String,
    },
    /// The agent says it is another node.
    #[error("the agent at {endpoint} is the agent of node {answered:?}, not of node {node:?}")]
    WrongNode {
        /// The node meant.
        node: String,
        /// Where it was dialled.
        endpoint: String,
        /// `GetStatus.node_name`.
        answered: String,
    },
}

/// The operator's client certificate and key (PEM files read once).
#[derive(Debug)]
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// The client certificate could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {path}: {message}")]
pub struct ReadError {
    path: String,
    message: String,
}

impl ClientIdentity {
    /// Reads the certificate chain and key (PEM).
    pub fn read(cert: &Path, key: &Path) -> Result<Self, ReadError> {
        let err = |p: &Path| {
            let path = p.display().to_string();
            move |e: rustls::pki_types::pem::Error| ReadError {
                path,
                message: e.to_string(),
            }
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(err(cert))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err(cert))?;
        if chain.is_empty() {
            return Err(ReadError {
                path: cert.display().to_string(),
                message: "no certificate in the file".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(err(key))?;
        Ok(Self { chain, key })
    }

    /// An identity from DER values (a certificate chain and its key).
    pub fn from_der(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        Self { chain, key }
    }

    fn clone_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

/// Checks what the Lease publishes, before any connection.
pub fn check_published(dial: Dial<'_>) -> Result<(), IdentityError> {
    if dial.key.is_empty() {
        Err(IdentityError::NoKey {
            node: dial.node.to_owned(),
        })
    } else if !identity::is_fingerprint(dial.key) {
        Err(IdentityError::BadKey {
            node: dial.node.to_owned(),
            key: dial.key.to_owned(),
        })
    } else {
        Ok(())
    }
}

/// Why a pinned connection did not open.
#[derive(Debug)]
pub enum ConnectFailure {
    /// The server presented another key.
    Identity(IdentityError),
    /// Anything else (refused, timed out, TLS failed otherwise).
    Unreachable(String),
}

/// A channel to `dial.endpoint` that accepts only a server holding `dial.key`; connected now,
/// so that a wrong key is reported as such. Reconnects of the channel check the same key.
pub async fn connect(
    client: &ClientIdentity,
    dial: Dial<'_>,
    connect_timeout: Duration,
) -> Result<Channel, ConnectFailure> {
    check_published(dial).map_err(ConnectFailure::Identity)?;
    let presented = Arc::new(Mutex::new(None));
    let verifier = Arc::new(PinnedKey {
        want: dial.key.to_owned(),
        presented: presented.clone(),
        algorithms: provider().signature_verification_algorithms,
    });
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectFailure::Unreachable(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(client.chain.clone(), client.clone_key())
        .map_err(|e| ConnectFailure::Unreachable(format!("the operator's certificate: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = PinnedConnector {
        tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
    };
    // The connector speaks TLS itself: tonic sees a plain stream.
    let endpoint = Endpoint::from_shared(format!("http://{}", dial.endpoint))
        .map_err(|e| ConnectFailure::Unreachable(format!("endpoint {:?}: {e}", dial.endpoint)))?
        .connect_timeout(connect_timeout)
        .keep_alive_while_idle(true)
        .http2_keep_alive_interval(Duration::from_secs(10));
    match endpoint.connect_with_connector(connector).await {
        Ok(channel) => Ok(channel),
        Err(e) => {
            let seen = presented.lock().unwrap_or_else(|e| e.into_inner()).take();
            Err(match seen {
                Some(presented) => ConnectFailure::Identity(IdentityError::WrongKey {
                    node: dial.node.to_owned(),
                    endpoint: dial.endpoint.to_owned(),
                    presented,
                    published: dial.key.to_owned(),
                }),
                None => ConnectFailure::Unreachable(error_chain(&e)),
            })
        }
    }
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// `e` and its sources, joined.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Accepts exactly one public key, whatever the certificate around it says (the agent's
/// certificate is self-signed; its names and dates mean nothing): the key the node's Lease
/// publishes. The handshake signature is verified with that key as usual.
#[derive(Debug)]
struct PinnedKey {
    want: String,
    /// The fingerprint of a refused key, for the error message.
    presented: Arc<Mutex<Option<String>>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let got = identity::fingerprint(cert.subject_public_key_info().as_ref());
        if got == self.want {
            Ok(ServerCertVerified::assertion())
        } else {
            *self.presented.lock().unwrap_or_else(|e| e.into_inner()) = Some(got);
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// TCP to the URI's authority, then TLS with the pinned configuration.
#[derive(Clone)]
struct PinnedConnector {
    tls: tokio_rustls::TlsConnector,
}

type Stream = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl Service<Uri> for PinnedConnector {
    type Response = Stream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let authority = uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "no host:port")
                })?;
            let tcp = tokio::net::TcpStream::connect(authority.as_str()).await?;
            tcp.set_nodelay(true)?;
            // The name is only sent (SNI); the verifier checks the key, not names.
            let name = ServerName::try_from(identity::AGENT_SERVER_NAME)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let stream = tls.connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_without_a_well_formed_key_is_refused_before_dialling() {
        let dial = |key| Dial {
            node: "node-b",
            endpoint: "127.0.0.3:9443",
            key,
        };
        let e = check_published(dial("")).expect_err("no key");
        assert!(matches!(e, IdentityError::NoKey { .. }), "{e}");
        assert!(e.to_string().contains(API_KEY_ANNOTATION), "{e}");
        let e = check_published(dial("ABCD")).expect_err("bad key");
        assert!(matches!(e, IdentityError::BadKey { .. }), "{e}");
        check_published(dial(&"0a".repeat(32))).expect("well formed");
    }

    fn self_signed() -> (CertificateDer<'static>, String) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["spindle-agent".into()])
            .expect("params")
            .self_signed(&pair)
            .expect("cert");
        let spki = rcgen::PublicKeyData::subject_public_key_info(&pair);
        (cert.der().clone(), identity::fingerprint(&spki))
    }

    #[test]
    fn only_the_published_key_is_accepted_whatever_the_certificate_says() {
        let (cert, key) = self_signed();
        let (_, other) = self_signed();
        let verify = |want: &str| {
            let v = PinnedKey {
                want: want.to_owned(),
                presented: Arc::default(),
                algorithms: provider().signature_verification_algorithms,
            };
            let name = ServerName::try_from("anything.example").expect("name");
            let r = v.verify_server_cert(&cert, &[], &name, &[], UnixTime::now());
            let seen = v.presented.lock().expect("lock").clone();
            (r.is_ok(), seen)
        };
        assert_eq!(verify(&key), (true, None));
        assert_eq!(verify(&other), (false, Some(key.clone())));
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        let v = PinnedKey {
            want: key,
            presented: Arc::default(),
            algorithms: provider().signature_verification_algorithms,
        };
        let name = ServerName::try_from("x").expect("name");
        assert!(
            v.verify_server_cert(&garbage, &[], &name, &[], UnixTime::now())
                .is_err()
        );
    }
}
