//! The site worker of one shard: a member of the site's consumer group that replicates the
//! entries of the partitions it owns, records each outcome on the status topic (and failures
//! on the failed topic), and commits a partition's offset only up to its lowest unfinished
//! entry.
//!
//! Entries of different keys run concurrently (up to `concurrency` per shard, a semaphore's
//! slots); versions of one key run in offset order. A malformed message goes to the failed
//! topic with its reason and is committed past. The worker is a state machine
//! ([`phase::Phase`]: consuming, paused, draining a revocation, closing). On shutdown it stops
//! taking entries, lets the ones in flight finish until a deadline, commits and leaves the
//! group. A crash replays at most the uncommitted window, which the idempotence check makes
//! harmless.
//!
//! An entry that fails for a reason that may pass goes to the site's replay topics and comes
//! back after a delay (`replay`); its key's later entries go behind it (`queue::lines`).
//!
//! Files: `phase` the states, `partitions` the ledgers, `inflight` what drains wait on,
//! `rebalance` the group callback, `entry` one entry's life, `outcome` how it is recorded,
//! `replay` sending to the replay topics (the keys' waiting lines are `queue::lines`, the
//! replayer that sends entries back `queue::replayer`), `parked` the bound on entries
//! parked in memory.

mod entry;
mod inflight;
mod outcome;
mod parked;
mod partitions;
mod phase;
mod rebalance;
mod replay;

pub use replay::ReplayConfig;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;

use crate::metrics::Stats;
use crate::queue::codec::ReplicationEntry;
use crate::queue::control::SiteControl;
use crate::queue::kafka::{self, Consumer, Producer, QueueError, Topics};
use crate::queue::replayer::{self, ReplayerConfig};
use crate::replication::breaker::Breaker;
use crate::replication::{DataPath, Options, Route};
use crate::s3::{Client, Endpoint};
use crate::shard::Shutdown;
use entry::Job;
use inflight::InFlight;
use partitions::{Partitions, Received};
use phase::{Action, Phase};
use rebalance::RebalanceNotes;

/// The longest a revocation or a shutdown waits for its last commit's answer.
const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// What a site worker needs.
#[derive(Clone)]
pub struct WorkerConfig {
    pub site: String,
    pub brokers: String,
    pub topics: Topics,
    pub group: String,
    pub membership: kafka::Membership,
    pub source: Arc<Endpoint>,
    pub dest: Arc<Endpoint>,
    /// What the site calls each source bucket.
    pub buckets: crate::buckets::NameMap,
    /// Create a source bucket's site bucket when it is missing.
    pub create_buckets: bool,
    /// The source buckets the configuration selects: an entry for any other is refused.
    pub source_buckets: crate::buckets::Selection,
    pub dest_versioned: bool,
    /// What the site's replicas carry beyond bytes and metadata.
    pub policy: Arc<crate::replication::ReplicaPolicy>,
    /// The site's bandwidth limit on this node, shared by its shards (none: no limit).
    pub bandwidth: Option<Arc<crate::bandwidth::NodeLimit>>,
    pub opts: Options,
    /// Entries in flight per shard.
    pub concurrency: usize,
    /// Parts in flight per shard.
    pub shard_parts: usize,
    /// How long in-flight entries may take to finish at shutdown.
    pub drain_deadline: Duration,
    /// How often finished entries' offsets are committed (zero: after each).
    pub commit_interval: Duration,
    /// Counts the messages this site is done with (embedded broker backpressure).
    pub consumed: Option<crate::queue::backpressure::SiteCounter>,
    /// Entries that fail for a reason that may pass are replayed after these delays.
    pub replay: ReplayConfig,
}

/// An entry parked behind an earlier version of its key, with when it was received.
type Parked = (ReplicationEntry, Instant, Option<Duration>);

