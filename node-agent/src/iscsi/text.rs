//! The iSCSI text format (RFC 7143 §6): `key=value\0` pairs in Login and Text PDUs, value
//! encodings (numbers, booleans, lists, 0x/0b binary), continuation (C bit) assembly on receipt
//! and splitting on send.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Longest key name.
pub const MAX_KEY_LEN: usize = 63;
/// Longest ordinary value.
pub const MAX_VALUE_LEN: usize = 255;
/// Longest value in a binary encoding (0x... or 0b...), e.g. a CHAP challenge.
pub const MAX_BINARY_VALUE_LEN: usize = 8192;
/// Most text one request may assemble from continued PDUs before it is refused.
pub const MAX_ASSEMBLED_LEN: usize = 64 * 1024;

/// Answer to a key the responder does not know.
pub const NOT_UNDERSTOOD: &str = "NotUnderstood";
/// Answer to a key that has no meaning in this context (e.g. burst lengths in discovery).
pub const IRRELEVANT: &str = "Irrelevant";
/// Answer to an offer with no acceptable value.
pub const REJECT: &str = "Reject";

/// Why text data is malformed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TextError {
    #[error("text is not UTF-8")]
    NotUtf8,
    #[error("`{0}` has no `=`")]
    MissingEquals(String),
    #[error("key `{0}` is empty, too long or has characters outside the RFC set")]
    BadKey(String),
    #[error("value of `{0}` is too long")]
    ValueTooLong(String),
    #[error("continued text exceeds {MAX_ASSEMBLED_LEN} bytes")]
    TooLong,
}

/// Ordered `key=value` pairs as they appear in a PDU.
pub type Pairs = Vec<(String, String)>;

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'@' | b'_'))
}

fn is_binary_encoded(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() > 2 && b.first() == Some(&b'0') && matches!(b.get(1), Some(b'x' | b'X' | b'b' | b'B'))
}

/// Parses text data into pairs. Empty entries (extra NULs, e.g. padding) are skipped; the last
/// pair may lack its NUL.
pub fn parse(data: &[u8]) -> Result<Pairs, TextError> {
    let text = std::str::from_utf8(data).map_err(|_| TextError::NotUtf8)?;
    let mut pairs = Vec::new();
    for item in text.split('\0').filter(|s| !s.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            return Err(TextError::MissingEquals(truncate(item)));
        };
        if !valid_key(key) {
            return Err(TextError::BadKey(truncate(key)));
        }
        let max = if is_binary_encoded(value) {
            MAX_BINARY_VALUE_LEN
        } else {
            MAX_VALUE_LEN
        };
        if value.len() > max {
            return Err(TextError::ValueTooLong(key.to_owned()));
        }
        pairs.push((key.to_owned(), value.to_owned()));
    }
    Ok(pairs)
}

/// At most 64 characters of `s`, for error messages.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Encodes pairs as `key=value\0`...
pub fn encode<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Bytes {
    let mut out = BytesMut::new();
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref().as_bytes());
        out.put_u8(b'=');
        out.extend_from_slice(v.as_ref().as_bytes());
        out.put_u8(0);
    }
    out.freeze()
}

/// The value of `key` in `pairs`, if present (the first occurrence).
pub fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Parses `Yes` / `No`.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

/// `Yes` or `No`.
pub fn bool_value(v: bool) -> &'static str {
    if v { "Yes" } else { "No" }
}

/// Parses a numerical value: decimal, or hex with a `0x` prefix (RFC 7143 §6.1).
pub fn parse_number(value: &str) -> Option<u64> {
    if let Some(hex) = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        if hex.is_empty() || hex.len() > 16 {
            return None;
        }
        return u64::from_str_radix(hex, 16).ok();
    }
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Splits a list value (`CRC32C,None`).
pub fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',')
}

/// Decodes a binary value: `0x` hex (an odd digit count has an implied leading zero) or `0b`
/// base64. None if the encoding is missing or malformed.
pub fn decode_binary(value: &str) -> Option<Vec<u8>> {
    let (prefix, body) = value.split_at_checked(2)?;
    match prefix {
        "0x" | "0X" => decode_hex(body),
        "0b" | "0B" => decode_base64(body),
        _ => None,
    }
}

