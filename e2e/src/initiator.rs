//! Real iSCSI initiators driven by the tests: libiscsi's `iscsi-ls`, QEMU's `qemu-io` (both over
//! `iscsi://` URLs) and the continuous writer of the standalone tests (`e2e/standalone/tools/
//! writer.c`, libiscsi's async API), compiled once per test binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail, ensure};

use crate::cluster::workspace_dir;

/// CHAP credentials for an `iscsi://` URL.
pub struct Chap<'a> {
    /// CHAP_N.
    pub user: &'a str,
    /// The secret.
    pub secret: &'a str,
}

/// `iscsi://[user%secret@]portal/iqn/lun`.
pub fn url(portal: &str, iqn: &str, lun: u64, chap: Option<&Chap<'_>>) -> String {
    let creds = chap
        .map(|c| format!("{}%{}@", c.user, c.secret))
        .unwrap_or_default();
    format!("iscsi://{creds}{portal}/{iqn}/{lun}")
}

/// `iscsi-ls -s` of a portal (discovery, then a login to each target to list its LUNs);
/// stdout, or the error with stderr.
pub fn iscsi_ls(portal: &str, chap: Option<&Chap<'_>>) -> Result<String> {
    let creds = chap
        .map(|c| format!("{}%{}@", c.user, c.secret))
        .unwrap_or_default();
    let out = Command::new("iscsi-ls")
        .args(["-s", &format!("iscsi://{creds}{portal}")])
        .output()
        .context("running iscsi-ls (Debian libiscsi-bin)")?;
    ensure!(
        out.status.success(),
        "iscsi-ls failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `qemu-io -f raw -c CMD... URL`; stdout (qemu-io reports failed commands there and exits 0,
/// so a line with "failed" or "error" is an error here).
pub fn qemu_io(url: &str, cmds: &[&str]) -> Result<String> {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c
        .arg(url)
        .output()
        .context("running qemu-io (Debian qemu-utils, qemu-block-extra)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lower = text.to_lowercase();
    ensure!(
        out.status.success() && !lower.contains("failed") && !lower.contains("error"),
        "qemu-io {cmds:?}: {text}"
    );
    Ok(text)
}

fn writer_binary() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("spindle-e2e-tools-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let bin = dir.join("writer");
        let out = Command::new("gcc")
            .args(["-O2", "-Wall", "-o"])
            .arg(&bin)
            .arg(workspace_dir().join("e2e/standalone/tools/writer.c"))
            .arg("-liscsi")
            .output()
            .map_err(|e| format!("gcc: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "compiling writer.c: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(bin)
    })
    .clone()
    .map_err(|e| anyhow::anyhow!(e))
}

/// A continuous writer: block `i` (4 KiB) gets its sequence number and `i & 0xff`, QD 16; one
/// line per answer (`GOOD i`, `CHECK i KEY ASC ASCQ`, `ERROR i`) in `out`.
pub struct Writer {
    child: Child,
    out: PathBuf,
}

/// What a writer's answers were.
#[derive(Debug, Default)]
pub struct Answers {
    /// Blocks answered GOOD.
    pub good: Vec<u64>,
    /// Blocks answered CHECK CONDITION ILLEGAL REQUEST, 25h/00h (the fence).
    pub fenced: Vec<u64>,
    /// Other answers, as printed.
    pub other: Vec<String>,
}

impl Writer {
    /// Starts writing `count` blocks to `url`, answers into `out`.
    pub fn start(url: &str, count: u64, out: &Path) -> Result<Self> {
        let file = std::fs::File::create(out)?;
        let child = Command::new(writer_binary()?)
            .args([url, &count.to_string(), "16"])
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .context("starting the writer")?;
        Ok(Self {
            child,
            out: out.to_owned(),
        })
    }

    /// The answers so far.
    pub fn answers(&self) -> Result<Answers> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let mut a = Answers::default();
        for line in text.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts[..] {
                ["GOOD", i] => a.good.push(i.parse()?),
                ["CHECK", i, "05", "25", "00"] => a.fenced.push(i.parse()?),
                _ => a.other.push(line.to_owned()),
            }
        }
        Ok(a)
    }

    /// Waits until `n` writes were answered GOOD (or the writer ended).
    pub fn wait_good(&mut self, n: usize) -> Result<()> {
        for _ in 0..600 {
            if self.answers()?.good.len() >= n {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the writer ended ({status}) before {n} GOOD writes");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        bail!("fewer than {n} GOOD writes after 30 s")
    }

    /// Waits for the writer to end (it stops after the first refused write) and returns the
    /// answers.
    pub fn finish(mut self) -> Result<Answers> {
        for _ in 0..1200 {
            if self.child.try_wait()?.is_some() {
                return self.answers();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        bail!("the writer did not end within 60 s")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which of `good` blocks are not in `file` as written, and which of `fenced` are (must be none
/// of either).
pub fn check_file(file: &Path, a: &Answers) -> Result<(Vec<u64>, Vec<u64>)> {
    let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let expected = |i: u64| {
        let mut b = i.to_be_bytes().to_vec();
        b.resize(4096, (i & 0xff) as u8);
        b
    };
    let block = |i: u64| {
        let at = (i as usize) * 4096;
        data.get(at..at + 4096).map(<[u8]>::to_vec)
    };
    let lost = a
        .good
        .iter()
        .copied()
        .filter(|&i| block(i) != Some(expected(i)))
        .collect();
    let executed = a
        .fenced
        .iter()
        .copied()
        .filter(|&i| block(i) == Some(expected(i)))
        .collect();
    Ok((lost, executed))
}