/// The worker's state, shared by its loop and its entries' tasks (one shard, `!Send`).
struct Shared {
    cfg: WorkerConfig,
    notes: RebalanceNotes,
    /// Shared with blocking calls run off the executor (synchronous commits, seeks).
    consumer: Arc<Consumer<RebalanceNotes>>,
    producer: Producer,
    stats: Arc<Stats>,
    /// Abandons transfers in flight: only once the drain deadline passed.
    abort: Shutdown,
    partitions: RefCell<Partitions<Parked>>,
    /// Partitions whose finished entries moved their position since the last commit (at
    /// most the assigned ones), and when the next commit is due.
    to_commit: RefCell<std::collections::BTreeSet<i32>>,
    commit_due: Cell<Instant>,
    /// Entries running on this shard.
    running: InFlight,
    /// Entry slots: `concurrency` entries run at once.
    slots: Rc<glommio::sync::Semaphore>,
    routes: RefCell<HashMap<String, Rc<Route>>>,
    /// Site buckets this shard found or created (with `create_buckets`).
    site_buckets: RefCell<std::collections::HashSet<String>>,
    data: DataPath,
    source: Client,
    dest: Client,
    latency: Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
    rpo: Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
    /// When the pause was last applied to the assignment (re-applied while paused).
    last_pause: Cell<Instant>,
    /// Partitions paused because every slot is busy, and when that was last applied.
    busy: Cell<bool>,
    last_busy_pause: Cell<Instant>,
    /// The site's circuit breaker on this shard, and whether its probe runs.
    breaker: Rc<Breaker>,
    probing: Cell<bool>,
    /// Since when every entry slot is taken (intake is held after a while of it).
    full_since: Cell<Option<Instant>>,
    /// Entries of this shard's partitions out on the replay topics (the site's gauge).
    replay_waiting: Arc<std::sync::atomic::AtomicU64>,
    /// Partitions paused for holding too many parked entries, and the parked gauge.
    full: parked::Full,
    parked_gauge: Arc<std::sync::atomic::AtomicU64>,
}

impl Shared {
    /// The route of a source bucket (its destination bucket from the site's mapping).
    fn route(&self, bucket: &str) -> Rc<Route> {
        if let Some(r) = self.routes.borrow().get(bucket) {
            return r.clone();
        }
        let dest_bucket = self.cfg.buckets.dest(bucket);
        let route = Rc::new(Route {
            source: self.source.clone(),
            source_bucket: bucket.to_string(),
            dest: self.dest.clone(),
            dest_bucket: dest_bucket.to_string(),
            dest_versioned: self.cfg.dest_versioned,
            policy: self.cfg.policy.clone(),
        });
        self.routes
            .borrow_mut()
            .insert(bucket.to_string(), route.clone());
        route
    }

    /// With `create_buckets`: makes sure the site has the route's bucket (once per bucket on
    /// this shard), so entries of a bucket created at the source do not fail for want of
    /// it. A failure is only logged: the copy then fails and is retried as usual.
    async fn site_bucket_ready(&self, route: &Route) {
        if !self.cfg.create_buckets || self.site_buckets.borrow().contains(&route.dest_bucket) {
            return;
        }
        let (src, dest) = (&route.source_bucket, &route.dest_bucket);
        match super::buckets::ensure_site_bucket(&route.source, &route.dest, src, dest).await {
            Ok(_) => {
                self.site_buckets.borrow_mut().insert(dest.clone());
            }
            Err(e) => tracing::warn!(site_bucket = dest, error = %e, "site bucket not created"),
        }
    }

    /// A message that needs no work here (malformed and recorded, or for other sites);
    /// `admitted`: the populator produced it (see [`Shared::count_consumed`]).
    fn pass(&self, partition: i32, offset: i64, admitted: bool) {
        if let Err(e) = self.partitions.borrow_mut().pass(partition, offset) {
            tracing::error!(partition, offset, error = %e, "ledger");
        }
        if admitted {
            self.count_consumed();
        }
        self.commit(partition);
    }

    /// Updates the gauge of entries out on the replay topics.
    fn note_waiting(&self) {
        let n = self.partitions.borrow().waiting() as u64;
        self.replay_waiting.store(n, Ordering::Relaxed);
    }

    /// Counts a message the populator produced as done (the embedded broker's backpressure
    /// counts what it admitted; entries sent back by a replayer or a person's retry were
    /// never admitted, see [`admitted`]).
    fn count_consumed(&self) {
        if let Some(c) = &self.cfg.consumed {
            c.add(1);
        }
    }

