//! The drain of a Device (the agent's side of the delete protocol) over a target's LUNs: fence,
//! wait for the commands in flight, flush; the flush at the end of a stop; the release of a
//! drained Device's LUNs.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::drain::{DrainAck, DrainEvent, DrainState, InvalidTransition};
use super::target_state::{LunSlot, TargetState};
use crate::metrics;
use crate::scsi::{self, Backend};

/// Why a drain or release could not be done.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("no LUN of this target is backed by Device {0:?}")]
    UnknownDevice(String),
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    #[error("flushing Device {device:?}: {source}")]
    Flush {
        device: String,
        #[source]
        source: std::io::Error,
    },
}

/// How long a drain waits for the commands in flight, and then for the flush.
static DRAIN_TIMEOUT_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(60);

/// Sets how long a drain may wait for its commands in flight and for its flush (each) before
/// it fails: a store that hangs cannot hold a shutdown forever.
pub fn set_drain_timeout(limit: Duration) {
    DRAIN_TIMEOUT_SECS.store(limit.as_secs().max(1), std::sync::atomic::Ordering::Relaxed);
}

/// Test hook: `SPINDLE_TEST_DRAIN_DELAY_MS` holds every drain this long once its LUNs are
/// fenced (new commands refused) and before it waits for the commands in flight and flushes,
/// so an end-to-end test can kill the agent mid-drain however fast the drain is. Unset (the
/// default), it costs nothing.
fn test_drain_hold() -> Option<Duration> {
    static HOLD: std::sync::LazyLock<Option<Duration>> = std::sync::LazyLock::new(|| {
        std::env::var("SPINDLE_TEST_DRAIN_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
    });
    *HOLD
}

/// How long a drain or a stop may wait for the commands in flight, and then for the flush.
pub fn drain_timeout() -> Duration {
    Duration::from_secs(DRAIN_TIMEOUT_SECS.load(std::sync::atomic::Ordering::Relaxed))
}

impl TargetState {
    /// Fences every LUN backed by `device`, waits until the commands accepted before the fence
    /// have finished, and flushes the store. Re-entrant: a drain already flushed reports again.
    pub async fn drain_device(&self, device: &str) -> Result<DrainAck, DrainError> {
        let start = Instant::now();
        let (mine, others): (Vec<_>, Vec<_>) =
            self.slots().into_iter().partition(|s| s.device == device);
        if mine.is_empty() {
            return Err(DrainError::UnknownDevice(device.to_string()));
        }
        let mut drained = 0;
        for s in &mine {
            if s.gate.state() == DrainState::Running {
                s.gate.apply(DrainEvent::Fence)?;
                drained += s.gate.inflight();
                tracing::info!(
                    target = %self.name, lun = s.lun, device,
                    inflight = s.gate.inflight(), "drain: LUN fenced"
                );
                // The initiator learns the LUN inventory changed through the LUNs that stay.
                for o in &others {
                    let a = scsi::sense::REPORTED_LUNS_DATA_HAS_CHANGED;
                    o.lu.establish_ua(None, a.0, a.1);
                }
            }
        }
        if let Some(d) = test_drain_hold() {
            tracing::warn!(target = %self.name, device, "test hook: drain held for {d:?}, fenced");
            tokio::time::sleep(d).await;
        }
        // A store that hangs (a dead disk, a stuck network filesystem) must not hold the
        // drain, and with it a shutdown, forever: past the deadline the drain fails.
        let limit = drain_timeout();
        let timed_out = |what: &str| DrainError::Flush {
            device: device.to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{what} did not finish within {} s", limit.as_secs()),
            ),
        };
        for s in &mine {
            let flushed = async {
                tokio::time::timeout(limit, s.gate.wait_idle())
                    .await
                    .map_err(|_| timed_out("the commands in flight"))?;
                if s.gate.state() == DrainState::Draining {
                    s.gate.apply(DrainEvent::Idle)?;
                }
                if s.gate.state() == DrainState::Released {
                    return Ok(());
                }
                tokio::time::timeout(limit, s.lu.backend().flush())
                    .await
                    .map_err(|_| timed_out("the flush"))?
                    .map_err(|source| DrainError::Flush {
                        device: device.to_string(),
                        source,
                    })?;
                s.gate.apply(DrainEvent::FlushDone)?;
                Ok::<(), DrainError>(())
            };
            if let Err(e) = flushed.await {
                if matches!(e, DrainError::Flush { .. }) {
                    // Not flushed: the LUN says so until a forced release (as the record does).
                    s.gate.apply(DrainEvent::FlushFailed)?;
                }
                return Err(e);
            }
        }
        let fenced: u64 = mine.iter().map(|s| s.gate.refused()).sum();
        let duration = start.elapsed();
        metrics::get()
            .drain_seconds
            .with_label_values(&[&self.name])
            .observe(duration.as_secs_f64());
        tracing::info!(
            target = %self.name, device, drained_commands = drained,
            ms = duration.as_millis() as u64, "drain: flushed"
        );
        Ok(DrainAck::now(
            Some(self.name.clone()),
            mine.iter().map(|s| s.lun).collect(),
            drained,
            fenced,
            duration,
        ))
    }

    /// Flushes every LUN's store without fencing anything: the end of a stop (an agent
    /// restart, a removed Target), after its sessions ended. A failed or hung flush is
    /// reported per Device.
    pub async fn flush_all(&self) -> Vec<(String, Result<Duration, DrainError>)> {
        let limit = drain_timeout();
        let mut out = Vec::new();
        for s in self.slots() {
            if s.gate.state() == DrainState::Released {
                continue;
            }
            let start = Instant::now();
            let r = match tokio::time::timeout(limit, s.lu.backend().flush()).await {
                Ok(Ok(())) => Ok(start.elapsed()),
                Ok(Err(source)) => Err(DrainError::Flush {
                    device: s.device.clone(),
                    source,
                }),
                Err(_) => Err(DrainError::Flush {
                    device: s.device.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the flush did not finish within {} s", limit.as_secs()),
                    ),
                }),
            };
            out.push((s.device.clone(), r));
        }
        out
    }

    /// Closes the stores of a drained Device and removes its LUNs. Only after a flush, unless
    /// `force` (the user accepted the loss): then the LUNs are fenced and dropped unflushed.
    pub fn release_device(&self, device: &str, force: bool) -> Result<Vec<u64>, DrainError> {
        let mine: Vec<Rc<LunSlot>> = self
            .slots()
            .into_iter()
            .filter(|s| s.device == device)
            .collect();
        if mine.is_empty() {
            return Err(DrainError::UnknownDevice(device.to_string()));
        }
        let mut fenced_now = false;
        for s in &mine {
            if force {
                fenced_now |= s.gate.state() == DrainState::Running;
                s.gate.apply(DrainEvent::ForceRelease)?;
            } else {
                s.gate.apply(DrainEvent::Release)?;
            }
        }
        let mut map = self.luns.borrow_mut();
        for s in &mine {
            map.remove(&s.lun);
        }
        drop(map);
        if fenced_now {
            self.inventory_changed();
        }
        Ok(mine.iter().map(|s| s.lun).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::target_state::tests::{on_ring, target, write10};
    use crate::scsi::{NexusId, Status};

    #[test]
    fn drain_finishes_admitted_writes_fences_new_ones_and_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let st = Rc::new(target(dir.path(), &[(0, "a"), (1, "b")]));
        on_ring(async {
            let n0 = NexusId(1);
            // Clear the power-on unit attentions first.
            for lun in [0, 1] {
                let _ = st.execute(n0, lun, &[0, 0, 0, 0, 0, 0], Vec::new()).await;
            }
            let mut tasks = Vec::new();
            for i in 0..8u32 {
                let st = st.clone();
                tasks.push(crate::ring::spawn(async move {
                    st.execute(n0, 0, &write10(i * 8, 8), vec![i as u8 + 1; 4096])
                        .await
                }));
            }
            // Let every write start (be admitted) before the fence goes up.
            tokio::task::yield_now().await;
            assert_eq!(st.slots()[0].gate.inflight(), 8);
            let report = st.drain_device("ns/a").await.unwrap();
            assert_eq!(report.drained_commands, 8);
            assert_eq!(report.fenced_commands, 0);
            assert_eq!(st.slots()[0].gate.state(), DrainState::Flushed);
            for t in tasks {
                assert_eq!(
                    t.await.unwrap().status,
                    Status::Good,
                    "admitted writes complete"
                );
            }
            // After the fence: 25h/00h, nothing executed.
            let r = st.execute(n0, 0, &write10(100, 1), vec![0xEE; 512]).await;
            assert_eq!(r.status, Status::CheckCondition);
            assert_eq!((r.sense[12], r.sense[13]), (0x25, 0x00));
            // The other LUN reports the inventory change once, then works.
            let tur = [0u8; 6];
            let r = st.execute(n0, 1, &tur, Vec::new()).await;
            assert_eq!((r.sense[12], r.sense[13]), (0x3F, 0x0E));
            assert_eq!(
                st.execute(n0, 1, &tur, Vec::new()).await.status,
                Status::Good
            );
            assert_eq!(st.live_luns(), vec![1]);
            // Re-entrant: a second drain reports flushed again, counting the refused write.
            let again = st.drain_device("ns/a").await.unwrap();
            assert_eq!(again.fenced_commands, 1);
            let lun0 = &st.lun_snapshots()[0];
            assert_eq!((lun0.state, lun0.fenced), (DrainState::Flushed, 1));
            assert_eq!(lun0.counters.commands, 9, "TUR and 8 writes ran");
            assert_eq!(lun0.counters.write_bytes, 8 * 4096);
            assert_eq!(st.release_device("ns/a", false).unwrap(), vec![0]);
        });
        let data = std::fs::read(dir.path().join("a.img")).unwrap();
        for i in 0..8usize {
            assert!(
                data[i * 4096..(i + 1) * 4096]
                    .iter()
                    .all(|&b| b == i as u8 + 1)
            );
        }
        assert!(
            data[100 * 512..101 * 512].iter().all(|&b| b == 0),
            "fenced write not executed"
        );
    }

    #[test]
    fn release_before_flush_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let st = target(dir.path(), &[(0, "a")]);
        assert!(matches!(
            st.release_device("ns/a", false),
            Err(DrainError::Transition(_))
        ));
        assert!(matches!(
            st.release_device("ns/x", false),
            Err(DrainError::UnknownDevice(_))
        ));
    }

    #[test]
    fn a_forced_release_drops_an_unflushed_lun_and_tells_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let st = target(dir.path(), &[(0, "a"), (1, "b")]);
        on_ring(async {
            let n0 = NexusId(1);
            let tur = [0u8; 6];
            for lun in [0, 1] {
                let _ = st.execute(n0, lun, &tur, Vec::new()).await;
            }
            assert_eq!(st.release_device("ns/a", true).unwrap(), vec![0]);
            assert_eq!(st.live_luns(), vec![1]);
            let r = st.execute(n0, 1, &tur, Vec::new()).await;
            assert_eq!((r.sense[12], r.sense[13]), (0x3F, 0x0E));
        });
    }
}
