//! Changes the populator cannot turn into entries (their bucket's rules or their tags
//! unreadable, while the source answers), set aside so that the rest of their batch, and
//! other buckets, go on. A change whose error may pass goes to the populator's replay topics
//! and comes back to the events topic after a delay (`queue::replayer`); one that fails for
//! good, or past the patience, is parked on the failed topic with its reason (a
//! missing-only scan of its bucket replicates it once the cause is fixed).

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

use super::events::Change;
use super::worker::{PopulateConfig, PopulateError};
use crate::failure::ErrorRecord;
use crate::metrics::Stats;
use crate::queue::codec::{Replay, VERSION};
use crate::queue::kafka::{self, Producer, QueueError};
use crate::queue::replayer::unix_ms;

/// A change on the populator's replay topics (and back on the events topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangeReplay {
    pub v: u32,
    /// Always `"change-replay"`.
    pub kind: String,
    pub change: Change,
    pub replay: Replay,
    /// Why it was set aside the last time.
    pub reason: String,
}

const KIND: &str = "change-replay";

impl ChangeReplay {
    /// The change in a message of the events topic, when the message is one sent back.
    pub fn detect(payload: &[u8]) -> Option<Self> {
        let marker = format!("\"kind\":\"{KIND}\"");
        let has = payload
            .windows(marker.len())
            .any(|w| w == marker.as_bytes());
        has.then(|| serde_json::from_slice::<Self>(payload).ok())
            .flatten()
            .filter(|c| c.v == VERSION)
    }

    /// When a record of the replay topics is due (the replayer's question).
    pub fn due(payload: &[u8]) -> Result<u64, String> {
        let c: Self = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        Ok(c.replay.due_ms)
    }
}

/// A change parked for good on the failed topic (keyed `change/bucket/key/versionId`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ParkedChange<'a> {
    v: u32,
    /// Always `"change"`.
    kind: &'static str,
    change: &'a Change,
    error: ErrorRecord,
    at: String,
}

/// What became of a change set aside.
#[derive(Debug, PartialEq, Eq)]
pub enum Aside {
    /// On the replay topic of `step`.
    Replayed { step: u32 },
    /// On the failed topic.
    Parked,
}

/// Sets a change aside: to the replay topic of its next step while its error may pass and
/// its patience lasts, else parked on the failed topic. `prior` is its place the last time.
pub async fn set_aside(
    cfg: &PopulateConfig,
    producer: &Producer,
    stats: &Stats,
    change: &Change,
    prior: Option<&Replay>,
    ticket: u64,
    error: &PopulateError,
) -> Result<Aside, QueueError> {
    let now = unix_ms(SystemTime::now());
    let s = &cfg.schedule;
    let next = (!error.is_permanent())
        .then(|| s.next(prior, s.patience, now))
        .flatten();
    if let Some((step, since)) = next {
        let replay = s.place(ticket, step, since);
        send_replay(cfg, producer, stats, change, replay, error.to_string()).await?;
        tracing::warn!(bucket = %change.bucket, key = %change.key, step, error = %error, "change set aside: replayed later");
        return Ok(Aside::Replayed { step });
    }
    let record = ParkedChange {
        v: VERSION,
        kind: "change",
        change,
        error: error.record(),
        at: crate::time::rfc3339(SystemTime::now()),
    };
    let body = serde_json::to_vec(&record).expect("a parked change serializes");
    let k = format!(
        "change/{}/{}/{}",
        change.bucket, change.key, change.version_id
    );
    kafka::send(producer, &cfg.topics.failed, &k, Some(&body)).await?;
    Stats::add(&stats.failed, 1);
    tracing::error!(bucket = %change.bucket, key = %change.key, version = %change.version_id, error = %error,
        "change parked on the failed topic: fix the cause, then run `backbeat populate --scan --missing-only` for its bucket");
    Ok(Aside::Parked)
}

/// Sends a change to the replay topic of `step`, behind an earlier change of its key set
/// aside there (it keeps its own failure time: it has not failed for this).
pub async fn behind(
    cfg: &PopulateConfig,
    producer: &Producer,
    stats: &Stats,
    change: &Change,
    prior: Option<&Replay>,
    ticket: u64,
    step: u32,
) -> Result<(), QueueError> {
    let since = prior.map_or(0, |r| r.failed_since_ms);
    let replay = cfg.schedule.place(ticket, step, since);
    let reason = "an earlier version of its key was set aside".to_string();
    send_replay(cfg, producer, stats, change, replay, reason).await?;
    tracing::info!(bucket = %change.bucket, key = %change.key, step, "change set aside behind an earlier version of its key");
    Ok(())
}

/// Writes a change to the replay topic of its place's step, keyed by its object.
async fn send_replay(
    cfg: &PopulateConfig,
    producer: &Producer,
    stats: &Stats,
    change: &Change,
    replay: Replay,
    reason: String,
) -> Result<(), QueueError> {
    let record = ChangeReplay {
        v: VERSION,
        kind: KIND.into(),
        change: change.clone(),
        replay,
        reason,
    };
    let body = serde_json::to_vec(&record).expect("a change serializes");
    let key = format!("{}/{}", change.bucket, change.key);
    let topic = cfg.topics.events_replay(replay.step as usize);
    kafka::send(producer, &topic, &key, Some(&body)).await?;
    Stats::add(&stats.replays, 1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::populate::events::ChangeKind;

    #[test]
    fn a_change_sent_back_is_told_from_an_event_and_says_when_it_is_due() {
        let c = ChangeReplay {
            v: VERSION,
            kind: KIND.into(),
            change: Change {
                kind: ChangeKind::Created,
                bucket: "b".into(),
                key: "k é".into(),
                version_id: "v1".into(),
                size: 3,
                etag: "e".into(),
                sequencer: "0A".into(),
                event_time: None,
            },
            replay: Replay {
                ticket: 0,
                step: 1,
                due_ms: 42,
                failed_since_ms: 7,
            },
            reason: "rules of bucket b: 503".into(),
        };
        let bytes = serde_json::to_vec(&c).unwrap();
        assert_eq!(ChangeReplay::detect(&bytes), Some(c));
        assert_eq!(ChangeReplay::due(&bytes), Ok(42));
        let event = br#"{"Records":[{"eventName":"ObjectCreated:Put"}]}"#;
        assert_eq!(ChangeReplay::detect(event), None);
        assert!(ChangeReplay::due(b"{}").is_err());
    }
}
