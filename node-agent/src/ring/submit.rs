//! Entering the kernel as soon as an I/O is queued.
//!
//! tokio-uring hands its queued submissions to the kernel only when the thread is about to
//! park, i.e. after every task that is ready has run. Under load that holds a read that was
//! queued early in a round until the round ends. tokio-uring offers no call to submit earlier,
//! so this module learns the descriptor of each thread's ring when the ring is made and calls
//! `io_uring_enter` on it directly. The kernel consumes whatever the submission queue holds up
//! to its published tail, which is exactly what tokio-uring's own later submit would have
//! done; nothing else of the ring is touched. If the descriptor cannot be learnt, submissions
//! simply wait for the park as before.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::future::Future;
use std::os::fd::RawFd;
use std::sync::Mutex;

thread_local! {
    /// This thread's ring, once known.
    static RING: Cell<Option<RawFd>> = const { Cell::new(None) };
}

/// Rings are made one at a time, so the one new io_uring descriptor is this thread's.
static MAKING: Mutex<()> = Mutex::new(());

/// The io_uring descriptors of this process.
fn ring_fds() -> BTreeSet<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return BTreeSet::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let fd: RawFd = e.file_name().to_str()?.parse().ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            (link.as_os_str() == "anon_inode:[io_uring]").then_some(fd)
        })
        .collect()
}

/// Makes this thread's ring with `make` and remembers its descriptor.
pub(super) fn made_here<T>(make: impl FnOnce() -> T) -> T {
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|p| p.into_inner());
    let before = ring_fds();
    let made = make();
    let new: Vec<RawFd> = ring_fds().difference(&before).copied().collect();
    RING.with(|r| r.set((new.len() == 1).then(|| new[0])));
    made
}

/// This thread's ring is gone.
pub(super) fn forget() {
    RING.with(|r| r.set(None));
}

/// Hands every queued submission of this thread's ring to the kernel now.
pub(super) fn now() {
    let Some(fd) = RING.with(|r| r.get()) else {
        return;
    };
    // SAFETY: io_uring_enter on a ring this thread owns, submitting only (no wait, no
    // signal mask); the kernel reads nothing but the submission queue it shares with us.
    unsafe {
        libc::syscall(
            libc::SYS_io_uring_enter,
            fd,
            u32::MAX,
            0u32,
            0u32,
            std::ptr::null::<libc::c_void>(),
            0usize,
        );
    }
}

/// Awaits `op`, entering the kernel right after its first poll (which queues it).
pub(super) async fn eager<F: Future>(op: F) -> F::Output {
    let mut op = std::pin::pin!(op);
    let mut queued = false;
    std::future::poll_fn(|cx| {
        let p = op.as_mut().poll(cx);
        if !queued && p.is_pending() {
            queued = true;
            now();
        }
        p
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_learns_its_own_ring() {
        let fds: Vec<Option<RawFd>> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let rt = super::super::Runtime::new().unwrap();
                    let fd = RING.with(|r| r.get());
                    drop(rt);
                    fd
                })
            })
            .map(|t| t.join().unwrap())
            .collect();
        assert!(fds.iter().all(Option::is_some), "{fds:?}");
    }
}
