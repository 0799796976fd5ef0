//! Where a command's time goes: the clock each SCSI command carries from the socket read that
//! brought it to the socket write that answered it, and the `spindle_stage_seconds{stage}`
//! histograms it feeds.
//!
//! A command's moments, in order: its PDU was **received** (the socket read that completed it
//! returned), **decoded** (the session handed the command out), its store I/O **submitted**
//! (handed to the ring) and **completed**, its response **queued** (encoded, in the
//! connection's outbox) and **written** (the write that carried it returned). The stages are
//! the intervals between them; commands without store I/O (INQUIRY, REPORT LUNS, …) count in
//! `decode`, `send` and `total` only.
//!
//! The cost is a handful of clock reads and histogram updates per command (no allocation
//! beyond one small shared record), so the metric stays on.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus::Histogram;

/// One interval of a command's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Received → decoded: cutting PDUs out of the read buffer, the session's checks (and
    /// waiting behind the PDUs that arrived in the same read).
    Decode,
    /// Decoded → I/O submitted: starting the command's task, the logical unit's admission.
    Dispatch,
    /// I/O submitted → completed: the ring and the disk.
    Io,
    /// I/O completed → response queued: waking the command, building and encoding the answer.
    Complete,
    /// Response queued → written: waiting for the connection's writer and its socket write.
    Send,
    /// Received → written.
    Total,
}

impl Stage {
    /// Every stage, in the order of a command's life.
    pub const ALL: [Stage; 6] = [
        Stage::Decode,
        Stage::Dispatch,
        Stage::Io,
        Stage::Complete,
        Stage::Send,
        Stage::Total,
    ];

    /// The value of the `stage` label.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Dispatch => "dispatch",
            Stage::Io => "io",
            Stage::Complete => "complete",
            Stage::Send => "send",
            Stage::Total => "total",
        }
    }
}

/// The moments of one command, filled in as it goes.
#[derive(Debug)]
pub struct CommandClock {
    received: Instant,
    decoded: Instant,
    submitted: Cell<Option<Instant>>,
    completed: Cell<Option<Instant>>,
    queued: Cell<Option<Instant>>,
}

impl CommandClock {
    /// A command whose PDU was received at `received` and handed out at `decoded`.
    pub fn new(received: Instant, decoded: Instant) -> Self {
        CommandClock {
            received,
            decoded,
            submitted: Cell::new(None),
            completed: Cell::new(None),
            queued: Cell::new(None),
        }
    }

    /// Store I/O handed to the ring (the first of a command's I/Os counts).
    pub fn io_submitted(&self, at: Instant) {
        if self.submitted.get().is_none() {
            self.submitted.set(Some(at));
        }
    }

    /// Store I/O completed (the last of a command's I/Os counts).
    pub fn io_completed(&self, at: Instant) {
        self.completed.set(Some(at));
    }

    /// The response is in the connection's outbox.
    pub fn queued(&self, at: Instant) {
        self.queued.set(Some(at));
    }

    /// The stages of this command if its response was written at `written`. A command never
    /// queued has no stages.
    pub fn stages(&self, written: Instant) -> Vec<(Stage, Duration)> {
        let Some(queued) = self.queued.get() else {
            return Vec::new();
        };
        let d = |from: Instant, to: Instant| to.saturating_duration_since(from);
        let mut out = Vec::with_capacity(Stage::ALL.len());
        out.push((Stage::Decode, d(self.received, self.decoded)));
        if let (Some(s), Some(c)) = (self.submitted.get(), self.completed.get()) {
            out.push((Stage::Dispatch, d(self.decoded, s)));
            out.push((Stage::Io, d(s, c)));
            out.push((Stage::Complete, d(c, queued)));
        }
        out.push((Stage::Send, d(queued, written)));
        out.push((Stage::Total, d(self.received, written)));
        out
    }

    /// Observes this command's stages (response written at `written`) in the histograms.
    pub fn record(&self, written: Instant) {
        let h = &*HANDLES;
        for (stage, took) in self.stages(written) {
            h[stage as usize].observe(took.as_secs_f64());
        }
    }
}

