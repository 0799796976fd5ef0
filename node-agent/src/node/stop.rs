//! Stopping a Target's engine without holding the node: a stop lets the sessions finish what
//! they accepted and flushes the stores, which for a busy Target or a slow disk takes up to
//! twice the drain timeout. It runs on a task of its own while the node's lock is free, so calls
//! about anything else answer meanwhile.
//!
//! What keeps the rules while it runs:
//! - calls on one Target take turns ([`Gates`]): two calls on the same Target never interleave,
//!   and a call on a Target whose earlier call was cut short (its caller went away) first waits
//!   for the stop that call began;
//! - the Devices of the stopping engine stay held by it ([`Stopping`]): no other Target may map
//!   them, and a drain or release of one waits for the stop (the engine may still be writing
//!   to it); the stop's task ends the hold however its caller fares;
//! - the Target's record (and, for a changed IQN or port, the new one) is in place before the
//!   lock is given up, so its IQN cannot be taken meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{MutexGuard, OwnedMutexGuard, watch};
use tokio::task::JoinHandle;

use super::error::{NodeError, precondition};
use super::records::TargetRecord;
use super::views::TargetView;
use super::{Inner, Node};
use crate::engine::{ShutdownReport, TargetGone};

/// One lock per Target key, taken by the calls that change that Target.
#[derive(Default)]
pub(super) struct Gates(std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Gates {
    /// Waits for the turn of Target `key` (only for calls on that same Target).
    pub(super) async fn enter(&self, key: &str) -> OwnedMutexGuard<()> {
        let gate = {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            // Gates nobody holds or waits for go (the map holds the only reference).
            map.retain(|_, g| Arc::strong_count(g) > 1);
            Arc::clone(map.entry(key.to_owned()).or_default())
        };
        gate.lock_owned().await
    }
}

/// An engine being stopped, and the Devices it still holds.
pub(super) struct Stopping {
    devices: Vec<String>,
    /// Becomes true (or closed) when the engine has stopped.
    done: watch::Receiver<bool>,
}

impl Stopping {
    fn over(&self) -> bool {
        *self.done.borrow() || self.done.has_changed().is_err()
    }
}

/// A stop begun: its end, and (for the call that began it) its report.
pub(super) struct Stop {
    done: watch::Receiver<bool>,
    report: Option<JoinHandle<Result<ShutdownReport, TargetGone>>>,
}

impl Stop {
    /// Waits until the engine has stopped; its report when this call began the stop.
    pub(super) async fn wait(mut self) -> Option<Result<ShutdownReport, TargetGone>> {
        let _ = self.done.wait_for(|d| *d).await;
        match self.report.take() {
            Some(task) => task.await.ok(),
            None => None,
        }
    }
}

impl Inner {
    /// Takes Target `key`'s engine (if it runs) and starts stopping it on a task of its own;
    /// the Devices of `old` (its record) stay held until it has stopped. Without an engine, the
    /// stop an earlier call began and that has not ended yet, if any.
    pub(super) fn begin_stop(&mut self, key: &str, old: Option<&TargetRecord>) -> Option<Stop> {
        self.stopping.retain(|_, s| !s.over());
        if let Some(o) = old {
            self.release_luns_of(o);
        }
        let Some(handle) = self.engine.as_mut().and_then(|e| e.take_target(key)) else {
            return self.stopping.get(key).map(|s| Stop {
                done: s.done.clone(),
                report: None,
            });
        };
        let (tx, done) = watch::channel(false);
        let name = key.to_owned();
        let report = tokio::spawn(async move {
            let r = handle.shutdown().await;
            match &r {
                Ok(rep) => {
                    for (device, e) in rep
                        .flushes
                        .iter()
                        .filter_map(|(d, r)| r.as_ref().err().map(|e| (d, e)))
                    {
                        tracing::warn!(target = %name, %device, "while stopping the target: {e}");
                    }
                }
                Err(e) => tracing::warn!(target = %name, "{e}"),
            }
            let _ = tx.send(true);
            r
        });
        let devices = old
            .map(|o| o.luns.iter().map(|l| o.device_key(l)).collect())
            .unwrap_or_default();
        self.stopping.insert(
            key.to_owned(),
            Stopping {
                devices,
                done: done.clone(),
            },
        );
        Some(Stop {
            done,
            report: Some(report),
        })
    }

    /// The Target whose stopping engine still holds Device `dk`, and the end of that stop.
    fn stop_holding(&self, dk: &str) -> Option<(&str, watch::Receiver<bool>)> {
        self.stopping
            .iter()
            .find(|(_, s)| !s.over() && s.devices.iter().any(|d| d == dk))
            .map(|(t, s)| (t.as_str(), s.done.clone()))
    }

    /// Refuses Device `dk` to Target `key` while another Target's stopping engine holds it.
    pub(super) fn check_not_stopping(
        &self,
        dk: &str,
        key: &str,
        field: &str,
    ) -> Result<(), NodeError> {
        match self.stop_holding(dk) {
            Some((t, _)) if t != key => Err(precondition(
                field,
                format!(
                    "Device {dk} is still held by Target {t}, which is stopping (its sessions \
                     finish their commands and its stores are flushed); retry shortly"
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl Node {
    /// The node's lock, once no stopping engine holds Device `dk` (a drain or a release must
    /// not run while an engine may still write to it). Waits only for the Target that used it.
    pub(super) async fn lock_when_stopped(&self, dk: &str) -> MutexGuard<'_, Inner> {
        loop {
            let g = self.inner.lock().await;
            let Some((_, mut done)) = g.stop_holding(dk) else {
                return g;
            };
            drop(g);
            let _ = done.wait_for(|d| *d).await;
        }
    }

    /// Serves `rec` on a fresh engine (a new Target, or a changed IQN or port): the old engine
    /// stops outside the lock, then the new one starts. `g` holds the checked node.
    pub(super) async fn restart_target(
        &self,
        mut g: MutexGuard<'_, Inner>,
        rec: TargetRecord,
        old: Option<TargetRecord>,
    ) -> Result<(bool, TargetView), NodeError> {
        let key = rec.id.key();
        let stop = g.begin_stop(&key, old.as_ref());
        // The new record and its Devices are taken now: nobody else gets them meanwhile.
        for l in &rec.luns {
            if let Some(d) = g.devices.get_mut(&rec.device_key(l)) {
                d.used_by = Some(key.clone());
            }
        }
        g.targets.insert(key.clone(), rec.clone());
        if let Some(stop) = stop {
            drop(g);
            stop.wait().await;
            g = self.inner.lock().await;
        }
        g.engine()?;
        let started = match g.check_luns(&rec) {
            Ok(()) => g.start_target(&rec).await,
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            // Nothing is served under this name now; forget it so a retry starts afresh.
            g.release_luns_of(&rec);
            g.targets.remove(&key);
            if let Some(s) = &g.state {
                let _ = s.remove_target(&rec.id.uid);
            }
            return Err(e);
        }
        let view = g.target_view(&key).await;
        Ok((false, view))
    }
}