/// Encodes bytes as a `0x` hex value.
pub fn encode_hex(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}

fn decode_hex(body: &str) -> Option<Vec<u8>> {
    if body.is_empty() {
        return None;
    }
    if !body.len().is_multiple_of(2) {
        hex::decode(format!("0{body}")).ok()
    } else {
        hex::decode(body).ok()
    }
}

fn base64_digit(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    }))
}

fn decode_base64(body: &str) -> Option<Vec<u8>> {
    let bytes = body.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    let unpadded = body.trim_end_matches('=');
    if bytes.len() - unpadded.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in unpadded.as_bytes().chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | base64_digit(c)?;
        }
        acc <<= 6 * (4 - chunk.len() as u32);
        let [_, a, b, c] = acc.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&[a, b, c]),
            3 => out.extend_from_slice(&[a, b]),
            2 => out.push(a),
            _ => return None,
        }
    }
    Some(out)
}

/// Collects the text of one request that may span PDUs with the C bit set.
#[derive(Debug, Default)]
pub struct TextAssembler {
    buf: BytesMut,
}

impl TextAssembler {
    /// Adds one PDU's data. Returns the parsed pairs when `cont` is false (the text is
    /// complete), `None` while more is to come.
    pub fn push(&mut self, data: &[u8], cont: bool) -> Result<Option<Pairs>, TextError> {
        if self.buf.len() + data.len() > MAX_ASSEMBLED_LEN {
            self.buf.clear();
            return Err(TextError::TooLong);
        }
        self.buf.extend_from_slice(data);
        if cont {
            return Ok(None);
        }
        let text = self.buf.split();
        parse(&text).map(Some)
    }

    /// Whether a continued request is being collected.
    pub fn is_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// Outgoing text longer than the peer's MaxRecvDataSegmentLength, cut into segments: every
/// segment but the last goes out with the C bit set.
#[derive(Debug, Clone)]
pub struct TextReply {
    rest: Bytes,
    max_segment: usize,
}

impl TextReply {
    /// Text `data` to send in segments of at most `max_segment` bytes (at least 1).
    pub fn new(data: Bytes, max_segment: usize) -> Self {
        Self {
            rest: data,
            max_segment: max_segment.max(1),
        }
    }

    /// The next segment and whether more follow (the C bit). An empty reply yields one empty
    /// segment.
    pub fn next_segment(&mut self) -> (Bytes, bool) {
        let take = self.rest.len().min(self.max_segment);
        let segment = self.rest.split_to(take);
        (segment, !self.rest.is_empty())
    }

