use super::*;

const KUBELET_AUTHORITY: &[u8] = b"/var/lib/kubelet/plugins_registry/csi.spindle.dev-reg.sock";

/// The header list of kubelet's GetInfo call (its :authority is the socket path).
fn get_info_headers() -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", b"/pluginregistration.Registration/GetInfo"),
        (b":authority", KUBELET_AUTHORITY),
        (b"content-type", b"application/grpc"),
        (b"user-agent", b"grpc-go/1.72.0"),
        (b"te", b"trailers"),
    ]
    .iter()
    .map(|(n, v)| (n.to_vec(), v.to_vec()))
    .collect()
}

fn encode(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    Encoder::new().encode(headers.iter().map(|(n, v)| (&n[..], &v[..])))
}

/// The frames of `bytes` (after the preface): (type, flags, stream, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    assert_eq!(&bytes[..24], PREFACE);
    bytes = &bytes[24..];
    let mut v = Vec::new();
    while !bytes.is_empty() {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        v.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    v
}

fn kubelet_request() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let settings = frame(0x4, 0, 0, &[0, 4, 0, 0x40, 0, 0]);
    let headers = frame(HEADERS, END_HEADERS, 1, &encode(&get_info_headers()));
    let data = frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0]);
    (settings, headers, data)
}

fn rewrite(input: &[u8]) -> Result<Vec<u8>, AuthorityError> {
    let mut out = Vec::new();
    AuthorityFix::new().push(input, &mut out)?;
    Ok(out)
}

#[test]
fn kubelets_socket_path_becomes_localhost_and_nothing_else_changes() {
    let (settings, headers, data) = kubelet_request();
    let input = [&PREFACE[..], &settings, &headers, &data].concat();
    let out = rewrite(&input).unwrap();
    let f = frames(&out);
    assert_eq!(f.len(), 3);
    assert_eq!(frame(f[0].0, f[0].1, f[0].2, &f[0].3), settings);
    assert_eq!((f[1].0, f[1].1, f[1].2), (HEADERS, END_HEADERS, 1));
    let got = Decoder::new().decode(&f[1].3).unwrap();
    let mut want = get_info_headers();
    want[3].1 = b"localhost".to_vec();
    assert_eq!(got, want);
    assert_eq!(frame(f[2].0, f[2].1, f[2].2, &f[2].3), data);
}

#[test]
fn bytes_arriving_one_by_one_give_the_same_stream() {
    let (settings, headers, data) = kubelet_request();
    let input = [&PREFACE[..], &settings, &headers, &data].concat();
    let mut fix = AuthorityFix::new();
    let mut out = Vec::new();
    for b in &input {
        fix.push(std::slice::from_ref(b), &mut out).unwrap();
    }
    assert_eq!(out, rewrite(&input).unwrap());
}

#[test]
fn padding_priority_and_continuations_are_folded_into_one_block() {
    let block = encode(&get_info_headers());
    let (a, b) = block.split_at(10);
    // HEADERS: pad length 3, priority (5 bytes), the first fragment, 3 bytes of padding.
    let mut payload = vec![3];
    payload.extend_from_slice(&[0, 0, 0, 0, 15]);
    payload.extend_from_slice(a);
    payload.extend_from_slice(&[0, 0, 0]);
    let input = [
        &PREFACE[..],
        &frame(HEADERS, PADDED | PRIORITY | END_STREAM, 3, &payload),
        &frame(CONTINUATION, END_HEADERS, 3, b),
    ]
    .concat();
    let f = frames(&rewrite(&input).unwrap());
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].0, f[0].1, f[0].2),
        (HEADERS, END_STREAM | END_HEADERS, 3)
    );
    let got = Decoder::new().decode(&f[0].3).unwrap();
    assert_eq!(got[3], (b":authority".to_vec(), b"localhost".to_vec()));
    assert_eq!(got.len(), 7);
}

#[test]
fn a_block_larger_than_a_frame_is_cut_into_continuations() {
    let mut headers = get_info_headers();
    headers.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
    let input = [
        &PREFACE[..],
        &frame(HEADERS, END_HEADERS | END_STREAM, 5, &encode(&headers)),
    ]
    .concat();
    let f = frames(&rewrite(&input).unwrap());
    assert_eq!(f.len(), 3, "40 kB in frames of 16 kB");
    assert_eq!((f[0].0, f[0].1), (HEADERS, END_STREAM));
    assert_eq!((f[1].0, f[1].1), (CONTINUATION, 0));
    assert_eq!((f[2].0, f[2].1), (CONTINUATION, END_HEADERS));
    assert!(f.iter().all(|x| x.2 == 5 && x.3.len() <= MAX_FRAME));
    let block: Vec<u8> = f.iter().flat_map(|x| x.3.clone()).collect();
    assert_eq!(Decoder::new().decode(&block).unwrap()[7].1.len(), 40_000);
}

