//! A Device grown under a logged-in session, and an initiator taken out of a Target's ACL,
//! seen by a real iSCSI session on the node's portal.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::NodeError;
use super::tests::{device, node, port, target};
use crate::iscsi::login::AclPolicy;
use crate::iscsi::pdu::{Digests, LoginRequest, Pdu, ScsiCommand, Stage, TaskAttr};
use crate::iscsi::text;
use crate::store::StoreSource;

/// A minimal initiator: one connection, one command at a time.
pub(super) struct Session {
    sock: TcpStream,
    buf: BytesMut,
    cmd_sn: u32,
    stat_sn: u32,
}

/// How a command ended: SCSI status, sense data, Data-In.
pub(super) struct Answer {
    pub(super) status: u8,
    pub(super) sense: Bytes,
    pub(super) data: Vec<u8>,
}

impl Answer {
    /// (sense key, ASC, ASCQ) of fixed-format sense data.
    pub(super) fn sense_code(&self) -> (u8, u8, u8) {
        let s = &self.sense;
        assert!(s.len() >= 14, "no sense data (status {:#x})", self.status);
        (s[2] & 0x0F, s[12], s[13])
    }
}

impl Session {
    pub(super) fn login(portal: SocketAddr, iqn: &str, initiator: &str, isid: u8) -> Session {
        let mut sock = TcpStream::connect(portal).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let keys = [
            ("InitiatorName", initiator),
            ("SessionType", "Normal"),
            ("TargetName", iqn),
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("InitialR2T", "Yes"),
            ("ImmediateData", "No"),
            ("MaxRecvDataSegmentLength", "262144"),
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "65536"),
            ("ErrorRecoveryLevel", "0"),
            ("MaxConnections", "1"),
        ];
        let mut out = BytesMut::new();
        Pdu::LoginRequest(LoginRequest {
            transit: true,
            cont: false,
            csg: Stage::Operational,
            nsg: Stage::FullFeature,
            version_max: 0,
            version_min: 0,
            isid: [0x80, 0x21, 0, 0, 0, isid],
            tsih: 0,
            itt: 1,
            cid: 0,
            cmd_sn: 1,
            exp_stat_sn: 0,
            data: text::encode(&keys),
        })
        .encode(Digests::default())
        .unwrap()
        .write_to(&mut out);
        sock.write_all(&out).unwrap();
        let mut s = Session {
            sock,
            buf: BytesMut::new(),
            cmd_sn: 1,
            stat_sn: 0,
        };
        let Some(Pdu::LoginResponse(r)) = s.recv() else {
            panic!("no login response");
        };
        assert_eq!((r.status, r.nsg), (0, Stage::FullFeature), "login failed");
        s.stat_sn = r.sns.stat_sn.wrapping_add(1);
        s
    }

    /// The next PDU, or None once the target closed the connection.
    fn recv(&mut self) -> Option<Pdu> {
        loop {
            if let Some(p) = Pdu::decode_from(&mut self.buf, Digests::default(), 1 << 20).unwrap() {
                return Some(p);
            }
            let mut chunk = [0u8; 4096];
            match self.sock.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading from the target: {e}"),
            }
        }
    }

    /// Sends a command without Data-Out and collects its answer (None: the connection closed).
    fn try_command(&mut self, cdb: &[u8], read_len: u32) -> Option<Answer> {
        let itt = self.cmd_sn + 100;
        let mut out = BytesMut::new();
        Pdu::ScsiCommand(ScsiCommand {
            immediate: false,
            final_: true,
            read: read_len > 0,
            write: false,
            attr: TaskAttr::Simple,
            lun: 0,
            itt,
            expected_data_len: read_len,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.stat_sn,
            cdb: Bytes::copy_from_slice(cdb),
            bidi_read_len: None,
            data: Bytes::new(),
        })
        .encode(Digests::default())
        .unwrap()
        .write_to(&mut out);
        self.sock.write_all(&out).ok()?;
        self.cmd_sn += 1;
        let mut data = Vec::new();
        loop {
            match self.recv()? {
                Pdu::DataIn(d) => {
                    data.extend_from_slice(&d.data);
                    if let Some(status) = d.status {
                        self.stat_sn = d.sns.stat_sn.wrapping_add(1);
                        return Some(Answer {
                            status,
                            sense: Bytes::new(),
                            data,
                        });
                    }
                }
                Pdu::ScsiResponse(r) => {
                    self.stat_sn = r.sns.stat_sn.wrapping_add(1);
                    return Some(Answer {
                        status: r.status,
                        sense: r.sense,
                        data,
                    });
                }
                Pdu::NopIn(_) => {}
                other => panic!("unexpected PDU {other:?}"),
            }
        }
    }

    pub(super) fn command(&mut self, cdb: &[u8], read_len: u32) -> Answer {
        self.try_command(cdb, read_len)
            .expect("the target closed the connection")
    }

    /// TEST UNIT READY until GOOD (takes the unit attentions of a new nexus).
    pub(super) fn settle(&mut self) {
        for _ in 0..8 {
            if self.command(&[0u8; 6], 0).status == GOOD {
                return;
            }
        }
        panic!("unit attentions never cleared");
    }

    /// Last LBA per READ CAPACITY(16).
    fn last_lba(&mut self) -> Answer {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x9E;
        cdb[1] = 0x10;
        cdb[13] = 32;
        self.command(&cdb, 32)
    }
}

