//! Token buckets of a Target's QoS limits, pure (the caller passes the time, so tests use a
//! fake clock).
//!
//! A bucket fills at `rate` tokens a second up to `rate × burst seconds` (at least 50 ms of
//! rate, see [`SLACK_SECONDS`]). A command may start
//! once the bucket is not in debt and then takes its whole cost, even past zero: a command
//! bigger than the bucket still goes through, and the debt it leaves holds the next one back
//! until it is repaid. Over time the rate is held exactly; an idle Target may run one burst
//! above it.

use std::time::{Duration, Instant};

/// The least a bucket holds, in seconds of its rate, whatever the burst: a timer fires a
/// little late (a millisecond or more on a busy ring), and a bucket that could hold nothing
/// would lose that time on every command (200 IOPS paced by a 0-second bucket ran at 161).
const SLACK_SECONDS: f64 = 0.05;

/// Limits of one direction (reads or writes); `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirLimits {
    pub iops: Option<u64>,
    pub bytes_per_second: Option<u64>,
}

impl DirLimits {
    pub fn is_limited(&self) -> bool {
        self.iops.is_some() || self.bytes_per_second.is_some()
    }
}

/// A Target's limits as the engine enforces them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QosLimits {
    pub read: DirLimits,
    pub write: DirLimits,
    /// Seconds of each limit an idle Target may use at once.
    pub burst_seconds: u32,
}

/// One bucket.
#[derive(Clone, Debug)]
pub struct Bucket {
    rate: f64,
    capacity: f64,
    /// Negative: in debt.
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: u64, burst_seconds: u32, now: Instant) -> Self {
        let capacity = capacity(rate as f64, burst_seconds);
        Bucket {
            rate: rate as f64,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity);
        self.last = now;
    }

    /// How long until a command may start (zero: now).
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// A command that may start takes its cost.
    pub fn take(&mut self, cost: u64, now: Instant) {
        self.refill(now);
        self.tokens -= cost as f64;
    }

    /// New rate and burst from now on: what was earned so far at the old rate is kept (up to
    /// the new capacity), and so is a debt.
    pub fn set(&mut self, rate: u64, burst_seconds: u32, now: Instant) {
        self.refill(now);
        self.rate = rate as f64;
        self.capacity = capacity(self.rate, burst_seconds);
        self.tokens = self.tokens.min(self.capacity);
    }
}

fn capacity(rate: f64, burst_seconds: u32) -> f64 {
    rate * f64::from(burst_seconds).max(SLACK_SECONDS)
}

/// The buckets of one direction: commands and bytes.
#[derive(Clone, Debug, Default)]
pub struct DirBuckets {
    iops: Option<Bucket>,
    bytes: Option<Bucket>,
}

impl DirBuckets {
    pub fn new(limits: DirLimits, burst_seconds: u32, now: Instant) -> Self {
        let mut b = DirBuckets::default();
        b.set(limits, burst_seconds, now);
        b
    }

    /// How long until the next command may start (the longer of both buckets' waits).
    pub fn wait(&mut self, now: Instant) -> Duration {
        let a = self.iops.as_mut().map_or(Duration::ZERO, |b| b.wait(now));
        let b = self.bytes.as_mut().map_or(Duration::ZERO, |b| b.wait(now));
        a.max(b)
    }

    /// A command of `bytes` starts.
    pub fn take(&mut self, bytes: u64, now: Instant) {
        if let Some(b) = &mut self.iops {
            b.take(1, now);
        }
        if let Some(b) = &mut self.bytes {
            b.take(bytes, now);
        }
    }