/// The histogram of each stage, looked up once.
static HANDLES: LazyLock<[Histogram; 6]> = LazyLock::new(|| {
    let m = super::get();
    Stage::ALL.map(|s| m.stage_seconds.with_label_values(&[s.label()]))
});

tokio::task_local! {
    static CLOCK: Rc<CommandClock>;
}

/// Runs a command's execution with its clock, so the store can mark its I/O
/// ([`io_submitted`], [`io_completed`]) without the clock passing through the SCSI layer.
pub async fn timed<F: Future>(clock: Rc<CommandClock>, fut: F) -> F::Output {
    CLOCK.scope(clock, fut).await
}

/// Marks the current command's store I/O as handed to the ring (no-op outside [`timed`]).
pub fn io_submitted() {
    let _ = CLOCK.try_with(|c| c.io_submitted(Instant::now()));
}

/// Marks the current command's store I/O as completed (no-op outside [`timed`]).
pub fn io_completed() {
    let _ = CLOCK.try_with(|c| c.io_completed(Instant::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, us: u64) -> Instant {
        base + Duration::from_micros(us)
    }

    fn us(stages: &[(Stage, Duration)], s: Stage) -> Option<u128> {
        stages
            .iter()
            .find(|(x, _)| *x == s)
            .map(|(_, d)| d.as_micros())
    }

    #[test]
    fn a_read_is_cut_into_consecutive_stages_that_add_up() {
        let t = Instant::now();
        let c = CommandClock::new(at(t, 0), at(t, 3));
        c.io_submitted(at(t, 10));
        c.io_submitted(at(t, 12)); // a second I/O of the same command: the first counts
        c.io_completed(at(t, 60));
        c.io_completed(at(t, 70)); // the last completion counts
        c.queued(at(t, 75));
        let s = c.stages(at(t, 90));
        assert_eq!(us(&s, Stage::Decode), Some(3));
        assert_eq!(us(&s, Stage::Dispatch), Some(7));
        assert_eq!(us(&s, Stage::Io), Some(60));
        assert_eq!(us(&s, Stage::Complete), Some(5));
        assert_eq!(us(&s, Stage::Send), Some(15));
        assert_eq!(us(&s, Stage::Total), Some(90));
        let parts: u128 = s
            .iter()
            .filter(|(x, _)| *x != Stage::Total)
            .map(|(_, d)| d.as_micros())
            .sum();
        assert_eq!(parts, 90);
    }

    #[test]
    fn a_command_without_io_has_no_io_stages_and_an_unanswered_one_none() {
        let t = Instant::now();
        let c = CommandClock::new(at(t, 0), at(t, 2));
        assert!(c.stages(at(t, 50)).is_empty());
        c.queued(at(t, 20));
        let s = c.stages(at(t, 50));
        let names: Vec<_> = s.iter().map(|(x, _)| x.label()).collect();
        assert_eq!(names, ["decode", "send", "total"]);
        assert_eq!(us(&s, Stage::Total), Some(50));
    }

    #[test]
    fn the_store_marks_the_clock_of_the_command_it_runs_in_only() {
        let c = Rc::new(CommandClock::new(Instant::now(), Instant::now()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        io_submitted(); // outside any command: nothing to mark, no panic
        rt.block_on(timed(c.clone(), async {
            io_submitted();
            tokio::task::yield_now().await;
            io_completed();
        }));
        assert!(c.submitted.get().is_some());
        assert!(c.completed.get() >= c.submitted.get());
        c.queued(Instant::now());
        let before = HANDLES[Stage::Io as usize].get_sample_count();
        c.record(Instant::now());
        assert_eq!(HANDLES[Stage::Io as usize].get_sample_count(), before + 1);
        let text = super::super::render();
        assert!(
            text.contains(r#"spindle_stage_seconds_count{stage="io"}"#),
            "{text}"
        );
    }
}
