//! Progress-based timeouts of a connection. A request fails when it waits on its peer (a
//! read with nothing to read, a write the socket cannot take) and no byte has moved in
//! either direction for the idle timeout; or, with a minimum rate set, when over that long
//! of waiting fewer bytes moved than the rate allows (a peer sending a byte a minute). A
//! transfer that keeps moving is never cut, however long it lasts (unless an optional
//! whole-request deadline is set); time the connection is not polled (our own side busy)
//! never counts, and each request starts a fresh clock.
//!
//! Owns: the clock of one connection. Pure logic (times are passed in); the caller arms a
//! timer for [`Check::Wait`].

use std::time::{Duration, Instant};

use super::error::DEADLINE;

/// What a wait on the peer comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Wait on, and look again at this instant at the latest.
    Wait(Instant),
    /// Give up: why.
    Fail(String),
}

/// Progress of one connection.
#[derive(Debug, Clone)]
pub struct Progress {
    idle: Duration,
    /// Bytes per second over `idle` of waiting (0: no guard).
    min_rate: u64,
    /// Since when the connection waits with nothing moved.
    stalled_since: Option<Instant>,
    /// Time waited in the current rate window (closed stalls only).
    waited: Duration,
    /// Bytes moved in the current rate window.
    bytes: u64,
    /// The whole-request deadline (none: a request may last as long as it moves), and when
    /// the current request started.
    deadline: Option<Duration>,
    started: Option<Instant>,
}

impl Progress {
    pub fn new(idle: Duration, min_rate: u64) -> Self {
        Self {
            idle,
            min_rate,
            stalled_since: None,
            waited: Duration::ZERO,
            bytes: 0,
            deadline: None,
            started: None,
        }
    }

    /// With a whole-request deadline.
    pub fn with_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Bytes a rate window must move.
    fn needed(&self) -> u64 {
        self.min_rate.saturating_mul(self.idle.as_secs().max(1))
    }

    /// A new request on the connection: what came before (earlier requests, time idle in
    /// the pool) no longer counts.
    pub fn restart(&mut self) {
        self.stalled_since = None;
        self.waited = Duration::ZERO;
        self.bytes = 0;
        // The clock is read only when a deadline asks for it.
        self.started = self.deadline.map(|_| Instant::now());
    }

    /// Whether a wait is under way (no byte moved since it began).
    pub fn stalled(&self) -> bool {
        self.stalled_since.is_some()
    }

    /// `n` bytes moved (either way); `now` is asked only when a wait ends.
    pub fn moved(&mut self, n: usize, now: impl FnOnce() -> Instant) {
        if n == 0 {
            return;
        }
        if let Some(since) = self.stalled_since.take() {
            self.waited += now().saturating_duration_since(since);
        }
        self.bytes = self.bytes.saturating_add(n as u64);
        // A full window that moved enough starts the next one; one that did not is judged
        // at the next wait.
        if self.waited >= self.idle && self.bytes >= self.needed() {
            self.waited = Duration::ZERO;
            self.bytes = 0;
        }
    }

    /// The connection waits on its peer at `now`.
    pub fn waiting(&mut self, now: Instant) -> Check {
        let since = *self.stalled_since.get_or_insert(now);
        let stalled = now.saturating_duration_since(since);
        if stalled >= self.idle {
            return Check::Fail(format!(
                "no byte moved for {} s (io_idle_timeout_seconds)",
                self.idle.as_secs()
            ));
        }
        let mut wake = since + self.idle;
        if let (Some(d), Some(start)) = (self.deadline, self.started) {
            if now.saturating_duration_since(start) >= d {
                return Check::Fail(format!(
                    "the request took longer than its deadline ({} s, {DEADLINE})",
                    d.as_secs()
                ));
            }
            wake = wake.min(start + d);
        }
        if self.min_rate > 0 && self.bytes < self.needed() {
            let window_left = self.idle.saturating_sub(self.waited);
            if stalled >= window_left {
                return Check::Fail(format!(
                    "the peer moved {} bytes in {} s of waiting: slower than min_rate ({} bytes/s)",
                    self.bytes,
                    self.idle.as_secs(),
                    self.min_rate
                ));
            }
            wake = wake.min(since + window_left);
        }
        Check::Wait(wake)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_transfer_that_keeps_moving_is_never_cut() {
        let t0 = Instant::now();
        let mut p = Progress::new(60 * S, 0);
        // 10 minutes, a byte every 30 s, each after a wait.
        for i in 0..20u32 {
            let t = t0 + 30 * S * i;
            assert!(matches!(p.waiting(t), Check::Wait(_)));
            p.moved(1, || t + 29 * S);
        }
    }

    #[test]
    fn a_wait_fails_after_the_idle_timeout_and_wakes_in_time() {
        let t0 = Instant::now();
        let mut p = Progress::new(60 * S, 0);
        assert_eq!(p.waiting(t0), Check::Wait(t0 + 60 * S));
        assert_eq!(p.waiting(t0 + 59 * S), Check::Wait(t0 + 60 * S));
        let Check::Fail(why) = p.waiting(t0 + 60 * S) else {
            panic!("should fail");
        };
        assert!(why.contains("no byte moved for 60 s"), "{why}");
    }

    #[test]
    fn a_deadline_ends_a_request_that_keeps_moving() {
        let mut p = Progress::new(60 * S, 0).with_deadline(Some(10 * S));
        p.restart();
        let t0 = p.started.expect("started");
        for i in 0..9u32 {
            let t = t0 + S * i;
            assert!(matches!(p.waiting(t), Check::Wait(w) if w <= t0 + 10 * S));
            p.moved(1000, || t);
        }
        let Check::Fail(why) = p.waiting(t0 + 10 * S) else {
            panic!("the deadline passed");
        };
        assert!(why.contains("deadline (10 s"), "{why}");
        p.restart();
        assert!(
            matches!(p.waiting(Instant::now()), Check::Wait(_)),
            "a new request starts again"
        );
    }

    #[test]
    fn a_dripping_peer_fails_the_rate_guard() {
        let t0 = Instant::now();
        let mut p = Progress::new(60 * S, 1);
        // A byte after 59 s, then waiting again: the window of 60 s closes 1 s later.
        assert!(matches!(p.waiting(t0), Check::Wait(_)));
        p.moved(1, || t0 + 59 * S);
        assert_eq!(p.waiting(t0 + 59 * S), Check::Wait(t0 + 60 * S));
        let Check::Fail(why) = p.waiting(t0 + 60 * S) else {
            panic!("should fail");
        };
        assert!(why.contains("slower than min_rate"), "{why}");
    }

    #[test]
    fn a_window_that_moved_enough_starts_the_next() {
        let t0 = Instant::now();
        let mut p = Progress::new(10 * S, 100);
        assert!(matches!(p.waiting(t0), Check::Wait(_)));
        p.moved(5000, || t0 + 9 * S);
        assert!(matches!(p.waiting(t0 + 9 * S), Check::Wait(_)));
        p.moved(10, || t0 + 10 * S);
        // Window full with 5010 >= 1000 bytes: a fresh one.
        assert_eq!(p.waiting(t0 + 10 * S), Check::Wait(t0 + 20 * S));
    }
}
