//! Real initiators driven from tests: libiscsi's `iscsi-ls`, qemu's `qemu-io`, and the
//! repository's libiscsi writer (`e2e/standalone/tools/writer.c`), whose output says which
//! writes got GOOD and which were fenced.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::{Context, Result, bail};

use crate::cluster::workspace_dir;

/// Output of a command that must succeed.
pub fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `iscsi-ls -s` against a portal: the discovery listing (targets, portals, LUNs).
pub fn iscsi_ls(portal: SocketAddr, initiator: &str) -> Result<String> {
    run_ok(
        Command::new("iscsi-ls")
            .args(["-s", "-i", initiator])
            .arg(format!("iscsi://{portal}")),
    )
}

/// The URL of a LUN.
pub fn lun_url(portal: SocketAddr, iqn: &str, lun: u64) -> String {
    format!("iscsi://{portal}/{iqn}/{lun}")
}

/// Runs `qemu-io -c CMD...` on a LUN; fails on any error qemu-io reports.
pub fn qemu_io(url: &str, commands: &[&str]) -> Result<String> {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw"]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    cmd.arg(url);
    let out = run_ok(&mut cmd)?;
    if out.contains("failed") || out.contains("Pattern verification failed") {
        bail!("qemu-io reported a failure: {out}");
    }
    Ok(out)
}

/// Compiles the libiscsi writer into `dir` (once) and returns its path.
pub fn writer_tool(dir: &Path) -> Result<PathBuf> {
    libiscsi_tool(dir, "writer")
}

/// Compiles the libiscsi tool `e2e/standalone/tools/NAME.c` into `dir` (once) and returns its
/// path.
pub fn libiscsi_tool(dir: &Path, name: &str) -> Result<PathBuf> {
    let out = dir.join(name);
    if !out.is_file() {
        std::fs::create_dir_all(dir)?;
        run_ok(
            Command::new("gcc")
                .args(["-O2", "-Wall", "-o"])
                .arg(&out)
                .arg(workspace_dir().join(format!("e2e/standalone/tools/{name}.c")))
                .arg("-liscsi"),
        )?;
    }
    Ok(out)
}

/// A writer running in the background: COUNT 4 KiB writes, QD in flight.
pub struct Writer {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Writer {
    /// Starts `writer URL COUNT QD [fua]`, its output in `out`.
    pub fn start(tool: &Path, url: &str, count: u64, qd: u32, out: &Path) -> Result<Self> {
        let err = out.with_extension("err");
        let child = Command::new(tool)
            .args([url, &count.to_string(), &qd.to_string()])
            .stdout(std::fs::File::create(out)?)
            .stderr(std::fs::File::create(&err)?)
            .spawn()
            .context("starting the writer")?;
        Ok(Writer {
            child,
            out: out.to_path_buf(),
            err,
        })
    }

    /// Answers so far.
    pub fn results(&self) -> Result<WriterResults> {
        WriterResults::parse(&std::fs::read_to_string(&self.out)?)
    }

    /// Waits for the writer; fails if it did not get an answer for every write it sent.
    pub fn finish(mut self) -> Result<WriterResults> {
        let status = self.child.wait()?;
        let r = self.results()?;
        if !status.success() {
            bail!("the writer failed ({status}): {}: {r:?}", self.stderr());
        }
        Ok(r)
    }

    /// Waits for a writer that must fail; returns what it printed on stderr.
    pub fn finish_failed(mut self) -> Result<String> {
        let status = self.child.wait()?;
        if status.success() {
            bail!("the writer succeeded: {:?}", self.results()?);
        }
        Ok(self.stderr())
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the writer saw: write index → answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WriterResults {
    pub good: Vec<u64>,
    /// CHECK CONDITION ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED (25h/00h): the fence.
    pub fenced: Vec<u64>,
    /// Any other answer, as printed.
    pub other: Vec<String>,
}

impl WriterResults {
    /// Parses the writer's lines (`GOOD i`, `CHECK i KEY ASC ASCQ`, `ERROR i`).
    pub fn parse(text: &str) -> Result<Self> {
        let mut r = WriterResults::default();
        for line in text.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["GOOD", i] => r.good.push(i.parse()?),
                ["CHECK", i, "05", "25", "00"] => r.fenced.push(i.parse()?),
                [] => {}
                _ => r.other.push(line.to_string()),
            }
        }
        Ok(r)
    }

    /// Checks the backing file: every GOOD write is there, no fenced write was executed.
    pub fn check_file(&self, path: &Path) -> Result<()> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let block = |i: u64| {
            let start = (i * 4096) as usize;
            data.get(start..start + 4096)
        };
        let expected = |i: u64| {
            let mut b = i.to_be_bytes().to_vec();
            b.resize(4096, (i & 0xFF) as u8);
            b
        };
        let lost: Vec<u64> = self
            .good
            .iter()
            .copied()
            .filter(|&i| block(i) != Some(expected(i).as_slice()))
            .collect();
        let executed: Vec<u64> = self
            .fenced
            .iter()
            .copied()
            .filter(|&i| block(i) == Some(expected(i).as_slice()))
            .collect();
        if !lost.is_empty() {
            bail!(
                "{} acknowledged writes are missing from {}: {:?}",
                lost.len(),
                path.display(),
                &lost[..lost.len().min(10)]
            );
        }
        if !executed.is_empty() {
            bail!(
                "writes refused by the fence were executed: {:?}",
                &executed[..executed.len().min(10)]
            );
        }
        Ok(())
    }
}

/// Parses `iscsi-ls -s` output into target name → portals listed for it.
/// The targets a portal lists in discovery, asked by `iscsi-ls` as initiator `initiator`
/// (SendTargets only: no login to each, so a CHAP target does not get in the way).
pub fn discover(portal: std::net::SocketAddr, initiator: &str) -> Result<Vec<String>> {
    let out = run_ok(
        Command::new("iscsi-ls")
            .args(["-i", initiator])
            .arg(format!("iscsi://{portal}")),
    )?;
    Ok(discovered(&out).into_keys().collect())
}

pub fn discovered(listing: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in listing.lines() {
        if let Some(rest) = line.trim().strip_prefix("Target:") {
            let mut words = rest.split_whitespace();
            if let Some(name) = words.next() {
                let portals = out.entry(name.to_string()).or_default();
                for w in words {
                    if let Some(p) = w.strip_prefix("Portal:") {
                        portals.push(p.to_string());
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_lines_parse_into_answers() {
        let r =
            WriterResults::parse("GOOD 0\nGOOD 1\nCHECK 2 05 25 00\nCHECK 3 06 29 00\nERROR 4\n")
                .unwrap();
        assert_eq!(r.good, vec![0, 1]);
        assert_eq!(r.fenced, vec![2]);
        assert_eq!(r.other.len(), 2);
        assert!(WriterResults::parse("GOOD x\n").is_err());
    }

    #[test]
    fn discovery_listing_parses_targets_and_portals() {
        let text = "Target:iqn.2026-11.dev.spindle:ns.t Portal:127.0.1.2:3260,1\n  Lun:0    Type:DIRECT_ACCESS (Size:1M)\n";
        let d = discovered(text);
        assert_eq!(d["iqn.2026-11.dev.spindle:ns.t"], vec!["127.0.1.2:3260,1"]);
    }
}
