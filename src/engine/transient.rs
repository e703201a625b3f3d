//! Transient sources (`source.transient_buckets`): a source bucket used as a landing zone,
//! whose versions are deleted once every site they must reach holds them. Two consumer
//! group members per node: the aggregator reads the status topic (`queue::transient`) and,
//! for a version every site reported COMPLETED, produces a record on the garbage-collection
//! topic due after `source.transient_grace_seconds`; the collector reads that topic, waits
//! until a record is due, checks again that each site holds the version whole (its replica
//! records it, with its ETag and size), and only then deletes it from the source by version
//! id. A version that failed at a site, or that a site does not hold when checked, stays.
//! Delete markers and unversioned objects are never deleted.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{CommitMode, Consumer as _, DefaultConsumerContext};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use crate::buckets::Selection;
use crate::metrics::transient::TransientStats;
use crate::populate::worker::PopulateConfig;
use crate::queue::codec::StatusEvent;
use crate::queue::kafka::{self, Consumer, Producer, QueueError};
use crate::queue::transient::{Aggregated, Aggregator, GcRecord};
use crate::replication::{Route, SourceOrder, Version};
use crate::retry::{retry, RetryPolicy};
use crate::s3::ops::head_object::{HeadObjectError, HeadObjectRequest};
use crate::s3::Client;
use crate::shard::Shutdown;

/// Versions the aggregation keeps open at most (beyond, the oldest is given up).
const MAX_OPEN: usize = 100_000;

