//! A busy Target stopped (removed, or restarted for a new IQN) while the node answers every
//! other call: its Device lives on a filesystem the test freezes (`fsfreeze`), so a session's
//! WRITE stays in the store and the stop waits for it until the drain timeout (shortened here
//! to [`STOP`]). Needs root, loop devices and ext4 (says so and passes otherwise).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::records::TargetRecord;
use super::tests::{device, id, opts, port, target};
use super::{Node, NodeError};
use crate::iscsi::pdu::{DataOut, Digests, LoginRequest, Pdu, ScsiCommand, Stage, TaskAttr};
use crate::iscsi::text;

/// How long the stuck command holds a stop.
const STOP: Duration = Duration::from_secs(3);
/// What "answers at once" means here.
const PROMPT: Duration = Duration::from_secs(1);

fn send(sock: &mut TcpStream, pdu: Pdu) {
    let mut out = BytesMut::new();
    pdu.encode(Digests::default()).unwrap().write_to(&mut out);
    sock.write_all(&out).unwrap();
}

fn recv(sock: &mut TcpStream, buf: &mut BytesMut) -> Pdu {
    loop {
        if let Some(p) = Pdu::decode_from(buf, Digests::default(), 1 << 20).unwrap() {
            return p;
        }
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).unwrap();
        assert!(n > 0, "the target closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Logs in to `iqn` and WRITEs 4 KiB to LUN 0 (command, R2T, data) after a TEST UNIT READY;
/// does not wait for the WRITE's answer (on a frozen filesystem it stays in the store).
fn stuck_write(portal: SocketAddr, iqn: &str) -> TcpStream {
    let mut sock = TcpStream::connect(portal).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let keys = [
        ("InitiatorName", "iqn.2026-11.dev.spindle:busy-test"),
        ("SessionType", "Normal"),
        ("TargetName", iqn),
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("InitialR2T", "Yes"),
        ("ImmediateData", "No"),
        ("MaxRecvDataSegmentLength", "262144"),
        ("MaxBurstLength", "262144"),
        ("FirstBurstLength", "65536"),
        ("MaxOutstandingR2T", "1"),
        ("ErrorRecoveryLevel", "0"),
        ("MaxConnections", "1"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "0"),
        ("IFMarker", "No"),
        ("OFMarker", "No"),
    ];
    send(
        &mut sock,
        Pdu::LoginRequest(LoginRequest {
            transit: true,
            cont: false,
            csg: Stage::Operational,
            nsg: Stage::FullFeature,
            version_max: 0,
            version_min: 0,
            isid: [0x80, 0x17, 0, 0, 0, 1],
            tsih: 0,
            itt: 1,
            cid: 0,
            cmd_sn: 1,
            exp_stat_sn: 0,
            data: text::encode(&keys),
        }),
    );
    let mut buf = BytesMut::new();
    let Pdu::LoginResponse(r) = recv(&mut sock, &mut buf) else {
        panic!("no login response");
    };
    assert_eq!((r.status, r.nsg), (0, Stage::FullFeature), "login failed");
    let command = |itt: u32, cmd_sn: u32, cdb: &[u8], write_len: u32| {
        Pdu::ScsiCommand(ScsiCommand {
            immediate: false,
            final_: true,
            read: false,
            write: write_len > 0,
            attr: TaskAttr::Simple,
            lun: 0,
            itt,
            expected_data_len: write_len,
            cmd_sn,
            exp_stat_sn: r.sns.stat_sn.wrapping_add(cmd_sn),
            cdb: Bytes::copy_from_slice(cdb),
            bidi_read_len: None,
            data: Bytes::new(),
        })
    };
    // TEST UNIT READY takes the unit attention of a new nexus (power on / reset).
    send(&mut sock, command(2, 1, &[0u8; 6], 0));
    let Pdu::ScsiResponse(_) = recv(&mut sock, &mut buf) else {
        panic!("expected the answer to TEST UNIT READY");
    };
    // WRITE(10): LBA 0, 8 blocks of 512 bytes.
    let cdb = [0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0];
    send(&mut sock, command(3, 2, &cdb, 4096));
    let Pdu::R2t(r2t) = recv(&mut sock, &mut buf) else {
        panic!("expected an R2T");
    };
    send(
        &mut sock,
        Pdu::DataOut(DataOut {
            final_: true,
            lun: 0,
            itt: 3,
            ttt: r2t.ttt,
            exp_stat_sn: r.sns.stat_sn.wrapping_add(2),
            data_sn: 0,
            buffer_offset: 0,
            data: Bytes::from(vec![0x5a; 4096]),
        }),
    );
    sock
}
fn run(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// An ext4 filesystem on a loop device, mounted at `<data dir>/slow`; frozen on demand (every
/// write to it then waits until it is thawed). Thawed, unmounted and detached when dropped.
struct FreezableFs {
    mnt: PathBuf,
    dev: String,
    _img: tempfile::TempDir,
}

impl FreezableFs {
    fn mount(data_dir: &Path) -> Option<Self> {
        let img_dir = tempfile::tempdir().ok()?;
        let img = img_dir.path().join("fs.img");
        std::fs::File::create(&img).ok()?.set_len(64 << 20).ok()?;
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img))?;
        let dev = run(Command::new("losetup").args(["-f", "--show"]).arg(&img))?;
        let mnt = data_dir.join("slow");
        std::fs::create_dir_all(&mnt).ok()?;
        let fs = FreezableFs {
            mnt,
            dev,
            _img: img_dir,
        };
        run(Command::new("mount").arg(&fs.dev).arg(&fs.mnt))?;
        Some(fs)
    }

    fn freeze(&self, on: bool) {
        let flag = if on { "-f" } else { "-u" };
        run(Command::new("fsfreeze").arg(flag).arg(&self.mnt));
    }
}

impl Drop for FreezableFs {
    fn drop(&mut self) {
        self.freeze(false);
        run(Command::new("umount").arg("-l").arg(&self.mnt));
        run(Command::new("losetup").arg("-d").arg(&self.dev));
    }
}

/// A session whose WRITE is in the store (the LUN counts it in flight).
async fn busy_session(n: &Node, iqn: &str) -> TcpStream {
    let portal = n.advertised_portal().await.unwrap();
    let owned = iqn.to_owned();
    let sock = tokio::task::spawn_blocking(move || stuck_write(portal, &owned))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = n.view().await;
        let t = v.targets.iter().find(|t| t.iqn == iqn).unwrap();
        if t.luns.iter().any(|l| l.inflight > 0) {
            return sock;
        }
        assert!(
            Instant::now() < deadline,
            "the WRITE never reached the store"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn prompt<T>(what: &str, f: impl Future<Output = T>) -> T {
    let started = Instant::now();
    match tokio::time::timeout(PROMPT, f).await {
        Ok(v) => v,
        Err(_) => panic!(
            "{what} did not answer within {PROMPT:?} (waited {:?})",
            started.elapsed()
        ),
    }
}

/// GetStatus, ApplyDevice and ApplyTarget of another Target answer at once.
async fn others_answer(n: &Node, p: u16, other: &str) {
    prompt("GetStatus", n.view()).await;
    let dev = format!("{other}-disk");
    prompt(
        "ApplyDevice",
        n.apply_device(device(&dev, &format!("u{dev}"))),
    )
    .await
    .unwrap();
    let mut t = target(other, &[(0, &dev)]);
    t.port = p;
    prompt("ApplyTarget of another Target", n.apply_target(t))
        .await
        .unwrap();
}

/// Device `a` still belongs to the stopping engine: no other Target may map it.
async fn a_is_still_held(n: &Node, p: u16, name: &str) {
    let mut grab = target(name, &[(0, "a")]);
    grab.port = p;
    let e = prompt(
        "ApplyTarget on the stopping Target's Device",
        n.apply_target(grab),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&e, NodeError::Precondition { field, .. } if field == "spec.luns[0].deviceRef"),
        "{e}"
    );
}

/// A node whose Target `t` serves Device `a` from the freezable filesystem.
struct Busy {
    n: Arc<Node>,
    port: u16,
    t: TargetRecord,
    slow: FreezableFs,
    _session: TcpStream,
    _dir: tempfile::TempDir,
}

async fn busy_node() -> Option<Busy> {
    crate::engine::device_drain::set_drain_timeout(STOP);
    let dir = tempfile::tempdir().unwrap();
    // A known portal port (the usual port 0 leaves the bound one unknown to the test).
    let mut o = opts(dir.path(), false);
    let free = std::net::TcpListener::bind((o.engine.listen.ip(), 0)).unwrap();
    o.engine.listen.set_port(free.local_addr().unwrap().port());
    drop(free);
    let Some(slow) = FreezableFs::mount(dir.path()) else {
        eprintln!("cannot mount a loop-backed ext4 here (needs root): skipped");
        return None;
    };
    let n = Arc::new(Node::start(o).await.unwrap().0);
    let p = port(&n).await;
    let mut a = device("a", "ua");
    a.store.source = crate::store::StoreSource::File {
        path: "slow/a.img".into(),
        size_bytes: 1 << 20,
    };
    n.apply_device(a).await.unwrap();
    let mut t = target("t", &[(0, "a")]);
    t.port = p;
    n.apply_target(t.clone()).await.unwrap();
    // Every write to a's file now waits; a session's WRITE keeps the Target busy.
    slow.freeze(true);
    let session = busy_session(&n, &t.iqn).await;
    Some(Busy {
        n,
        port: p,
        t,
        slow,
        _session: session,
        _dir: dir,
    })
}

#[tokio::test]
async fn calls_answer_while_a_busy_target_restarts_for_a_new_iqn() {
    let Some(b) = busy_node().await else { return };
    let n = &b.n;
    let mut renamed = b.t.clone();
    renamed.id.generation = 2;
    renamed.iqn = "iqn.2026-11.dev.spindle:ns.t-renamed".into();
    let began = Instant::now();
    let restart = tokio::spawn({
        let (n, r) = (Arc::clone(n), renamed.clone());
        async move { n.apply_target(r).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    others_answer(n, b.port, "o1").await;
    a_is_still_held(n, b.port, "grab").await;
    let (_, view) = restart.await.unwrap().unwrap();
    assert_eq!(view.iqn, renamed.iqn);
    assert_eq!(view.luns.len(), 1, "served again on its new IQN");
    assert!(
        began.elapsed() >= STOP - Duration::from_millis(500),
        "the restart waited for the old engine ({:?})",
        began.elapsed()
    );
    b.slow.freeze(false);
    n.shutdown().await.unwrap();
}

#[tokio::test]
async fn calls_answer_while_a_busy_target_is_removed_and_its_device_waits() {
    let Some(b) = busy_node().await else { return };
    let n = &b.n;
    let began = Instant::now();
    let remove = tokio::spawn({
        let n = Arc::clone(n);
        async move { n.remove_target(&id("t", "uid-t", 1)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    others_answer(n, b.port, "o2").await;
    a_is_still_held(n, b.port, "grab").await;
    // A drain of its Device waits for the stop: the old engine may still write to it.
    n.drain_device(&id("a", "ua", 1)).await.unwrap();
    assert!(
        began.elapsed() >= STOP - Duration::from_millis(500),
        "the drain waited for the old engine ({:?})",
        began.elapsed()
    );
    assert_eq!(remove.await.unwrap().unwrap(), (true, 1));
    b.slow.freeze(false);
    n.shutdown().await.unwrap();
}
