//! open-iscsi's `iscsiadm`: the arguments of each step (pure), and the node record's CHAP
//! settings, written into the record file rather than passed as `-n … -v SECRET` arguments
//! (a command line is visible to every process on the node through `ps`).
//!
//! Records are made with `-o new` for exactly the volume's target and portal rather than by a
//! SendTargets discovery, which would leave a record for every target of the storage node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use spindle_crds::chap;

/// `iscsiadm` exit code: the session exists already (a login that is done).
pub const EXIT_SESSION_EXISTS: i32 = 15;
/// `iscsiadm` exit code: no record or session matched (a logout or delete with nothing to do).
pub const EXIT_NO_OBJECTS: i32 = 21;

fn node(iqn: &str, portal: &str, rest: &[&str]) -> Vec<String> {
    ["-m", "node", "-T", iqn, "-p", portal]
        .iter()
        .chain(rest)
        .map(|s| s.to_string())
        .collect()
}

/// A node record for `iqn` at `portal` (the defaults of iscsid.conf).
pub fn new_record(iqn: &str, portal: &str) -> Vec<String> {
    node(iqn, portal, &["-o", "new"])
}

/// Sets one non-secret setting of the record.
pub fn update(iqn: &str, portal: &str, name: &str, value: &str) -> Vec<String> {
    node(iqn, portal, &["-o", "update", "-n", name, "-v", value])
}

pub fn login(iqn: &str, portal: &str) -> Vec<String> {
    node(iqn, portal, &["--login"])
}

pub fn logout(iqn: &str, portal: &str) -> Vec<String> {
    node(iqn, portal, &["--logout"])
}

pub fn delete_record(iqn: &str, portal: &str) -> Vec<String> {
    node(iqn, portal, &["-o", "delete"])
}

/// Rescans the LUNs of session `sid` (after the target grew one).
pub fn rescan(sid: u32) -> Vec<String> {
    ["-m", "session", "-r", &sid.to_string(), "-R"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// CHAP credentials from the stage secrets (keys of `spindle_crds::chap`).
#[derive(Clone, PartialEq, Eq)]
pub struct Chap {
    pub username: String,
    pub password: String,
    /// The target's name and secret, for mutual CHAP.
    pub mutual: Option<(String, String)>,
}

impl std::fmt::Debug for Chap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chap")
            .field("username", &self.username)
            .field("mutual", &self.mutual.as_ref().map(|(u, _)| u))
            .finish_non_exhaustive()
    }
}

impl Chap {
    /// The credentials in `secrets`: None without a `username`; an error naming the key when
    /// one is missing or unusable. Secret values never appear in the error.
    pub fn from_secrets(secrets: &BTreeMap<String, String>) -> Result<Option<Chap>, String> {
        let get = |k: &str| secrets.get(k).filter(|v| !v.is_empty());
        let Some(username) = get(chap::USER_KEY) else {
            if get(chap::MUTUAL_USER_KEY).is_some() {
                return Err(format!(
                    "stage secret {:?} given without {:?}",
                    chap::MUTUAL_USER_KEY,
                    chap::USER_KEY
                ));
            }
            return Ok(None);
        };
        let password = get(chap::SECRET_KEY)
            .ok_or_else(|| format!("stage secret {:?} is missing", chap::SECRET_KEY))?;
        if let Some(p) = chap::secret_length_problem(password.len()) {
            return Err(format!("stage secret {:?} {p}", chap::SECRET_KEY));
        }
        let mutual = match get(chap::MUTUAL_USER_KEY) {
            None => None,
            Some(mu) => {
                let mp = get(chap::MUTUAL_SECRET_KEY).ok_or_else(|| {
                    format!("stage secret {:?} is missing", chap::MUTUAL_SECRET_KEY)
                })?;
                if let Some(p) = chap::secret_length_problem(mp.len()) {
                    return Err(format!("stage secret {:?} {p}", chap::MUTUAL_SECRET_KEY));
                }
                if let Some(p) = chap::mutual_problem(password, mp) {
                    return Err(format!("stage secrets: {p}"));
                }
                Some((mu.clone(), mp.clone()))
            }
        };
        Ok(Some(Chap {
            username: username.clone(),
            password: password.clone(),
            mutual,
        }))
    }
}

