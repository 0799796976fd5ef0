//! kubelet's registration call as kubelet makes it (raw HTTP/2, the socket path as
//! `:authority`), against the registration server with and without the rewriter.

use std::time::Duration;

use fluke_hpack::{Decoder, Encoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::authority::{CLIENT_PREFACE as PREFACE, frame};
use super::proto::registration_server::RegistrationServer;
use super::*;

/// How the server answered.
#[derive(Debug, PartialEq)]
enum Answer {
    /// Every header it sent on the stream (response headers, then trailers).
    Headers(Vec<(String, String)>),
    /// RST_STREAM or GOAWAY with this error code.
    Refused(u32),
}

/// GetInfo on `sock` as kubelet v1.34 sends it.
async fn call_like_kubelet(sock: &Path) -> Answer {
    let mut s = UnixStream::connect(sock).await.unwrap();
    let block = Encoder::new().encode([
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", b"/pluginregistration.Registration/GetInfo"),
        (b":authority", sock.as_os_str().as_encoded_bytes()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]);
    let request = [
        PREFACE,
        &frame(0x4, 0, 0, &[]),
        &frame(0x1, 0x4, 1, &block),
        &frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0]),
    ]
    .concat();
    s.write_all(&request).await.unwrap();
    let mut decoder = Decoder::new();
    let mut headers = Vec::new();
    let answer = async {
        loop {
            let mut h = [0u8; 9];
            s.read_exact(&mut h).await.unwrap();
            let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            let mut payload = vec![0; len];
            s.read_exact(&mut payload).await.unwrap();
            match (h[3], h[4]) {
                (0x4, flags) if flags & 1 == 0 => {
                    s.write_all(&frame(0x4, 1, 0, &[])).await.unwrap()
                }
                (0x1, flags) => {
                    for (n, v) in decoder.decode(&payload).unwrap() {
                        headers.push((
                            String::from_utf8_lossy(&n).into_owned(),
                            String::from_utf8_lossy(&v).into_owned(),
                        ));
                    }
                    if flags & 0x1 != 0 {
                        return Answer::Headers(headers);
                    }
                }
                (0x3, _) => {
                    return Answer::Refused(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                }
                (0x7, _) => {
                    return Answer::Refused(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("the server answers within 10 s")
}

fn router() -> Router {
    let (tx, _rx) = mpsc::unbounded_channel();
    tonic::transport::Server::builder().add_service(RegistrationServer::new(
        RegistrationService::new(
            "/var/lib/kubelet/plugins/csi.spindle.dev/csi.sock".into(),
            tx,
        ),
    ))
}

#[tokio::test]
async fn kubelets_call_reaches_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let sock = socket_path(dir.path());
    let path = sock.clone();
    tokio::spawn(async move { serve(&path, router(), std::future::pending()).await });
    while !sock.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let Answer::Headers(h) = call_like_kubelet(&sock).await else {
        panic!("refused");
    };
    assert!(h.contains(&(":status".into(), "200".into())), "{h:?}");
    assert!(h.contains(&("grpc-status".into(), "0".into())), "{h:?}");
}

/// Why the rewriter exists: h2 refuses the call before the service sees it. When this starts
/// failing, h2 accepts such an authority and the rewriter can go.
#[tokio::test]
async fn without_the_rewriter_h2_refuses_kubelets_call() {
    let dir = tempfile::tempdir().unwrap();
    let sock = socket_path(dir.path());
    let listener = crate::endpoint::bind_unix(&sock).unwrap();
    tokio::spawn(router().serve_with_incoming(UnixListenerStream::new(listener)));
    const PROTOCOL_ERROR: u32 = 1;
    assert_eq!(
        call_like_kubelet(&sock).await,
        Answer::Refused(PROTOCOL_ERROR)
    );
}
