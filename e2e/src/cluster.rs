//! [`TestCluster`]: a local control plane for one test run, or the cluster `KUBECONFIG` names.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Failure to start or drive the test cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A helper program could not be started at all.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A helper program ran and failed.
    #[error("{command} failed ({status}):\n{stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// `up` did not print the `export KUBECONFIG=...` line.
    #[error("e2e/cluster/up printed no KUBECONFIG line; it printed: {0}")]
    NoKubeconfig(String),
}

/// The `e2e/` folder of the checkout being tested. `cargo test` names it at run time; the path
/// compiled in is only the fallback, because a build shared between checkouts (one
/// `CARGO_TARGET_DIR`) keeps the path of the checkout that compiled it.
fn e2e_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Directory holding the `build`, `up` and `down` scripts.
pub fn scripts_dir() -> PathBuf {
    e2e_dir().join("cluster")
}

/// The workspace root (for manifests such as `crds/*.yaml`).
pub fn workspace_dir() -> PathBuf {
    e2e_dir().join("..")
}

/// The release build of Spindle's binary `name`: in `$SPINDLE_BIN_DIR` when set, else in the
/// cargo target dir (`e2e/run-control-plane-tests` builds them).
pub fn release_binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("SPINDLE_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target"));
    target.join("release").join(name)
}

/// A Kubernetes API to test against. Started by [`TestCluster::start`] and stopped on drop, or
/// borrowed from `KUBECONFIG` (then left running).
#[derive(Debug)]
pub struct TestCluster {
    kubeconfig: PathBuf,
    bin_dir: PathBuf,
    /// Name given to `up`, when this value owns the cluster.
    owned: Option<String>,
}

impl TestCluster {
    /// Starts a fresh cluster with the given Node objects, or uses the cluster of the
    /// `KUBECONFIG` environment variable when set (creating no Nodes there). Builds the
    /// binaries first when they are missing; that prints progress and can take many minutes.
    pub fn start(nodes: &[&str]) -> Result<Self, ClusterError> {
        let bin_dir = ensure_binaries()?;
        if let Some(kubeconfig) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
            return Ok(Self {
                kubeconfig: PathBuf::from(kubeconfig),
                bin_dir,
                owned: None,
            });
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut up = Command::new(scripts_dir().join("up"));
        up.args([
            "--name",
            &name,
            "--watch-pid",
            &std::process::id().to_string(),
        ])
        .args(nodes);
        let out = run(&mut up, None)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let kubeconfig = stdout
            .lines()
            .find_map(|l| l.strip_prefix("export KUBECONFIG="))
            .ok_or_else(|| ClusterError::NoKubeconfig(stdout.to_string()))?;
        Ok(Self {
            kubeconfig: PathBuf::from(kubeconfig),
            bin_dir,
            owned: Some(name),
        })
    }

    /// True when this value started the cluster (and stops it on drop).
    pub fn is_owned(&self) -> bool {
        self.owned.is_some()
    }

    /// Path of the kubeconfig giving admin access.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The pinned kubectl build.
    pub fn kubectl_binary(&self) -> PathBuf {
        self.bin_dir.join("kubectl")
    }

    /// A `kubectl` command (the pinned build) already pointed at this cluster. For a cluster of
    /// our own, kubectl's discovery cache lives in its state directory, not in ~/.kube.
    pub fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        if let (Some(_), Some(state)) = (&self.owned, self.kubeconfig.parent()) {
            cmd.arg("--cache-dir").arg(state.join("kube-cache"));
        }
        cmd
    }

    /// Runs kubectl with `args` (and `stdin`, if given) and returns stdout; a non-zero exit is
    /// an error carrying stderr.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, ClusterError> {
        let out = run(self.kubectl_command().args(args), stdin)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs kubectl expecting it to fail; returns its stderr, or `None` if it succeeded.
    pub fn kubectl_fails(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Option<String>, ClusterError> {
        match self.kubectl(args, stdin) {
            Ok(_) => Ok(None),
            Err(ClusterError::Failed { stderr, .. }) => Ok(Some(stderr)),
            Err(e) => Err(e),
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(name) = &self.owned {
            let mut down = Command::new(scripts_dir().join("down"));
            down.args(["--name", name]);
            if let Err(e) = run(&mut down, None) {
                eprintln!("warning: stopping test cluster {name}: {e}");
            }
        }
    }
}

/// Builds the binaries if needed (progress goes to our stderr) and returns their directory.
fn ensure_binaries() -> Result<PathBuf, ClusterError> {
    let mut build = Command::new(scripts_dir().join("build"));
    build.args(["--quiet", "--print-bin-dir"]);
    build.stderr(Stdio::inherit());
    let out = run_with_stderr(&mut build, None)?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Runs `cmd`, feeding `stdin` and capturing its output; fails unless it exits 0.
fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<Output, ClusterError> {
    cmd.stderr(Stdio::piped());
    run_with_stderr(cmd, stdin)
}

/// Like [`run`], but leaves stderr as the caller configured it.
fn run_with_stderr(cmd: &mut Command, stdin: Option<&str>) -> Result<Output, ClusterError> {
    let command = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| ClusterError::Spawn {
        program: command.clone(),
        source,
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A child that exits early closes the pipe; its exit status reports the real problem.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| ClusterError::Spawn {
            program: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(ClusterError::Failed {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}
