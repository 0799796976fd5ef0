//! The ring driver: one io_uring per ring thread, on the maintained `io-uring` crate, driven
//! from a tokio current-thread runtime. The rest of the agent goes through the small surface
//! here (a runtime per thread, spawn, files, TCP); how it works is in `driver.rs`.

use std::future::Future;
use std::io;

mod buf;
mod driver;
mod file;
mod net;

pub use buf::{ALIGN, AlignedBuf};
pub use file::File;
pub use net::{TcpListener, TcpStream};

/// Why io_uring cannot be used on this machine, with what to change.
#[derive(Debug, thiserror::Error)]
#[error(
    "io_uring is not available ({source}). Spindle's data path needs it: check that the kernel \
     is 5.11 or newer, that sysctl kernel.io_uring_disabled is 0, and that the container's \
     seccomp profile allows io_uring_setup/io_uring_enter/io_uring_register (e.g. run the \
     agent with seccompProfile: Unconfined or a profile that adds them)"
)]
pub struct RingUnavailable {
    #[source]
    source: io::Error,
}

/// Most buffers one vectored write may pass: the kernel's IOV_MAX (more is EINVAL).
pub const MAX_IOV: usize = 1024;

/// Submission queue size of each ring: enough for a full CmdSN window of several sessions.
const RING_ENTRIES: u32 = 1024;

/// One ring runtime, owned by one thread: a tokio current-thread runtime (timers, sockets)
/// with a local task set, and the thread's io_uring.
pub struct Runtime {
    local: Option<tokio::task::LocalSet>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Runtime {
    /// Creates a ring runtime on the current thread.
    pub fn new() -> Result<Self, RingUnavailable> {
        let unavailable = |source| RingUnavailable { source };
        let handle = driver::Driver::new(RING_ENTRIES).map_err(unavailable)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(driver::before_park)
            .build()
            .map_err(unavailable)?;
        let local = tokio::task::LocalSet::new();
        driver::install(handle.clone());
        {
            let _in = rt.enter();
            local.spawn_local(driver::reaper(handle));
        }
        Ok(Runtime {
            local: Some(local),
            rt: Some(rt),
        })
    }

    /// Runs `fut` to completion on this thread's ring (spawned tasks run alongside).
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let (Some(local), Some(rt)) = (&self.local, &self.rt) else {
            unreachable!("a runtime is only taken apart when dropped")
        };
        local.block_on(rt, fut)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = &self.rt {
            // Tasks go first: operations they leave in flight pass their buffers to the driver.
            let _in = rt.enter();
            drop(self.local.take());
        }
        driver::shutdown();
        drop(self.rt.take());
    }
}

/// Checks that a ring can be set up and completes a no-op, so the agent can refuse to start with
/// a clear message instead of failing on the first command.
pub fn probe() -> Result<(), RingUnavailable> {
    let rt = Runtime::new()?;
    rt.block_on(driver::no_op())
        .map_err(|source| RingUnavailable { source })
}

/// Spawns a task on the current thread's ring runtime.
///
/// # Panics
/// Outside a ring runtime (as spawning on a runtime that is not there does).
pub fn spawn<F: Future + 'static>(fut: F) -> tokio::task::JoinHandle<F::Output> {
    tokio::task::spawn_local(fut)
}
