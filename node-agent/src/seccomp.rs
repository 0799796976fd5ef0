//! The agent's seccomp profile: the system calls it makes, io_uring included, and nothing that
//! administers the machine (mount, module loading, namespaces, ptrace, keyrings, clock setting,
//! reboot, bpf, perf...). Container runtimes' default profiles differ on io_uring (containerd 2
//! and Docker 25+ block it), so the Helm chart runs the agent with this profile as a Localhost
//! profile, written to each node by `spindle-agent seccomp-profile --install PATH` in an init
//! container.
//!
//! The list was measured (`strace -f` of the agent serving file and direct-I/O Devices to
//! qemu-img, qemu-io and iscsi-ls, draining a deleted Device, stopping on SIGTERM) and widened
//! to the neighbours of each call that the Rust standard library, glibc, tokio and the kube
//! client may use instead. A call outside the list fails with EPERM; it does not kill the agent.

use std::io::{self, Write};
use std::path::Path;

/// Allowed system calls (names separated by spaces), by what the agent uses them for.
const ALLOWED: &[(&str, &str)] = &[
    (
        "start-up (the runtime execs the agent under the filter)",
        "execve arch_prctl set_tid_address set_robust_list rseq prctl",
    ),
    (
        "threads: one per Target, tokio workers",
        "clone clone3 exit exit_group futex gettid getpid getppid tgkill \
         sched_getaffinity sched_yield get_robust_list restart_syscall wait4 waitid",
    ),
    ("memory", "brk mmap munmap mremap mprotect madvise"),
    (
        "signals: SIGTERM stops the agent",
        "rt_sigaction rt_sigprocmask rt_sigreturn sigaltstack rt_sigtimedwait",
    ),
    (
        "time",
        "clock_gettime clock_getres clock_nanosleep nanosleep gettimeofday timerfd_create \
         timerfd_settime timerfd_gettime",
    ),
    (
        "identity and limits the standard library asks for",
        "getuid geteuid getgid getegid getgroups uname getrlimit prlimit64 getrusage \
         sysinfo umask",
    ),
    (
        "backing files and block devices, the data dir, state, TLS files (the agent's identity \
         file is linked into place)",
        "openat open close close_range read write pread64 pwrite64 readv writev preadv \
         pwritev preadv2 pwritev2 lseek fstat newfstatat statx fstatfs statfs fsync \
         fdatasync sync_file_range fallocate ftruncate unlink unlinkat rename renameat \
         renameat2 link linkat mkdir mkdirat rmdir getdents64 readlink readlinkat access \
         faccessat faccessat2 fcntl flock dup dup2 dup3 ioctl getcwd fchmod fchmodat",
    ),
    (
        "snapshots and clones: FICLONE (an ioctl), else a sparse copy",
        "copy_file_range",
    ),
    (
        "sockets: iSCSI portal, agent API, metrics, the apiserver",
        "socket socketpair bind listen accept accept4 connect getsockname getpeername \
         setsockopt getsockopt sendto sendmsg sendmmsg recvfrom recvmsg recvmmsg shutdown",
    ),
    (
        "readiness: epoll for tokio, eventfd and pipes to wake threads",
        "epoll_create1 epoll_ctl epoll_wait epoll_pwait epoll_pwait2 poll ppoll select \
         pselect6 eventfd2 pipe2",
    ),
    ("randomness: CHAP challenges, TLS", "getrandom"),
    (
        "io_uring: the data path",
        "io_uring_setup io_uring_enter io_uring_register",
    ),
];

/// errno for a call outside the list.
const EPERM: u32 = 1;

/// Every allowed system call, sorted.
pub fn allowed_syscalls() -> Vec<&'static str> {
    let mut all: Vec<&str> = ALLOWED
        .iter()
        .flat_map(|(_, calls)| calls.split_whitespace())
        .collect();
    all.sort_unstable();
    all
}

/// The profile in the OCI / Kubernetes Localhost format.
pub fn profile_json() -> String {
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "syscalls": [{"names": allowed_syscalls(), "action": "SCMP_ACT_ALLOW"}],
    });
    let mut text = serde_json::to_string_pretty(&profile).unwrap_or_default();
    text.push('\n');
    text
}

/// Writes the profile to `path` (creating its folder) so that a reader never sees a partial
/// file: a temporary file in the same folder, synced, then renamed over `path`.
pub fn install(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(profile_json().as_bytes())?;
    tmp.1.sync_all()?;
    std::fs::rename(&tmp.0, path)?;
    Ok(())
}

fn tempfile_in(dir: &Path) -> io::Result<(std::path::PathBuf, std::fs::File)> {
    let path = dir.join(format!(".spindle-seccomp-{}.tmp", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    Ok((path, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_allows_io_uring_and_denies_by_default() {
        let v: serde_json::Value = serde_json::from_str(&profile_json()).unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        let names: Vec<&str> = v["syscalls"][0]["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        for call in [
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "execve",
        ] {
            assert!(names.contains(&call), "{call} missing");
        }
        for call in [
            "mount",
            "ptrace",
            "bpf",
            "init_module",
            "unshare",
            "setns",
            "reboot",
        ] {
            assert!(!names.contains(&call), "{call} must stay denied");
        }
    }

    #[test]
    fn every_call_is_listed_once() {
        let all = allowed_syscalls();
        let mut unique = all.clone();
        unique.dedup();
        assert_eq!(all, unique);
    }

    #[test]
    fn install_writes_the_profile_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spindle/agent.json");
        install(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), profile_json());
        install(&path).unwrap();
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
        assert!(install(dir.path()).is_err(), "a folder is not a file");
    }
}