    /// Notes that the partition's position may have moved; commits every noted partition
    /// once `commit_interval` has passed since the last commit (else [`step`] does, when due).
    fn commit(&self, partition: i32) {
        self.to_commit.borrow_mut().insert(partition);
        self.commit_if_due();
    }

    /// Commits the noted partitions' positions if the interval has passed.
    fn commit_if_due(&self) {
        let now = Instant::now();
        if now < self.commit_due.get() || self.to_commit.borrow().is_empty() {
            return;
        }
        self.commit_due.set(now + self.cfg.commit_interval);
        let noted = std::mem::take(&mut *self.to_commit.borrow_mut());
        let mut tpl = TopicPartitionList::new();
        let mut partitions = self.partitions.borrow_mut();
        for p in noted {
            if let Some(pos) = partitions.commit_position(p, false) {
                let offset = rdkafka::Offset::Offset(pos);
                let _ = tpl.add_partition_offset(&self.cfg.topics.replication, p, offset);
            }
        }
        drop(partitions);
        // Asynchronously: nothing waits for the broker's answer.
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::warn!(error = %e, "commit failed");
            }
        }
    }

    /// Releases `revoked` from the ledgers and commits their positions (sent again even if
    /// they did not move), waiting for the broker off the executor. The partitions are
    /// forgotten before the first await: an entry still running past the drain deadline that
    /// finishes meanwhile must not start the next version of its key on a partition being
    /// released (its new owner replays it).
    async fn release_and_commit(&self, revoked: &[i32]) {
        let mut tpl = TopicPartitionList::new();
        {
            let mut partitions = self.partitions.borrow_mut();
            let topic = &self.cfg.topics.replication;
            for p in revoked {
                if let Some(pos) = partitions.commit_position(*p, true) {
                    let _ = tpl.add_partition_offset(topic, *p, rdkafka::Offset::Offset(pos));
                }
                partitions.remove(*p);
                if self.full.borrow_mut().remove(p) {
                    // librdkafka keeps an application's pause across a new assignment.
                    let mut one = TopicPartitionList::new();
                    one.add_partition(topic, *p);
                    let _ = self.consumer.resume(&one);
                }
            }
        }
        self.note_waiting();
        parked::note(self);
        if tpl.count() > 0 {
            self.commit_now(tpl, revoked).await;
        }
    }

    /// Commits `tpl`, waiting for the broker off the executor, at most [`COMMIT_WAIT`]: a
    /// broker out of reach costs the partitions' next owner a replay from the last
    /// committed offsets (entries are idempotent), never a stuck revocation or shutdown.
    async fn commit_now(&self, tpl: TopicPartitionList, partitions: &[i32]) {
        let consumer = self.consumer.clone();
        let commit = move || consumer.commit(&tpl, CommitMode::Sync);
        let answered = async { Some(glommio::executor().spawn_blocking(commit).await) };
        let waited = async {
            glommio::timer::sleep(COMMIT_WAIT).await;
            None
        };
        match futures_lite::future::or(answered, waited).await {
            Some(Ok(())) => {}
            // The group moved on before this member's last commit: the partitions' new
            // owners replay from the last committed offsets.
            Some(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::RebalanceInProgress) => {
                tracing::info!(?partitions, "last offsets not committed (the group was already rebalancing): the partitions' new owners replay from the last committed ones")
            }
            Some(Err(e)) => tracing::warn!(?partitions, error = %e, "commit failed"),
            None => tracing::warn!(?partitions, wait_s = COMMIT_WAIT.as_secs(), "commit not answered in time: the partitions' next owner replays from the last committed offsets"),
        }
    }

    /// Puts a message fetched just before a pause back, off the executor: it is read again
    /// on resume.
    async fn rewind(&self, partition: i32, offset: i64) {
        let consumer = self.consumer.clone();
        let topic = self.cfg.topics.replication.clone();
        let seek = move || {
            let to = rdkafka::Offset::Offset(offset);
            consumer.seek(&topic, partition, to, Duration::from_secs(5))
        };
        if let Err(e) = glommio::executor().spawn_blocking(seek).await {
            tracing::warn!(partition, offset, error = %e, "cannot rewind a message received while paused");
        }
    }
}

