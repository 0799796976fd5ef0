//! Polling for conditions the apiserver reaches asynchronously (discovery, OpenAPI publishing).

use std::time::{Duration, Instant};

/// Calls `attempt` every 200 ms until it succeeds or `timeout` passes; returns the last result.
pub fn eventually<T, E>(
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + timeout;
    loop {
        let result = attempt();
        if result.is_ok() || Instant::now() >= deadline {
            return result;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_until_success() {
        let mut calls = 0;
        let r: Result<u32, ()> = eventually(Duration::from_secs(5), || {
            calls += 1;
            if calls < 3 { Err(()) } else { Ok(calls) }
        });
        assert_eq!(r, Ok(3));
    }

    #[test]
    fn gives_up_with_the_last_error() {
        let mut calls = 0;
        let r: Result<(), u32> = eventually(Duration::from_millis(300), || {
            calls += 1;
            Err(calls)
        });
        assert!(matches!(r, Err(n) if n >= 2));
    }
}
