//! One entry's life on a shard: its turn in its key's line, the idempotence check, the copy,
//! the outcome recorded (or the entry sent to a replay topic), then its offset released and
//! the next version of its key started.

use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use glommio::sync::StaticPermit;
use tracing::Instrument;

use super::outcome::{self, EntryResult, Pending, Timings};
use super::replay;
use super::Shared;
use crate::queue::codec::{EntryType, ReplicationEntry};
use crate::queue::lines::Turn;
use crate::replication::breaker::is_outage;
use crate::replication::policy::Acl;
use crate::replication::{replicate, Outcome, ReplicationError, SourceOrder, Verdict, Version};
use crate::retry::retry;

/// An entry ready to run, with where it came from.
pub struct Job {
    pub partition: i32,
    pub offset: i64,
    pub generation: u64,
    pub entry: ReplicationEntry,
    pub received: Instant,
    /// From the entry's production (its message's timestamp) to its receipt here.
    pub in_topic: Option<Duration>,
}

/// Starts `job` on the shard's executor. It holds one of the shard's entry slots (`permit`)
/// until it ends, and hands it to the next version of its key if one waits.
pub fn spawn(sh: &Rc<Shared>, job: Job, permit: StaticPermit) {
    let (in_partition, fence) = sh.partitions.borrow_mut().enter_fenced(job.partition);
    let running = (sh.running.enter(), in_partition);
    // A root span: the next version of a key starts from this one's task, and must not
    // become its child (a hot key would chain every entry's span).
    let span = tracing::info_span!(
        parent: None,
        "entry",
        site = %sh.cfg.site,
        partition = job.partition,
        offset = job.offset,
        bucket = %job.entry.bucket,
        key = %job.entry.key,
        version = %job.entry.version_id,
    );
    let sh = sh.clone();
    let life = async move {
        let done = run(&sh, &job).await;
        drop(running);
        if done {
            finish(&sh, &job, permit);
        }
    };
    // Past a revoked partition's drain deadline the task is dropped where it stands (its
    // slot and counts released with it): it writes nothing after the new owner, and records
    // nothing. An open multipart upload is aborted by the new owner's replay.
    let fenced = async move {
        fence.wait().await;
        tracing::warn!("fenced: the partition was released; its new owner replays this entry");
    };
    let task = futures_lite::future::or(life, fenced);
    glommio::spawn_local(task.instrument(span)).detach();
}

fn version_of(e: &ReplicationEntry) -> Version {
    // A metadata event's sequencer orders the change, not the version: not its place.
    let sequencer = match e.kind {
        EntryType::Metadata => None,
        _ => e.sequencer.as_deref(),
    };
    Version {
        key: e.key.clone(),
        version_id: e.version_id.clone(),
        delete_marker: e.kind == EntryType::DeleteMarker,
        size: e.size,
        etag: e.etag.clone(),
        order: SourceOrder::of_version(e.last_modified.as_deref(), sequencer, &e.etag),
    }
}

/// Replicates the entry and records its outcome, or sends it to a replay topic (behind an
/// earlier version of its key that is out there, or after failing for a reason that may
/// pass). False when the entry was abandoned (the drain deadline passed) or its outcome
/// could not be recorded: its offset must stay uncommitted, so the next owner replays it.
async fn run(sh: &Shared, job: &Job) -> bool {
    let entry = &job.entry;
    if let Turn::Wait { ticket, step } = turn(sh, job) {
        tracing::debug!(
            step,
            "an earlier version of the key waits for its replay: going behind it"
        );
        let place = sh.cfg.replay.schedule.place(ticket, step, 0);
        return replay::send(sh, entry, place, 0).await;
    }
    let changed =
        outcome::event_time(entry).unwrap_or_else(|| SystemTime::now() - job.received.elapsed());
    let mut pending = Pending::new(&sh.stats, entry, changed);
    let start = Instant::now();
    let mut result = attempt(sh, entry).await;
    let outage = match &result {
        Err(g) if is_outage(&g.error) => Some(g.error.clone()),
        _ => None,
    };
    if let Some(e) = outage {
        if opens_soon(sh, &entry.key, &e).await {
            // The site went out of reach while this entry spent its attempts: it waits for
            // the site like the others (its attempts start again once the site answers).
            result = attempt(sh, entry).await;
        }
    }
    if result.is_err() && sh.abort.is_set() {
        // Abandoned at the drain deadline: not an outcome.
        return false;
    }
    let timings = Timings {
        changed,
        queue_wait: start - job.received,
        transfer: start.elapsed(),
        since_receipt: job.received.elapsed(),
        in_topic: job.in_topic,
    };
    if let Err(gave_up) = &result {
        let now = replay::unix_ms(SystemTime::now());
        if let Some((step, since)) =
            replay::after_failure(&sh.cfg.replay.schedule, entry, &gave_up.error, now)
        {
            let key = entry.kafka_key();
            let ticket = entry.replay.map(|r| r.ticket);
            let now_ns = replay::now_nanos();
            let ticket = sh
                .partitions
                .borrow_mut()
                .wait(job.partition, &key, ticket, step, now_ns);
            sh.note_waiting();
            let place = sh.cfg.replay.schedule.place(ticket, step, since);
            return replay::send(sh, entry, place, gave_up.attempts).await
                && outcome::record_replay(sh, entry, gave_up, &place, timings).await;
        }
    }
    outcome::record(sh, entry, &result, &mut pending, timings).await
}