    /// Whether segments remain after the ones already taken.
    pub fn has_more(&self) -> bool {
        !self.rest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Pairs {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn round_trip() {
        let p = pairs(&[
            ("InitiatorName", "iqn.2005-03.org.open-iscsi:abc"),
            ("HeaderDigest", "CRC32C,None"),
            ("X-com.example.key", ""),
        ]);
        let wire = encode(&p);
        assert_eq!(wire.last(), Some(&0));
        assert_eq!(parse(&wire), Ok(p));
    }

    #[test]
    fn value_may_contain_equals_and_last_nul_is_optional() {
        assert_eq!(
            parse(b"TargetAddress=10.0.0.1:3260,1\0K=a=b"),
            Ok(pairs(&[("TargetAddress", "10.0.0.1:3260,1"), ("K", "a=b")]))
        );
        assert_eq!(parse(b"A=1\0\0\0"), Ok(pairs(&[("A", "1")])));
        assert_eq!(parse(b""), Ok(vec![]));
    }

    #[test]
    fn malformed_text_is_an_error() {
        assert!(matches!(
            parse(b"NoEquals\0"),
            Err(TextError::MissingEquals(_))
        ));
        assert!(matches!(parse(b"=value\0"), Err(TextError::BadKey(_))));
        assert!(matches!(parse(b"bad key=1\0"), Err(TextError::BadKey(_))));
        assert_eq!(parse(b"\xff\xfe=1\0"), Err(TextError::NotUtf8));
        let long_key = format!("{}=1", "K".repeat(64));
        assert!(matches!(
            parse(long_key.as_bytes()),
            Err(TextError::BadKey(_))
        ));
        let ok_key = format!("{}=1", "K".repeat(63));
        assert!(parse(ok_key.as_bytes()).is_ok());
        let long_value = format!("K={}", "v".repeat(256));
        assert!(matches!(
            parse(long_value.as_bytes()),
            Err(TextError::ValueTooLong(_))
        ));
        let binary = format!("CHAP_C=0x{}", "ab".repeat(1000));
        assert!(parse(binary.as_bytes()).is_ok());
        let too_binary = format!("CHAP_C=0x{}", "ab".repeat(4096));
        assert!(matches!(
            parse(too_binary.as_bytes()),
            Err(TextError::ValueTooLong(_))
        ));
    }

    #[test]
    fn numbers_booleans_lists() {
        assert_eq!(parse_number("262144"), Some(262_144));
        assert_eq!(parse_number("0x40000"), Some(262_144));
        assert_eq!(parse_number("-1"), None);
        assert_eq!(parse_number("12a"), None);
        assert_eq!(parse_number("0x"), None);
        assert_eq!(parse_number("99999999999999999999999"), None);
        assert_eq!(parse_bool("Yes"), Some(true));
        assert_eq!(parse_bool("yes"), None);
        assert_eq!(list("CRC32C,None").collect::<Vec<_>>(), ["CRC32C", "None"]);
    }

    #[test]
    fn binary_values() {
        assert_eq!(decode_binary("0x0aFF"), Some(vec![0x0a, 0xff]));
        assert_eq!(decode_binary("0xabc"), Some(vec![0x0a, 0xbc]));
        assert_eq!(decode_binary("0bAQID"), Some(vec![1, 2, 3]));
        assert_eq!(decode_binary("0bAQI="), Some(vec![1, 2]));
        assert_eq!(decode_binary("0bAQ=="), Some(vec![1]));
        assert_eq!(decode_binary("0bAQ="), None);
        assert_eq!(decode_binary("0b!!!!"), None);
        assert_eq!(decode_binary("0xzz"), None);
        assert_eq!(decode_binary("1234"), None);
        assert_eq!(decode_binary("0x"), None);
        assert_eq!(decode_binary("é"), None);
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_binary(&encode_hex(&bytes)), Some(bytes));
    }

    #[test]
    fn assembler_joins_continued_pdus() {
        let mut a = TextAssembler::default();
        assert_eq!(a.push(b"SendTar", true), Ok(None));
        assert!(a.is_partial());
        assert_eq!(a.push(b"gets=Al", true), Ok(None));
        assert_eq!(
            a.push(b"l\0", false),
            Ok(Some(pairs(&[("SendTargets", "All")])))
        );
        assert!(!a.is_partial());
        assert_eq!(a.push(b"A=1\0", false), Ok(Some(pairs(&[("A", "1")]))));
    }

    #[test]
    fn assembler_limits_size() {
        let mut a = TextAssembler::default();
        let chunk = vec![b'a'; 8192];
        for _ in 0..8 {
            assert_eq!(a.push(&chunk, true), Ok(None));
        }
        assert_eq!(a.push(b"x", true), Err(TextError::TooLong));
        assert!(!a.is_partial());
    }

    #[test]
    fn reply_splits_at_segment_size() {
        let data = Bytes::from(vec![1u8; 10]);
        let mut r = TextReply::new(data, 4);
        assert_eq!(r.next_segment(), (Bytes::from(vec![1u8; 4]), true));
        assert_eq!(r.next_segment(), (Bytes::from(vec![1u8; 4]), true));
        assert_eq!(r.next_segment(), (Bytes::from(vec![1u8; 2]), false));
        assert!(!r.has_more());
        let mut empty = TextReply::new(Bytes::new(), 4);
        assert_eq!(empty.next_segment(), (Bytes::new(), false));
    }
}
