//! Incremental ingestion's role: for the selected buckets that `source.ingest_buckets`
//! names, a pass every `source.ingest_interval_seconds` (`populate::ingest`), one bucket at
//! a time, each pausable on its own through the control topic (`ingestion/BUCKET`). The
//! passes run on whichever member of the `<prefix>ingest` group holds the buckets topic's
//! only partition; the state they compare with lives on that node's disk
//! (`source.ingest_state_dir`), so a node that takes over lists its buckets afresh once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::Consumer as _;

use crate::buckets::{Known, Selection};
use crate::metrics::ingest::{eta, IngestStats, LastPass};
use crate::populate::ingest::{self, Progress};
use crate::populate::ingest_state::BucketState;
use crate::populate::worker::PopulateConfig;
use crate::queue::control::{self, Compacted, SiteControl};
use crate::queue::kafka::{self, QueueError};
use crate::shard::Shutdown;

/// A pass that failed is tried again after this long (or the interval, if shorter).
const AFTER_FAILURE: Duration = Duration::from_secs(30);

/// What ingestion needs.
#[derive(Clone)]
pub struct Ingestion {
    pub pc: PopulateConfig,
    pub known: Arc<Known>,
    pub select: Selection,
    pub interval: Duration,
    pub dir: PathBuf,
    pub group: String,
    pub stats: Arc<IngestStats>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn decode_control(b: &[u8]) -> Option<SiteControl> {
    SiteControl::decode(b).ok()
}

/// Whether the bucket's ingestion is paused now.
fn paused(controls: &Compacted<SiteControl>, bucket: &str) -> bool {
    let key = control::ingestion_key(bucket);
    controls.borrow().get(&key).is_some_and(|c| c.paused_now())
}

/// When the bucket's next pass is due: now for a pass that was stopped (or none yet), else
/// the interval after the last pass ended.
fn due_at(dir: &std::path::Path, bucket: &str, interval: Duration) -> Instant {
    let st = BucketState::open(dir, bucket);
    let last = st.as_ref().ok().and_then(|s| {
        let stopped = s.cursor().ok().flatten().is_some();
        let done = s.done().ok().flatten();
        done.filter(|_| !stopped).map(|d| d.finished)
    });
    let Some(finished) = last else {
        return Instant::now();
    };
    let since = Duration::from_secs(unix_now().saturating_sub(finished));
    Instant::now() + interval.saturating_sub(since)
}

/// Runs ingestion until shutdown (on its own executor).
pub async fn run(ing: Ingestion, shutdown: Shutdown) -> Result<(), QueueError> {
    let pc = &ing.pc;
    let (topic, membership) = (&pc.topics.buckets, &pc.membership);
    let consumer = kafka::member(&pc.brokers, &ing.group, membership, topic)?;
    // Polled all along, so that a long pass keeps the membership.
    let (c, sd) = (consumer.clone(), shutdown.clone());
    glommio::spawn_local(async move {
        while !sd.is_set() {
            let _ = kafka::recv_within(&c, Duration::from_millis(500)).await;
        }
    })
    .detach();
    let topic = &pc.topics.control;
    let controls = control::follow_all(&pc.brokers, topic, decode_control, shutdown.clone())?;
    let due: RefCell<HashMap<String, Instant>> = Default::default();
    let leader = || {
        consumer
            .assignment()
            .map(|a| a.count() > 0)
            .unwrap_or(false)
    };
    while !shutdown.is_set() {
        shutdown.sleep(Duration::from_secs(1)).await;
        ing.stats
            .leader
            .store(leader(), std::sync::atomic::Ordering::Relaxed);
        if !leader() {
            due.borrow_mut().clear();
            continue;
        }
        for bucket in ing
            .known
            .list()
            .into_iter()
            .filter(|b| ing.select.matches(b))
        {
            if shutdown.is_set() || !leader() {
                break;
            }
            if paused(&controls, &bucket) {
                ing.stats.update(&bucket, |b| b.state = "paused".into());
                continue;
            }
            let at = *(due.borrow_mut())
                .entry(bucket.clone())
                .or_insert_with(|| due_at(&ing.dir, &bucket, ing.interval));
            if Instant::now() < at {
                continue;
            }
            let stop = || shutdown.is_set() || !leader() || paused(&controls, &bucket);
            let next = one_pass(&ing, &bucket, &stop).await;
            due.borrow_mut().insert(bucket, Instant::now() + next);
        }
    }
    Ok(())
}

/// One pass (or the rest of one) over `bucket`, its figures kept; how long until the next.
async fn one_pass(ing: &Ingestion, bucket: &str, stop: &dyn Fn() -> bool) -> Duration {
    let stats = &ing.stats;
    let (mut requests, mut entries) = (0, 0);
    let progress = |p: &Progress| {
        let now = unix_now();
        stats.update(bucket, |b| {
            b.state = "listing".into();
            (b.pass, b.keys, b.pages, b.enqueued) = (p.pass, p.keys, p.pages, p.enqueued);
            (b.started, b.at, b.fraction) = (p.started, p.at.clone(), p.fraction);
            b.eta_seconds = eta(p.fraction, now.saturating_sub(p.started));
            b.list_requests_total += p.requests - requests;
            b.entries_total += p.entries - entries;
            b.error = None;
        });
        (requests, entries) = (p.requests, p.entries);
    };
    let started = unix_now();
    let r = ingest::pass(&ing.pc, bucket, &ing.dir, stop, progress).await;
    match r {
        Ok(p) if p.finished => {
            tracing::info!(
                bucket,
                pass = p.pass,
                keys = p.keys,
                pages = p.pages,
                enqueued = p.enqueued,
                "ingestion pass done"
            );
            stats.update(bucket, |b| {
                b.state = "waiting".into();
                b.passes_total += 1;
                b.eta_seconds = None;
                let seconds = unix_now().saturating_sub(p.started.min(started));
                let (pass, keys, pages, enqueued) = (p.pass, p.keys, p.pages, p.enqueued);
                let finished = unix_now();
                b.last_pass = Some(LastPass {
                    pass,
                    keys,
                    pages,
                    enqueued,
                    seconds,
                    finished,
                });
            });
            ing.interval
        }
        Ok(p) => {
            tracing::info!(
                bucket,
                pass = p.pass,
                keys = p.keys,
                "ingestion pass stopped; it resumes after its last page"
            );
            Duration::ZERO
        }
        Err(e) => {
            tracing::warn!(bucket, error = %e, "ingestion pass failed; it resumes after its last page");
            stats.update(bucket, |b| {
                b.state = "failing".into();
                b.error = Some(e.to_string());
            });
            ing.interval.min(AFTER_FAILURE)
        }
    }
}
