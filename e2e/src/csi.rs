//! The CSI driver under test: `spindle-csi` modes as processes on this machine (against the test
//! cluster's kubeconfig), gRPC clients for them, and csi-sanity runs with their JSON report read
//! into counts.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use spindle_csi::proto::VolumeCapability;
use spindle_csi::proto::volume_capability::access_mode::Mode;
use spindle_csi::proto::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};

/// The `spindle-csi` binary: `$SPINDLE_BIN_DIR`, else the release build of the cargo target
/// dir (`e2e/run-control-plane-tests` builds it).
pub fn binary() -> PathBuf {
    crate::cluster::release_binary("spindle-csi")
}

/// A free TCP port on `ip` (bound and let go: the caller binds it next).
pub fn free_port(ip: &str) -> Result<SocketAddr> {
    let l = TcpListener::bind((ip, 0)).with_context(|| format!("binding {ip}:0"))?;
    Ok(l.local_addr()?)
}

/// One `spindle-csi` process, killed when dropped; its log in a file.
pub struct Process {
    child: Child,
    /// Where it serves CSI.
    pub addr: SocketAddr,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
}

impl Process {
    /// Starts `BIN MODE --endpoint tcp://ADDR ARGS...` (BIN: a `spindle-csi`) with
    /// `KUBECONFIG=kubeconfig`, logging into `dir`; returns once it listens.
    pub fn start(
        bin: &Path,
        mode: &str,
        addr: SocketAddr,
        kubeconfig: &Path,
        args: &[&str],
        dir: &Path,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let log = dir.join(format!("spindle-csi-{mode}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .arg(mode)
            .arg("--endpoint")
            .arg(format!("tcp://{addr}"))
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {} {mode}", bin.display()))?;
        let mut p = Process { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Some(status) = p.child.try_wait()? {
                bail!("spindle-csi {mode} exited ({status}): {}", p.log_text());
            }
            if Instant::now() >= deadline {
                bail!("spindle-csi {mode} does not listen on {addr} after 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(p)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The gRPC URL of its endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A volume capability: a raw block device (`block`) or an ext4 mount, in access `mode`.
pub fn capability(block: bool, mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: "ext4".into(),
                ..Default::default()
            })
        }),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

/// The csi-sanity binary (`e2e/cluster/build --csi` builds it).
pub fn sanity_binary() -> Result<PathBuf> {
    let out = Command::new(crate::cluster::scripts_dir().join("build"))
        .args(["--quiet", "--csi", "--print-bin-dir"])
        .stderr(Stdio::inherit())
        .output()
        .context("running e2e/cluster/build --csi")?;
    if !out.status.success() {
        bail!("e2e/cluster/build --csi failed ({})", out.status);
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("csi-sanity"))
}

/// One spec of a csi-sanity run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Container texts and the leaf, joined by " / ".
    pub name: String,
    /// passed, failed, skipped, pending, panicked, ...
    pub state: String,
    /// The failure or Skip message.
    pub message: String,
}

impl Spec {
    /// True if the spec ran (it was not skipped by a Skip call or a filter).
    pub fn ran(&self) -> bool {
        !matches!(self.state.as_str(), "skipped" | "pending")
    }
}

/// The `It` specs of a ginkgo JSON report (`--ginkgo.json-report`).
pub fn parse_report(json: &str) -> Result<Vec<Spec>> {
    let v: Value = serde_json::from_str(json).context("csi-sanity's JSON report")?;
    let mut specs = Vec::new();
    for suite in v.as_array().context("the report is a list of suites")? {
        for s in suite["SpecReports"].as_array().into_iter().flatten() {
            if s["LeafNodeType"] != "It" {
                continue;
            }
            let mut parts: Vec<String> = s["ContainerHierarchyTexts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect();
            parts.push(s["LeafNodeText"].as_str().unwrap_or_default().to_owned());
            specs.push(Spec {
                name: parts.join(" / "),
                state: s["State"].as_str().unwrap_or("unknown").to_owned(),
                message: s["Failure"]["Message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
    }
    Ok(specs)
}

/// Counts of a run: specs per state.
pub fn counts(specs: &[Spec]) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for s in specs {
        *c.entry(s.state.clone()).or_insert(0) += 1;
    }
    c
}

/// Runs csi-sanity with `args` (its own flags, `--csi.*` and `--ginkgo.*`), its JSON report in
/// `dir`; returns the specs and its output (it exits non-zero when a spec fails: the specs say
/// which).
pub fn run_sanity(args: &[String], dir: &Path) -> Result<(Vec<Spec>, String)> {
    let report = dir.join("csi-sanity.json");
    let _ = std::fs::remove_file(&report);
    let out = Command::new(sanity_binary()?)
        .args(args)
        .arg(format!("--ginkgo.json-report={}", report.display()))
        .arg("--ginkgo.no-color")
        .stdin(Stdio::null())
        .output()
        .context("running csi-sanity")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read_to_string(&report)
        .with_context(|| format!("csi-sanity wrote no report ({}): {text}", out.status))?;
    Ok((parse_report(&json)?, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_specs_and_counts() {
        let json = r#"[{"SuitePath":"x","SpecReports":[
          {"LeafNodeType":"BeforeSuite","State":"passed"},
          {"LeafNodeType":"It","ContainerHierarchyTexts":["Controller Service [Controller Server]","GetCapacity"],
           "LeafNodeText":"should return capacity","State":"passed"},
          {"LeafNodeType":"It","ContainerHierarchyTexts":["CreateSnapshot [Controller Server]"],
           "LeafNodeText":"should fail","State":"skipped","Failure":{"Message":"CreateSnapshot not supported"}},
          {"LeafNodeType":"It","ContainerHierarchyTexts":["Node Service"],"LeafNodeText":"x","State":"skipped"}
        ]}]"#;
        let specs = parse_report(json).unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(
            specs[0].name,
            "Controller Service [Controller Server] / GetCapacity / should return capacity"
        );
        assert!(specs[0].ran() && !specs[1].ran());
        assert_eq!(specs[1].message, "CreateSnapshot not supported");
        assert_eq!(specs[2].message, "");
        let c = counts(&specs);
        assert_eq!((c["passed"], c["skipped"]), (1, 2));
        assert!(parse_report("{}").is_err());
    }
}