pub(super) const GOOD: u8 = 0x00;
const CHECK_CONDITION: u8 = 0x02;

fn last_lba_of(a: &Answer) -> u64 {
    u64::from_be_bytes(a.data[0..8].try_into().unwrap())
}

fn resized(
    mut d: super::records::DeviceRecord,
    size: u64,
    generation: i64,
) -> super::records::DeviceRecord {
    if let StoreSource::File { size_bytes, .. } = &mut d.store.source {
        *size_bytes = size;
    }
    d.id.generation = generation;
    d
}

#[tokio::test]
async fn a_grown_device_is_served_live_and_each_session_is_told_once() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), true).await;
    let p = port(&n).await;
    n.apply_device(device("a", "ua")).await.unwrap();
    let mut t = target("t", &[(0, "a")]);
    t.port = p;
    let iqn = t.iqn.clone();
    n.apply_target(t).await.unwrap();
    let portal = n.advertised_portal().await.unwrap();

    let (sessions, before) = tokio::task::spawn_blocking({
        let iqn = iqn.clone();
        move || {
            let mut s = [
                Session::login(portal, &iqn, "iqn.2026-11.dev.spindle:grow-1", 1),
                Session::login(portal, &iqn, "iqn.2026-11.dev.spindle:grow-2", 2),
            ];
            let mut before = Vec::new();
            for x in &mut s {
                x.settle();
                before.push(last_lba_of(&x.last_lba()));
            }
            (s, before)
        }
    })
    .await
    .unwrap();
    assert_eq!(before, vec![2047, 2047], "1 MiB of 512-byte blocks");

    let (stale, view) = n
        .apply_device(resized(device("a", "ua"), 4 << 20, 2))
        .await
        .unwrap();
    assert!(!stale);
    assert_eq!(view.capacity_bytes, 4 << 20);
    assert_eq!(
        std::fs::metadata(dir.path().join("a.img")).unwrap().len(),
        4 << 20,
        "the file grew"
    );

    let sessions = tokio::task::spawn_blocking(move || {
        let mut sessions = sessions;
        for s in &mut sessions {
            // The next command of each session: CAPACITY DATA HAS CHANGED, once.
            let first = s.last_lba();
            assert_eq!(first.status, CHECK_CONDITION);
            assert_eq!(first.sense_code(), (0x6, 0x2A, 0x09));
            let again = s.last_lba();
            assert_eq!(again.status, GOOD, "told once");
            assert_eq!(last_lba_of(&again), (4 << 20) / 512 - 1);
            assert_eq!(s.command(&[0u8; 6], 0).status, GOOD);
        }
        sessions
    })
    .await
    .unwrap();
    let v = n.view().await;
    assert_eq!(v.targets[0].sessions.len(), 2, "no session was dropped");
    drop(sessions);

    // A shrink is refused with the field, and changes nothing.
    let e = n
        .apply_device(resized(device("a", "ua"), 1 << 20, 3))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, NodeError::Invalid { field, .. } if field == "spec.source.file.sizeBytes"),
        "{e}"
    );
    let v = n.view().await;
    assert_eq!(v.devices[0].capacity_bytes, 4 << 20);

    // The record holds the new size: a restarted node serves the grown Device.
    n.shutdown().await.unwrap();
    drop(n);
    let n = node(dir.path(), true).await;
    let v = n.view().await;
    assert_eq!(v.devices[0].capacity_bytes, 4 << 20);
    n.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_initiator_taken_out_of_the_acl_loses_its_session_the_others_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let n = node(dir.path(), false).await;
    let p = port(&n).await;
    n.apply_device(device("a", "ua")).await.unwrap();
    let (keep, drop_) = (
        "iqn.2026-11.dev.spindle:keep",
        "iqn.2026-11.dev.spindle:detached",
    );
    let mut t = target("t", &[(0, "a")]);
    t.port = p;
    t.acl = AclPolicy::Only(vec![keep.into(), drop_.into()]);
    let iqn = t.iqn.clone();
    n.apply_target(t.clone()).await.unwrap();
    let portal = n.advertised_portal().await.unwrap();
    let (mut kept, mut gone) = tokio::task::spawn_blocking({
        let iqn = iqn.clone();
        move || {
            let mut a = Session::login(portal, &iqn, keep, 1);
            let mut b = Session::login(portal, &iqn, drop_, 2);
            a.settle();
            b.settle();
            (a, b)
        }
    })
    .await
    .unwrap();

    t.id.generation = 2;
    t.acl = AclPolicy::Only(vec![keep.into()]);
    let started = Instant::now();
    n.apply_target(t).await.unwrap();
    let (closed_after, kept) = tokio::task::spawn_blocking(move || {
        // The detached initiator's connection is closed: its next command never runs.
        while gone.try_command(&[0u8; 6], 0).is_some() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the removed initiator still has its session"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let closed_after = started.elapsed();
        assert_eq!(kept.command(&[0u8; 6], 0).status, GOOD);
        (closed_after, kept)
    })
    .await
    .unwrap();
    assert!(closed_after < Duration::from_secs(5), "{closed_after:?}");
    let v = n.view().await;
    let names: Vec<&str> = v.targets[0]
        .sessions
        .iter()
        .map(|s| s.initiator_name.as_str())
        .collect();
    assert_eq!(names, vec![keep], "only the allowed initiator is logged in");
    // The Target was not restarted for it: the kept session is the same connection.
    drop(kept);
    n.shutdown().await.unwrap();
}

