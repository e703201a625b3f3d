//! The threads of `run`'s roles (populator, site workers, scanner, ...) and their stop.
//!
//! Owns: starting each role on a named thread, waiting for all of them, stopping the others
//! when one fails, and bounding a stop: once the shutdown is set, every role has until a
//! limit (the drain deadline plus [`STOP_GRACE`]) to finish; a role still running then is
//! named in the log and left behind, so a process asked to stop always does. What such a
//! role had not committed is replayed at the next start (entries are idempotent).
//! May call: `shard` (the shutdown signal).

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::EngineError;
use crate::shard::Shutdown;

/// What a stop may take beyond the drain deadline: transfers abandoned at the deadline
/// settling (10 s), the last commits' answers (10 s each), leaving the groups.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// A role's body: runs until the shutdown, or fails.
pub type Body = Box<dyn FnOnce() -> Result<(), EngineError> + Send>;

enum Note {
    /// The shutdown was set (a signal, or a role that failed).
    Stopping,
    Done(String, Result<(), EngineError>),
}

/// Runs every role on a thread of its own until all have returned; the first that fails (or
/// panics) sets the shutdown, and its error is returned. Once the shutdown is set, roles
/// still running after `limit` are named in an error ([`EngineError::StopTimeout`]).
pub fn run_all(
    roles: Vec<(String, Body)>,
    shutdown: &Shutdown,
    limit: Duration,
) -> Result<(), EngineError> {
    let (tx, rx) = mpsc::channel();
    let mut running = BTreeSet::new();
    for (name, body) in roles {
        running.insert(name.clone());
        if let Err(e) = spawn(name, body, tx.clone()) {
            shutdown.trigger();
            return Err(e);
        }
    }
    if let Err(e) = watch_shutdown(shutdown.clone(), tx) {
        shutdown.trigger();
        return Err(e);
    }
    let mut first_err = None;
    let mut deadline: Option<Instant> = None;
    while !running.is_empty() {
        let note = match deadline {
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        match note {
            Ok(Note::Stopping) => {
                deadline.get_or_insert_with(|| Instant::now() + limit);
                tracing::info!(
                    roles = ?running,
                    limit_s = limit.as_secs(),
                    "stopping: entries in flight finish, positions are committed, groups left"
                );
            }
            Ok(Note::Done(name, result)) => {
                running.remove(&name);
                if let Err(e) = result {
                    tracing::error!(role = %name, error = %e, "role failed: stopping the others");
                    shutdown.trigger();
                    first_err.get_or_insert(e);
                } else if deadline.is_some() || shutdown.is_set() {
                    tracing::info!(role = %name, "role stopped");
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => return Err(timed_out(&running, limit)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(EngineError::Setup("the roles' threads are gone".into()))
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn timed_out(running: &BTreeSet<String>, limit: Duration) -> EngineError {
    let roles = running.iter().cloned().collect::<Vec<_>>().join(", ");
    tracing::error!(
        roles = %roles,
        limit_s = limit.as_secs(),
        "stop not finished in time: exiting without these roles; what they had not committed is replayed at the next start"
    );
    EngineError::StopTimeout {
        roles,
        seconds: limit.as_secs(),
    }
}

fn spawn(name: String, body: Body, tx: mpsc::Sender<Note>) -> Result<(), EngineError> {
    thread(name.clone(), move || {
        let result = std::panic::catch_unwind(AssertUnwindSafe(body))
            .unwrap_or_else(|_| Err(EngineError::Setup(format!("role {name} panicked"))));
        let _ = tx.send(Note::Done(name, result));
    })
}

/// Tells the waiter when the shutdown is set (a thread of its own: the waiter blocks).
fn watch_shutdown(shutdown: Shutdown, tx: mpsc::Sender<Note>) -> Result<(), EngineError> {
    thread("stop-watch".into(), move || {
        futures_lite::future::block_on(shutdown.wait());
        let _ = tx.send(Note::Stopping);
    })
}

/// A named, detached thread: the waiter hears of its end through the channel.
fn thread(name: String, f: impl FnOnce() + Send + 'static) -> Result<(), EngineError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map(drop)
        .map_err(|e| EngineError::Setup(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(
        name: &str,
        body: impl FnOnce() -> Result<(), EngineError> + Send + 'static,
    ) -> (String, Body) {
        (name.to_string(), Box::new(body))
    }

    /// A role that returns once the shutdown is set.
    fn until(s: &Shutdown) -> impl FnOnce() -> Result<(), EngineError> + Send + 'static {
        let s = s.clone();
        move || {
            futures_lite::future::block_on(s.wait());
            Ok(())
        }
    }

    #[test]
    fn every_role_stops_at_the_shutdown() {
        let s = Shutdown::new();
        let t = s.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            t.trigger();
        });
        let roles = vec![role("a", until(&s)), role("b", until(&s))];
        run_all(roles, &s, Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn a_failing_role_stops_the_others_and_its_error_is_returned() {
        let s = Shutdown::new();
        let failing = role("bad", || Err(EngineError::Setup("broken".into())));
        let err = run_all(
            vec![role("a", until(&s)), failing],
            &s,
            Duration::from_secs(10),
        );
        assert_eq!(err.unwrap_err().to_string(), "broken");
        assert!(s.is_set());
    }

    #[test]
    fn a_panicking_role_is_an_error_naming_it() {
        let s = Shutdown::new();
        let err = run_all(
            vec![role("p", || panic!("boom")), role("a", until(&s))],
            &s,
            Duration::from_secs(10),
        );
        assert!(err.unwrap_err().to_string().contains("role p panicked"));
    }

    #[test]
    fn a_role_that_does_not_stop_is_named_after_the_limit() {
        let s = Shutdown::new();
        s.trigger();
        let (hold, held) = mpsc::channel::<()>();
        let stuck = role("site-a", move || {
            let _ = held.recv();
            Ok(())
        });
        let started = Instant::now();
        let err = run_all(
            vec![role("a", until(&s)), stuck],
            &s,
            Duration::from_millis(200),
        );
        match err {
            Err(EngineError::StopTimeout { roles, seconds: 0 }) => assert_eq!(roles, "site-a"),
            other => panic!("expected a stop timeout, got {other:?}"),
        }
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(hold);
    }
}