/// Runs one shard's worker until shutdown.
pub async fn run_shard(
    cfg: WorkerConfig,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> Result<(), QueueError> {
    let sh = start(cfg, stats)?;
    let replayer = {
        let c = &sh.cfg;
        let rc = ReplayerConfig {
            brokers: c.brokers.clone(),
            group: c.replay.group.clone(),
            membership: c.membership,
            topics: replayer::steps_pattern(&c.topics.replay_prefix(&c.site)),
            back: c.topics.replication.clone(),
            due: |payload| {
                let e = ReplicationEntry::decode(payload).map_err(|m| m.reason)?;
                Ok(e.replay.map_or(0, |r| r.due_ms))
            },
        };
        glommio::spawn_local(replayer::run(rc, sh.producer.clone(), shutdown.clone()))
    };
    // Pause/resume: the site's state in the control topic, followed by every shard, read to
    // its end before anything is consumed.
    let control_stop = Shutdown::new();
    let topics = &sh.cfg.topics;
    let control = crate::queue::control::follow(
        &sh.cfg.brokers,
        &topics.control,
        &sh.cfg.site,
        control_stop.clone(),
    )
    .await?;
    let mut phase = Phase::Consuming;
    loop {
        phase = match phase {
            Phase::Closing { deadline } => break close(&sh, deadline).await,
            Phase::Draining {
                ref revoked,
                deadline,
                ..
            } => {
                drain_revoked(&sh, revoked, deadline).await;
                phase.drained()
            }
            p => {
                let c = control.borrow().clone();
                step(&sh, p, &c, &shutdown).await
            }
        };
    }
    control_stop.trigger();
    replayer.await
}

/// Joins the site's consumer group and builds the shard's state.
fn start(cfg: WorkerConfig, stats: Arc<Stats>) -> Result<Rc<Shared>, QueueError> {
    let notes = RebalanceNotes::default();
    stats
        .shard_partitions
        .lock()
        .expect("partition gauges")
        .push(notes.owned.clone());
    let consumer = kafka::consumer(&cfg.brokers, &cfg.group, &cfg.membership, notes.clone())?;
    consumer
        .subscribe(&[&cfg.topics.replication])
        .map_err(QueueError::Consume)?;
    let waiting = shard_gauge(&stats.replay_waiting);
    let parked_gauge = shard_gauge(&stats.parked);
    let abort = Shutdown::new();
    let mut data = DataPath::new(
        cfg.opts.clone(),
        cfg.shard_parts,
        stats.clone(),
        abort.clone(),
    );
    let threshold = BREAKER_FAILURES.min(cfg.opts.retry.max_attempts);
    let breaker = Rc::new(Breaker::new(threshold, stats.unavailable_shards.clone()));
    data.breaker = Some(breaker.clone());
    data.limit = cfg.bandwidth.as_ref().map(|n| Rc::new(n.shard()));
    let sh = Rc::new(Shared {
        producer: kafka::producer(&cfg.brokers)?,
        consumer: Arc::new(consumer),
        source: Client::new(cfg.source.clone(), None),
        dest: Client::new(cfg.dest.clone(), None),
        slots: Rc::new(glommio::sync::Semaphore::new(cfg.concurrency.max(1) as u64)),
        cfg,
        notes,
        abort,
        partitions: RefCell::default(),
        to_commit: RefCell::default(),
        commit_due: Cell::new(Instant::now()),
        running: InFlight::default(),
        routes: RefCell::default(),
        site_buckets: RefCell::default(),
        data,
        latency: stats.latency.register(),
        rpo: stats.rpo.register(),
        stats,
        last_pause: Cell::new(Instant::now()),
        busy: Cell::new(false),
        last_busy_pause: Cell::new(Instant::now()),
        breaker,
        probing: Cell::new(false),
        full_since: Cell::new(None),
        replay_waiting: waiting,
        full: Default::default(),
        parked_gauge,
    });
    let weak = Rc::downgrade(&sh);
    sh.breaker.on_open(move || {
        if let Some(sh) = weak.upgrade() {
            start_probe(&sh);
        }
    });
    Ok(sh)
}

/// A gauge of this shard, summed into the site's when scraped.
fn shard_gauge(
    shards: &std::sync::Mutex<Vec<Arc<std::sync::atomic::AtomicU64>>>,
) -> Arc<std::sync::atomic::AtomicU64> {
    let g = Arc::new(std::sync::atomic::AtomicU64::new(0));
    shards.lock().expect("shard gauges").push(g.clone());
    g
}

/// Whether the site should be paused now (a due scheduled resume ends a pause).
fn want_paused(c: &SiteControl) -> bool {
    c.paused_now()
}

/// One turn of the loop while consuming or paused: reacts to shutdown, revocations and the
/// control state, then takes (or, paused, puts back) at most one message.
async fn step(sh: &Rc<Shared>, phase: Phase, control: &SiteControl, shutdown: &Shutdown) -> Phase {
    let now = Instant::now();
    if shutdown.is_set() {
        return phase.shutdown(now, sh.cfg.drain_deadline);
    }
    if let Some(revoked) = sh.notes.take_revoked() {
        return phase.revoked(revoked, now, sh.cfg.drain_deadline);
    }
    sh.commit_if_due();
    let was_paused = phase == Phase::Paused;
    let (phase, action) = phase.control(want_paused(control));
    apply(sh, action, was_paused);
    if phase.takes_entries() {
        consume_one(sh, shutdown).await;
    } else if let Some(Ok(m)) = kafka::recv_within(&sh.consumer, Duration::from_millis(200)).await {
        // Fetched before the pause took effect.
        let (partition, offset) = (m.partition(), m.offset());
        drop(m);
        sh.rewind(partition, offset).await;
    }
    phase
}

/// Pauses or resumes the assigned partitions. While paused the pause is re-applied every
/// half second, so partitions a rebalance assigned stay paused.
fn apply(sh: &Shared, action: Action, was_paused: bool) {
    let reapply = was_paused && sh.last_pause.get().elapsed() > Duration::from_millis(500);
    let pause = match action {
        Action::PausePartitions => true,
        Action::ResumePartitions => false,
        Action::None if reapply => true,
        Action::None => return,
    };
    if action != Action::None {
        tracing::info!(site = %sh.cfg.site, paused = pause, "site {}", if pause { "paused" } else { "resumed" });
    }
    sh.notes.paused.store(pause, Ordering::SeqCst);
    sh.last_pause.set(Instant::now());
    if let Ok(a) = sh.consumer.assignment() {
        let r = if pause {
            sh.consumer.pause(&a)
        } else {
            sh.consumer.resume(&parked::resumable(sh, &a))
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "pause/resume failed");
        }
    }
}