/// The record text with its authentication settings replaced: CHAP (mutual when asked) or
/// none. Every other line is kept; the new lines go before `# END RECORD` when there is one.
pub fn with_auth(record: &str, chap: Option<&Chap>) -> String {
    let mut auth = Vec::new();
    match chap {
        None => auth.push("node.session.auth.authmethod = None".to_string()),
        Some(c) => {
            auth.push("node.session.auth.authmethod = CHAP".to_string());
            auth.push(format!("node.session.auth.username = {}", c.username));
            auth.push(format!("node.session.auth.password = {}", c.password));
            if let Some((u, p)) = &c.mutual {
                auth.push(format!("node.session.auth.username_in = {u}"));
                auth.push(format!("node.session.auth.password_in = {p}"));
            }
        }
    }
    let mut out = Vec::new();
    let mut placed = false;
    for line in record.lines() {
        if line.trim_start().starts_with("node.session.auth.") {
            continue;
        }
        if line.trim() == "# END RECORD" && !placed {
            out.append(&mut auth);
            placed = true;
        }
        out.push(line.to_string());
    }
    if !placed {
        out.append(&mut auth);
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// The file of the node record of `iqn` at `portal` (`host:port`) under the records folder
/// `nodes` (`/etc/iscsi/nodes` on Debian, `/var/lib/iscsi/nodes` on Fedora): either
/// `IQN/HOST,PORT[,TPGT]/IFACE` (the iface `default`) or the older `IQN/HOST,PORT[,TPGT]` file.
pub fn record_file(nodes: &Path, iqn: &str, portal: &str) -> Option<PathBuf> {
    let (host, port) = portal.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let prefix = format!("{host},{port}");
    let dir = nodes.join(iqn);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| *n == prefix || n.starts_with(&format!("{prefix},")))
        .collect();
    names.sort();
    let p = dir.join(names.first()?);
    if p.is_dir() {
        let f = p.join("default");
        f.is_file().then_some(f)
    } else {
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IQN: &str = "iqn.2026-11.dev.spindle:spindle-system.pvc-1";
    const PORTAL: &str = "10.0.0.5:3260";

    fn secrets(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn arguments_of_each_step() {
        assert_eq!(
            new_record(IQN, PORTAL).join(" "),
            format!("-m node -T {IQN} -p {PORTAL} -o new")
        );
        assert_eq!(
            login(IQN, PORTAL).join(" "),
            format!("-m node -T {IQN} -p {PORTAL} --login")
        );
        assert_eq!(
            logout(IQN, PORTAL).join(" "),
            format!("-m node -T {IQN} -p {PORTAL} --logout")
        );
        assert_eq!(
            delete_record(IQN, PORTAL).join(" "),
            format!("-m node -T {IQN} -p {PORTAL} -o delete")
        );
        assert_eq!(
            update(IQN, PORTAL, "node.startup", "manual").join(" "),
            format!("-m node -T {IQN} -p {PORTAL} -o update -n node.startup -v manual")
        );
        assert_eq!(rescan(4).join(" "), "-m session -r 4 -R");
    }

    #[test]
    fn chap_goes_into_the_record_never_into_arguments() {
        let chap = Chap::from_secrets(&secrets(&[
            ("username", "alice"),
            ("password", "initiator-secret-1"),
            ("mutualUsername", "target"),
            ("mutualPassword", "target-secret-22"),
        ]))
        .unwrap()
        .unwrap();
        // Every command line the node runs for a volume: none carries a secret.
        let all = [
            new_record(IQN, PORTAL),
            update(IQN, PORTAL, "node.startup", "manual"),
            login(IQN, PORTAL),
            logout(IQN, PORTAL),
            delete_record(IQN, PORTAL),
        ];
        for argv in &all {
            let line = argv.join(" ");
            assert!(!line.contains("secret"), "{line}");
        }
        let rec = "# BEGIN RECORD 2.1.8\nnode.name = x\nnode.session.auth.authmethod = None\nnode.session.auth.chap_algs = MD5\nnode.conn[0].port = 3260\n# END RECORD\n";
        let out = with_auth(rec, Some(&chap));
        assert_eq!(
            out,
            "# BEGIN RECORD 2.1.8\nnode.name = x\nnode.conn[0].port = 3260\n\
             node.session.auth.authmethod = CHAP\nnode.session.auth.username = alice\n\
             node.session.auth.password = initiator-secret-1\n\
             node.session.auth.username_in = target\n\
             node.session.auth.password_in = target-secret-22\n# END RECORD\n"
        );
        // Back to no CHAP: the secrets leave the record.
        let none = with_auth(&out, None);
        assert!(
            !none.contains("secret") && none.contains("authmethod = None"),
            "{none}"
        );
        assert!(!format!("{chap:?}").contains("secret"));
    }

    #[test]
    fn chap_secrets_are_checked() {
        assert_eq!(Chap::from_secrets(&secrets(&[])).unwrap(), None);
        let one = Chap::from_secrets(&secrets(&[("username", "u"), ("password", "0123456789ab")]))
            .unwrap()
            .unwrap();
        assert_eq!(one.mutual, None);
        for (bad, key) in [
            (vec![("username", "u")], "\"password\""),
            (
                vec![("username", "u"), ("password", "short")],
                "\"password\"",
            ),
            (vec![("mutualUsername", "t")], "\"username\""),
            (
                vec![
                    ("username", "u"),
                    ("password", "0123456789ab"),
                    ("mutualUsername", "t"),
                ],
                "\"mutualPassword\"",
            ),
            (
                vec![
                    ("username", "u"),
                    ("password", "0123456789ab"),
                    ("mutualUsername", "t"),
                    ("mutualPassword", "0123456789ab"),
                ],
                "must differ",
            ),
        ] {
            let err = Chap::from_secrets(&secrets(&bad)).unwrap_err();
            assert!(err.contains(key), "{err}");
            assert!(
                !err.contains("0123456789ab") && !err.contains("short"),
                "{err}"
            );
        }
    }

    #[test]
    fn finds_the_record_file_in_both_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = dir.path();
        std::fs::create_dir_all(nodes.join(IQN).join("10.0.0.5,3260,1")).unwrap();
        std::fs::write(nodes.join(IQN).join("10.0.0.5,3260,1/default"), "x").unwrap();
        assert_eq!(
            record_file(nodes, IQN, PORTAL),
            Some(nodes.join(IQN).join("10.0.0.5,3260,1/default"))
        );
        std::fs::write(nodes.join(IQN).join("10.0.0.6,3260"), "x").unwrap();
        assert_eq!(
            record_file(nodes, IQN, "10.0.0.6:3260"),
            Some(nodes.join(IQN).join("10.0.0.6,3260"))
        );
        assert_eq!(record_file(nodes, IQN, "10.0.0.7:3260"), None);
        assert_eq!(record_file(nodes, "iqn.other", PORTAL), None);
        assert_eq!(record_file(nodes, IQN, "no-port"), None);
    }
}
