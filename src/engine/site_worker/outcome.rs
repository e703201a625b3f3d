//! How an entry ended, made known: counters, histograms, the per-object tracker, the status
//! topic, and the failed topic (a failure after the retry budget and the replays, a
//! malformed message, or a tombstone once a retried entry completes); and an entry sent to
//! a replay topic, recorded as PENDING.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Shared;
use crate::failure::ErrorRecord;
use crate::metrics::objects::ObjectId;
use crate::metrics::Stats;
use crate::queue::codec::{
    Durations, FailedRecord, MalformedRecord, Replay, ReplicationEntry, Status, StatusEvent,
    VERSION,
};
use crate::queue::kafka::{self, QueueError};
use crate::replication::{Outcome, ReplicationError};
use crate::retry::{retry, GaveUp, RetryPolicy};
use crate::time::{parse_rfc3339, rfc3339};

/// The result of one entry: the outcome, or the error and the attempts it took.
pub type EntryResult = Result<Outcome, GaveUp<ReplicationError>>;

/// Counts an entry as pending (in flight) for as long as it lives, and tracks its version
/// for the per-object progress route.
pub struct Pending {
    stats: Arc<Stats>,
    bytes: u64,
    id: ObjectId,
    outcome: Option<bool>,
}

impl Pending {
    pub fn new(stats: &Arc<Stats>, e: &ReplicationEntry, changed: SystemTime) -> Self {
        Stats::add(&stats.in_flight, 1);
        Stats::add(&stats.in_flight_bytes, e.size);
        let id = (e.bucket.clone(), e.key.clone(), e.version_id.clone());
        stats
            .objects
            .lock()
            .expect("object tracker")
            .start(id.clone(), e.size, changed);
        Self {
            stats: stats.clone(),
            bytes: e.size,
            id,
            outcome: None,
        }
    }

    /// Records how the entry ended (kept for the progress route once it is dropped).
    pub fn finish(&mut self, completed: bool) {
        self.outcome = Some(completed);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.stats.in_flight.fetch_sub(1, Relaxed);
        self.stats.in_flight_bytes.fetch_sub(self.bytes, Relaxed);
        if let Ok(mut t) = self.stats.objects.lock() {
            t.end(&self.id, self.outcome);
        }
    }
}

/// When the source changed, as the entry says.
pub fn event_time(e: &ReplicationEntry) -> Option<SystemTime> {
    let t = e.source_event_time.as_deref()?;
    httpdate::parse_http_date(t)
        .ok()
        .or_else(|| parse_rfc3339(t))
}

/// An entry's outcome as one event: [`OutcomeEvent::emit`] logs it (in the entry's span,
/// which names site, partition, offset, bucket, key and version) and moves its counters.
struct OutcomeEvent<'a> {
    entry: &'a ReplicationEntry,
    result: &'a EntryResult,
}

/// What a status record says of an outcome.
struct Recorded {
    status: Status,
    bytes: u64,
    error: Option<ErrorRecord>,
    attempts: u32,
    /// Why nothing was written, for a completed entry that wrote nothing.
    reason: Option<String>,
}