/// Waits for an entry slot, then for a message (each at most 200 ms, so the loop keeps
/// looking at shutdown, revocations and the control state), and handles it. While the
/// site's breaker is open, or every slot has been taken for a while, intake is held
/// instead (partitions paused, the consumer still polled).
async fn consume_one(sh: &Rc<Shared>, shutdown: &Shutdown) {
    if sh.breaker.is_open() {
        // The site is out of reach: no new entries until the probe reaches it.
        hold_intake(sh).await;
        return;
    }
    let slot = async { sh.slots.acquire_static_permit(1).await.ok() };
    let tick = async {
        glommio::timer::sleep(Duration::from_millis(200)).await;
        None
    };
    let Some(permit) = futures_lite::future::or(slot, tick).await else {
        // Every slot taken: for long, hold intake (and keep polling the consumer).
        let since = sh.full_since.get().unwrap_or_else(Instant::now);
        sh.full_since.set(Some(since));
        if since.elapsed() >= hold_after(&sh.cfg.membership) {
            hold_intake(sh).await;
        }
        return;
    };
    sh.full_since.set(None);
    release_intake(sh);
    let msg = match kafka::recv_within(&sh.consumer, Duration::from_millis(200)).await {
        None => return,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "consume error");
            glommio::timer::sleep(Duration::from_millis(200)).await;
            return;
        }
        Some(Ok(m)) => Fetched {
            partition: m.partition(),
            offset: m.offset(),
            key: m
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            produced: m
                .timestamp()
                .to_millis()
                .filter(|ms| *ms > 0)
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms as u64)),
            trusted: crate::queue::signing::check(&m),
        },
    };
    handle(sh, msg, permit, shutdown).await;
}

