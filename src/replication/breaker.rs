//! A site's circuit breaker on one shard. Failures that say the destination itself is out
//! of reach (connection errors, timeouts, 5xx and SlowDown answers) open it after
//! `threshold` in a row; while it is open, attempts wait for it instead of spending their
//! budget (an attempt that fails this way does not count), and the caller stops taking new
//! work and probes the site. The first success closes it and wakes every waiter: an outage
//! costs time, never an attempt nor a FAILED entry.
//!
//! Owns: the count, the state and the waiters. The probe is the caller's (it knows the
//! site's endpoint and buckets).

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use event_listener::Event;

use super::error::{ErrorKind, ReplicationError, Stage};
use crate::shard::Shutdown;

/// One shard's breaker for one site.
pub struct Breaker {
    threshold: u32,
    consecutive: Cell<u32>,
    open_since: Cell<Option<Instant>>,
    closed: Event,
    /// Shards of the site whose breaker is open (a gauge shared by the site's shards).
    open_shards: Arc<AtomicU64>,
}

/// Whether an error says the destination is out of reach (not that this object is wrong).
pub fn is_outage(e: &ReplicationError) -> bool {
    let at_destination = matches!(
        e.stage,
        Stage::CheckDestination
            | Stage::PutDestination
            | Stage::Multipart
            | Stage::DeleteDestination
            | Stage::Verify
    );
    let ErrorKind::Request { code, .. } = &e.kind else {
        return false;
    };
    let unreachable = matches!(
        code.as_str(),
        "ConnectError" | "ConnectionError" | "Timeout" | "TlsError"
    );
    let overloaded = matches!(
        code.as_str(),
        "InternalError" | "ServiceUnavailable" | "SlowDown" | "ServerError" | "BadGateway"
    ) || code.starts_with('5');
    at_destination && (unreachable || overloaded)
}

impl Breaker {
    pub fn new(threshold: u32, open_shards: Arc<AtomicU64>) -> Self {
        Self {
            threshold: threshold.max(1),
            consecutive: Cell::new(0),
            open_since: Cell::new(None),
            closed: Event::new(),
            open_shards,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open_since.get().is_some()
    }

    /// An attempt failed with `e`. True when the breaker is open afterwards and `e` was an
    /// outage: the attempt does not count, it waits for the site.
    pub fn failed(&self, e: &ReplicationError) -> bool {
        if !is_outage(e) {
            self.consecutive.set(0);
            return false;
        }
        let n = self.consecutive.get().saturating_add(1);
        self.consecutive.set(n);
        if n >= self.threshold && !self.is_open() {
            self.open_since.set(Some(Instant::now()));
            self.open_shards.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(failures = n, error = %e, "site unavailable: entries wait for it (no attempt spent) and intake is paused until a probe succeeds");
        }
        self.is_open()
    }

    /// An attempt (or a probe) reached the site: the count restarts, an open breaker closes.
    pub fn succeeded(&self) {
        self.consecutive.set(0);
        if let Some(since) = self.open_since.take() {
            self.open_shards.fetch_sub(1, Ordering::SeqCst);
            tracing::info!(after = ?since.elapsed(), "site available again: intake resumes");
            self.closed.notify(usize::MAX);
        }
    }

    /// Waits while the breaker is open. False when `cancel` fired first.
    pub async fn wait_closed(&self, cancel: &Shutdown) -> bool {
        loop {
            if cancel.is_set() {
                return false;
            }
            if !self.is_open() {
                return true;
            }
            let listener = self.closed.listen();
            if !self.is_open() {
                return true;
            }
            futures_lite::future::or(listener, cancel.wait()).await;
        }
    }
}

/// Runs one attempt `op` through the breaker (if any): it starts once the site is
/// reachable, and an outage error that leaves the breaker open is not returned: the attempt
/// waits for the site and runs again.
pub async fn through<T, F, Fut>(
    breaker: Option<&Breaker>,
    cancel: &Shutdown,
    mut op: F,
) -> Result<T, ReplicationError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ReplicationError>>,
{
    let Some(b) = breaker else {
        return op().await;
    };
    loop {
        if !b.wait_closed(cancel).await {
            let why = "abandoned while the site was unavailable";
            return Err(ReplicationError::new(
                Stage::PutDestination,
                ErrorKind::Cancelled,
                why,
            ));
        }
        match op().await {
            Ok(v) => {
                b.succeeded();
                return Ok(v);
            }
            Err(e) if b.failed(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(stage: Stage, code: &str) -> ReplicationError {
        let kind = ErrorKind::Request {
            code: code.into(),
            retryable: true,
        };
        ReplicationError::new(stage, kind, "x")
    }

    #[test]
    fn consecutive_outage_errors_open_it_and_a_success_closes_it() {
        let gauge = Arc::new(AtomicU64::new(0));
        let b = Breaker::new(3, gauge.clone());
        let down = err(Stage::PutDestination, "ConnectError");
        assert!(!b.failed(&down) && !b.failed(&down));
        assert!(b.failed(&down), "the third opens it");
        assert_eq!(gauge.load(Ordering::SeqCst), 1);
        b.succeeded();
        assert!(!b.is_open());
        assert_eq!(gauge.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn other_errors_restart_the_count_and_never_open_it() {
        let b = Breaker::new(2, Arc::default());
        let down = err(Stage::PutDestination, "SlowDown");
        assert!(!b.failed(&down));
        assert!(!b.failed(&err(Stage::PutDestination, "AccessDenied")));
        assert!(!b.failed(&down), "the count restarted");
        assert!(
            !b.failed(&err(Stage::GetSource, "ConnectError")),
            "the source's"
        );
        assert!(!is_outage(&err(Stage::PutDestination, "NoSuchBucket")));
        assert!(is_outage(&err(Stage::CheckDestination, "Timeout")));
    }
}
