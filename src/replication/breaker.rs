//! A site's circuit breaker on one shard. Failures that say the destination itself is out
//! of reach (connection errors, timeouts, 5xx and SlowDown answers) open it after
//! `threshold` in a row; while it is open, attempts wait for it instead of spending their
//! budget (an attempt that fails this way does not count), and the caller stops taking new
//! work and probes the site. The first success closes it and wakes every waiter: an outage
//! costs time, never an attempt nor a FAILED entry.
//!
//! Owns: the count, the state and the waiters. The probe is the caller's (it knows the
//! site's endpoint and buckets).

use std::cell::{Cell, RefCell};
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
    /// The keys of the current run of outage errors (one object failing again and again
    /// is that object's trouble, not the site's: only distinct keys count).
    streak: RefCell<Vec<String>>,
    open_since: Cell<Option<Instant>>,
    closed: Event,
    opened: Event,
    /// Shards of the site whose breaker is open (a gauge shared by the site's shards).
    open_shards: Arc<AtomicU64>,
    /// Called when it opens (the caller starts its probe).
    on_open: RefCell<Option<Box<dyn Fn()>>>,
}

/// Whether an error is an answer (or a silence) of the destination, rather than the source's.
fn at_destination(e: &ReplicationError) -> bool {
    matches!(
        e.stage,
        Stage::CheckDestination
            | Stage::PutDestination
            | Stage::Multipart
            | Stage::DeleteDestination
            | Stage::Verify
    )
}

/// Whether an error says the destination is out of reach (not that this object is wrong).
pub fn is_outage(e: &ReplicationError) -> bool {
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
    at_destination(e) && (unreachable || overloaded)
}

impl Breaker {
    /// Opens after `threshold` outage errors in a row on distinct keys. Give it at most the
    /// attempts of an entry, so that a lone entry opens it before it runs out of attempts.
    pub fn new(threshold: u32, open_shards: Arc<AtomicU64>) -> Self {
        Self {
            threshold: threshold.max(1),
            streak: RefCell::default(),
            open_since: Cell::new(None),
            closed: Event::new(),
            opened: Event::new(),
            open_shards,
            on_open: RefCell::default(),
        }
    }

    /// What to do when it opens.
    pub fn on_open(&self, f: impl Fn() + 'static) {
        *self.on_open.borrow_mut() = Some(Box::new(f));
    }

    pub fn is_open(&self) -> bool {
        self.open_since.get().is_some()
    }

    /// An attempt failed with `e`. True when the breaker is open afterwards and `e` was an
    /// outage: the attempt does not count, it waits for the site.
    pub fn failed(&self, key: &str, e: &ReplicationError) -> bool {
        if !is_outage(e) {
            if at_destination(e) {
                self.streak.borrow_mut().clear(); // the site answered
            }
            return false;
        }
        let n = {
            let mut streak = self.streak.borrow_mut();
            if !streak.iter().any(|k| k == key) && streak.len() < self.threshold as usize {
                streak.push(key.to_string());
            }
            streak.len() as u32
        };
        if n >= self.threshold && !self.is_open() {
            self.open_since.set(Some(Instant::now()));
            self.open_shards.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(failures = n, error = %e, "site unavailable: entries wait for it (no attempt spent) and intake is paused until a probe succeeds");
            self.opened.notify(usize::MAX);
            if let Some(f) = &*self.on_open.borrow() {
                f();
            }
        }
        self.is_open()
    }

    /// Whether other keys than `key` failed on outage errors since the site last answered:
    /// the site, not one object, may be going down.
    pub fn others_failing(&self, key: &str) -> bool {
        self.streak.borrow().iter().any(|k| k != key)
    }

    /// An attempt (or a probe) reached the site: the count restarts, an open breaker closes.
    pub fn succeeded(&self) {
        self.streak.borrow_mut().clear();
        if let Some(since) = self.open_since.take() {
            self.open_shards.fetch_sub(1, Ordering::SeqCst);
            tracing::info!(after = ?since.elapsed(), "site available again: intake resumes");
            self.closed.notify(usize::MAX);
        }
    }

    /// Whether the breaker is open, or opens within `within` (false when `cancel` fires).
    pub async fn opens_within(&self, within: std::time::Duration, cancel: &Shutdown) -> bool {
        if self.is_open() {
            return true;
        }
        let listener = self.opened.listen();
        if self.is_open() {
            return true;
        }
        let opened = async {
            listener.await;
        };
        let timer = async {
            cancel.sleep(within).await;
        };
        futures_lite::future::or(opened, timer).await;
        self.is_open()
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
    key: &str,
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
            Err(e) if b.failed(key, &e) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

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
        let opened = Rc::new(Cell::new(0));
        let o = opened.clone();
        b.on_open(move || o.set(o.get() + 1));
        let down = err(Stage::PutDestination, "ConnectError");
        assert!(!b.failed("a", &down) && !b.failed("b", &down));
        assert!(!b.failed("b", &down), "the same key again does not count");
        assert!(b.failed("c", &down), "the third key opens it");
        assert_eq!(opened.get(), 1);
        assert_eq!(gauge.load(Ordering::SeqCst), 1);
        b.succeeded();
        assert!(!b.is_open());
        assert_eq!(gauge.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn other_errors_restart_the_count_and_never_open_it() {
        let b = Breaker::new(2, Arc::default());
        let down = err(Stage::PutDestination, "SlowDown");
        assert!(!b.failed("a", &down));
        assert!(!b.failed("b", &err(Stage::PutDestination, "AccessDenied")));
        assert!(
            !b.failed("c", &down),
            "the count restarted when the site answered"
        );
        assert!(!b.failed("d", &err(Stage::GetSource, "AccessDenied")));
        assert!(
            b.failed("e", &down),
            "the source's answer does not restart it"
        );
        assert!(!is_outage(&err(Stage::PutDestination, "NoSuchBucket")));
        assert!(is_outage(&err(Stage::CheckDestination, "Timeout")));
    }

    #[test]
    fn a_wait_for_it_to_open_wakes_when_it_opens_and_gives_up_at_its_limit() {
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async {
            let b = Rc::new(Breaker::new(2, Arc::new(AtomicU64::new(0))));
            let cancel = Shutdown::new();
            let limit = std::time::Duration::from_millis(300);
            let started = Instant::now();
            assert!(!b.opens_within(limit, &cancel).await, "nothing opened it");
            assert!(started.elapsed() >= limit);
            let opener = b.clone();
            glommio::spawn_local(async move {
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
                let down = err(Stage::PutDestination, "ConnectError");
                opener.failed("a", &down);
                opener.failed("b", &down);
            })
            .detach();
            let started = Instant::now();
            let long = std::time::Duration::from_secs(10);
            assert!(b.opens_within(long, &cancel).await);
            assert!(
                started.elapsed() < long,
                "woken by the opening, not the limit"
            );
        });
    }
}
