//! The API calls being answered right now, so that a stop waits for them and for nothing else:
//! an idle connection whose peer no longer answers (an operator pod torn down mid-uninstall)
//! must not hold the agent past its grace period.

use std::sync::Arc;

use tokio::sync::watch;

/// A count of calls in progress, shared by the service and the server's stop.
#[derive(Clone)]
pub struct Calls(Arc<watch::Sender<usize>>);

/// One call in progress; it ends when dropped (answered, failed or cancelled alike).
pub struct Call(Calls);

impl Calls {
    pub fn new() -> Self {
        Calls(Arc::new(watch::Sender::new(0)))
    }

    /// Counts a call until the returned value is dropped.
    pub fn begin(&self) -> Call {
        self.0.send_modify(|n| *n += 1);
        Call(self.clone())
    }

    /// How many calls are in progress.
    pub fn in_progress(&self) -> usize {
        *self.0.borrow()
    }

    /// Resolves once no call is in progress.
    pub async fn idle(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

impl Default for Calls {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.0.0.send_modify(|n| *n -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_waits_for_every_call_and_a_cancelled_call_counts_as_ended() {
        let calls = Calls::new();
        calls.idle().await; // nothing in progress: at once
        let a = calls.begin();
        let b = calls.begin();
        assert_eq!(calls.in_progress(), 2);
        // A call whose future is dropped mid-way (the client went away) ends too.
        let cancelled = {
            let c = calls.clone();
            tokio::spawn(async move {
                let _call = c.begin();
                std::future::pending::<()>().await;
            })
        };
        tokio::task::yield_now().await;
        let waiting = tokio::spawn({
            let c = calls.clone();
            async move { c.idle().await }
        });
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "idle with calls still in progress");
        drop(b);
        cancelled.abort();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("idle once every call ended")
            .unwrap();
        assert_eq!(calls.in_progress(), 0);
    }
}
