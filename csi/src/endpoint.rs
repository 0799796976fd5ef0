//! Where a mode serves CSI: `unix:///path/csi.sock` (what kubelet and the sidecars use) or
//! `tcp://host:port` (tests, csi-sanity across the guest boundary).

use std::path::PathBuf;

use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::server::Router;

use crate::Error;

/// A parsed `--endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl std::str::FromStr for Endpoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::Endpoint {
            endpoint: s.to_string(),
            why: why.to_string(),
        };
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad(
                    "a unix endpoint needs an absolute path (unix:///csi/csi.sock)",
                ));
            }
            Ok(Endpoint::Unix(PathBuf::from(path)))
        } else if let Some(addr) = s.strip_prefix("tcp://") {
            if addr.is_empty() {
                return Err(bad("a tcp endpoint needs host:port"));
            }
            Ok(Endpoint::Tcp(addr.to_string()))
        } else {
            Err(bad("must start with unix:// or tcp://"))
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

impl Endpoint {
    /// Serves `router` here until `shutdown` resolves (a unix socket bound by [`bind_unix`]).
    pub async fn serve(
        &self,
        router: Router,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let io = |source| Error::Serve {
            endpoint: self.to_string(),
            source,
        };
        match self {
            Endpoint::Unix(path) => {
                let incoming = UnixListenerStream::new(bind_unix(path).map_err(io)?);
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await?;
            }
            Endpoint::Tcp(addr) => {
                let listener = TcpListener::bind(addr).await.map_err(io)?;
                let incoming = TcpListenerStream::new(listener);
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await?;
            }
        }
        Ok(())
    }
}

/// A listener on the unix socket `path`, its folder made and a stale socket from an earlier run
/// removed first (kubelet and the sidecars reconnect to the new one).
pub fn bind_unix(path: &std::path::Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    UnixListener::bind(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unix_and_tcp_and_refuses_the_rest() {
        assert_eq!(
            "unix:///csi/csi.sock".parse::<Endpoint>().unwrap(),
            Endpoint::Unix("/csi/csi.sock".into())
        );
        assert_eq!(
            "tcp://127.0.0.1:10000".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp("127.0.0.1:10000".into())
        );
        for bad in [
            "/csi/csi.sock",
            "unix://relative.sock",
            "tcp://",
            "http://x:1",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }
}