    /// New limits, live: a bucket kept keeps its tokens, a new one starts full.
    pub fn set(&mut self, limits: DirLimits, burst_seconds: u32, now: Instant) {
        let one = |slot: &mut Option<Bucket>, rate: Option<u64>| match (slot.as_mut(), rate) {
            (_, None) => *slot = None,
            (Some(b), Some(r)) => b.set(r, burst_seconds, now),
            (None, Some(r)) => *slot = Some(Bucket::new(r, burst_seconds, now)),
        };
        one(&mut self.iops, limits.iops);
        one(&mut self.bytes, limits.bytes_per_second);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs commands of `bytes` back to back for `secs` on a fake clock, each starting as soon
    /// as the buckets allow; returns how many started.
    fn run(b: &mut DirBuckets, clock: &mut Instant, bytes: u64, secs: f64) -> u64 {
        let end = *clock + Duration::from_secs_f64(secs);
        let mut n = 0;
        loop {
            *clock += b.wait(*clock);
            if *clock >= end {
                return n;
            }
            b.take(bytes, *clock);
            n += 1;
        }
    }

    fn limits(iops: Option<u64>, bps: Option<u64>) -> DirLimits {
        DirLimits {
            iops,
            bytes_per_second: bps,
        }
    }

    #[test]
    fn the_rate_is_held_after_the_burst() {
        let mut t = Instant::now();
        let mut b = DirBuckets::new(limits(Some(100), None), 2, t);
        // The burst: 200 commands at once, then paced.
        assert_eq!(run(&mut b, &mut t, 4096, 0.0001), 201);
        let n = run(&mut b, &mut t, 4096, 10.0);
        assert!((999..=1001).contains(&n), "{n} commands in 10 s at 100/s");
    }

    #[test]
    fn no_burst_paces_every_command() {
        let mut t = Instant::now();
        let mut b = DirBuckets::new(limits(Some(10), None), 0, t);
        assert_eq!(
            b.wait(t),
            Duration::ZERO,
            "the first command starts at once"
        );
        b.take(1, t);
        // The bucket held 50 ms of rate (0.5 commands): the next waits 50 ms, then 100 ms each.
        let w = b.wait(t);
        assert!((w.as_secs_f64() - 0.05).abs() < 1e-9, "{w:?}");
        let n = run(&mut b, &mut t, 1, 1.0);
        assert_eq!(n, 10, "at 0.05 s, 0.15 s, ... 0.95 s");
    }

    #[test]
    fn a_late_timer_loses_no_rate() {
        let mut t = Instant::now();
        let mut b = DirBuckets::new(limits(Some(200), None), 0, t);
        // Each wake 1.2 ms late, as a busy ring's timer: 200 a second all the same.
        let end = t + Duration::from_secs(10);
        let mut n = 0;
        while t < end {
            let w = b.wait(t);
            if !w.is_zero() {
                t += w + Duration::from_micros(1200);
                continue;
            }
            b.take(1, t);
            n += 1;
        }
        assert!((1995..=2011).contains(&n), "{n} in 10 s at 200/s");
    }

    #[test]
    fn a_command_bigger_than_the_bucket_goes_through_and_holds_the_next_back() {
        let mut t = Instant::now();
        // 64 KiB/s with a one-second bucket; a 1 MiB command.
        let mut b = DirBuckets::new(limits(None, Some(65536)), 1, t);
        assert_eq!(b.wait(t), Duration::ZERO);
        b.take(1 << 20, t);
        let w = b.wait(t).as_secs_f64();
        assert!((w - 15.0).abs() < 1e-6, "repays 15 s of debt: {w}");
        // Over a long run the byte rate holds with big commands too.
        let n = run(&mut b, &mut t, 1 << 20, 160.0);
        assert_eq!(n, 10, "{n} MiB in 160 s at 64 KiB/s");
    }

    #[test]
    fn the_tighter_of_iops_and_bytes_wins() {
        let mut t = Instant::now();
        let mut b = DirBuckets::new(limits(Some(1000), Some(409_600)), 0, t);
        // 4 KiB commands: the byte limit (100/s) binds, not the 1000 IOPS (plus what the full
        // bucket holds: 50 ms, 5 commands).
        let n = run(&mut b, &mut t, 4096, 10.0);
        assert!((1000..=1006).contains(&n), "{n}");
        // 64-byte commands: the IOPS limit binds (1000 a second after the 50 its bucket held).
        let n = run(&mut b, &mut t, 64, 1.0);
        assert!((1040..=1052).contains(&n), "{n}");
    }

    #[test]
    fn reads_and_writes_are_apart() {
        let mut t = Instant::now();
        let mut read = DirBuckets::new(limits(Some(10), None), 0, t);
        let mut write = DirBuckets::new(limits(None, None), 0, t);
        for _ in 0..5 {
            read.take(1, t);
        }
        assert!(read.wait(t) > Duration::ZERO);
        assert_eq!(
            write.wait(t),
            Duration::ZERO,
            "writes unlimited whatever reads do"
        );
        write.take(1 << 30, t);
        assert_eq!(write.wait(t), Duration::ZERO);
        t += Duration::from_millis(500);
        assert_eq!(
            read.wait(t),
            Duration::ZERO,
            "the read debt (4.5) is repaid in 0.45 s"
        );
    }

    #[test]
    fn limits_change_live() {
        let mut t = Instant::now();
        let mut b = DirBuckets::new(limits(Some(100), None), 0, t);
        let n = run(&mut b, &mut t, 1, 2.0);
        assert!((199..=206).contains(&n), "{n}");
        b.set(limits(Some(1000), None), 0, t);
        let n = run(&mut b, &mut t, 1, 2.0);
        assert!((1999..=2001).contains(&n), "raised: {n}");
        b.set(limits(Some(50), None), 0, t);
        let n = run(&mut b, &mut t, 1, 2.0);
        assert!((99..=101).contains(&n), "lowered: {n}");
        b.set(limits(None, None), 0, t);
        assert_eq!(b.wait(t), Duration::ZERO, "unlimited: no wait at all");
        b.take(1 << 40, t);
        assert_eq!(b.wait(t), Duration::ZERO);
    }

    #[test]
    fn a_raised_burst_does_not_grant_tokens_at_once() {
        let mut t = Instant::now();
        let mut b = DirBuckets::new(limits(Some(100), None), 0, t);
        for _ in 0..10 {
            b.take(1, t);
        }
        b.set(limits(Some(100), None), 10, t);
        assert!(b.wait(t) > Duration::ZERO, "the debt stays");
        t += Duration::from_secs(10);
        // 10 s later: 1000 tokens less the 5 owed; a command starts while any is left (≥ 0).
        assert_eq!(
            run(&mut b, &mut t, 1, 0.001),
            996,
            "then it fills to 10 s of rate"
        );
    }
}
