//! An agent's Prometheus endpoint (its `--metrics` address): the live iSCSI sessions per Target
//! and SCSI commands in flight per LUN, which the Kubernetes API does not hold. A plain
//! `GET /metrics` over HTTP/1.0, like a scrape; the text format is parsed here.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Gauge: logged-in sessions, label `target` (namespace/name).
pub const SESSIONS: &str = "spindle_iscsi_sessions";
/// Gauge: SCSI commands in flight, labels `target` (namespace/name) and `lun`.
pub const IN_FLIGHT: &str = "spindle_scsi_inflight";

/// How long connecting and each read may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// A scrape larger than this is not an agent's.
const MAX_BYTES: u64 = 32 << 20;

/// Why an agent's metrics could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Not `HOST:PORT`, or the name does not resolve.
    #[error("--agent-metrics {addr:?}: not a HOST:PORT that resolves: {source}")]
    Address {
        /// As given.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Connecting, sending or reading failed.
    #[error("reading http://{addr}/metrics: {source}")]
    Io {
        /// As given.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The answer is not `200` with a body.
    #[error("http://{addr}/metrics answered {status:?}, not 200 with metrics")]
    Status {
        /// As given.
        addr: String,
        /// The status line (or what came instead).
        status: String,
    },
}

/// One sample: metric name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Label pairs.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// `GET http://addr/metrics`: the body.
pub fn get(addr: &str) -> Result<String, ScrapeError> {
    let io = |source| ScrapeError::Io {
        addr: addr.to_owned(),
        source,
    };
    let target = addr
        .to_socket_addrs()
        .and_then(|mut a| {
            a.next()
                .ok_or_else(|| std::io::Error::other("no address for it"))
        })
        .map_err(|source| ScrapeError::Address {
            addr: addr.to_owned(),
            source,
        })?;
    let mut stream = TcpStream::connect_timeout(&target, TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(io)?;
    let mut raw = Vec::new();
    stream.take(MAX_BYTES).read_to_end(&mut raw).map_err(io)?;
    let text = String::from_utf8_lossy(&raw);
    body(&text)
        .map(str::to_owned)
        .ok_or_else(|| ScrapeError::Status {
            addr: addr.to_owned(),
            status: text
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(80)
                .collect(),
        })
}

/// The body of an HTTP answer whose status is 200.
fn body(answer: &str) -> Option<&str> {
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.lines().next()?;
    (status.split_whitespace().nth(1) == Some("200")).then_some(body)
}

/// The samples of a scrape in the Prometheus text format; comments and lines that do not
/// parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(sample)
        .collect()
}

fn sample(line: &str) -> Option<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = label_set(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    (!name.is_empty()).then(|| Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `k="v",...}` (after the `{`): the labels and what follows the `}`.
fn label_set(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = s.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        s = &after[1 + end + 1..];
    }
}

/// The value of `name` whose labels include all of `want`, if the scrape has one.
pub fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "\
# HELP spindle_iscsi_sessions Logged-in sessions
# TYPE spindle_iscsi_sessions gauge
spindle_iscsi_sessions{target=\"ns/t0\"} 2
spindle_scsi_inflight{lun=\"0\",target=\"ns/t0\"} 7
spindle_scsi_inflight{lun=\"1\",target=\"ns/t0\"} 0
odd{target=\"a \\\"quoted\\\" \\\\ name\",x=\"1\"} 3 1700000000
spindle_up 1
";

    #[test]
    fn samples_with_labels_escapes_and_timestamps() {
        let s = parse(SCRAPE);
        assert_eq!(s.len(), 5);
        assert_eq!(value(&s, SESSIONS, &[("target", "ns/t0")]), Some(2.0));
        assert_eq!(
            value(&s, IN_FLIGHT, &[("target", "ns/t0"), ("lun", "0")]),
            Some(7.0)
        );
        assert_eq!(
            value(&s, IN_FLIGHT, &[("target", "ns/t0"), ("lun", "1")]),
            Some(0.0)
        );
        assert_eq!(value(&s, IN_FLIGHT, &[("target", "ns/t9")]), None);
        assert_eq!(
            value(&s, "odd", &[("target", "a \"quoted\" \\ name")]),
            Some(3.0)
        );
        assert_eq!(value(&s, "spindle_up", &[]), Some(1.0));
    }

    #[test]
    fn malformed_lines_are_skipped_not_fatal() {
        for bad in [
            "x{target=\"unterminated} 1",
            "x{target=1} 1",
            "x{target=\"a\"",
            "x{} notanumber",
            "{a=\"b\"} 1",
            "x",
            "x{\u{e9}=\"\u{e9}\\",
        ] {
            assert_eq!(parse(bad), Vec::new(), "{bad:?}");
        }
        assert_eq!(parse("x{} 1").len(), 1);
    }

    #[test]
    fn only_a_200_answer_has_a_body() {
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nx 1"),
            Some("x 1")
        );
        assert_eq!(body("HTTP/1.1 404 Not Found\r\n\r\ntry /metrics\n"), None);
        assert_eq!(body("garbage"), None);
    }

    #[test]
    fn a_closed_port_is_an_io_error_naming_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let e = get(&addr).expect_err("nothing listens");
        assert!(e.to_string().contains(&addr), "{e}");
        let e = get("no-port-here").expect_err("not HOST:PORT");
        assert!(matches!(e, ScrapeError::Address { .. }), "{e}");
    }
}
