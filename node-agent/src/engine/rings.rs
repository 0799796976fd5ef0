//! The rings targets run on: one thread with one io_uring runtime per core, made on first use.
//! Each target is a task on one of them (its commands, fence and drain stay its own), so the
//! agent's threads stay at the core count however many targets it serves.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use crate::ring;

/// Work handed to a ring thread: `Ok` runs on the thread (inside its ring runtime, so it may
/// `ring::spawn`); `Err` says why that thread has no ring.
pub type Job = Box<dyn FnOnce(Result<(), String>) + Send>;

struct RingThreads {
    rings: Vec<mpsc::UnboundedSender<Job>>,
    next: AtomicUsize,
}

fn ring_threads() -> &'static RingThreads {
    static RING_THREADS: OnceLock<RingThreads> = OnceLock::new();
    RING_THREADS.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let rings = (0..n).filter_map(|i| start_ring(i).ok()).collect();
        RingThreads {
            rings,
            next: AtomicUsize::new(0),
        }
    })
}

fn start_ring(i: usize) -> std::io::Result<mpsc::UnboundedSender<Job>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    std::thread::Builder::new()
        .name(format!("ring-{i}"))
        .spawn(move || match ring::Runtime::new() {
            Ok(rt) => rt.block_on(async move {
                while let Some(job) = rx.recv().await {
                    job(Ok(()));
                }
            }),
            Err(e) => {
                tracing::error!("ring thread {i}: {e}");
                while let Some(job) = rx.blocking_recv() {
                    job(Err(e.to_string()));
                }
            }
        })?;
    Ok(tx)
}

/// Runs `job` on the next ring thread (round robin).
pub fn run(job: Job) -> std::io::Result<()> {
    let p = ring_threads();
    if p.rings.is_empty() {
        return Err(std::io::Error::other("no ring thread could be started"));
    }
    let i = p.next.fetch_add(1, Ordering::Relaxed) % p.rings.len();
    p.rings[i]
        .send(job)
        .map_err(|_| std::io::Error::other(format!("ring thread {i} is gone")))
}

/// How many ring threads serve targets.
pub fn threads() -> usize {
    ring_threads().rings.len()
}