/// Whether the site's breaker is open, or opens within 2 s (other entries' failures
/// reaching the threshold at the start of an outage). A 5xx or SlowDown that no other key
/// shares is one object's trouble, not waited for; a site that does not answer at all is.
async fn opens_soon(sh: &Shared, key: &str, e: &ReplicationError) -> bool {
    let unanswered = matches!(
        e.code(),
        "ConnectError" | "ConnectionError" | "Timeout" | "TlsError"
    );
    if !sh.breaker.is_open() && !unanswered && !sh.breaker.others_failing(key) {
        return false;
    }
    let within = std::time::Duration::from_secs(2);
    sh.breaker.opens_within(within, &sh.abort).await
}

/// Whether the entry runs now or goes behind its key's line (always runs without a replay
/// schedule).
fn turn(sh: &Shared, job: &Job) -> Turn {
    if sh.cfg.replay.schedule.delays.is_empty() {
        return Turn::Run;
    }
    let (key, ticket) = (job.entry.kafka_key(), job.entry.replay.map(|r| r.ticket));
    let now = replay::now_nanos();
    let turn = sh
        .partitions
        .borrow_mut()
        .turn(job.partition, &key, ticket, now);
    sh.note_waiting();
    turn
}

/// Decides whether the destination needs the version, and copies it if so.
async fn attempt(sh: &Shared, entry: &ReplicationEntry) -> EntryResult {
    let route = sh.route(&entry.bucket);
    sh.site_bucket_ready(&route).await;
    let v = version_of(entry);
    // The decision may list the key at the source: retried like the copy.
    let (dp, permanent) = (&sh.data, ReplicationError::is_permanent);
    let what = "deciding whether the destination needs this version";
    let breaker = dp.breaker.as_deref();
    if entry.kind == EntryType::Metadata {
        let updated = update_metadata(sh, &entry.fields, &route, &v).await;
        let missing = crate::replication::metadata::NOT_REPLICATED_YET;
        if !matches!(updated, Ok(Outcome::Superseded(why)) if why == missing) {
            return updated;
        }
        // Its replica is not there (a tag that now matches a rule, a copy that failed): the
        // version is copied, with the metadata it has now, if the source's order wants it.
    }
    let decided = retry(&dp.opts.retry, &dp.cancel, what, permanent, |_| {
        crate::replication::breaker::through(breaker, &v.key, &dp.cancel, || route.decide(&v))
    });
    match decided.await {
        // A copy whose ACL write failed: the ACL, not the bytes, again.
        Ok(Verdict::Applied) if route.policy.acl == Acl::Copy && !v.delete_marker => {
            let acl = [crate::replication::MetadataField::Acl];
            match update_metadata(sh, &acl, &route, &v).await {
                Ok(_) => Ok(Outcome::Skipped),
                Err(e) => Err(e),
            }
        }
        Ok(Verdict::Applied) => Ok(Outcome::Skipped),
        Ok(Verdict::Superseded(why)) => Ok(Outcome::Superseded(why)),
        Ok(Verdict::Apply) => replicate(&route, dp, &v).await,
        Err(gave_up) => Err(gave_up),
    }
}

/// Brings the replica's tags, ACL, retention or legal hold in line with the source's (no
/// bytes copied), with retries.
async fn update_metadata(
    sh: &Shared,
    fields: &[crate::replication::MetadataField],
    route: &crate::replication::Route,
    v: &Version,
) -> EntryResult {
    let (dp, permanent) = (&sh.data, ReplicationError::is_permanent);
    let what = "updating the replica's metadata";
    let breaker = dp.breaker.as_deref();
    let replicas = dp.opts.replicate_replicas;
    retry(&dp.opts.retry, &dp.cancel, what, permanent, |_| {
        crate::replication::breaker::through(breaker, &v.key, &dp.cancel, || {
            crate::replication::metadata::update(route, v, fields, replicas)
        })
    })
    .await
}

/// The entry is done: its offset may be committed, and the next version of its key starts
/// with the same slot.
fn finish(sh: &Rc<Shared>, job: &Job, permit: StaticPermit) {
    if super::admitted(&job.entry) {
        sh.count_consumed();
    }
    let next = sh
        .partitions
        .borrow_mut()
        .finish(job.partition, job.offset, job.generation);
    match next {
        Ok(Some((offset, (entry, received, in_topic)))) => {
            super::parked::started(sh, job.partition);
            let next = Job {
                partition: job.partition,
                offset,
                generation: job.generation,
                entry,
                received,
                in_topic,
            };
            spawn(sh, next, permit);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(partition = job.partition, offset = job.offset, error = %e, "ledger")
        }
    }
    sh.commit(job.partition);
}
