//! One entry's life on a shard: the idempotence check, the copy, the outcome recorded, then
//! its offset released and the next version of its key started.

use std::rc::Rc;
use std::time::{Instant, SystemTime};

use glommio::sync::StaticPermit;
use tracing::Instrument;

use super::outcome::{self, EntryResult, Pending, Timings};
use super::Shared;
use crate::queue::codec::{EntryType, ReplicationEntry};
use crate::replication::{replicate, Outcome, ReplicationError, SourceOrder, Verdict, Version};
use crate::retry::retry;

/// An entry ready to run, with where it came from.
pub struct Job {
    pub partition: i32,
    pub offset: i64,
    pub generation: u64,
    pub entry: ReplicationEntry,
    pub received: Instant,
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
    Version {
        key: e.key.clone(),
        version_id: e.version_id.clone(),
        delete_marker: e.kind == EntryType::DeleteMarker,
        size: e.size,
        etag: e.etag.clone(),
        order: SourceOrder::of_version(e.last_modified.as_deref(), e.sequencer.as_deref(), &e.etag),
    }
}

/// Replicates the entry and records its outcome. False when the entry was abandoned (the
/// drain deadline passed) or its outcome could not be recorded: its offset must stay
/// uncommitted, so the next owner replays it.
async fn run(sh: &Shared, job: &Job) -> bool {
    let entry = &job.entry;
    let changed =
        outcome::event_time(entry).unwrap_or_else(|| SystemTime::now() - job.received.elapsed());
    let mut pending = Pending::new(&sh.stats, entry, changed);
    let route = sh.route(&entry.bucket);
    let v = version_of(entry);
    let start = Instant::now();
    // The decision may list the key at the source: retried like the copy.
    let (dp, permanent) = (&sh.data, ReplicationError::is_permanent);
    let what = "deciding whether the destination needs this version";
    let breaker = dp.breaker.as_deref();
    let decided = retry(&dp.opts.retry, &dp.cancel, what, permanent, |_| {
        crate::replication::breaker::through(breaker, &v.key, &dp.cancel, || route.decide(&v))
    });
    let result: EntryResult = match decided.await {
        Ok(Verdict::Applied) => Ok(Outcome::Skipped),
        Ok(Verdict::Superseded(why)) => Ok(Outcome::Superseded(why)),
        Ok(Verdict::Apply) => replicate(&route, dp, &v).await,
        Err(gave_up) => Err(gave_up),
    };
    if result.is_err() && sh.abort.is_set() {
        // Abandoned at the drain deadline: not an outcome.
        return false;
    }
    let timings = Timings {
        changed,
        queue_wait: start - job.received,
        transfer: start.elapsed(),
        since_receipt: job.received.elapsed(),
    };
    outcome::record(sh, entry, &result, &mut pending, timings).await
}

/// The entry is done: its offset may be committed, and the next version of its key starts
/// with the same slot.
fn finish(sh: &Rc<Shared>, job: &Job, permit: StaticPermit) {
    sh.count_consumed();
    let next = sh
        .partitions
        .borrow_mut()
        .finish(job.partition, job.offset, job.generation);
    match next {
        Ok(Some((offset, (entry, received)))) => {
            let next = Job {
                partition: job.partition,
                offset,
                generation: job.generation,
                entry,
                received,
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
