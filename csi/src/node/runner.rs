//! The one way the node mode runs external commands (`iscsiadm`, `mount`, `mkfs.*`, `blkid`…):
//! directly, or behind a prefix such as `nsenter --target 1 --mount --` when the plugin runs in
//! a privileged hostPID pod and the tools (and the mounts) must be the host's. Every command has
//! a time limit: a hung tool (a dead target, a stuck mount) never holds a CSI call forever.

use std::process::Stdio;
use std::time::Duration;

use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Why a command failed.
#[derive(Debug, Error)]
pub enum RunError {
    /// The program could not be started.
    #[error("{program}: cannot start: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// It ran past its time limit (it was killed).
    #[error("{program} {args}: no answer after {seconds} s (killed)")]
    Timeout {
        program: String,
        args: String,
        seconds: u64,
    },
    /// It exited with a failure.
    #[error("{program} {args} exited with {code}: {stderr}")]
    Failed {
        program: String,
        args: String,
        /// The exit code (-1: killed by a signal).
        code: i32,
        stdout: String,
        stderr: String,
    },
}

impl RunError {
    /// The exit code of a command that ran and failed.
    pub fn code(&self) -> Option<i32> {
        match self {
            RunError::Failed { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// What the failed command printed (both streams).
    pub fn output(&self) -> String {
        match self {
            RunError::Failed { stdout, stderr, .. } => format!("{stdout}{stderr}"),
            _ => String::new(),
        }
    }
}

/// Runs commands, optionally behind a prefix.
#[derive(Debug, Clone, Default)]
pub struct Runner {
    prefix: Vec<String>,
}

impl Runner {
    /// A runner that puts `prefix` (program and arguments) before every command.
    pub fn new(prefix: Vec<String>) -> Self {
        Self { prefix }
    }

    /// The full argv of `program args` as it will be executed.
    pub fn argv(&self, program: &str, args: &[String]) -> Vec<String> {
        let mut v = self.prefix.clone();
        v.push(program.to_string());
        v.extend(args.iter().cloned());
        v
    }

    /// Runs `program args` for at most `limit`; its stdout on success.
    pub async fn run(
        &self,
        program: &str,
        args: &[String],
        limit: Duration,
    ) -> Result<String, RunError> {
        self.run_with_input(program, args, None, limit).await
    }

    /// Like [`run`](Self::run), writing `input` to its stdin (how secrets reach a file without
    /// appearing on a command line).
    pub async fn run_with_input(
        &self,
        program: &str,
        args: &[String],
        input: Option<&[u8]>,
        limit: Duration,
    ) -> Result<String, RunError> {
        let argv = self.argv(program, args);
        let shown = args.join(" ");
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        tracing::debug!(command = %argv.join(" "), "running");
        let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
            program: argv[0].clone(),
            source,
        })?;
        if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
            // A tool that exits before reading its input is reported by its exit status.
            let _ = stdin.write_all(bytes).await;
            drop(stdin);
        }
        let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(source)) => {
                return Err(RunError::Spawn {
                    program: argv[0].clone(),
                    source,
                });
            }
            Err(_) => {
                return Err(RunError::Timeout {
                    program: program.to_string(),
                    args: shown,
                    seconds: limit.as_secs(),
                });
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(RunError::Failed {
                program: program.to_string(),
                args: shown,
                code: out.status.code().unwrap_or(-1),
                stdout,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }
}

/// Parses `--host-command-prefix` ("nsenter --target 1 --mount --"): words split on blanks.
pub fn parse_prefix(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_prefix_goes_before_every_command() {
        let r = Runner::new(parse_prefix("nsenter --target 1 --mount --"));
        assert_eq!(
            r.argv("iscsiadm", &strings(&["-m", "session"])),
            strings(&[
                "nsenter", "--target", "1", "--mount", "--", "iscsiadm", "-m", "session"
            ])
        );
        assert_eq!(
            Runner::default().argv("blkid", &strings(&["/dev/sda"])),
            strings(&["blkid", "/dev/sda"])
        );
    }

    #[tokio::test]
    async fn output_failure_and_time_limit() {
        let r = Runner::default();
        let out = r
            .run("echo", &strings(&["hello"]), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out, "hello\n");
        let err = r
            .run(
                "sh",
                &strings(&["-c", "echo bad >&2; exit 3"]),
                Duration::from_secs(5),
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(3));
        assert!(err.to_string().contains("bad"), "{err}");
        let err = r
            .run("sleep", &strings(&["5"]), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, RunError::Timeout { .. }), "{err}");
        let out = r
            .run_with_input("cat", &[], Some(b"secret"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out, "secret");
    }
}
