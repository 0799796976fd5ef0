//! CHAP Secrets as the operator reads them.

use super::super::*;

#[test]
fn chap_secret_lengths() {
    let data = |pw: &str| -> BTreeMap<String, ByteString> {
        [
            ("username".to_owned(), ByteString(b"u".to_vec())),
            ("password".to_owned(), ByteString(pw.as_bytes().to_vec())),
        ]
        .into()
    };
    for (len, ok) in [(11, false), (12, true), (255, true), (256, false)] {
        let r = chap_credentials("s", &data(&"x".repeat(len)), false);
        assert_eq!(r.is_ok(), ok, "{len} bytes");
        if let Err(p) = r {
            assert!(
                p.message.contains(&format!("is {len} bytes")),
                "{}",
                p.message
            );
        }
    }
    let mut same: BTreeMap<String, ByteString> = data("0123456789ab");
    same.insert("mutualUsername".into(), ByteString(b"t".to_vec()));
    same.insert(
        "mutualPassword".into(),
        ByteString(b"0123456789ab".to_vec()),
    );
    let e = chap_credentials("s", &same, true).expect_err("same secret both ways");
    assert!(e.message.contains("must differ"), "{}", e.message);
    let mut bad = data("0123456789ab");
    bad.insert("password".into(), ByteString(vec![0xff; 12]));
    assert!(chap_credentials("s", &bad, false).is_err());
}