/// What transient sources need.
#[derive(Clone)]
pub struct Transient {
    pub pc: PopulateConfig,
    pub select: Selection,
    pub grace: Duration,
    pub stats: Arc<TransientStats>,
    /// `kafka.topic_prefix`: the groups are `<prefix>transient-aggregator` and
    /// `<prefix>transient-collector`.
    pub prefix: String,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn group(t: &Transient, role: &str) -> String {
    format!("{}transient-{role}", t.prefix)
}

fn member(
    t: &Transient,
    role: &str,
    topic: &str,
) -> Result<Arc<Consumer<DefaultConsumerContext>>, QueueError> {
    kafka::member(&t.pc.brokers, &group(t, role), &t.pc.membership, topic)
}

/// Polled while `work` takes long, so the member stays in its group.
const POLL_AFTER: Duration = Duration::from_secs(5);

/// Runs the aggregator and the collector until shutdown (on one executor).
pub async fn run(t: Transient, shutdown: Shutdown) -> Result<(), QueueError> {
    let a = glommio::spawn_local(aggregate(t.clone(), shutdown.clone()));
    let c = collect(t, shutdown).await;
    a.await.and(c)
}

fn owned(c: &Consumer<DefaultConsumerContext>) -> Vec<i32> {
    let a = c.assignment().unwrap_or_default();
    a.elements().iter().map(|e| e.partition()).collect()
}

/// The aggregator: status records in, garbage-collection records out; the status topic's
/// offsets committed behind the oldest open version of each partition.
async fn aggregate(t: Transient, shutdown: Shutdown) -> Result<(), QueueError> {
    let topic = t.pc.topics.status.clone();
    let consumer = member(&t, "aggregator", &topic)?;
    let producer = kafka::producer(&t.pc.brokers)?;
    let mut agg = Aggregator::new(MAX_OPEN);
    let mut last_commit = std::time::Instant::now();
    while !shutdown.is_set() {
        if let Some(Ok(m)) = kafka::recv_within(&consumer, Duration::from_millis(500)).await {
            let (p, o) = (m.partition(), m.offset());
            let ev = crate::queue::signing::check(&m)
                .ok()
                .and_then(|()| StatusEvent::decode(m.payload().unwrap_or_default()).ok());
            drop(m);
            let ours = ev.as_ref().filter(|e| t.select.matches(&e.bucket));
            let verdict = match ours {
                Some(e) => agg.status(p, o, e),
                None => agg.skip(p, o),
            };
            if let (Aggregated::Complete(sites), Some(e)) = (verdict, ours) {
                let work = enqueue(&t, &producer, e, sites, &shutdown);
                if !kafka::polled_while(&consumer, &topic, POLL_AFTER, work).await {
                    return Ok(()); // stopping: the record is read again after a restart
                }
            }
        }
        if last_commit.elapsed() >= Duration::from_secs(1) {
            last_commit = std::time::Instant::now();
            commit_behind(&consumer, &topic, &mut agg);
            let s = &t.stats;
            s.waiting.store(
                agg.open_count() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            let oldest = agg.oldest_wait().map_or(0, |d| d.as_secs());
            s.oldest_wait_seconds
                .store(oldest, std::sync::atomic::Ordering::Relaxed);
            s.given_up
                .store(agg.given_up, std::sync::atomic::Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Produces the garbage-collection record of a version every site holds (until it is taken,
/// or the process stops: false).
async fn enqueue(
    t: &Transient,
    p: &Producer,
    e: &StatusEvent,
    sites: Vec<String>,
    shutdown: &Shutdown,
) -> bool {
    let r = GcRecord {
        v: 1,
        bucket: e.bucket.clone(),
        key: e.key.clone(),
        version_id: e.version_id.clone(),
        sites,
        due_ms: unix_ms() + t.grace.as_millis() as u64,
    };
    let (key, body, topic) = (r.kafka_key(), r.encode(), &t.pc.topics.gc);
    let what = "recording a version every site holds";
    let sent = retry(
        &RetryPolicy::UNTIL_DONE,
        shutdown,
        what,
        |_: &QueueError| false,
        |_| kafka::send(p, topic, &key, Some(&body)),
    );
    sent.await.is_ok()
}

/// Commits, for each partition still owned, the aggregation's commit point; forgets the
/// partitions no longer owned.
fn commit_behind(c: &Consumer<DefaultConsumerContext>, topic: &str, agg: &mut Aggregator) {
    let owned = owned(c);
    let gone: Vec<i32> = agg
        .partitions()
        .into_iter()
        .filter(|p| !owned.contains(p))
        .collect();
    agg.revoke(&gone);
    let mut tpl = TopicPartitionList::new();
    for p in owned {
        if let Some(o) = agg.commit_point(p) {
            let _ = tpl.add_partition_offset(topic, p, Offset::Offset(o));
        }
    }
    if tpl.count() > 0 {
        if let Err(e) = c.commit(&tpl, CommitMode::Async) {
            tracing::warn!(topic, error = %e, "commit failed");
        }
    }
}

/// What the check before a deletion found.
#[derive(Debug)]
enum Collected {
    Reclaimed(u64),
    AlreadyGone,
    Kept(String),
}

/// The collector: each garbage-collection record, once due, checked and carried out.
async fn collect(t: Transient, shutdown: Shutdown) -> Result<(), QueueError> {
    let topic = t.pc.topics.gc.clone();
    let consumer = member(&t, "collector", &topic)?;
    let source = Client::new(t.pc.source.clone(), None);
    while !shutdown.is_set() {
        let Some(Ok(m)) = kafka::recv_within(&consumer, Duration::from_millis(500)).await else {
            continue;
        };
        let (p, o) = (m.partition(), m.offset());
        let rec = crate::queue::signing::check(&m)
            .map_err(|e| e.to_string())
            .and_then(|()| GcRecord::decode(m.payload().unwrap_or_default()));
        drop(m);
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(partition = p, offset = o, error = %e, "garbage-collection record refused: nothing deleted");
                commit(&consumer, &topic, p, o);
                continue;
            }
        };
        if !hold_until_due(&consumer, &rec, p, &shutdown).await {
            continue; // stopping, or the partition went to another member
        }
        let what = format!(
            "deleting {}/{} {} from the source",
            rec.bucket, rec.key, rec.version_id
        );
        let done = retry(
            &RetryPolicy::UNTIL_DONE,
            &shutdown,
            what,
            |_: &String| false,
            |_| collect_one(&t, &source, &rec),
        );
        match kafka::polled_while(&consumer, &topic, POLL_AFTER, done).await {
            Ok(c) => {
                note(&t, &rec, &c);
                commit(&consumer, &topic, p, o);
            }
            Err(_) => return Ok(()), // stopping
        }
    }
    Ok(())
}

/// Waits until `rec` is due, the consumer paused (and polled, so it stays in its group).
/// False at shutdown, or when partition `p` is no longer this member's.
async fn hold_until_due(
    c: &Consumer<DefaultConsumerContext>,
    rec: &GcRecord,
    p: i32,
    shutdown: &Shutdown,
) -> bool {
    if unix_ms() >= rec.due_ms {
        return true;
    }
    let paused = c.assignment().unwrap_or_default();
    let _ = c.pause(&paused);
    while unix_ms() < rec.due_ms && !shutdown.is_set() && owned(c).contains(&p) {
        let wait = Duration::from_millis(rec.due_ms.saturating_sub(unix_ms()).min(500));
        if let Some(Ok(m)) = kafka::recv_within(c, wait).await {
            // Fetched before the pause: put back, to be read after this one.
            let (topic, part, off) = (m.topic().to_string(), m.partition(), m.offset());
            drop(m);
            if let Err(e) = c.seek(&topic, part, Offset::Offset(off), Duration::from_secs(5)) {
                tracing::warn!(topic, partition = part, offset = off, error = %e, "cannot put back a record fetched before the pause");
            }
        }
    }
    let _ = c.resume(&c.assignment().unwrap_or_default());
    // Not due: read again from the committed offset (by this member, or the next owner).
    !shutdown.is_set() && owned(c).contains(&p)
}

fn commit(c: &Consumer<DefaultConsumerContext>, topic: &str, p: i32, o: i64) {
    let mut tpl = TopicPartitionList::new();
    let _ = tpl.add_partition_offset(topic, p, Offset::Offset(o + 1));
    if let Err(e) = c.commit(&tpl, CommitMode::Async) {
        tracing::warn!(topic, partition = p, error = %e, "commit failed");
    }
}

fn note(t: &Transient, rec: &GcRecord, c: &Collected) {
    let s = &t.stats;
    let (b, k, v) = (&rec.bucket, &rec.key, &rec.version_id);
    match c {
        Collected::Reclaimed(bytes) => {
            tracing::info!(
                bucket = b,
                key = k,
                version = v,
                bytes,
                "transient: deleted from the source, every site holds it"
            );
            TransientStats::add(&s.reclaimed_versions, 1);
            TransientStats::add(&s.reclaimed_bytes, *bytes);
        }
        Collected::AlreadyGone => {
            tracing::debug!(
                bucket = b,
                key = k,
                version = v,
                "transient: already gone from the source"
            )
        }
        Collected::Kept(why) => {
            tracing::warn!(
                bucket = b,
                key = k,
                version = v,
                why,
                "transient: kept at the source"
            );
            TransientStats::add(&s.kept, 1);
        }
    }
}

/// Checks that each site holds the version, then deletes it from the source.
async fn collect_one(t: &Transient, source: &Client, rec: &GcRecord) -> Result<Collected, String> {
    if rec.version_id == "null" {
        return Ok(Collected::Kept(
            "an unversioned object is never deleted".into(),
        ));
    }
    let req = HeadObjectRequest {
        version_id: Some(&rec.version_id),
        ..Default::default()
    };
    let h = match source.head_object(&rec.bucket, &rec.key, req).await {
        Ok(h) => h,
        Err(HeadObjectError::NotFound) => return Ok(Collected::AlreadyGone),
        Err(HeadObjectError::DeleteMarker { .. }) => {
            return Ok(Collected::Kept("a delete marker is never deleted".into()))
        }
        Err(e) if !e.is_retryable() => {
            return Ok(Collected::Kept(format!("the source refused a HEAD: {e}")))
        }
        Err(e) => return Err(format!("HEAD at the source: {e}")),
    };
    let v = Version {
        key: rec.key.clone(),
        version_id: rec.version_id.clone(),
        delete_marker: false,
        size: h.content_length,
        order: SourceOrder::of_version(h.last_modified.as_deref(), None, &h.etag),
        etag: h.etag.clone(),
    };
    for site in &rec.sites {
        let Some(s) = t.pc.sites.get(site) else {
            return Ok(Collected::Kept(format!(
                "site {site} is not configured here"
            )));
        };
        let route = Route {
            source: source.clone(),
            source_bucket: rec.bucket.clone(),
            dest: Client::new(s.endpoint.clone(), None),
            dest_bucket: s.buckets.dest(&rec.bucket),
            dest_versioned: s.versioned,
            policy: s.policy.clone(),
        };
        match crate::replication::metadata::holds(&route, &v).await {
            Ok(true) => {}
            Ok(false) => {
                return Ok(Collected::Kept(format!(
                    "site {site} does not hold it whole"
                )))
            }
            Err(e) if e.is_permanent() => {
                return Ok(Collected::Kept(format!(
                    "site {site} cannot be checked: {e}"
                )))
            }
            Err(e) => return Err(format!("checking site {site}: {e}")),
        }
    }
    match source
        .delete_object(&rec.bucket, &rec.key, Some(&rec.version_id))
        .await
    {
        Ok(_) => Ok(Collected::Reclaimed(v.size)),
        Err(e) if !e.is_retryable() => Ok(Collected::Kept(format!("the source refused: {e}"))),
        Err(e) => Err(format!("DeleteObject at the source: {e}")),
    }
}