/// A loop device over a file of `bytes`; detached when dropped. None without root.
struct Loop {
    dev: std::path::PathBuf,
    file: std::path::PathBuf,
}

impl Loop {
    fn new(dir: &std::path::Path, bytes: u64) -> Option<Self> {
        let file = dir.join("lv.img");
        std::fs::File::create(&file).ok()?.set_len(bytes).ok()?;
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&file)
            .output()
            .ok()?;
        out.status.success().then(|| Loop {
            dev: String::from_utf8_lossy(&out.stdout).trim().into(),
            file,
        })
    }

    /// Grows the backing file and tells the loop driver (like `lvextend` on an LV).
    fn grow(&self, bytes: u64) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.file)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        let ok = std::process::Command::new("losetup")
            .arg("-c")
            .arg(&self.dev)
            .status()
            .unwrap();
        assert!(ok.success(), "losetup -c");
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&self.dev)
            .status();
    }
}

#[tokio::test]
async fn a_grown_block_device_is_picked_up_at_the_next_apply() {
    let dir = tempfile::tempdir().unwrap();
    let Some(lo) = Loop::new(dir.path(), 1 << 20) else {
        eprintln!("losetup is not possible here (needs root and loop devices): skipped");
        return;
    };
    let mut o = super::tests::opts(dir.path(), false);
    o.allow_block = vec![lo.dev.clone()];
    let (n, problems) = super::Node::start(o).await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let mut d = device("lv", "ulv");
    d.store.source = StoreSource::Block {
        path: lo.dev.display().to_string(),
    };
    d.reclaim_delete = false;
    let (_, view) = n.apply_device(d.clone()).await.unwrap();
    assert_eq!(view.capacity_bytes, 1 << 20);
    let p = port(&n).await;
    let mut t = target("t", &[(0, "lv")]);
    t.port = p;
    let iqn = t.iqn.clone();
    n.apply_target(t).await.unwrap();
    let portal = n.advertised_portal().await.unwrap();
    let mut s = tokio::task::spawn_blocking(move || {
        let mut s = Session::login(portal, &iqn, "iqn.2026-11.dev.spindle:lv", 1);
        s.settle();
        s
    })
    .await
    .unwrap();

    lo.grow(4 << 20);
    // The same spec again (the operator's resync): the device is sized again.
    let (stale, view) = n.apply_device(d).await.unwrap();
    assert!(!stale);
    assert_eq!(view.capacity_bytes, 4 << 20);
    tokio::task::spawn_blocking(move || {
        let first = s.last_lba();
        assert_eq!(first.sense_code(), (0x6, 0x2A, 0x09));
        assert_eq!(last_lba_of(&s.last_lba()), (4 << 20) / 512 - 1);
    })
    .await
    .unwrap();
    n.shutdown().await.unwrap();
}
