//! The site worker of one shard: a member of the site's consumer group that replicates the
//! entries of the partitions it owns, records each outcome on the status topic (and failures
//! on the failed topic), and commits a partition's offset only up to its lowest unfinished
//! entry.
//!
//! Entries of different keys run concurrently (up to `concurrency` per shard); versions of
//! one key run in offset order. A malformed message goes to the failed topic with its reason
//! and is committed past. On shutdown the worker stops taking entries, lets the ones in
//! flight finish until a deadline, commits and leaves the group. A crash replays at most the
//! uncommitted window, which the idempotence check makes harmless.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{CommitMode, Consumer as _, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::{ClientContext, TopicPartitionList};

use super::{
    already_at_destination, replicate, version_applied, Ctx, Options, Outcome, ReplicationError,
    Version,
};
use crate::metrics::objects::ObjectId;
use crate::metrics::{Failure, Stats};
use crate::queue::codec::{
    Durations, EntryType, ReplicationEntry, Status, StatusError, StatusEvent, VERSION,
};
use crate::queue::kafka::{self, Consumer, Producer, QueueError, Topics};
use crate::queue::ledger::Ledger;
use crate::s3::{Client, Endpoint};
use crate::shard::Shutdown;

/// What a site worker needs.
#[derive(Clone)]
pub struct WorkerConfig {
    pub site: String,
    pub brokers: String,
    pub topics: Topics,
    pub group: String,
    pub session_timeout_ms: u32,
    pub source: Arc<Endpoint>,
    pub dest: Arc<Endpoint>,
    /// Source bucket -> destination bucket (a bucket not listed keeps its name).
    pub buckets: BTreeMap<String, String>,
    pub dest_versioned: bool,
    pub opts: Options,
    /// Entries in flight per shard.
    pub concurrency: usize,
    /// Parts in flight per shard.
    pub shard_parts: usize,
    /// How long in-flight entries may take to finish at shutdown.
    pub drain_deadline: Duration,
    /// Counts the messages this site is done with (embedded broker backpressure).
    pub consumed: Option<Arc<std::sync::atomic::AtomicU64>>,
}

/// Rebalance as a small state machine. An assignment is applied at once. A revocation is
/// only noted: the worker loop stops taking entries, lets those in flight finish (up to the
/// drain deadline), commits the revoked partitions synchronously, and then releases them with
/// `unassign` (librdkafka waits for that call before the group moves on). While closing, a
/// revocation is applied at once.
#[derive(Default, Clone)]
pub struct RebalanceNotes {
    revoked: Arc<Mutex<Option<Vec<i32>>>>,
    closing: Arc<std::sync::atomic::AtomicBool>,
    /// Partitions this shard owns now (summed into the site's gauge).
    owned: Arc<std::sync::atomic::AtomicI64>,
    /// The site is paused: partitions are paused as soon as they are assigned.
    paused: Arc<std::sync::atomic::AtomicBool>,
}

impl RebalanceNotes {
    fn take_revoked(&self) -> Option<Vec<i32>> {
        self.revoked.lock().expect("rebalance notes").take()
    }
}

impl ClientContext for RebalanceNotes {}

impl ConsumerContext for RebalanceNotes {
    fn rebalance(
        &self,
        base: &rdkafka::consumer::BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr as E;
        let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                tracing::info!(partitions = ?parts, "partitions assigned");
                if let Err(e) = base.assign(tpl) {
                    tracing::error!(error = %e, "assign failed");
                } else {
                    self.owned
                        .store(parts.len() as i64, std::sync::atomic::Ordering::Relaxed);
                    if self.paused.load(std::sync::atomic::Ordering::SeqCst) {
                        if let Err(e) = base.pause(tpl) {
                            tracing::warn!(error = %e, "cannot pause newly assigned partitions");
                        }
                    }
                }
            }
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS
                if !self.closing.load(std::sync::atomic::Ordering::SeqCst) =>
            {
                tracing::info!(partitions = ?parts, "partitions revoked: draining");
                self.revoked
                    .lock()
                    .expect("rebalance notes")
                    .get_or_insert_with(Vec::new)
                    .extend(parts);
            }
            _ => {
                if err != E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    tracing::warn!(?err, "rebalance error");
                }
                let _ = base.unassign();
            }
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            tracing::warn!(error = %e, "offset commit failed");
        }
    }
}

