//! A Target's QoS limits on its command path: before a command that reads or writes the medium
//! is admitted it waits here, on a timer, until its direction's buckets allow it. Waiters of a
//! direction queue in arrival order and only the first one sleeps. An unlimited direction
//! costs one flag read.

use std::cell::{Cell, RefCell};
use std::time::Instant;

use prometheus::Counter;
use tokio::sync::{Mutex, Notify};

use super::token_bucket::{DirBuckets, DirLimits, QosLimits};
use crate::scsi::Decoded;
use crate::scsi::command::Command;
use crate::scsi::opcodes::Dir;

/// One direction's buckets and waiting line.
struct Direction {
    limited: Cell<bool>,
    buckets: RefCell<DirBuckets>,
    /// Fair (FIFO) lock: its holder is the one command that waits on the timer.
    line: Mutex<()>,
    /// Wakes the sleeping command when the limits change.
    changed: Notify,
    throttled: Counter,
}

impl Direction {
    fn new(target: &str, direction: &str, limits: DirLimits, burst: u32) -> Self {
        Direction {
            limited: Cell::new(limits.is_limited()),
            buckets: RefCell::new(DirBuckets::new(limits, burst, Instant::now())),
            line: Mutex::new(()),
            changed: Notify::new(),
            throttled: crate::metrics::get()
                .qos_throttled_seconds
                .with_label_values(&[target, direction]),
        }
    }

    async fn admit(&self, bytes: u64) {
        if !self.limited.get() {
            return;
        }
        let _turn = self.line.lock().await;
        let mut since = None;
        loop {
            let now = Instant::now();
            let wait = self.buckets.borrow_mut().wait(now);
            if wait.is_zero() {
                break;
            }
            since.get_or_insert(now);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.changed.notified() => {}
            }
        }
        let now = Instant::now();
        self.buckets.borrow_mut().take(bytes, now);
        if let Some(s) = since {
            self.throttled.inc_by((now - s).as_secs_f64());
        }
    }

    fn set(&self, limits: DirLimits, burst: u32) {
        self.buckets.borrow_mut().set(limits, burst, Instant::now());
        self.limited.set(limits.is_limited());
        self.changed.notify_waiters();
    }
}

/// A Target's limits, read and write apart.
pub struct Throttle {
    limits: Cell<QosLimits>,
    read: Direction,
    write: Direction,
}

impl Throttle {
    pub fn new(target: &str, limits: QosLimits) -> Self {
        let burst = limits.burst_seconds;
        Throttle {
            limits: Cell::new(limits),
            read: Direction::new(target, "read", limits.read, burst),
            write: Direction::new(target, "write", limits.write, burst),
        }
    }

    /// Whether `command` must go through [`Throttle::admit`]: it moves medium data in a
    /// direction that has limits.
    pub fn holds(&self, command: &Decoded) -> bool {
        command.medium_io()
            && match command.dir() {
                Dir::In => self.read.limited.get(),
                Dir::Out => self.write.limited.get(),
                Dir::None => false,
            }
    }

    /// Waits until `command` (on a unit of `block_size`) may be admitted. Commands that do not
    /// move medium data pass at once.
    pub async fn admit(&self, command: &Decoded, block_size: u32) {
        if !command.medium_io() {
            return;
        }
        match command.dir() {
            Dir::In => self.read.admit(read_bytes(command, block_size)).await,
            Dir::Out => {
                let bytes = command.data_out_len(block_size).unwrap_or(0);
                self.write.admit(bytes.into()).await;
            }
            Dir::None => {}
        }
    }

    /// New limits, applied at once: the command waiting in each direction re-reckons its wait.
    pub fn set(&self, limits: QosLimits) {
        if limits == self.limits.get() {
            return;
        }
        self.limits.set(limits);
        self.read.set(limits.read, limits.burst_seconds);
        self.write.set(limits.write, limits.burst_seconds);
    }

    /// The limits in force.
    pub fn limits(&self) -> QosLimits {
        self.limits.get()
    }
}

fn read_bytes(command: &Decoded, block_size: u32) -> u64 {
    match &command.command {
        Ok(Command::Read(rw)) => u64::from(rw.blocks) * u64::from(block_size),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::target_state::tests::on_ring;
    use std::time::Duration;

    fn read10(blocks: u16) -> Decoded {
        let mut c = [0u8; 10];
        c[0] = 0x28;
        c[7..9].copy_from_slice(&blocks.to_be_bytes());
        Decoded::new(&c, false)
    }

    fn iops(read: Option<u64>, write: Option<u64>) -> QosLimits {
        QosLimits {
            read: DirLimits {
                iops: read,
                bytes_per_second: None,
            },
            write: DirLimits {
                iops: write,
                bytes_per_second: None,
            },
            burst_seconds: 0,
        }
    }

    #[test]
    fn reads_wait_on_the_timer_and_a_change_wakes_the_waiter() {
        on_ring(async {
            let t = std::rc::Rc::new(Throttle::new("ns/throttle-test", iops(Some(2), None)));
            let cmd = read10(8);
            let start = Instant::now();
            t.admit(&cmd, 512).await;
            t.admit(&cmd, 512).await;
            let paced = start.elapsed();
            // The bucket held 50 ms of rate (0.1 command): the second waits 0.45 s.
            assert!(paced >= Duration::from_millis(440), "{paced:?}");
            // A waiter at 2/s is released as soon as the limit is lifted.
            let t2 = t.clone();
            let waiter = crate::ring::spawn(async move {
                let s = Instant::now();
                t2.admit(&read10(8), 512).await;
                s.elapsed()
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            t.set(iops(None, None));
            let waited = waiter.await.unwrap();
            assert!(waited < Duration::from_millis(300), "{waited:?}");
            let text = crate::metrics::render();
            assert!(
                text.contains(
                    r#"spindle_qos_throttled_seconds_total{direction="read",target="ns/throttle-test"}"#
                ),
                "{text}"
            );
        });
    }
}
