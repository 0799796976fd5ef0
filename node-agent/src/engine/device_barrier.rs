//! A snapshot's write barrier over a Device's LUNs (`barrier.rs` is one LUN's): raise it, let
//! the writes accepted before finish, flush the store; later lower it.

use std::time::{Duration, Instant};

use super::barrier::InvalidBarrier;
use super::device_drain::drain_timeout;
use super::target_state::TargetState;
use crate::scsi::Backend;

/// Why the writes of a Device could not be held.
#[derive(Debug, thiserror::Error)]
pub enum BarrierError {
    #[error("no LUN of this target is backed by Device {0:?}")]
    UnknownDevice(String),
    #[error("Device {device:?}: {source}")]
    Transition {
        device: String,
        #[source]
        source: InvalidBarrier,
    },
    #[error("holding the writes of Device {device:?}: {message}")]
    Store { device: String, message: String },
}

/// The writes of a Device are held and its store is flushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldAck {
    pub luns: Vec<u64>,
    /// Writes that were running when the barrier went up (they finished before the flush).
    pub finished_writes: u32,
    /// From the barrier going up to the end of the flush.
    pub quiesce: Duration,
}

impl TargetState {
    /// Raises the barrier on every LUN of `device`, waits for the writes already accepted and
    /// flushes the store. On failure the barrier is lowered again.
    pub async fn hold_writes(&self, device: &str) -> Result<HoldAck, BarrierError> {
        let start = Instant::now();
        let mine: Vec<_> = self
            .slots()
            .into_iter()
            .filter(|s| s.device == device)
            .collect();
        if mine.is_empty() {
            return Err(BarrierError::UnknownDevice(device.to_string()));
        }
        let mut raised = Vec::new();
        let mut finished_writes = 0;
        let held = async {
            for s in &mine {
                s.barrier
                    .raise()
                    .map_err(|source| BarrierError::Transition {
                        device: device.to_string(),
                        source,
                    })?;
                raised.push(s.clone());
                finished_writes += s.barrier.writes();
            }
            let limit = drain_timeout();
            let store = |message: String| BarrierError::Store {
                device: device.to_string(),
                message,
            };
            for s in &mine {
                tokio::time::timeout(limit, s.barrier.wait_held())
                    .await
                    .map_err(|_| {
                        store(format!(
                            "the writes in flight did not finish within {} s",
                            limit.as_secs()
                        ))
                    })?
                    .map_err(|source| BarrierError::Transition {
                        device: device.to_string(),
                        source,
                    })?;
                tokio::time::timeout(limit, s.lu.backend().flush())
                    .await
                    .map_err(|_| {
                        store(format!(
                            "the flush did not finish within {} s",
                            limit.as_secs()
                        ))
                    })?
                    .map_err(|e| store(format!("flush: {e}")))?;
            }
            Ok::<(), BarrierError>(())
        };
        if let Err(e) = held.await {
            for s in &raised {
                s.barrier.lower();
            }
            return Err(e);
        }
        tracing::info!(
            target = %self.name, device, finished_writes,
            us = start.elapsed().as_micros() as u64, "snapshot barrier: writes held, flushed"
        );
        Ok(HoldAck {
            luns: mine.iter().map(|s| s.lun).collect(),
            finished_writes,
            quiesce: start.elapsed(),
        })
    }

    /// Lowers the barrier on every LUN of `device`; answers how many writes waited at it.
    pub fn resume_writes(&self, device: &str) -> u64 {
        let mut waited = 0;
        for s in self.slots().into_iter().filter(|s| s.device == device) {
            waited += s.barrier.waited();
            s.barrier.lower();
        }
        waited
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::engine::barrier::BarrierState;
    use crate::engine::target_state::tests::{on_ring, target, write10};
    use crate::scsi::{NexusId, Status};

    #[test]
    fn writes_wait_at_the_barrier_reads_go_on_and_nothing_fails() {
        let dir = tempfile::tempdir().unwrap();
        let st = Rc::new(target(dir.path(), &[(0, "a")]));
        on_ring(async {
            let n0 = NexusId(1);
            let _ = st.execute(n0, 0, &[0, 0, 0, 0, 0, 0], Vec::new()).await;
            let first = {
                let st = st.clone();
                crate::ring::spawn(
                    async move { st.execute(n0, 0, &write10(0, 8), vec![1; 4096]).await },
                )
            };
            tokio::task::yield_now().await;
            let ack = st.hold_writes("ns/a").await.unwrap();
            assert_eq!(ack.luns, vec![0]);
            assert_eq!(
                first.await.unwrap().status,
                Status::Good,
                "accepted write finished"
            );
            let held = {
                let st = st.clone();
                crate::ring::spawn(
                    async move { st.execute(n0, 0, &write10(8, 8), vec![2; 4096]).await },
                )
            };
            tokio::task::yield_now().await;
            assert!(!held.is_finished(), "a new write waits at the barrier");
            // READ(10) of the first 8 blocks goes on.
            let read10 = [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0];
            let r = st.execute(n0, 0, &read10, Vec::new()).await;
            assert_eq!(r.status, Status::Good);
            let data = std::fs::read(dir.path().join("a.img")).unwrap();
            assert!(
                data[4096..8192].iter().all(|&b| b == 0),
                "held write not executed"
            );
            assert_eq!(st.slots()[0].barrier.state(), BarrierState::Held);
            assert_eq!(st.resume_writes("ns/a"), 1);
            assert_eq!(held.await.unwrap().status, Status::Good, "held, not failed");
            assert!(matches!(
                st.hold_writes("ns/x").await,
                Err(BarrierError::UnknownDevice(_))
            ));
        });
        let data = std::fs::read(dir.path().join("a.img")).unwrap();
        assert!(data[4096..8192].iter().all(|&b| b == 2));
    }
}
