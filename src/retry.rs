//! Trying again: one helper for every retry loop of the engine, in the manner of neon's
//! `backoff::retry` (the operation, which errors are permanent, a policy, a description for
//! the log, and cancellation), and the retry policies in one place.
//!
//! May call: `shard` (the cancellation signal).

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::shard::Shutdown;

/// Attempts per version, the first included, unless configured (`replication.attempts`,
/// `sync --attempts`).
pub const DEFAULT_ATTEMPTS: u32 = 5;

/// How often and how patiently an operation is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (`u32::MAX`: until it succeeds or is cancelled).
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
    /// Failures from this attempt on are logged as warnings (before: debug).
    pub warn_after: u32,
}

impl Default for RetryPolicy {
    /// A version's copy: `replication.attempts` and `sync --attempts` default to this.
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_ATTEMPTS,
            base: Duration::from_millis(200),
            max: Duration::from_secs(20),
            warn_after: 3,
        }
    }
}

impl RetryPolicy {
    /// For what must be done before anything moves on (an outcome written to its topics,
    /// a batch of events turned into entries): every second until done or cancelled.
    pub const UNTIL_DONE: RetryPolicy = RetryPolicy {
        max_attempts: u32::MAX,
        base: Duration::from_secs(1),
        max: Duration::from_secs(1),
        warn_after: 1,
    };

    /// A change's rules and tags, read before the change is set aside (about a second).
    pub const CHANGE: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(200),
        max: Duration::from_secs(1),
        warn_after: 3,
    };

    /// An upload's abort: one that fails for a passing reason is tried again, since an
    /// upload left open keeps its parts' storage until something aborts it.
    pub const ABORT_UPLOAD: RetryPolicy = RetryPolicy {
        max_attempts: 4,
        base: Duration::from_millis(200),
        max: Duration::from_secs(2),
        warn_after: 2,
    };

    /// A lifecycle step, tried about 8 minutes before its pass is given up: a bucket that
    /// has gone, or credentials refused, must not hold its partition's other buckets for ever.
    pub const LIFECYCLE_STEP: RetryPolicy = RetryPolicy {
        max_attempts: 20,
        base: Duration::from_secs(1),
        max: Duration::from_secs(30),
        warn_after: 1,
    };

    /// A copy's policy with `attempts` attempts in all (at least one).
    pub fn with_attempts(attempts: u32) -> Self {
        Self {
            max_attempts: attempts.max(1),
            ..Self::default()
        }
    }

    /// The pause before attempt `attempt + 1` (attempt counts from 1): half of the capped
    /// exponential delay plus a random part of the other half.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exp.min(self.max);
        let half = capped / 2;
        let jitter = rand::thread_rng().gen_range(0..=half.as_micros() as u64);
        half + Duration::from_micros(jitter)
    }
}

/// Why [`retry`] gave up: the last error, after how many attempts, and whether it stopped
/// because of cancellation (rather than a permanent error or the attempts running out).
#[derive(Debug, Clone)]
pub struct GaveUp<E> {
    pub error: E,
    pub attempts: u32,
    pub cancelled: bool,
}

/// Runs `op` (given the attempt number, from 1) until it succeeds, its error is permanent,
/// the policy's attempts run out, or `cancel` is set; sleeps [`RetryPolicy::backoff`]
/// between attempts, waking at once on cancellation.
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    cancel: &Shutdown,
    description: impl Display,
    is_permanent: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, GaveUp<E>>
where
    E: Display,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        let error = match op(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let gave_up = |error, cancelled| GaveUp {
            error,
            attempts: attempt,
            cancelled,
        };
        if is_permanent(&error) || attempt >= policy.max_attempts {
            return Err(gave_up(error, false));
        }
        if cancel.is_set() {
            return Err(gave_up(error, true));
        }
        if attempt >= policy.warn_after {
            tracing::warn!(attempt, error = %error, "{description}: failed, trying again");
        } else {
            tracing::debug!(attempt, error = %error, "{description}: failed, trying again");
        }
        if !cancel.sleep(policy.backoff(attempt)).await {
            return Err(gave_up(error, true));
        }
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn grows_and_caps() {
        let p = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            warn_after: 1,
        };
        for _ in 0..100 {
            let b1 = p.backoff(1);
            assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100));
            let b3 = p.backoff(3);
            assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400));
            let b9 = p.backoff(9);
            assert!(b9 >= Duration::from_millis(500) && b9 <= Duration::from_secs(1));
        }
    }

    fn quick(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base: Duration::from_millis(1),
            max: Duration::from_millis(1),
            warn_after: 1,
        }
    }

    fn on_executor<F, Fut>(f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn retries_until_success_and_stops_at_permanent_errors_and_the_budget() {
        on_executor(|| async {
            let cancel = Shutdown::new();
            let (five, four) = (quick(5), quick(4));
            let calls = Cell::new(0);
            let ok = retry(
                &five,
                &cancel,
                "t",
                |_: &&str| false,
                |attempt| {
                    calls.set(calls.get() + 1);
                    async move {
                        if attempt < 3 {
                            Err("busy")
                        } else {
                            Ok(attempt)
                        }
                    }
                },
            )
            .await;
            assert_eq!(ok.unwrap(), 3);
            assert_eq!(calls.get(), 3);

            let denied = |e: &&str| *e == "denied";
            let g = retry(&five, &cancel, "t", denied, |_| async {
                Err::<(), _>("denied")
            })
            .await
            .unwrap_err();
            assert_eq!((g.error, g.attempts, g.cancelled), ("denied", 1, false));

            let g = retry(
                &four,
                &cancel,
                "t",
                |_: &&str| false,
                |_| async { Err::<(), _>("busy") },
            )
            .await
            .unwrap_err();
            assert_eq!((g.attempts, g.cancelled), (4, false));
        });
    }

    #[test]
    fn cancellation_ends_the_wait_between_attempts() {
        on_executor(|| async {
            let cancel = Shutdown::new();
            let slow = RetryPolicy {
                base: Duration::from_secs(3600),
                max: Duration::from_secs(3600),
                ..RetryPolicy::UNTIL_DONE
            };
            let trigger = cancel.clone();
            glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(20)).await;
                trigger.trigger();
            })
            .detach();
            let g = retry(
                &slow,
                &cancel,
                "t",
                |_: &&str| false,
                |_| async { Err::<(), _>("down") },
            )
            .await
            .unwrap_err();
            assert_eq!((g.attempts, g.cancelled), (1, true));
        });
    }
}