struct Partition {
    ledger: Ledger,
    /// Entries of this partition being replicated now.
    in_flight: usize,
    /// Entries waiting behind an earlier version of their key, by offset.
    parked: HashMap<i64, (ReplicationEntry, Instant)>,
    generation: u64,
}

struct State {
    partitions: HashMap<i32, Partition>,
    generation: u64,
    in_flight: usize,
}

struct Shared {
    cfg: WorkerConfig,
    owned: Arc<std::sync::atomic::AtomicI64>,
    consumer: Consumer<RebalanceNotes>,
    producer: Producer,
    stats: Arc<Stats>,
    /// Abandon transfers in flight: only once the drain deadline passed.
    abort: Shutdown,
    state: RefCell<State>,
    ctxs: RefCell<HashMap<String, Rc<Ctx>>>,
    source: Client,
    dest: Client,
    latency: Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
    rpo: Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
    /// The shard's byte window, shared by its per-bucket contexts.
    byte_window: Rc<glommio::sync::Semaphore>,
}

impl Shared {
    fn ctx(&self, bucket: &str) -> Rc<Ctx> {
        if let Some(c) = self.ctxs.borrow().get(bucket) {
            return c.clone();
        }
        let ctx = Rc::new(Ctx {
            source: self.source.clone(),
            source_bucket: bucket.to_string(),
            dest: self.dest.clone(),
            dest_bucket: self
                .cfg
                .buckets
                .get(bucket)
                .cloned()
                .unwrap_or_else(|| bucket.to_string()),
            dest_versioned: self.cfg.dest_versioned,
            opts: self.cfg.opts.clone(),
            stats: self.stats.clone(),
            part_slots: glommio::sync::Semaphore::new(self.cfg.shard_parts.max(1) as u64),
            byte_window: self.byte_window.clone(),
            shutdown: self.abort.clone(),
        });
        self.ctxs
            .borrow_mut()
            .insert(bucket.to_string(), ctx.clone());
        ctx
    }

    fn started(&self, partition: i32) {
        let mut st = self.state.borrow_mut();
        st.in_flight += 1;
        if let Some(p) = st.partitions.get_mut(&partition) {
            p.in_flight += 1;
        }
    }

    /// An entry stopped running (finished or abandoned).
    fn ended(&self, partition: i32, generation: u64) {
        let mut st = self.state.borrow_mut();
        st.in_flight -= 1;
        if let Some(p) = st.partitions.get_mut(&partition) {
            if p.generation == generation {
                p.in_flight -= 1;
            }
        }
    }

    /// A message that needs no work here (malformed and recorded, or for other sites).
    fn pass(&self, partition: i32, offset: i64) {
        if let Some(p) = self.state.borrow_mut().partitions.get_mut(&partition) {
            if let Err(e) = p.ledger.receive_done(offset) {
                tracing::error!(partition, offset, error = %e, "ledger");
            }
        }
        self.count_consumed();
        self.commit(partition);
    }

