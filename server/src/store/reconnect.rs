//! The reconnect throttle of the network backends (PostgreSQL, Redis): while the database is away, at
//! most one connection attempt per [`RECONNECT_BACKOFF`]; calls in between fail at once with the last
//! attempt's error instead of each waiting out a connect timeout.

use std::time::{Duration, Instant};

use super::StoreError;

/// At most one connection attempt per this long while the database is away.
pub(crate) const RECONNECT_BACKOFF: Duration = Duration::from_millis(250);

/// When the last connection attempt failed, and why.
#[derive(Debug, Default)]
pub(crate) struct Reconnect {
    failed: Option<(Instant, String)>,
}

impl Reconnect {
    /// Ok when an attempt may be made now; else the last failure again, as `Unavailable`.
    pub(crate) fn ready(&self) -> Result<(), StoreError> {
        match &self.failed {
            Some((at, why)) if at.elapsed() < RECONNECT_BACKOFF => Err(StoreError::Unavailable(why.clone())),
            _ => Ok(()),
        }
    }

    /// Records how an attempt went.
    pub(crate) fn record<T>(&mut self, attempt: &Result<T, StoreError>) {
        self.failed = attempt.as_ref().err().map(|e| (Instant::now(), e.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_repeated_until_the_backoff_passes_and_a_success_clears_it() {
        let mut r = Reconnect::default();
        assert!(r.ready().is_ok());
        r.record::<()>(&Err(StoreError::Unavailable("refused".into())));
        match r.ready() {
            Err(StoreError::Unavailable(why)) => assert!(why.contains("refused"), "{why}"),
            other => panic!("expected the last failure, got {other:?}"),
        }
        std::thread::sleep(RECONNECT_BACKOFF + Duration::from_millis(20));
        assert!(r.ready().is_ok());
        r.record(&Ok(()));
        assert!(r.ready().is_ok());
    }
}
