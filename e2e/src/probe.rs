//! An iSCSI session held open across a change on the target, driven command by command: the
//! repository's libiscsi probe (`e2e/standalone/tools/probe.c`) as a child process, one line
//! per command and per answer.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::initiator::libiscsi_tool;

/// How long one command may take.
const ANSWER: Duration = Duration::from_secs(10);

/// Compiles the probe into `dir` (once) and returns its path.
pub fn probe_tool(dir: &Path) -> Result<PathBuf> {
    libiscsi_tool(dir, "probe")
}

/// One command's answer, as the probe prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// GOOD; for READ CAPACITY, (last LBA, block length).
    Good(Option<(u64, u32)>),
    /// CHECK CONDITION: (sense key, ASC, ASCQ).
    Check(u8, u8, u8),
    /// The target closed the connection.
    Closed,
    /// Anything else, as printed.
    Other(String),
}

impl Answer {
    /// Parses one line of the probe.
    pub fn parse(line: &str) -> Answer {
        let w: Vec<&str> = line.split_whitespace().collect();
        let hex = |s: &str| u8::from_str_radix(s, 16).ok();
        match w.as_slice() {
            ["GOOD"] => Answer::Good(None),
            ["GOOD", lba, bl] => match (lba.parse(), bl.parse()) {
                (Ok(l), Ok(b)) => Answer::Good(Some((l, b))),
                _ => Answer::Other(line.to_owned()),
            },
            ["CHECK", k, a, q] => match (hex(k), hex(a), hex(q)) {
                (Some(k), Some(a), Some(q)) => Answer::Check(k, a, q),
                _ => Answer::Other(line.to_owned()),
            },
            ["CLOSED"] => Answer::Closed,
            _ => Answer::Other(line.to_owned()),
        }
    }
}

/// A logged-in session.
pub struct Probe {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// Who logged in.
    pub initiator: String,
}

impl Probe {
    /// Logs `initiator` in to the LUN `url` names; fails with the probe's reason when the login
    /// is refused.
    pub fn login(tool: &Path, url: &str, initiator: &str) -> Result<Probe> {
        let mut child = Command::new(tool)
            .args([url, initiator])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the probe")?;
        let stdin = child.stdin.take().context("probe stdin")?;
        let stdout = child.stdout.take().context("probe stdout")?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Probe {
            child,
            stdin,
            lines,
            initiator: initiator.to_owned(),
        };
        match p.next_line(ANSWER)? {
            Some(l) if l == "READY" => Ok(p),
            Some(l) => bail!("{initiator} could not log in to {url}: {l}"),
            None => bail!("{initiator}: the probe ended before logging in to {url}"),
        }
    }

    /// The next line, None once the probe has ended.
    fn next_line(&mut self, timeout: Duration) -> Result<Option<String>> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Ok(Some(l)),
            Err(RecvTimeoutError::Disconnected) => Ok(None),
            Err(RecvTimeoutError::Timeout) => {
                bail!("{}: no answer within {timeout:?}", self.initiator)
            }
        }
    }

    /// Sends `cmd` (`tur`, `rc16`, `rc10`) and returns its answer.
    pub fn send(&mut self, cmd: &str) -> Result<Answer> {
        if writeln!(self.stdin, "{cmd}").is_err() {
            return Ok(Answer::Closed);
        }
        let _ = self.stdin.flush();
        Ok(self
            .next_line(ANSWER)?
            .map_or(Answer::Closed, |l| Answer::parse(&l)))
    }

    /// TEST UNIT READY until GOOD (the unit attentions of a new nexus taken).
    pub fn settle(&mut self) -> Result<()> {
        for _ in 0..8 {
            match self.send("tur")? {
                Answer::Good(_) => return Ok(()),
                Answer::Check(6, _, _) => {}
                other => bail!("{}: TEST UNIT READY: {other:?}", self.initiator),
            }
        }
        bail!("{}: unit attentions never cleared", self.initiator)
    }

    /// Waits (without sending anything) until the target closes the connection; returns how
    /// long that took from `since`.
    pub fn wait_closed(&mut self, since: Instant, timeout: Duration) -> Result<Duration> {
        let deadline = since + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "{}: the session is still open after {timeout:?}",
                    self.initiator
                );
            }
            match self.lines.recv_timeout(left) {
                Ok(l) if l == "CLOSED" => return Ok(since.elapsed()),
                Ok(l) => bail!("{}: unexpected {l:?}", self.initiator),
                Err(RecvTimeoutError::Disconnected) => return Ok(since.elapsed()),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_lines_parse() {
        assert_eq!(Answer::parse("GOOD"), Answer::Good(None));
        assert_eq!(
            Answer::parse("GOOD 32767 512"),
            Answer::Good(Some((32767, 512)))
        );
        assert_eq!(Answer::parse("CHECK 06 2a 09"), Answer::Check(6, 0x2a, 9));
        assert_eq!(Answer::parse("CLOSED"), Answer::Closed);
        assert!(matches!(Answer::parse("STATUS 8"), Answer::Other(_)));
    }
}