impl OutcomeEvent<'_> {
    /// Logs and counts (counters, sliding windows, failure list); returns what the status
    /// record says.
    fn emit(&self, stats: &Stats) -> Recorded {
        let (entry, result) = (self.entry, self.result);
        if let Ok(mut w) = stats.window.lock() {
            match result {
                Ok(Outcome::Copied { bytes }) => w.record(true, *bytes),
                Ok(_) => w.record(true, 0),
                Err(_) => w.record(false, entry.size),
            }
        }
        let bytes = match result {
            Ok(Outcome::Copied { bytes }) => *bytes,
            _ => 0,
        };
        stats
            .per_bucket
            .record(&entry.bucket, result.is_ok(), bytes);
        let done = |counter: &std::sync::atomic::AtomicU64, bytes: u64, reason: Option<String>| {
            Stats::add(counter, 1);
            let status = Status::Completed;
            Recorded {
                status,
                bytes,
                error: None,
                attempts: 1,
                reason,
            }
        };
        match result {
            Ok(Outcome::Copied { bytes }) => {
                tracing::debug!(bytes, "copied");
                Stats::add(&stats.bytes_copied, *bytes);
                done(&stats.versions_copied, *bytes, None)
            }
            Ok(Outcome::DeleteMarker) => {
                tracing::debug!("delete marker written");
                done(&stats.delete_markers, 0, None)
            }
            Ok(Outcome::MetadataUpdated { writes }) => {
                tracing::debug!(writes, "metadata updated");
                done(&stats.metadata_updates, 0, None)
            }
            Ok(Outcome::Skipped) => {
                tracing::debug!("already at the destination");
                done(&stats.skipped, 0, Some("already at the destination".into()))
            }
            Ok(Outcome::Superseded(why)) => {
                tracing::info!(why, "superseded: not written");
                done(&stats.superseded, 0, Some(format!("superseded: {why}")))
            }
            Err(GaveUp {
                error, attempts, ..
            }) => {
                tracing::warn!(attempts, error = %error, "entry failed");
                // Recorded on the failed topic (by the caller), not kept in memory.
                Stats::add(&stats.failed, 1);
                let record = error.record();
                let (status, attempts) = (Status::Failed, *attempts);
                Recorded {
                    status,
                    bytes: 0,
                    error: Some(record),
                    attempts,
                    reason: None,
                }
            }
        }
    }
}

/// Timings of one entry.
pub struct Timings {
    pub changed: SystemTime,
    pub queue_wait: Duration,
    pub transfer: Duration,
    pub since_receipt: Duration,
    /// The entry's time in the replication topic (see `Job::in_topic`).
    pub in_topic: Option<Duration>,
}

/// Records the outcome everywhere it goes. Returns false when it could not be written to
/// the topics before the worker abandoned its transfers: the offset must then stay
/// uncommitted so the entry is replayed.
pub async fn record(
    sh: &Shared,
    entry: &ReplicationEntry,
    result: &EntryResult,
    pending: &mut Pending,
    t: Timings,
) -> bool {
    let out = OutcomeEvent { entry, result }.emit(&sh.stats);
    pending.finish(result.is_ok());
    let micros = |d: Duration| d.as_micros().max(1) as u64;
    if result.is_ok() {
        let rpo = SystemTime::now()
            .duration_since(t.changed)
            .unwrap_or_default();
        sh.rpo.lock().expect("rpo").saturating_record(micros(rpo));
    }
    sh.latency
        .lock()
        .expect("latency")
        .saturating_record(micros(t.since_receipt));
    let event = status_event(sh, entry, &out, &t);
    // The outcome must be recorded before the offset moves: retried until it is, or until
    // the worker abandons its transfers.
    let what = "recording an outcome";
    let until_done = &RetryPolicy::UNTIL_DONE;
    let never = |_: &QueueError| false;
    retry(until_done, &sh.abort, what, never, |_| {
        publish(sh, entry, &event)
    })
    .await
    .is_ok()
}

/// The status record of an outcome.
fn status_event(sh: &Shared, entry: &ReplicationEntry, out: &Recorded, t: &Timings) -> StatusEvent {
    StatusEvent {
        v: VERSION,
        bucket: entry.bucket.clone(),
        key: entry.key.clone(),
        version_id: entry.version_id.clone(),
        site: sh.cfg.site.clone(),
        status: out.status,
        bytes: out.bytes,
        durations: Durations {
            queue_wait_ms: t.queue_wait.as_millis() as u64,
            transfer_ms: t.transfer.as_millis() as u64,
            in_topic_ms: t.in_topic.map(|d| d.as_millis() as u64),
        },
        error: out.error.clone(),
        reason: out.reason.clone(),
        attempt: entry.attempt + out.attempts,
        at: rfc3339(SystemTime::now()),
        latency_ms: event_time(entry)
            .and_then(|c| SystemTime::now().duration_since(c).ok())
            .map(|d| d.as_millis() as u64),
        sites: entry.every_site().to_vec(),
    }
}