#[test]
fn hpack_state_carries_from_one_request_to_the_next() {
    // The client's encoder indexes headers in its dynamic table; the second request refers to
    // them. The rewriter must decode it with the same table, and the server's decoder must
    // follow the rewriter's encoder.
    let mut client = Encoder::new();
    let h = get_info_headers();
    let mut input = PREFACE.to_vec();
    for stream in [1, 3] {
        let block = client.encode(h.iter().map(|(n, v)| (&n[..], &v[..])));
        input.extend(frame(HEADERS, END_HEADERS, stream, &block));
    }
    let f = frames(&rewrite(&input).unwrap());
    let mut server = Decoder::new();
    for x in &f {
        let got = server.decode(&x.3).unwrap();
        assert_eq!(got[3].1, b"localhost");
        assert_eq!(got[2].1, b"/pluginregistration.Registration/GetInfo");
    }
}

#[test]
fn what_is_not_a_clients_http2_ends_the_connection() {
    let headers = frame(HEADERS, END_HEADERS, 1, &encode(&get_info_headers()));
    assert_eq!(rewrite(b"GET / HTTP/1.1\r\n"), Err(AuthorityError::Preface));
    // Padding longer than the frame.
    assert_eq!(
        rewrite(
            &[
                &PREFACE[..],
                &frame(HEADERS, PADDED | END_HEADERS, 1, &[9, 1])
            ]
            .concat()
        ),
        Err(AuthorityError::Malformed(1))
    );
    // Priority fields cut short.
    assert_eq!(
        rewrite(
            &[
                &PREFACE[..],
                &frame(HEADERS, PRIORITY | END_HEADERS, 1, &[0, 0])
            ]
            .concat()
        ),
        Err(AuthorityError::Malformed(1))
    );
    // A DATA frame inside a header block.
    let open = frame(HEADERS, 0, 1, &encode(&get_info_headers()));
    assert_eq!(
        rewrite(&[&PREFACE[..], &open, &frame(0x0, 0, 1, b"x")].concat()),
        Err(AuthorityError::Continuation {
            expected: 1,
            got: 0,
            stream: 1
        })
    );
    // A CONTINUATION of another stream.
    assert!(matches!(
        rewrite(
            &[
                &PREFACE[..],
                &open,
                &frame(CONTINUATION, END_HEADERS, 3, b"")
            ]
            .concat()
        ),
        Err(AuthorityError::Continuation { stream: 3, .. })
    ));
    // Bytes that are not HPACK (index 0 is invalid).
    assert_eq!(
        rewrite(&[&PREFACE[..], &frame(HEADERS, END_HEADERS, 1, &[0x80])].concat()),
        Err(AuthorityError::Hpack(1))
    );
    // A frame header announcing 16 MiB.
    let mut huge = PREFACE.to_vec();
    huge.extend_from_slice(&[0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1]);
    assert!(matches!(
        rewrite(&huge),
        Err(AuthorityError::FrameTooLarge { .. })
    ));
    // A header block growing past its bound through CONTINUATIONs.
    let mut endless = [&PREFACE[..], &frame(HEADERS, 0, 1, b"")].concat();
    for _ in 0..5 {
        endless.extend(frame(CONTINUATION, 0, 1, &[0; 16_000]));
    }
    assert_eq!(
        rewrite(&endless),
        Err(AuthorityError::HeaderBlockTooLarge(1))
    );
    // And the well-formed request still passes.
    assert!(rewrite(&[&PREFACE[..], &headers].concat()).is_ok());
}

/// Whoever can reach the socket may send anything: random frames (valid framing, random types,
/// flags and payloads, header blocks of random bytes), in random pieces, never panic; each
/// stream either passes or ends with an error.
#[test]
fn random_input_never_panics() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    for _ in 0..3_000 {
        let mut input = PREFACE.to_vec();
        for _ in 0..rng.random_range(1..6) {
            let kind = *[HEADERS, CONTINUATION, 0x0, 0x4, rng.random()]
                .get(rng.random_range(0..5))
                .unwrap();
            let len = rng.random_range(0..64);
            let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            input.extend(frame(kind, rng.random(), rng.random_range(0..4), &payload));
        }
        if rng.random_bool(0.1) {
            let at = rng.random_range(0..input.len());
            input[at] = rng.random();
        }
        let mut fix = AuthorityFix::new();
        let mut out = Vec::new();
        let mut rest = &input[..];
        while !rest.is_empty() {
            let n = rng.random_range(1..=rest.len());
            if fix.push(&rest[..n], &mut out).is_err() {
                break;
            }
            rest = &rest[n..];
        }
    }
}
