//! An agent with more Devices than open files: it serves whole Targets up to its limit, refuses
//! the rest, and keeps descriptors free for sessions. Its own test binary, because it lowers
//! the process's RLIMIT_NOFILE.

use std::net::SocketAddr;
use std::path::Path;

use spindle_agent::engine::EngineOptions;
use spindle_agent::node::{Node, NodeOptions};
use spindle_agent::standalone;
use spindle_agent::store::fdlimit;

const DEVICES: usize = 80;

fn manifest(i: usize) -> String {
    format!(
        "apiVersion: spindle.dev/v1alpha1
kind: Device
metadata: {{name: d{i}, namespace: default}}
spec:
  nodeName: local
  source: {{file: {{path: d{i}.img, sizeBytes: 1048576}}}}
---
apiVersion: spindle.dev/v1alpha1
kind: Target
metadata: {{name: d{i}, namespace: default}}
spec:
  iqn: iqn.2026-11.dev.spindle:default.d{i}
  luns: [{{lun: 0, deviceRef: d{i}}}]
  acl: {{allowAll: true}}
"
    )
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn set_limit(n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit reads the struct we own.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

async fn serve(manifests: &Path, data: &Path) -> (Node, usize) {
    let opts = NodeOptions {
        engine: EngineOptions {
            listen: SocketAddr::from(([127, 0, 14, 9], 3260)),
            advertise: None,
            keepalive: std::time::Duration::from_secs(15),
        },
        data_dir: data.to_path_buf(),
        allow_block: Vec::new(),
        persist: false,
        node_name: String::new(),
    };
    let (node, _) = Node::start(opts).await.unwrap();
    let port = node.advertised_portal().await.unwrap().port();
    let m = standalone::manifest::load_dir(manifests).unwrap();
    let (plan, problems) = standalone::plan::plan(&m, port);
    assert!(problems.is_empty(), "{problems:?}");
    let served = standalone::serve(&node, plan).await;
    (node, served)
}

#[tokio::test(flavor = "current_thread")]
async fn more_devices_than_descriptors_serve_what_fits_and_keep_the_reserve() {
    let dir = tempfile::tempdir().unwrap();
    let (manifests, data) = (dir.path().join("m"), dir.path().join("data"));
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..DEVICES {
        std::fs::write(manifests.join(format!("d{i}.yaml")), manifest(i)).unwrap();
    }
    // Room for about half the Devices beside the reserve.
    let before = open_descriptors();
    let limit = (before + 40 + 32) as u64;
    set_limit(limit);
    let (node, served) = serve(&manifests, &data).await;
    // A served Device costs one descriptor: its Target's ring shares the node's.
    let used = open_descriptors() - before;
    assert!(
        used <= served + 16,
        "{used} descriptors for {served} served Devices (rings and the portal need a few)"
    );
    assert!(
        served > 0,
        "no Target served: the Devices took every descriptor before any Target"
    );
    assert!(
        served < DEVICES,
        "all {DEVICES} served under a limit of {limit}"
    );
    // Devices stop at the reserve; the rings and the portal opened a few beside them.
    let free = limit - open_descriptors() as u64;
    assert!(
        free >= fdlimit::reserve(limit) / 2,
        "only {free} descriptors left under a limit of {limit}: the reserve is eaten"
    );
    // The portal still accepts: sessions have descriptors of their own.
    let portal = node.advertised_portal().await.unwrap();
    std::net::TcpStream::connect(portal).expect("the portal accepts a session");
    let view = node.view().await;
    assert_eq!(view.targets.len(), served);
}
