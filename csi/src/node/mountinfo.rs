//! The mount table (`/proc/<pid>/mountinfo`): what is mounted where, to make stage and publish
//! idempotent (already mounted from the same disk: done; from another: refused) and to tell
//! whether a volume path is still mounted.

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the mounted file system's device.
    pub dev: String,
    /// The path inside that file system that is mounted (`/` for a whole one, `/sdb` for a
    /// device node bind-mounted from devtmpfs).
    pub root: String,
    pub mount_point: String,
    /// Per-mount options (`rw,relatime`…).
    pub options: Vec<String>,
    pub fs_type: String,
    pub source: String,
}

impl Mount {
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

/// mountinfo escapes blanks, tabs, newlines and backslashes as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts in mountinfo `text`, in table order; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 6 || r.len() < 2 {
                return None;
            }
            Some(Mount {
                dev: l[2].to_string(),
                root: unescape(l[3]),
                mount_point: unescape(l[4]),
                options: l[5].split(',').map(str::to_string).collect(),
                fs_type: r[0].to_string(),
                source: unescape(r[1]),
            })
        })
        .collect()
}

/// The mount visible at `path` (the last one mounted there), if any.
pub fn at<'a>(mounts: &'a [Mount], path: &str) -> Option<&'a Mount> {
    let path = path.trim_end_matches('/');
    mounts
        .iter()
        .rev()
        .find(|m| m.mount_point.trim_end_matches('/') == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
25 1 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=1000k
40 1 8:16 / /var/lib/kubelet/plugins/kubernetes.io/csi/csi.spindle.dev/abc/globalmount rw,relatime shared:30 - ext4 /dev/sdb rw
41 1 8:16 / /var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/pvc-1/mount ro,relatime shared:30 - ext4 /dev/sdb rw
42 1 0:5 /sdc /var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/pvc-2/pod rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=1000k
43 1 8:32 / /tmp/with\\040blank rw - xfs /dev/sdc rw
44 1 8:48 / /tmp/with\\040blank rw - xfs /dev/sdd rw
bad line
";

    #[test]
    fn parses_mountinfo_lines() {
        let m = parse(TABLE);
        assert_eq!(m.len(), 7);
        let staged = at(
            &m,
            "/var/lib/kubelet/plugins/kubernetes.io/csi/csi.spindle.dev/abc/globalmount/",
        )
        .unwrap();
        assert_eq!(
            (
                staged.dev.as_str(),
                staged.fs_type.as_str(),
                staged.source.as_str()
            ),
            ("8:16", "ext4", "/dev/sdb")
        );
        assert!(!staged.read_only());
        let published = at(
            &m,
            "/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/pvc-1/mount",
        )
        .unwrap();
        assert!(published.read_only());
        let block = at(
            &m,
            "/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/pvc-2/pod",
        )
        .unwrap();
        assert_eq!(
            (block.root.as_str(), block.fs_type.as_str()),
            ("/sdc", "devtmpfs")
        );
        // The last mount on a path is the one visible there.
        assert_eq!(at(&m, "/tmp/with blank").unwrap().dev, "8:48");
        assert_eq!(at(&m, "/tmp/elsewhere"), None);
        assert_eq!(at(&m, "/var/lib/kubelet"), None);
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape("end\\04"), "end\\04");
    }
}
