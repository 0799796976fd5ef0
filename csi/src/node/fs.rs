//! File systems on a volume's disk: what blkid finds, and the arguments of mkfs, mount and the
//! grow tools (pure).

use super::context::FsType;

/// What `blkid -p -o export DEV` found on a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Nothing blkid knows (exit status 2): a new volume, to format.
    Empty,
    /// A file system of this type (`TYPE=`).
    Fs(String),
    /// A partition table (`PTTYPE=`) or something else with no file system: never formatted.
    Other(String),
}

/// blkid's exit status when it found nothing.
pub const BLKID_NOTHING: i32 = 2;

pub fn blkid_args(dev: &str) -> Vec<String> {
    ["-p", "-o", "export", dev].map(String::from).to_vec()
}

/// The content in blkid's `-o export` output (`KEY=value` lines).
pub fn parse_blkid(out: &str) -> Content {
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(t) = get("TYPE") {
        Content::Fs(t.to_string())
    } else if let Some(pt) = get("PTTYPE") {
        Content::Other(format!("a {pt} partition table"))
    } else if let Some(u) = get("USAGE") {
        Content::Other(format!("content of usage {u}"))
    } else {
        Content::Empty
    }
}

/// mkfs for a new volume: no discard pass (a new Spindle Device reads as zeros already).
pub fn mkfs(fs: FsType, dev: &str) -> (&'static str, Vec<String>) {
    match fs {
        FsType::Ext4 => (
            "mkfs.ext4",
            ["-F", "-q", "-E", "nodiscard", dev]
                .map(String::from)
                .to_vec(),
        ),
        FsType::Xfs => (
            "mkfs.xfs",
            ["-f", "-q", "-K", dev].map(String::from).to_vec(),
        ),
    }
}

/// Grows the mounted file system to its disk: resize2fs takes the disk, xfs_growfs the mount.
pub fn grow(fs: FsType, dev: &str, mount_point: &str) -> (&'static str, Vec<String>) {
    match fs {
        FsType::Ext4 => ("resize2fs", vec![dev.to_string()]),
        FsType::Xfs => ("xfs_growfs", vec![mount_point.to_string()]),
    }
}

/// `mount -t FS [-o FLAGS] DEV PATH`.
pub fn mount_args(fs: &str, flags: &[String], dev: &str, path: &str) -> Vec<String> {
    let mut v = vec!["-t".to_string(), fs.to_string()];
    if !flags.is_empty() {
        v.push("-o".into());
        v.push(flags.join(","));
    }
    v.push(dev.to_string());
    v.push(path.to_string());
    v
}

/// `mount --bind FROM TO`, then (read-only) `mount -o remount,bind,ro TO`: a bind mount takes
/// its flags only on a remount.
pub fn bind_args(from: &str, to: &str, read_only: bool) -> Vec<Vec<String>> {
    let mut v = vec![vec!["--bind".to_string(), from.to_string(), to.to_string()]];
    if read_only {
        v.push(vec!["-o".into(), "remount,bind,ro".into(), to.to_string()]);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_blkid_found() {
        assert_eq!(
            parse_blkid(
                "DEVNAME=/dev/sdb\nUUID=1-2\nVERSION=1.0\nBLOCK_SIZE=4096\nTYPE=ext4\nUSAGE=filesystem\n"
            ),
            Content::Fs("ext4".into())
        );
        assert_eq!(
            parse_blkid("DEVNAME=/dev/sdb\nPTUUID=x\nPTTYPE=gpt\n"),
            Content::Other("a gpt partition table".into())
        );
        assert_eq!(parse_blkid(""), Content::Empty);
        assert_eq!(parse_blkid("PART_ENTRY_TYPE=x\n"), Content::Empty);
    }

    #[test]
    fn tool_arguments() {
        assert_eq!(
            mkfs(FsType::Ext4, "/dev/sdb").1.join(" "),
            "-F -q -E nodiscard /dev/sdb"
        );
        assert_eq!(mkfs(FsType::Xfs, "/dev/sdb").0, "mkfs.xfs");
        assert_eq!(grow(FsType::Xfs, "/dev/sdb", "/m").1, vec!["/m"]);
        assert_eq!(
            grow(FsType::Ext4, "/dev/sdb", "/m"),
            ("resize2fs", vec!["/dev/sdb".into()])
        );
        assert_eq!(
            mount_args("ext4", &["noatime".into(), "ro".into()], "/dev/sdb", "/s").join(" "),
            "-t ext4 -o noatime,ro /dev/sdb /s"
        );
        assert_eq!(
            mount_args("xfs", &[], "/dev/sdb", "/s").join(" "),
            "-t xfs /dev/sdb /s"
        );
        assert_eq!(bind_args("/s", "/t", false).len(), 1);
        assert_eq!(
            bind_args("/s", "/t", true)[1].join(" "),
            "-o remount,bind,ro /t"
        );
    }
}