/// An entry that failed for a reason that may pass, sent to a replay topic: logged, counted
/// and recorded as PENDING with its error and when it runs again (retried like an outcome).
pub async fn record_replay(
    sh: &Shared,
    entry: &ReplicationEntry,
    gave_up: &GaveUp<ReplicationError>,
    place: &Replay,
    t: Timings,
) -> bool {
    let due = UNIX_EPOCH + Duration::from_millis(place.due_ms);
    let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
    tracing::warn!(
        attempts = gave_up.attempts,
        error = %gave_up.error,
        step = place.step,
        "entry failed: replayed in {} s",
        wait.as_secs()
    );
    Stats::add(&sh.stats.replays, 1);
    let out = Recorded {
        status: Status::Pending,
        bytes: 0,
        error: Some(gave_up.error.record()),
        attempts: gave_up.attempts,
        reason: Some(format!(
            "replayed at {} (step {})",
            rfc3339(due),
            place.step
        )),
    };
    let event = status_event(sh, entry, &out, &t);
    let topic = &sh.cfg.topics.status;
    let (key, body) = (entry.kafka_key(), event.encode());
    let what = "recording a replay";
    let never = |_: &QueueError| false;
    retry(&RetryPolicy::UNTIL_DONE, &sh.abort, what, never, |_| {
        kafka::send(&sh.producer, topic, &key, Some(&body))
    })
    .await
    .is_ok()
}

/// Writes the status event, and the failed record (or its tombstone once a retried entry
/// completes).
async fn publish(
    sh: &Shared,
    entry: &ReplicationEntry,
    event: &StatusEvent,
) -> Result<(), QueueError> {
    let topics = &sh.cfg.topics;
    let status_key = entry.kafka_key();
    kafka::send(
        &sh.producer,
        &topics.status,
        &status_key,
        Some(&event.encode()),
    )
    .await?;
    let site = &sh.cfg.site;
    let failed = match event.status {
        Status::Completed if entry.attempt > 0 => None,
        Status::Failed => {
            let r = FailedRecord::new(entry.clone(), site, event.error.clone(), event.at.clone());
            Some(serde_json::to_vec(&r).expect("a failed record serializes"))
        }
        _ => return Ok(()),
    };
    let key = FailedRecord::key(entry, site);
    kafka::send(&sh.producer, &topics.failed, &key, failed.as_deref()).await?;
    Ok(())
}

/// A message that is not run, recorded on the failed topic with its reason: `malformed`
/// (it does not decode) or `refused` (the configuration does not allow it).
pub struct Malformed<'a> {
    pub kind: &'static str,
    pub partition: i32,
    pub offset: i64,
    pub key: &'a str,
    pub payload: &'a [u8],
    pub reason: &'a str,
}

/// Records a malformed message on the failed topic, retried until it is written or the
/// worker shuts down. True when recorded (its offset may then be committed past).
pub async fn record_malformed(
    sh: &Shared,
    m: &Malformed<'_>,
    shutdown: &crate::shard::Shutdown,
) -> bool {
    let record = MalformedRecord {
        v: VERSION,
        kind: m.kind.into(),
        topic: sh.cfg.topics.replication.clone(),
        partition: m.partition,
        offset: m.offset,
        key: m.key.to_string(),
        reason: m.reason.to_string(),
        payload: String::from_utf8_lossy(m.payload).into_owned(),
        site: sh.cfg.site.clone(),
        at: rfc3339(SystemTime::now()),
    };
    let k = record.record_key();
    let body = serde_json::to_vec(&record).expect("a malformed record serializes");
    let failed = &sh.cfg.topics.failed;
    let send = |_| kafka::send(&sh.producer, failed, &k, Some(&body));
    let what = "recording an entry set aside";
    let never = |_: &QueueError| false;
    if retry(&RetryPolicy::UNTIL_DONE, shutdown, what, never, send)
        .await
        .is_err()
    {
        return false;
    }
    tracing::warn!(
        partition = m.partition,
        offset = m.offset,
        kind = m.kind,
        reason = m.reason,
        "entry set aside on the failed topic"
    );
    Stats::add(&sh.stats.failed, 1);
    true
}