    fn count_consumed(&self) {
        if let Some(c) = &self.cfg.consumed {
            c.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    fn commit(&self, partition: i32) {
        self.commit_mode(partition, CommitMode::Async);
    }

    /// Commits the partition's position if it moved; `Sync` also re-sends the last position
    /// and waits for the broker (before releasing a partition).
    fn commit_mode(&self, partition: i32, mode: CommitMode) {
        let pos = {
            let mut st = self.state.borrow_mut();
            st.partitions.get_mut(&partition).and_then(|p| {
                let moved = p.ledger.commit_position();
                match mode {
                    CommitMode::Sync => moved.or(p.ledger.committed()),
                    CommitMode::Async => moved,
                }
            })
        };
        if let Some(pos) = pos {
            let mut tpl = TopicPartitionList::new();
            if tpl
                .add_partition_offset(
                    &self.cfg.topics.replication,
                    partition,
                    rdkafka::Offset::Offset(pos),
                )
                .is_ok()
            {
                if let Err(e) = self.consumer.commit(&tpl, mode) {
                    tracing::warn!(partition, error = %e, "commit failed");
                }
            }
        }
    }
}

fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(t: SystemTime) -> String {
    let u = crate::time::Utc::of(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second, u.millis
    )
}

/// When the source changed, as the entry says.
fn event_time(e: &ReplicationEntry) -> Option<SystemTime> {
    let t = e.source_event_time.as_deref()?;
    httpdate::parse_http_date(t)
        .ok()
        .or_else(|| parse_rfc3339(t))
}

fn event_time_latency(e: &ReplicationEntry) -> Option<Duration> {
    SystemTime::now().duration_since(event_time(e)?).ok()
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    let frac = s
        .get(19..)
        .and_then(|f| f.strip_prefix('.'))
        .map(|f| f.trim_end_matches('Z'))
        .unwrap_or("");
    let millis: i64 = if frac.is_empty() {
        0
    } else {
        format!("{:0<3}", &frac[..frac.len().min(3)]).parse().ok()?
    };
    // days from civil (Howard Hinnant)
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + mi * 60 + se;
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis((secs * 1000 + millis) as u64))
}

async fn record_malformed(
    sh: &Shared,
    partition: i32,
    offset: i64,
    key: &str,
    payload: &[u8],
    reason: &str,
) -> Result<(), QueueError> {
    let doc = serde_json::json!({
        "v": VERSION,
        "kind": "malformed",
        "topic": sh.cfg.topics.replication,
        "partition": partition,
        "offset": offset,
        "key": key,
        "reason": reason,
        "payload": String::from_utf8_lossy(payload),
        "site": sh.cfg.site,
        "at": now_rfc3339(),
    });
    let k = format!(
        "malformed/{}/{partition}/{offset}",
        sh.cfg.topics.replication
    );
    kafka::send(
        &sh.producer,
        &sh.cfg.topics.failed,
        &k,
        Some(doc.to_string().as_bytes()),
    )
    .await?;
    tracing::warn!(
        partition,
        offset,
        reason,
        "malformed entry sent to the failed topic"
    );
    Ok(())
}

/// Counts an entry as pending (in flight) for as long as it lives, and tracks its version
/// for the per-object progress route.
struct Pending {
    stats: Arc<Stats>,
    bytes: u64,
    id: ObjectId,
    outcome: Option<bool>,
}

impl Pending {
    fn new(stats: &Arc<Stats>, e: &ReplicationEntry, changed: SystemTime) -> Self {
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
    fn finish(&mut self, completed: bool) {
        self.outcome = Some(completed);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.stats
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.stats
            .in_flight_bytes
            .fetch_sub(self.bytes, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut t) = self.stats.objects.lock() {
            t.end(&self.id, self.outcome);
        }
    }
}

/// Replicates one entry, records its outcome, then releases its offset.
async fn process(
    sh: Rc<Shared>,
    partition: i32,
    offset: i64,
    generation: u64,
    entry: ReplicationEntry,
    received: Instant,
) {
    let changed = event_time(&entry).unwrap_or_else(|| SystemTime::now() - received.elapsed());
    let mut pending = Pending::new(&sh.stats, &entry, changed);
    let ctx = sh.ctx(&entry.bucket);
    let v = Version {
        key: entry.key.clone(),
        version_id: entry.version_id.clone(),
        delete_marker: entry.kind == EntryType::DeleteMarker,
        size: entry.size,
        etag: entry.etag.clone(),
    };
    let start = Instant::now();
    // Idempotence: one HEAD for a version; the key's history for a delete marker.
    let done = if v.delete_marker {
        version_applied(&ctx, &v).await
    } else {
        already_at_destination(&ctx, &v).await
    };
    let result: Result<Outcome, (ReplicationError, u32)> = match done {
        Ok(true) => Ok(Outcome::Skipped),
        Ok(false) => replicate(&ctx, &v).await,
        Err(e) => Err((e, 1)),
    };
    let transfer = start.elapsed();
    if result.is_err() && sh.abort.is_set() {
        // Abandoned at the drain deadline: not an outcome. The offset stays uncommitted and
        // the next owner replays the entry.
        sh.ended(partition, generation);
        return;
    }
    if let Ok(mut w) = sh.stats.window.lock() {
        match &result {
            Ok(Outcome::Copied { bytes }) => w.record(true, *bytes),
            Ok(_) => w.record(true, 0),
            Err(_) => w.record(false, entry.size),
        }
    }
    let (status, bytes, error, attempts) = match &result {
        Ok(Outcome::Copied { bytes }) => {
            Stats::add(&sh.stats.versions_copied, 1);
            Stats::add(&sh.stats.bytes_copied, *bytes);
            (Status::Completed, *bytes, None, 1)
        }
        Ok(Outcome::DeleteMarker) => {
            Stats::add(&sh.stats.delete_markers, 1);
            (Status::Completed, 0, None, 1)
        }
        Ok(Outcome::Skipped) => {
            Stats::add(&sh.stats.skipped, 1);
            (Status::Completed, 0, None, 1)
        }
        Err((e, attempts)) => {
            sh.stats.record_failure(Failure {
                key: v.key.clone(),
                version_id: v.version_id.clone(),
                code: e.code.clone(),
                message: e.to_string(),
                retryable: e.retryable,
                attempts: *attempts,
            });
            (
                Status::Failed,
                0,
                Some(StatusError {
                    code: e.code.clone(),
                    message: e.to_string(),
                    retryable: e.retryable,
                }),
                *attempts,
            )
        }
    };
    pending.finish(result.is_ok());
    if result.is_ok() {
        let rpo = SystemTime::now()
            .duration_since(changed)
            .unwrap_or_default();
        sh.rpo
            .lock()
            .expect("rpo")
            .saturating_record(rpo.as_micros().max(1) as u64);
    }
    sh.latency
        .lock()
        .expect("latency")
        .saturating_record(received.elapsed().as_micros().max(1) as u64);
    let event = StatusEvent {
        v: VERSION,
        bucket: entry.bucket.clone(),
        key: entry.key.clone(),
        version_id: entry.version_id.clone(),
        site: sh.cfg.site.clone(),
        status,
        bytes,
        durations: Durations {
            queue_wait_ms: (start - received).as_millis() as u64,
            transfer_ms: transfer.as_millis() as u64,
        },
        error: error.clone(),
        attempt: entry.attempt + attempts,
        at: now_rfc3339(),
        latency_ms: event_time_latency(&entry).map(|d| d.as_millis() as u64),
    };
    // The outcome must be recorded before the offset moves: retry until it is (or shutdown).
    loop {
        let mut ok = kafka::send(
            &sh.producer,
            &sh.cfg.topics.status,
            &entry.kafka_key(),
            Some(&event.encode()),
        )
        .await
        .is_ok();
        if ok && status == Status::Completed && entry.attempt > 0 {
            // A retried entry completed: clear it from the failed topic.
            let k = format!(
                "{}/{}/{}/{}",
                entry.bucket, entry.key, entry.version_id, sh.cfg.site
            );
            ok = kafka::send(&sh.producer, &sh.cfg.topics.failed, &k, None)
                .await
                .is_ok();
        }
        if ok && status == Status::Failed {
            let doc = serde_json::json!({ "v": VERSION, "kind": "failed", "entry": entry, "site": sh.cfg.site, "error": error, "at": event.at });
            let k = format!(
                "{}/{}/{}/{}",
                entry.bucket, entry.key, entry.version_id, sh.cfg.site
            );
            ok = kafka::send(
                &sh.producer,
                &sh.cfg.topics.failed,
                &k,
                Some(doc.to_string().as_bytes()),
            )
            .await
            .is_ok();
        }
        if ok {
            break;
        }
        if !sh.abort.sleep(Duration::from_secs(1)).await {
            // Not recorded: leave the offset uncommitted, the entry will be replayed.
            sh.ended(partition, generation);
            return;
        }
    }
    finish(sh, partition, offset, generation);
}

fn finish(sh: Rc<Shared>, partition: i32, offset: i64, generation: u64) {
    sh.count_consumed();
    sh.ended(partition, generation);
    let next = {
        let mut st = sh.state.borrow_mut();
        match st.partitions.get_mut(&partition) {
            // A revoked partition's late completion: its new owner replays the entry.
            Some(p) if p.generation == generation => match p.ledger.finish(offset) {
                Ok(Some(n)) => p.parked.remove(&n).map(|e| (n, e)),
                Ok(None) => None,
                Err(e) => {
                    tracing::error!(partition, offset, error = %e, "ledger");
                    None
                }
            },
            _ => return,
        }
    };
    if let Some((n, (entry, received))) = next {
        sh.started(partition);
        glommio::spawn_local(process(
            sh.clone(),
            partition,
            n,
            generation,
            entry,
            received,
        ))
        .detach();
    }
    sh.commit(partition);
}

/// A rebalance took partitions away: stop taking entries, let those of the revoked partitions
/// finish until the drain deadline, commit them synchronously, then release the partitions.
/// Entries still running past the deadline are forgotten: the new owner replays them.
async fn drain_revoked(sh: &Rc<Shared>, revoked: &[i32]) {
    let deadline = Instant::now() + sh.cfg.drain_deadline;
    let busy = |sh: &Shared| {
        let st = sh.state.borrow();
        revoked
            .iter()
            .map(|p| st.partitions.get(p).map(|p| p.in_flight).unwrap_or(0))
            .sum::<usize>()
    };
    while busy(sh) > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    if busy(sh) > 0 {
        tracing::warn!(
            in_flight = busy(sh),
            "drain deadline passed on a rebalance: the new owner replays what is left"
        );
    }
    for p in revoked {
        sh.commit_mode(*p, CommitMode::Sync);
        sh.state.borrow_mut().partitions.remove(p);
    }
    if let Err(e) = sh.consumer.unassign() {
        tracing::warn!(error = %e, "unassign failed");
    }
    tracing::info!(partitions = ?revoked, "revoked partitions drained and released");
    sh.owned.store(0, std::sync::atomic::Ordering::Relaxed);
}

/// Runs one shard's worker until shutdown.
pub async fn run_shard(
    cfg: WorkerConfig,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> Result<(), QueueError> {
    let notes = RebalanceNotes::default();
    stats
        .shard_partitions
        .lock()
        .expect("partition gauges")
        .push(notes.owned.clone());
    let consumer = kafka::consumer(
        &cfg.brokers,
        &cfg.group,
        cfg.session_timeout_ms,
        notes.clone(),
    )?;
    consumer
        .subscribe(&[&cfg.topics.replication])
        .map_err(QueueError::Consume)?;
    let producer = kafka::producer(&cfg.brokers)?;
    let byte_window = crate::replication::byte_window(&cfg.opts);
    let sh = Rc::new(Shared {
        owned: notes.owned.clone(),
        source: Client::new(cfg.source.clone(), None),
        dest: Client::new(cfg.dest.clone(), None),
        cfg,
        consumer,
        producer,
        stats: stats.clone(),
        abort: Shutdown::new(),
        state: RefCell::new(State {
            partitions: HashMap::new(),
            generation: 0,
            in_flight: 0,
        }),
        ctxs: RefCell::default(),
        latency: stats.latency.register(),
        rpo: stats.rpo.register(),
        byte_window,
    });
    let concurrency = sh.cfg.concurrency.max(1);
    // Pause/resume: the site's state in the control topic, followed by every shard.
    let control_stop = Shutdown::new();
    let control = crate::queue::control::follow(
        &sh.cfg.brokers,
        &sh.cfg.topics.control,
        &sh.cfg.site,
        control_stop.clone(),
    )
    .await?;
    let mut paused = false;
    let mut last_pause = Instant::now();
    while !shutdown.is_set() {
        if let Some(revoked) = notes.take_revoked() {
            drain_revoked(&sh, &revoked).await;
        }
        let want_paused = {
            let c = control.borrow();
            let resume_due = c
                .scheduled_resume
                .as_deref()
                .and_then(parse_rfc3339)
                .is_some_and(|t| t <= SystemTime::now());
            c.paused && !resume_due
        };
        if want_paused != paused || (paused && last_pause.elapsed() > Duration::from_millis(500)) {
            // Re-applied while paused, so partitions assigned by a rebalance stay paused.
            if let Ok(a) = sh.consumer.assignment() {
                let r = if want_paused {
                    sh.consumer.pause(&a)
                } else {
                    sh.consumer.resume(&a)
                };
                if let Err(e) = r {
                    tracing::warn!(error = %e, "pause/resume failed");
                }
            }
            if want_paused != paused {
                tracing::info!(site = %sh.cfg.site, paused = want_paused, "site {}", if want_paused { "paused" } else { "resumed" });
            }
            paused = want_paused;
            notes
                .paused
                .store(paused, std::sync::atomic::Ordering::SeqCst);
            last_pause = Instant::now();
        }
        if sh.state.borrow().in_flight >= concurrency {
            glommio::timer::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let msg = match crate::queue::kafka::recv_within(&sh.consumer, Duration::from_millis(200))
            .await
        {
            None => continue,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consume error");
                glommio::timer::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Some(Ok(m)) => (
                m.partition(),
                m.offset(),
                m.key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default(),
                m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            ),
        };
        let (partition, offset, key, payload) = msg;
        if paused {
            // Fetched before the pause took effect: put it back, it is read again on resume.
            if let Err(e) = sh.consumer.seek(
                &sh.cfg.topics.replication,
                partition,
                rdkafka::Offset::Offset(offset),
                Duration::from_secs(5),
            ) {
                tracing::warn!(partition, offset, error = %e, "cannot rewind a message received while paused");
            }
            continue;
        }
        let received = Instant::now();
        let generation = {
            let mut st = sh.state.borrow_mut();
            st.generation += 1;
            let g = st.generation;
            st.partitions
                .entry(partition)
                .or_insert_with(|| Partition {
                    ledger: Ledger::new(),
                    in_flight: 0,
                    parked: HashMap::new(),
                    generation: g,
                })
                .generation
        };
        match ReplicationEntry::decode(&payload) {
            Err(m) => {
                // Recorded before its offset may be committed.
                while let Err(e) =
                    record_malformed(&sh, partition, offset, &key, &payload, &m.reason).await
                {
                    tracing::warn!(error = %e, "cannot record a malformed entry; retrying");
                    if !shutdown.sleep(Duration::from_secs(1)).await {
                        break;
                    }
                }
                if !shutdown.is_set() {
                    Stats::add(&sh.stats.failed, 1);
                    sh.pass(partition, offset);
                }
            }
            Ok(entry) if !entry.sites.iter().any(|s| *s == sh.cfg.site) => {
                sh.pass(partition, offset);
            }
            Ok(entry) => {
                let start_now = {
                    let mut st = sh.state.borrow_mut();
                    let p = st.partitions.get_mut(&partition).expect("partition state");
                    match p.ledger.receive(offset, &entry.kafka_key()) {
                        Ok(true) => Some(entry),
                        Ok(false) => {
                            p.parked.insert(offset, (entry, received));
                            None
                        }
                        Err(e) => {
                            tracing::error!(partition, offset, error = %e, "ledger");
                            None
                        }
                    }
                };
                if let Some(entry) = start_now {
                    sh.started(partition);
                    glommio::spawn_local(process(
                        sh.clone(),
                        partition,
                        offset,
                        generation,
                        entry,
                        received,
                    ))
                    .detach();
                }
            }
        }
    }
    // Drain: entries in flight finish (or the deadline passes), then commit and leave.
    let deadline = Instant::now() + sh.cfg.drain_deadline;
    while sh.state.borrow().in_flight > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    if sh.state.borrow().in_flight > 0 {
        // Past the deadline: abandon what is left (multipart uploads are aborted), uncommitted.
        tracing::warn!(
            in_flight = sh.state.borrow().in_flight,
            "drain deadline passed: abandoning transfers in flight, they will be replayed"
        );
        sh.abort.trigger();
        let grace = Instant::now() + Duration::from_secs(10);
        while sh.state.borrow().in_flight > 0 && Instant::now() < grace {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
    }
    let parts: Vec<i32> = sh.state.borrow().partitions.keys().copied().collect();
    for p in parts {
        sh.commit(p);
    }
    let _ = sh.consumer.commit_consumer_state(CommitMode::Sync);
    control_stop.trigger();
    notes.owned.store(0, std::sync::atomic::Ordering::Relaxed);
    notes
        .closing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    sh.consumer.unsubscribe();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = parse_rfc3339("2026-11-25T10:00:00.250Z").unwrap();
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert_eq!(secs, 1_795_600_800_250);
        assert!(parse_rfc3339("yesterday").is_none());
        assert_eq!(rfc3339(t), "2026-11-25T10:00:00.250Z");
        for ms in [0u64, 951_782_400_000, 1_709_164_800_999, 4_102_444_800_000] {
            let t = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{}", rfc3339(t));
        }
    }
}
