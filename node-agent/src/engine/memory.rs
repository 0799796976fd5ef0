//! The engine's side of the write memory bound (`iscsi::session::WriteMemory`): waking a
//! session that waits for memory when another gives some back, and returning freed memory
//! to the system.

use std::rc::Rc;
use std::time::Duration;

use super::sessions::Conn;
use crate::iscsi::session::WriteMemory;

/// How often a waiting session looks again even without a wake-up (memory given back on
/// another thread between its check and its wait is never lost, but a timer bounds the
/// delay whatever happens).
const RECHECK: Duration = Duration::from_millis(200);

/// Runs alongside a connection: whenever its session waits for write memory, waits until
/// some is given back and lets the session use it (R2Ts, a reopened CmdSN window).
pub(super) async fn serve(conn: Rc<Conn>) {
    let pool = WriteMemory::global();
    loop {
        let wanted = conn.memory_wanted.notified();
        if !conn.session.borrow().wants_memory() {
            wanted.await;
            continue;
        }
        let freed = pool.freed();
        tokio::select! {
            _ = freed => {}
            _ = tokio::time::sleep(RECHECK) => {}
        }
        let mut out = Vec::new();
        conn.session.borrow_mut().on_memory(&mut out);
        if !conn.run(out) {
            conn.outbox.close();
            return;
        }
    }
}

/// Configures the process's allocator so that large buffers (Data-Out of big writes) are
/// mapped and unmapped on their own: their memory goes back to the system when freed instead
/// of staying in the heap (glibc otherwise raises its mmap threshold after the first free).
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; called before the data path runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
    }
}

/// Hands freed heap memory back to the system (after a session ended).
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
