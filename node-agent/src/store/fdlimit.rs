//! The process's open-file limit (RLIMIT_NOFILE): every Device holds a descriptor for as long as
//! it is served, so an agent with thousands of Devices needs more than the usual soft limit of
//! 1024. The agent lifts its soft limit to the hard one at start, and a Device that cannot be
//! opened because the limit is used up is refused with an error that says so. Devices stop
//! short of the limit: the last [`reserve`] descriptors stay free for sessions, the metrics
//! endpoint and the agent API, so a node full of Devices still answers its initiators.

use std::io;
use std::os::fd::AsRawFd;

/// The soft and hard open-file limits of this process.
pub fn limits() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Lifts the soft open-file limit to the hard one. Returns the soft limit before and after.
pub fn raise() -> io::Result<(u64, u64)> {
    let (soft, hard) = limits()?;
    if soft >= hard {
        return Ok((soft, soft));
    }
    let lim = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((soft, hard))
}

/// Descriptors kept free for everything but Devices: an eighth of the limit, at least 32.
pub fn reserve(limit: u64) -> u64 {
    (limit / 8).max(32)
}

/// Whether a Device may keep descriptor `fd` under the soft limit `limit` (descriptors are
/// handed out lowest first, so `fd` is about how many are open).
pub fn has_headroom(fd: i32, limit: u64) -> bool {
    u64::try_from(fd).is_ok_and(|fd| fd.saturating_add(reserve(limit)) < limit)
}

/// Refuses descriptor `file` when it eats into the [`reserve`] (EMFILE, as if the limit were
/// reached); the caller drops it.
pub fn within_limit(file: &impl AsRawFd) -> io::Result<()> {
    match limits() {
        Ok((limit, _)) if !has_headroom(file.as_raw_fd(), limit) => {
            Err(io::Error::from_raw_os_error(libc::EMFILE))
        }
        _ => Ok(()),
    }
}

/// Whether an error means the process (EMFILE) or the system (ENFILE) has no descriptor left.
pub fn is_exhausted(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// What to tell the user when descriptors ran out (`limit`: the soft limit now).
pub fn advice(e: &io::Error, limit: Option<u64>) -> String {
    if e.raw_os_error() == Some(libc::ENFILE) {
        return "the system's open-file table is full (fs.file-max): raise it with sysctl or \
                serve fewer Devices on this node"
            .to_string();
    }
    let limit = limit.map_or_else(
        || "its open files".to_string(),
        |l| {
            format!(
                "its {l} open files but the {} kept for sessions",
                reserve(l)
            )
        },
    );
    format!(
        "the agent has used up {limit} (RLIMIT_NOFILE; each served Device holds one, each \
         session one): raise the limit (`ulimit -n` before starting it, LimitNOFILE= in a systemd unit, \
         the container runtime's nofile ulimit) or serve fewer Devices on this node"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_is_recognised_and_explained() {
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(is_exhausted(&emfile));
        assert!(is_exhausted(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!is_exhausted(&io::Error::from_raw_os_error(libc::ENOENT)));
        let text = advice(&emfile, Some(1024));
        assert!(text.contains("1024 open files but the 128 kept"), "{text}");
        assert!(text.contains("LimitNOFILE"), "{text}");
        assert!(advice(&io::Error::from_raw_os_error(libc::ENFILE), None).contains("file-max"));
    }

    #[test]
    fn devices_leave_the_reserve_free() {
        assert_eq!(reserve(1024), 128);
        assert_eq!(reserve(100), 32);
        assert!(has_headroom(10, 1024));
        assert!(has_headroom(895, 1024));
        assert!(!has_headroom(896, 1024), "the last 128 are kept");
        assert!(!has_headroom(5000, 1024));
        assert!(!has_headroom(-1, 1024));
        assert!(
            !has_headroom(0, 16),
            "a limit below the reserve admits no Device"
        );
    }

    #[test]
    fn raise_leaves_soft_at_most_hard() {
        let (_, after) = raise().unwrap();
        let (soft, hard) = limits().unwrap();
        assert_eq!(soft, after);
        assert!(soft <= hard);
    }
}