/// Every slot is busy (long transfers): the consumer is still polled, since a member that
/// stops polling for `max.poll.interval.ms` is evicted and its partitions replayed
/// elsewhere while it still copies. Its partitions are paused meanwhile (re-applied every
/// half second, so partitions a rebalance adds are too); a message fetched before the
/// pause took effect goes back.
async fn hold_intake(sh: &Rc<Shared>) {
    let stale = sh.last_busy_pause.get().elapsed() > Duration::from_millis(500);
    if !sh.busy.get() || stale {
        sh.busy.set(true);
        sh.last_busy_pause.set(Instant::now());
        if let Ok(a) = sh.consumer.assignment() {
            if let Err(e) = sh.consumer.pause(&a) {
                tracing::warn!(error = %e, "pausing intake while every slot is busy failed");
            }
        }
    }
    if let Some(Ok(m)) = kafka::recv_within(&sh.consumer, Duration::from_millis(200)).await {
        let (partition, offset) = (m.partition(), m.offset());
        drop(m);
        sh.rewind(partition, offset).await;
    }
}

/// Whether the populator produced this entry (through the embedded broker's backpressure),
/// rather than a replayer sending it back or a person retrying it.
fn admitted(e: &ReplicationEntry) -> bool {
    e.attempt == 0 && e.replay.is_none()
}

/// Consecutive failures (on distinct keys) that open the site's breaker, at most an
/// entry's attempts.
const BREAKER_FAILURES: u32 = 5;

/// How long every slot may stay taken before intake is held: well within the poll
/// interval, long enough not to pause and resume at every busy moment.
fn hold_after(m: &kafka::Membership) -> Duration {
    Duration::from_millis(u64::from(m.max_poll_interval_ms) / 4).min(Duration::from_secs(5))
}

