//! Entries that leave for the site's replay topics: after their attempts, for a reason that
//! may pass (the replayer, `replayer.rs`, sends them back once their delay is over), or
//! because an earlier version of their key is out there (`lines.rs`). Decides the step of
//! the delay schedule and writes the entry to that step's topic; the entry's offset may then
//! be committed, since the replay topic keeps it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Shared;
use crate::queue::codec::{Replay, ReplicationEntry};
use crate::queue::kafka::{self, QueueError};
use crate::queue::replayer::Schedule;
use crate::replication::{ErrorKind, ReplicationError};
use crate::retry::{retry, RetryPolicy};

pub use crate::queue::replayer::unix_ms;

/// The delay schedule of a site's replays, and its replayers' group.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    pub schedule: Schedule,
    pub group: String,
}

/// A destination bucket that does not exist may be being created: entries are replayed
/// this long (at most the patience), then FAILED.
const NO_SUCH_BUCKET_GRACE: Duration = Duration::from_secs(3600);

/// Now in Unix nanoseconds: the seed of new tickets.
pub fn now_nanos() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    d.as_nanos() as u64
}

/// Where a failed entry goes: the step of the schedule and since when it fails, or `None`
/// when it is FAILED (no schedule, a permanent error, its patience spent).
pub fn after_failure(
    schedule: &Schedule,
    entry: &ReplicationEntry,
    error: &ReplicationError,
    now_ms: u64,
) -> Option<(u32, u64)> {
    let patience = match &error.kind {
        ErrorKind::Cancelled => return None,
        _ if error.code() == "NoSuchBucket" => NO_SUCH_BUCKET_GRACE,
        _ if error.is_permanent() => return None,
        _ => schedule.patience,
    };
    schedule.next(entry.replay.as_ref(), patience, now_ms)
}

/// Writes the entry, for this site only, to the replay topic of its step (retried until
/// written, or until the worker abandons its transfers: then false, and the offset stays).
pub async fn send(sh: &Shared, entry: &ReplicationEntry, replay: Replay, attempts: u32) -> bool {
    let mut out = entry.for_site(&sh.cfg.site);
    out.attempt = entry.attempt + attempts;
    out.replay = Some(replay);
    let topic = sh.cfg.topics.replay(&sh.cfg.site, replay.step as usize);
    let (key, body) = (entry.kafka_key(), out.encode());
    let what = "sending an entry to its replay topic";
    let never = |_: &QueueError| false;
    let sent = retry(&RetryPolicy::UNTIL_DONE, &sh.abort, what, never, |_| {
        kafka::send(&sh.producer, &topic, &key, Some(&body))
    });
    sent.await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::Stage;

    fn cfg() -> Schedule {
        Schedule {
            delays: vec![Duration::from_secs(30), Duration::from_secs(120)],
            patience: Duration::from_secs(86_400),
        }
    }

    fn entry(replay: Option<Replay>) -> ReplicationEntry {
        let text = r#"{"v":1,"type":"put","bucket":"b","key":"k","versionId":"v","sites":["a"]}"#;
        let e = ReplicationEntry::decode(text.as_bytes()).unwrap();
        ReplicationEntry { replay, ..e }
    }

    fn err(retryable: bool, code: &str) -> ReplicationError {
        let kind = ErrorKind::Request {
            code: code.into(),
            retryable,
        };
        ReplicationError::new(Stage::PutDestination, kind, "x")
    }

    #[test]
    fn a_retryable_failure_goes_up_the_schedule_until_the_patience_is_spent() {
        let (c, now) = (cfg(), 1_000_000_000);
        let slow = err(true, "SlowDown");
        assert_eq!(after_failure(&c, &entry(None), &slow, now), Some((0, now)));
        let back = |step, since| Replay {
            ticket: 1,
            step,
            due_ms: 0,
            failed_since_ms: since,
        };
        let once = entry(Some(back(0, now - 30_000)));
        assert_eq!(
            after_failure(&c, &once, &slow, now),
            Some((1, now - 30_000))
        );
        let often = entry(Some(back(1, now - 3_600_000)));
        assert_eq!(
            after_failure(&c, &often, &slow, now),
            Some((1, now - 3_600_000)),
            "the last delay repeats"
        );
        let old = entry(Some(back(1, now - 86_400_000)));
        assert_eq!(
            after_failure(&c, &old, &slow, now),
            None,
            "patience spent: FAILED"
        );
        // An entry that only waited behind its key starts its own count.
        let behind = entry(Some(back(1, 0)));
        assert_eq!(after_failure(&c, &behind, &slow, now), Some((0, now)));
    }

    #[test]
    fn permanent_errors_fail_at_once_and_a_missing_bucket_gets_an_hour() {
        let (c, now) = (cfg(), 1_000_000_000);
        assert_eq!(
            after_failure(&c, &entry(None), &err(false, "AccessDenied"), now),
            None
        );
        let missing = err(false, "NoSuchBucket");
        assert_eq!(
            after_failure(&c, &entry(None), &missing, now),
            Some((0, now))
        );
        let r = Replay {
            ticket: 1,
            step: 1,
            due_ms: 0,
            failed_since_ms: now - 3_600_000,
        };
        assert_eq!(after_failure(&c, &entry(Some(r)), &missing, now), None);
        let none = Schedule {
            delays: vec![],
            ..cfg()
        };
        assert_eq!(
            after_failure(&none, &entry(None), &err(true, "SlowDown"), now),
            None
        );
    }
}