/// Starts the probe of an unavailable site, unless it runs: a HeadBucket of a destination
/// bucket, 1 s after the breaker opened, then with a doubling delay up to 5 s; any answer
/// of the endpoint that is not an outage closes the breaker.
fn start_probe(sh: &Rc<Shared>) {
    if sh.probing.replace(true) {
        return;
    }
    let sh = sh.clone();
    glommio::spawn_local(async move {
        let seen = sh
            .routes
            .borrow()
            .values()
            .next()
            .map(|r| r.dest_bucket.clone());
        let bucket = seen.or_else(|| sh.cfg.buckets.named.values().next().cloned());
        let mut delay = Duration::from_secs(1);
        while sh.breaker.is_open() && sh.abort.sleep(delay).await {
            let answered = match &bucket {
                Some(b) => match sh.dest.head_bucket(b).await {
                    Ok(()) => true,
                    Err(e) => !e.is_retryable(),
                },
                None => true,
            };
            if answered {
                sh.breaker.succeeded();
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        sh.probing.set(false);
    })
    .detach();
}

/// A slot is free: partitions paused for being busy resume, unless the site is paused.
fn release_intake(sh: &Shared) {
    if !sh.busy.replace(false) || sh.notes.paused.load(Ordering::SeqCst) {
        return;
    }
    if let Ok(a) = sh.consumer.assignment() {
        if let Err(e) = sh.consumer.resume(&parked::resumable(sh, &a)) {
            tracing::warn!(error = %e, "resuming intake failed");
        }
    }
}

/// A message taken off the replication topic.
struct Fetched {
    partition: i32,
    offset: i64,
    key: String,
    payload: Vec<u8>,
    /// When it was produced (its timestamp), if the broker says.
    produced: Option<SystemTime>,
    /// Whether its signature checks (always, without `kafka.signing_key_file`).
    trusted: Result<(), crate::queue::signing::Untrusted>,
}

/// Decodes a message and starts its entry, parks it behind its key, records it as
/// malformed, or passes it (not for this site).
async fn handle(
    sh: &Rc<Shared>,
    m: Fetched,
    permit: glommio::sync::StaticPermit,
    shutdown: &Shutdown,
) {
    let received = Instant::now();
    let in_topic = m
        .produced
        .and_then(|p| SystemTime::now().duration_since(p).ok());
    let generation = sh.partitions.borrow_mut().generation(m.partition);
    if let Err(why) = m.trusted {
        return set_aside(sh, &m, "untrusted", &why.to_string(), false, shutdown).await;
    }
    let entry = match ReplicationEntry::decode(&m.payload) {
        Err(bad) => return set_aside(sh, &m, "malformed", &bad.reason, true, shutdown).await,
        Ok(e) if !e.sites.iter().any(|s| *s == sh.cfg.site) => {
            return sh.pass(m.partition, m.offset, admitted(&e))
        }
        Ok(e) if !sh.cfg.source_buckets.matches(&e.bucket) => {
            let why = format!(
                "bucket {:?} is not in source.buckets: an entry for it is refused, never copied",
                e.bucket
            );
            let admitted = admitted(&e);
            return set_aside(sh, &m, "refused", &why, admitted, shutdown).await;
        }
        Ok(e) => e,
    };
    let key = entry.kafka_key();
    let received_entry = sh.partitions.borrow_mut().receive(
        m.partition,
        m.offset,
        &key,
        (entry, received, in_topic),
    );
    match received_entry {
        Ok(Received::Start((entry, received, in_topic))) => {
            let job = Job {
                partition: m.partition,
                offset: m.offset,
                generation,
                entry,
                received,
                in_topic,
            };
            entry::spawn(sh, job, permit);
        }
        Ok(Received::Parked) => parked::parked(sh, m.partition),
        Err(e) => tracing::error!(partition = m.partition, offset = m.offset, error = %e, "ledger"),
    }
}

/// Records a message that is not to be run (`kind`: malformed, refused, or untrusted) on
/// the failed topic with `reason`, then passes its offset.
async fn set_aside(
    sh: &Rc<Shared>,
    m: &Fetched,
    kind: &'static str,
    reason: &str,
    admitted: bool,
    shutdown: &Shutdown,
) {
    let aside = outcome::Malformed {
        kind,
        partition: m.partition,
        offset: m.offset,
        key: &m.key,
        payload: &m.payload,
        reason,
    };
    if outcome::record_malformed(sh, &aside, shutdown).await {
        sh.pass(m.partition, m.offset, admitted);
    }
}

/// A rebalance took partitions away: their entries in flight finish until the deadline, then
/// the partitions are committed (waiting for the broker) and released. Entries still
/// running past the deadline are fenced (their tasks dropped) before the release: the new
/// owner replays them, and no stale task writes after it.
async fn drain_revoked(sh: &Shared, revoked: &[i32], deadline: Instant) {
    let running = sh.partitions.borrow().running(revoked);
    let mut left = 0;
    for r in &running {
        let wait = deadline.saturating_duration_since(Instant::now());
        if !r.idle_within(wait).await {
            left += r.count();
        }
    }
    if left > 0 {
        tracing::warn!(
            in_flight = left,
            "drain deadline passed on a rebalance: stopping what is left; the new owner replays it"
        );
        sh.partitions.borrow().fence(revoked);
        for r in &running {
            r.idle_within(Duration::from_secs(5)).await;
        }
    }
    sh.release_and_commit(revoked).await;
    if let Err(e) = sh.consumer.unassign() {
        tracing::warn!(error = %e, "unassign failed");
    }
    tracing::info!(partitions = ?revoked, "revoked partitions drained and released");
    sh.notes.owned.store(0, Ordering::Relaxed);
}

/// Shutdown: entries in flight finish until the deadline; past it, what is left is abandoned
/// (multipart uploads aborted) uncommitted. Then positions are committed and the group left.
async fn close(sh: &Shared, deadline: Instant) {
    if sh.breaker.is_open() {
        // Entries wait for a site out of reach: nothing to drain; they will be replayed.
        sh.abort.trigger();
    }
    let wait = deadline.saturating_duration_since(Instant::now());
    if !sh.running.idle_within(wait).await {
        tracing::warn!(
            in_flight = sh.running.count(),
            "drain deadline passed: abandoning transfers in flight, they will be replayed"
        );
        sh.abort.trigger();
        sh.running.idle_within(Duration::from_secs(10)).await;
    }
    // Every partition's position, waiting for the broker's answer.
    let ids = sh.partitions.borrow().ids();
    sh.release_and_commit(&ids).await;
    sh.notes.owned.store(0, Ordering::Relaxed);
    sh.notes.closing.store(true, Ordering::SeqCst);
    sh.consumer.unsubscribe();
}
