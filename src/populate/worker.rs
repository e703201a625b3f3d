//! The populator: turns source changes into replication entries on the replication topic.
//!
//! Two intakes: S3 event notifications consumed from the events topic (committed only once
//! their entries are produced), and a bucket scan (`--scan`) that enqueues existing versions,
//! optionally only those missing at each destination. Each version goes through the bucket's
//! replication rules and becomes one entry naming every configured site it must reach.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer as _, DefaultConsumerContext};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::aside::{self, Aside, ChangeReplay};
use super::events::{self, ChangeKind};
use super::rules::ReplicationConfig;
use super::scan::{scan, KeyVersions};
use super::settle::Settled;
use crate::metrics::Stats;
use crate::queue::codec::Replay;
use crate::queue::codec::{EntryType, ReplicationEntry, VERSION};
use crate::queue::kafka::{self, Producer, QueueError, Topics};
use crate::queue::lines::Turn;
use crate::queue::replayer::{self, ReplayerConfig, Schedule};
use crate::replication::{MetadataField, Route, SourceOrder, Version};
use crate::retry::{retry, RetryPolicy};
use crate::s3::ops::bucket::BucketError;
use crate::s3::ops::tagging::TaggingError;
use crate::s3::{Client, Endpoint};
use crate::shard::Shutdown;

/// A destination site as the populator needs it (for `--missing-only`).
#[derive(Clone)]
pub struct SiteTarget {
    pub endpoint: Arc<Endpoint>,
    /// The site's consumer group (a missing-only scan waits for its queue).
    pub group: String,
    /// The site's replay group (a missing-only scan skips what waits on its replay topics).
    pub replay_group: String,
    pub buckets: crate::buckets::NameMap,
    /// Create a source bucket's site bucket when it is adopted.
    pub create_buckets: bool,
    pub versioned: bool,
    /// What the site's replicas carry (a missing-only scan compares their metadata).
    pub policy: Arc<crate::replication::ReplicaPolicy>,
}

/// What the populator needs.
#[derive(Clone)]
pub struct PopulateConfig {
    pub brokers: String,
    pub topics: Topics,
    pub group: String,
    pub membership: kafka::Membership,
    pub source: Arc<Endpoint>,
    /// Source buckets to replicate; events of other buckets are ignored.
    pub buckets: crate::buckets::Selection,
    pub rules_file: Option<PathBuf>,
    /// The rules of a bucket without a ReplicationConfiguration of its own.
    pub default_rules_file: Option<PathBuf>,
    /// Configured sites: rules naming other sites are ignored for them.
    pub sites: BTreeMap<String, SiteTarget>,
    /// With the embedded broker: wait while too many entries are unconsumed.
    pub backpressure: Option<Arc<crate::queue::backpressure::Backpressure>>,
    pub shutdown: Shutdown,
    /// Changes whose rules or tags cannot be read are replayed on this schedule.
    pub schedule: Schedule,
    /// The group of the populator's replayers.
    pub replay_group: String,
}

/// Why populating failed.
#[derive(Debug, thiserror::Error)]
pub enum PopulateError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("rules of bucket {bucket}: {message}")]
    Rules { bucket: String, message: String },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("scan failed: {0}")]
    Scan(String),
}

/// The source answered a request about a change with an error, or could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {message}")]
pub struct SourceError {
    /// What was asked (`rules of bucket B`, `tags of B/K`).
    pub what: String,
    pub code: String,
    pub retryable: bool,
    pub message: String,
}

impl PopulateError {
    fn source<E: crate::s3::error::OpError>(what: String, e: &E) -> Self {
        PopulateError::Source(SourceError {
            what,
            code: e.code().to_string(),
            retryable: e.is_retryable(),
            message: e.to_string(),
        })
    }

    /// The source is out of reach (no answer at all): everything waits for it.
    pub fn unreachable(&self) -> bool {
        let PopulateError::Source(SourceError { code, .. }) = self else {
            return false;
        };
        matches!(
            code.as_str(),
            "ConnectError" | "ConnectionError" | "Timeout" | "TlsError"
        )
    }

    /// Trying again cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            PopulateError::Source(SourceError {
                retryable: false,
                ..
            }) | PopulateError::Rules { .. }
        )
    }

    pub fn record(&self) -> crate::failure::ErrorRecord {
        let (code, retryable) = match self {
            PopulateError::Source(e) => (e.code.as_str(), e.retryable),
            PopulateError::Rules { .. } => ("InvalidReplicationConfiguration", false),
            _ => ("QueueError", true),
        };
        crate::failure::ErrorRecord {
            code: code.into(),
            message: self.to_string(),
            retryable,
        }
    }
}

/// Rules per bucket, loaded once (from the file, or GetBucketReplication).
pub(super) struct RulesCache {
    file: Option<Arc<ReplicationConfig>>,
    /// For buckets without a ReplicationConfiguration (`default_rules_file`).
    default: Option<Arc<ReplicationConfig>>,
    /// Filled as buckets are met (a `RefCell`, borrowed only between awaits).
    by_bucket: std::cell::RefCell<HashMap<String, Option<Arc<ReplicationConfig>>>>,
}

impl RulesCache {
    pub(super) fn new(cfg: &PopulateConfig) -> Result<Self, PopulateError> {
        Ok(Self {
            file: rules_from(cfg.rules_file.as_deref())?,
            default: rules_from(cfg.default_rules_file.as_deref())?,
            by_bucket: Default::default(),
        })
    }

    pub(super) async fn get(
        &self,
        source: &Client,
        bucket: &str,
    ) -> Result<Option<Arc<ReplicationConfig>>, PopulateError> {
        if let Some(f) = &self.file {
            return Ok(Some(f.clone()));
        }
        if let Some(r) = self.by_bucket.borrow().get(bucket) {
            return Ok(r.clone());
        }
        let r = match source.get_bucket_replication(bucket).await {
            Ok(xml) => Some(Arc::new(ReplicationConfig::parse(&xml).map_err(|e| {
                PopulateError::Rules {
                    bucket: bucket.into(),
                    message: e.to_string(),
                }
            })?)),
            Err(BucketError::NoReplicationConfiguration) if self.default.is_some() => {
                self.default.clone()
            }
            Err(BucketError::NoReplicationConfiguration) => {
                tracing::warn!(
                    bucket,
                    "no replication configuration: its changes are not replicated"
                );
                None
            }
            Err(e) => {
                // Not remembered: asked again for the bucket's next change.
                return Err(PopulateError::source(rules_of(bucket), &e));
            }
        };
        self.by_bucket
            .borrow_mut()
            .insert(bucket.to_string(), r.clone());
        Ok(r)
    }
}

/// The rules of a file, if one is given.
fn rules_from(
    p: Option<&std::path::Path>,
) -> Result<Option<Arc<ReplicationConfig>>, PopulateError> {
    let Some(p) = p else { return Ok(None) };
    let failed = |e: String| PopulateError::Rules {
        bucket: "*".into(),
        message: format!("{}: {e}", p.display()),
    };
    let text = std::fs::read_to_string(p).map_err(|e| failed(e.to_string()))?;
    let rules = ReplicationConfig::parse(&text).map_err(|e| failed(e.to_string()))?;
    Ok(Some(Arc::new(rules)))
}

/// The entry for one version, or `None` when no configured site must receive it.
pub(super) async fn entry_for(
    cfg: &PopulateConfig,
    source: &Client,
    rules: &ReplicationConfig,
    bucket: &str,
    v: &Version,
    event_time: Option<String>,
    fields: Vec<MetadataField>,
) -> Result<Option<ReplicationEntry>, PopulateError> {
    let Some(tags) = tags_for(source, rules, bucket, v).await? else {
        return Ok(None);
    };
    let Some(decision) = rules.decide(&v.key, &tags, v.delete_marker) else {
        return Ok(None);
    };
    let sites: Vec<String> = decision
        .sites
        .into_iter()
        .filter(|s| cfg.sites.contains_key(s))
        .collect();
    if sites.is_empty() {
        return Ok(None);
    }
    Ok(Some(ReplicationEntry {
        v: VERSION,
        kind: match (v.delete_marker, fields.is_empty()) {
            (true, _) => EntryType::DeleteMarker,
            (false, true) => EntryType::Put,
            (false, false) => EntryType::Metadata,
        },
        fields,
        bucket: bucket.to_string(),
        key: v.key.clone(),
        version_id: v.version_id.clone(),
        size: v.size,
        etag: v.etag.clone(),
        last_modified: v.order.last_modified.map(rfc3339_secs),
        sequencer: v.order.sequencer.clone(),
        content_type: None,
        user_metadata: Vec::new(),
        tags,
        checksum: None,
        sites,
        all_sites: Vec::new(),
        rule_id: Some(decision.rule_id),
        source_event_time: event_time,
        attempt: 0,
        replay: None,
    }))
}

/// A LastModified in seconds as RFC 3339, for the entry.
fn rfc3339_secs(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    crate::time::rfc3339(t)
}

/// The version's tags when a rule filters on tags (none otherwise), or `None` when the
/// version is gone from the source.
async fn tags_for(
    source: &Client,
    rules: &ReplicationConfig,
    bucket: &str,
    v: &Version,
) -> Result<Option<Vec<(String, String)>>, PopulateError> {
    let needs_tags = !v.delete_marker
        && rules
            .rules
            .iter()
            .any(|r| r.enabled && !r.filter.tags.is_empty());
    if !needs_tags {
        return Ok(Some(Vec::new()));
    }
    let vid = (v.version_id != "null").then_some(v.version_id.as_str());
    match source.get_object_tagging(bucket, &v.key, vid).await {
        Ok(t) => Ok(Some(t)),
        Err(TaggingError::NotFound) => Ok(None),
        Err(e) => Err(PopulateError::source(
            format!("tags of {bucket}/{}", v.key),
            &e,
        )),
    }
}

/// Sends one entry to the replication topic, once backpressure (if any) admits it.
async fn produce(
    cfg: &PopulateConfig,
    p: &Producer,
    e: &ReplicationEntry,
) -> Result<(), QueueError> {
    if let Some(b) = &cfg.backpressure {
        if !b.admit(&cfg.shutdown).await {
            return Err(QueueError::Produce {
                topic: cfg.topics.replication.clone(),
                error: rdkafka::error::KafkaError::Canceled,
            });
        }
    }
    let r = kafka::send(
        p,
        &cfg.topics.replication,
        &e.kafka_key(),
        Some(&e.encode()),
    )
    .await
    .map(|_| ());
    if r.is_err() {
        if let Some(b) = &cfg.backpressure {
            b.cancel();
        }
    }
    r
}

/// Now in Unix nanoseconds: the seed of new tickets.
fn now_nanos() -> u64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    d.unwrap_or_default().as_nanos() as u64
}

/// What a rules error is about.
fn rules_of(bucket: &str) -> String {
    format!("rules of bucket {bucket}")
}

/// One message of the events topic: partition, offset and payload.
type EventMessage = (i32, i64, Vec<u8>);

/// Consumes the events topic until shutdown.
pub async fn run_events(
    cfg: PopulateConfig,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> Result<(), PopulateError> {
    let consumer = Arc::new(kafka::consumer(
        &cfg.brokers,
        &cfg.group,
        &cfg.membership,
        DefaultConsumerContext,
    )?);
    consumer
        .subscribe(&[&cfg.topics.events])
        .map_err(QueueError::Consume)?;
    let producer = kafka::producer(&cfg.brokers)?;
    let replayer = glommio::spawn_local(replayer::run(
        replayer_config(&cfg),
        producer.clone(),
        shutdown.clone(),
    ));
    let source = Client::new(cfg.source.clone(), None);
    let rules = RulesCache::new(&cfg)?;
    let intake = EventIntake {
        cfg,
        source,
        producer,
        rules,
        stats,
        failing: Default::default(),
        lines: Default::default(),
    };
    while !shutdown.is_set() {
        let Some(batch) = next_batch(&consumer).await else {
            continue;
        };
        // Retry the batch until its entries are produced (or shutdown): never skip one.
        // Entries are sent in message order, so an object's versions keep their order; a
        // retry sends only the entries not delivered yet.
        let produced = std::cell::RefCell::new(Produced::default());
        let attempt = |_| intake.handle_batch(&batch, &produced);
        let what = "turning events into entries";
        let never = |_: &PopulateError| false;
        let produce = retry(&RetryPolicy::UNTIL_DONE, &shutdown, what, never, attempt);
        let topic = &intake.cfg.topics.events;
        let poll_interval = u64::from(intake.cfg.membership.max_poll_interval_ms);
        let after = Duration::from_millis(poll_interval / 4).min(Duration::from_secs(5));
        if kafka::polled_while(&consumer, topic, after, produce)
            .await
            .is_err()
        {
            return Ok(());
        }
        commit_batch(&consumer, &intake.cfg.topics.events, &batch);
    }
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    consumer.unsubscribe();
    replayer.await?;
    Ok(())
}

/// The populator's replayer: changes set aside go back to the events topic when due.
fn replayer_config(cfg: &PopulateConfig) -> ReplayerConfig {
    ReplayerConfig {
        brokers: cfg.brokers.clone(),
        group: cfg.replay_group.clone(),
        membership: cfg.membership,
        topics: replayer::steps_pattern(&cfg.topics.events_replay_base),
        back: cfg.topics.events.clone(),
        due: ChangeReplay::due,
    }
}

/// A batch: the first message waits (up to 200 ms), then whatever is already there (up to
/// 512). `None` when no message came (after a pause on a consume error).
async fn next_batch(
    consumer: &kafka::Consumer<DefaultConsumerContext>,
) -> Option<Vec<EventMessage>> {
    let message = |m: &rdkafka::message::BorrowedMessage<'_>| {
        (
            m.partition(),
            m.offset(),
            m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        )
    };
    let mut batch: Vec<EventMessage> = Vec::new();
    match kafka::recv_within(consumer, Duration::from_millis(200)).await {
        None => return None,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "consume error");
            glommio::timer::sleep(Duration::from_millis(200)).await;
            return None;
        }
        Some(Ok(m)) => batch.push(message(&m)),
    }
    while batch.len() < 512 {
        match futures_lite::future::poll_once(consumer.recv()).await {
            Some(Ok(m)) => batch.push(message(&m)),
            _ => break,
        }
    }
    Some(batch)
}

/// Commits (asynchronously) the offset after each partition's last message of `batch`.
fn commit_batch(
    consumer: &kafka::Consumer<DefaultConsumerContext>,
    topic: &str,
    batch: &[EventMessage],
) {
    let mut next: std::collections::BTreeMap<i32, i64> = std::collections::BTreeMap::new();
    for (p, o, _) in batch {
        let e = next.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in next {
        let _ = tpl.add_partition_offset(topic, p, Offset::Offset(o));
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::warn!(error = %e, "commit failed");
    }
}

/// What turning event notifications into entries needs, for every batch.
struct EventIntake {
    cfg: PopulateConfig,
    source: Client,
    producer: Producer,
    rules: RulesCache,
    stats: Arc<Stats>,
    /// Buckets whose rules could not be read just now, with the error and until when their
    /// next changes are set aside without asking again (a poison bucket costs the batch
    /// its attempts once, not once per change).
    failing: std::cell::RefCell<HashMap<String, (Instant, SourceError)>>,
    /// Keys (`bucket/key`) with changes set aside: the key's later changes go behind them
    /// (in this process; lost at a restart, when the workers' order checks remain).
    lines: std::cell::RefCell<crate::queue::lines::Lines>,
}

/// How long a bucket whose rules could not be read has its changes set aside at once: 5 s,
/// or half the first replay delay when shorter (so a replayed change asks again).
fn failing_for(s: &Schedule) -> Duration {
    let first = s.delays.first().map_or(Duration::MAX, |d| *d / 2);
    first.min(Duration::from_secs(5))
}

impl EventIntake {
    /// Turns a batch of messages into entries (once) and produces those not delivered yet,
    /// in message order; malformed messages go to the failed topic.
    async fn handle_batch(
        &self,
        batch: &[EventMessage],
        produced: &std::cell::RefCell<Produced>,
    ) -> Result<(), PopulateError> {
        let known = produced.borrow().entries.clone();
        let entries = match known {
            Some(e) => e,
            None => {
                let e = std::rc::Rc::new(self.entries_of(batch, produced).await?);
                *produced.borrow_mut() = Produced::new(e.clone());
                e
            }
        };
        let mut sent = std::mem::take(&mut produced.borrow_mut().sent);
        let unsent = sent.iter().filter(|s| !**s).count();
        let result = match self.admit_all(unsent).await {
            Ok(()) => self.send_unsent(&entries, &mut sent).await,
            Err(e) => Err(e),
        };
        produced.borrow_mut().sent = sent;
        result?;
        Stats::add(&self.stats.versions_seen, entries.len() as u64);
        Ok(())
    }

    /// The entries of a batch's events; malformed messages are sent to the failed topic. A
    /// retry resumes at the first message not done (the changes of those done were turned
    /// into entries, or set aside, once).
    async fn entries_of(
        &self,
        batch: &[EventMessage],
        produced: &std::cell::RefCell<Produced>,
    ) -> Result<Vec<ReplicationEntry>, PopulateError> {
        let start = produced.borrow().next;
        for (i, (partition, offset, payload)) in batch.iter().enumerate().skip(start) {
            let mut entries = Vec::new();
            if let Some(back) = ChangeReplay::detect(payload) {
                let changes = vec![(back.change, Some(back.replay))];
                self.add_entries(changes, &mut entries).await?;
            } else {
                match events::parse(payload) {
                    Ok(changes) => {
                        let changes = changes.into_iter().map(|c| (c, None)).collect();
                        self.add_entries(changes, &mut entries).await?
                    }
                    Err(e) => {
                        self.send_malformed(*partition, *offset, payload, &e)
                            .await?
                    }
                }
            }
            let mut p = produced.borrow_mut();
            p.building.append(&mut entries);
            p.next = i + 1;
        }
        Ok(std::mem::take(&mut produced.borrow_mut().building))
    }

    /// Sends a message that is not an event notification to the failed topic, with why.
    async fn send_malformed(
        &self,
        partition: i32,
        offset: i64,
        payload: &[u8],
        e: &events::MalformedEvent,
    ) -> Result<(), PopulateError> {
        let topics = &self.cfg.topics;
        let doc = serde_json::json!({
            "v": VERSION, "kind": "malformed-event", "topic": topics.events, "partition": partition,
            "offset": offset, "reason": e.0, "payload": String::from_utf8_lossy(payload),
        });
        let k = format!("malformed/{}/{partition}/{offset}", topics.events);
        kafka::send(
            &self.producer,
            &topics.failed,
            &k,
            Some(doc.to_string().as_bytes()),
        )
        .await?;
        Stats::add(&self.stats.failed, 1);
        tracing::warn!(partition, offset, reason = %e, "malformed event sent to the failed topic");
        Ok(())
    }

    /// Appends the entries of the changes (of configured buckets with rules) to `entries`;
    /// each change comes with its place when it comes back from a replay topic. A change
    /// whose rules or tags cannot be read is set aside (`aside`) after a few attempts, unless
    /// the source is out of reach: then the whole batch waits.
    async fn add_entries(
        &self,
        changes: Vec<(events::Change, Option<Replay>)>,
        entries: &mut Vec<ReplicationEntry>,
    ) -> Result<(), PopulateError> {
        let cfg = &self.cfg;
        for (c, prior) in changes {
            if !cfg.buckets.is_empty() && !cfg.buckets.matches(&c.bucket) {
                continue;
            }
            if c.kind == events::ChangeKind::BucketCreated {
                let topic = &cfg.topics.buckets;
                crate::queue::buckets::seen_created(&self.producer, topic, &c.bucket).await?;
                continue;
            }
            let key = format!("{}/{}", c.bucket, c.key);
            let ticket = prior.map(|r| r.ticket).filter(|t| *t > 0);
            let turn = self.lines.borrow_mut().turn(&key, ticket, now_nanos());
            if let Turn::Wait { ticket, step } = turn {
                let (p, stats) = (&self.producer, &self.stats);
                aside::behind(cfg, p, stats, &c, prior.as_ref(), ticket, step).await?;
                continue;
            }
            let error = match self.failing_rules(&c.bucket) {
                Some(e) => e,
                None => match self.try_change(&c).await {
                    Ok(Some(e)) => {
                        entries.push(e);
                        continue;
                    }
                    Ok(None) => continue,
                    Err(e) if e.unreachable() && !self.source_answers(&c.bucket).await => {
                        return Err(e)
                    }
                    Err(e) => e,
                },
            };
            let ticket = ticket.unwrap_or_else(|| self.lines.borrow_mut().ticket(now_nanos()));
            let (p, stats) = (&self.producer, &self.stats);
            let aside = aside::set_aside(cfg, p, stats, &c, prior.as_ref(), ticket, &error).await?;
            if let Aside::Replayed { step } = aside {
                self.lines.borrow_mut().wait(&key, ticket, step);
            }
        }
        Ok(())
    }

    /// Whether the source answers at all (a HeadBucket of `bucket`): a change's request that
    /// got no answer holds the batch only when the source is out of reach, not when one
    /// bucket's request hangs.
    async fn source_answers(&self, bucket: &str) -> bool {
        match self.source.head_bucket(bucket).await {
            Ok(()) => true,
            Err(e) => {
                let code = crate::s3::error::OpError::code(&e).to_string();
                !matches!(
                    code.as_str(),
                    "ConnectError" | "ConnectionError" | "Timeout" | "TlsError"
                )
            }
        }
    }

    /// The entry of one change, after a few attempts; a bucket whose rules could not be read
    /// is remembered as failing for a while.
    async fn try_change(
        &self,
        c: &events::Change,
    ) -> Result<Option<ReplicationEntry>, PopulateError> {
        let what = "reading a change's rules and tags";
        let permanent = PopulateError::is_permanent;
        let tried = retry(
            &RetryPolicy::CHANGE,
            &self.cfg.shutdown,
            what,
            permanent,
            |_| self.entry_of_change(c),
        );
        let error = match tried.await {
            Ok(e) => return Ok(e),
            Err(gave_up) => gave_up.error,
        };
        if let PopulateError::Source(e) = &error {
            if e.what == rules_of(&c.bucket) && !error.unreachable() {
                let until = Instant::now() + failing_for(&self.cfg.schedule);
                let mut failing = self.failing.borrow_mut();
                failing.insert(c.bucket.clone(), (until, e.clone()));
            }
        }
        Err(error)
    }

    /// The error of a bucket whose rules could not be read just now.
    fn failing_rules(&self, bucket: &str) -> Option<PopulateError> {
        let mut failing = self.failing.borrow_mut();
        failing.retain(|_, (until, _)| *until > Instant::now());
        failing.get(bucket).map(|(_, e)| e.clone().into())
    }

    /// The entry of one change, or `None` when its bucket has no rules for it.
    async fn entry_of_change(
        &self,
        c: &events::Change,
    ) -> Result<Option<ReplicationEntry>, PopulateError> {
        let (cfg, source) = (&self.cfg, &self.source);
        let Some(r) = self.rules.get(source, &c.bucket).await? else {
            return Ok(None);
        };
        let v = Version {
            key: c.key.clone(),
            version_id: c.version_id.clone(),
            delete_marker: c.kind == ChangeKind::DeleteMarker,
            size: c.size,
            etag: c.etag.clone(),
            order: SourceOrder::new(None, Some(&c.sequencer)),
        };
        let fields = match c.kind {
            ChangeKind::Metadata(f) => vec![f],
            _ => Vec::new(),
        };
        entry_for(cfg, source, &r, &c.bucket, &v, c.event_time.clone(), fields).await
    }

    /// Waits for backpressure (if any) to admit `n` entries, one by one; on shutdown gives
    /// the admissions back and fails.
    async fn admit_all(&self, n: usize) -> Result<(), PopulateError> {
        let Some(b) = &self.cfg.backpressure else {
            return Ok(());
        };
        for admitted in 0..n {
            if !b.admit(&self.cfg.shutdown).await {
                for _ in 0..admitted {
                    b.cancel();
                }
                return Err(QueueError::Produce {
                    topic: self.cfg.topics.replication.clone(),
                    error: rdkafka::error::KafkaError::Canceled,
                }
                .into());
            }
        }
        Ok(())
    }

    /// Sends every (admitted) entry not sent yet, at once, marking each delivered one.
    /// Admissions come first: librdkafka enqueues the sends in this order, and its
    /// idempotent producer keeps them in order in their partition. (After a message
    /// timeout, a later entry of a key may be delivered while an earlier one failed: the
    /// retry then puts the earlier one after it, and the worker supersedes it.)
    async fn send_unsent(
        &self,
        entries: &[ReplicationEntry],
        sent: &mut [bool],
    ) -> Result<(), PopulateError> {
        let topic = &self.cfg.topics.replication;
        let failed = send_unsent(entries, sent, |e| {
            let (k, v) = (e.kafka_key(), e.encode());
            async move {
                kafka::send(&self.producer, topic, &k, Some(&v))
                    .await
                    .map(|_| ())
            }
        })
        .await;
        let Some((n, first)) = failed else {
            return Ok(());
        };
        if let Some(b) = &self.cfg.backpressure {
            for _ in 0..n {
                b.cancel();
            }
        }
        Err(first.into())
    }
}

/// A batch's entries, built once, and which of them are delivered: a retry of the batch
/// sends only the rest, so a partial failure never enqueues an entry twice.
#[derive(Default)]
struct Produced {
    entries: Option<std::rc::Rc<Vec<ReplicationEntry>>>,
    sent: Vec<bool>,
    /// While the entries are being built: those of the messages done, and the next message.
    building: Vec<ReplicationEntry>,
    next: usize,
}

impl Produced {
    fn new(entries: std::rc::Rc<Vec<ReplicationEntry>>) -> Self {
        let sent = vec![false; entries.len()];
        Self {
            entries: Some(entries),
            sent,
            ..Self::default()
        }
    }
}

/// Sends, all at once and in order, the entries not marked in `sent`, and marks those
/// delivered. On failures: how many failed, and the first error.
pub(super) async fn send_unsent<'a, T, F, Fut>(
    entries: &'a [T],
    sent: &mut [bool],
    send: F,
) -> Option<(usize, QueueError)>
where
    F: Fn(&'a T) -> Fut,
    Fut: std::future::Future<Output = Result<(), QueueError>>,
{
    let pending: Vec<usize> = (0..entries.len()).filter(|i| !sent[*i]).collect();
    let results = futures_util::future::join_all(pending.iter().map(|i| send(&entries[*i]))).await;
    let mut failed = None;
    for (i, r) in pending.into_iter().zip(results) {
        match r {
            Ok(()) => sent[i] = true,
            Err(e) => {
                let f = failed.get_or_insert((0, e));
                f.0 += 1;
            }
        }
    }
    failed
}

/// What a scan enqueued.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ScanSummary {
    pub versions_found: u64,
    pub entries_enqueued: u64,
    pub already_present: u64,
    /// Versions written after the scan started while events flow (missing-only): left to
    /// their events.
    pub after_start: u64,
    /// Sites not checked (missing-only): their queue was not moving.
    pub sites_left_out: Vec<String>,
    /// Keys skipped because they could not be checked or read (the next scan tries them
    /// again), and the first few of them with why.
    pub keys_failed: u64,
    /// Current versions at their sites whose replica's metadata differs (missing-only): a
    /// metadata entry each (counted in `entries_enqueued` too).
    pub metadata_drift: u64,
    pub first_key_failures: Vec<String>,
    /// Versions missing at their sites but FAILED there or waiting for a replay
    /// (missing-only): not enqueued again (`backbeat failed retry` is for those FAILED).
    pub outstanding: u64,
}

/// How many key failures a summary names.
const KEY_FAILURES_NAMED: usize = 10;

/// Which versions a scan enqueues.
#[derive(Debug, Clone, Copy)]
pub enum ScanMode<'a> {
    /// Every version, to every site its rules name.
    All,
    /// Only what each settled site lacks, of the versions written before the scan started.
    Missing(&'a Settled),
}

/// Enqueues the existing versions of `bucket` (under `prefix`), as `mode` says.
/// `progress` is called after each key.
pub async fn scan_enqueue(
    cfg: &PopulateConfig,
    bucket: &str,
    prefix: Option<&str>,
    mode: ScanMode<'_>,
    shutdown: &Shutdown,
    mut progress: impl FnMut(&ScanSummary),
) -> Result<ScanSummary, PopulateError> {
    let producer = kafka::producer(&cfg.brokers)?;
    let source = Client::new(cfg.source.clone(), None);
    let rules = RulesCache::new(cfg)?;
    let Some(r) = rules.get(&source, bucket).await? else {
        return Err(PopulateError::Rules { bucket: bucket.into(), message: "no replication configuration (set source.rules_file or the bucket's ReplicationConfiguration)".into() });
    };
    let mut summary = ScanSummary::default();
    let mut routes = site_routes(cfg, &source, bucket);
    if let ScanMode::Missing(settled) = mode {
        routes.retain(|site, _| settled.sites.contains(site));
        summary.sites_left_out = settled.left_out.iter().map(|(s, _)| s.clone()).collect();
    }
    let job = ScanJob {
        cfg,
        routes,
        source: &source,
        producer: &producer,
        rules: &r,
        bucket,
        mode,
        summary: std::cell::RefCell::new(summary),
    };
    let failure: std::cell::RefCell<Option<PopulateError>> = std::cell::RefCell::new(None);
    let progress = std::cell::RefCell::new(&mut progress);
    let started = Instant::now();
    let result = scan(&source, bucket, prefix, shutdown, |kv: KeyVersions| {
        let (job, failure, progress) = (&job, &failure, &progress);
        async move {
            match job.enqueue_key(&kv).await {
                Ok(()) => {}
                // Kafka refuses entries: nothing more can be enqueued.
                Err(e @ PopulateError::Queue(_)) => {
                    *failure.borrow_mut() = Some(e);
                    return false;
                }
                // This key's trouble (its check or its tags): the others go on.
                Err(e) => job.key_failed(&kv.key, &e),
            }
            (progress.borrow_mut())(&job.summary.borrow());
            true
        }
    })
    .await;
    if let Some(f) = failure.into_inner() {
        return Err(f);
    }
    result.map_err(|e| PopulateError::Scan(e.to_string()))?;
    tracing::info!(elapsed = ?started.elapsed(), "scan done");
    Ok(job.summary.into_inner())
}

/// The route from `bucket` to each configured site (for `--missing-only`).
fn site_routes(cfg: &PopulateConfig, source: &Client, bucket: &str) -> BTreeMap<String, Route> {
    cfg.sites
        .iter()
        .map(|(name, s)| {
            let dest_bucket = s.buckets.dest(bucket);
            let route = Route {
                source: source.clone(),
                source_bucket: bucket.to_string(),
                dest: Client::new(s.endpoint.clone(), None),
                dest_bucket: dest_bucket.to_string(),
                dest_versioned: s.versioned,
                policy: s.policy.clone(),
            };
            (name.clone(), route)
        })
        .collect()
}

/// What a scan needs for every key, and what it has enqueued so far.
struct ScanJob<'a> {
    cfg: &'a PopulateConfig,
    source: &'a Client,
    producer: &'a Producer,
    rules: &'a ReplicationConfig,
    routes: BTreeMap<String, Route>,
    bucket: &'a str,
    mode: ScanMode<'a>,
    summary: std::cell::RefCell<ScanSummary>,
}

impl ScanJob<'_> {
    /// Enqueues the entries of one key's versions (missing-only: each to the settled sites
    /// that lack it, and none written after the scan started), counting them.
    async fn enqueue_key(&self, kv: &KeyVersions) -> Result<(), PopulateError> {
        let applied = match self.mode {
            ScanMode::Missing(_) => self.applied_prefixes(kv).await?,
            ScanMode::All => HashMap::new(),
        };
        for (i, v) in kv.versions.iter().enumerate() {
            if let ScanMode::Missing(settled) = self.mode {
                if settled.too_recent(v.order.last_modified) {
                    // This one and the key's later versions: their events bring them.
                    let left = (kv.versions.len() - i) as u64;
                    let mut s = self.summary.borrow_mut();
                    s.versions_found += left;
                    s.after_start += left;
                    break;
                }
            }
            self.summary.borrow_mut().versions_found += 1;
            let (cfg, source, rules, bucket) = (self.cfg, self.source, self.rules, self.bucket);
            let entry = entry_for(cfg, source, rules, bucket, v, None, Vec::new()).await?;
            let Some(mut e) = entry else {
                continue;
            };
            if let ScanMode::Missing(_) = self.mode {
                e.sites.retain(|s| self.routes.contains_key(s));
                if e.sites.is_empty() {
                    continue; // every site it goes to was left out of this scan
                }
                let wanted = e.sites.clone();
                e.sites
                    .retain(|s| applied.get(s.as_str()).is_none_or(|n| i >= *n));
                if e.sites.is_empty() {
                    self.summary.borrow_mut().already_present += 1;
                    if i + 1 == kv.versions.len() && !v.delete_marker {
                        e.sites = wanted;
                        self.enqueue_drift(e, v).await?;
                    }
                    continue;
                }
                if let ScanMode::Missing(settled) = self.mode {
                    let (b, k, id) = (self.bucket, &v.key, &v.version_id);
                    e.sites.retain(|s| !settled.outstanding(b, k, id, s));
                    if e.sites.is_empty() {
                        self.summary.borrow_mut().outstanding += 1;
                        continue;
                    }
                }
            }
            produce(self.cfg, self.producer, &e).await?;
            self.summary.borrow_mut().entries_enqueued += 1;
        }
        Ok(())
    }

    /// The key's current version is at its sites: a metadata entry for the sites whose
    /// replica's tags, retention, legal hold (or copied ACL) differ from the source's.
    async fn enqueue_drift(
        &self,
        mut e: ReplicationEntry,
        v: &Version,
    ) -> Result<(), PopulateError> {
        let wanted = std::mem::take(&mut e.sites);
        for site in wanted {
            let Some(route) = self.routes.get(&site) else {
                continue;
            };
            let fields = crate::replication::metadata::drift(route, v)
                .await
                .map_err(|err| {
                    PopulateError::Scan(format!("checking {} at site {site}: {err}", v.key))
                })?;
            for f in fields {
                if !e.fields.contains(&f) {
                    e.fields.push(f);
                }
            }
            if !e.fields.is_empty() && !e.sites.contains(&site) {
                e.sites.push(site);
            }
        }
        if e.sites.is_empty() {
            return Ok(());
        }
        e.fields.sort();
        e.kind = EntryType::Metadata;
        produce(self.cfg, self.producer, &e).await?;
        let mut s = self.summary.borrow_mut();
        s.metadata_drift += 1;
        s.entries_enqueued += 1;
        Ok(())
    }

    /// A key skipped by this scan: logged and counted, the scan goes on.
    fn key_failed(&self, key: &str, e: &PopulateError) {
        tracing::warn!(bucket = self.bucket, key, error = %e, "key skipped by this scan (the next scan tries it again)");
        let mut s = self.summary.borrow_mut();
        s.keys_failed += 1;
        if s.first_key_failures.len() < KEY_FAILURES_NAMED {
            s.first_key_failures.push(format!("{key}: {e}"));
        }
    }

    /// How many of the key's versions (oldest first) each site already holds.
    async fn applied_prefixes(
        &self,
        kv: &KeyVersions,
    ) -> Result<HashMap<&str, usize>, PopulateError> {
        let mut applied = HashMap::new();
        for (name, route) in &self.routes {
            let n = route
                .applied_prefix(&kv.key, &kv.versions)
                .await
                .map_err(|e| {
                    PopulateError::Scan(format!("checking {} at site {name}: {e}", kv.key))
                })?;
            applied.insert(name.as_str(), n);
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A producer that fails the given entries once, recording every send.
    fn flaky(fail_once: &[u32]) -> (RefCell<Vec<u32>>, RefCell<Vec<u32>>) {
        (RefCell::new(fail_once.to_vec()), RefCell::new(Vec::new()))
    }

    #[test]
    fn a_retry_sends_only_the_entries_not_delivered_in_their_order() {
        let entries: Vec<u32> = (0..6).collect();
        let (to_fail, log) = flaky(&[2, 4]);
        let send = |e: &u32| {
            let e = *e;
            log.borrow_mut().push(e);
            let fail = {
                let mut f = to_fail.borrow_mut();
                let hit = f.contains(&e);
                f.retain(|x| *x != e);
                hit
            };
            async move {
                if fail {
                    Err(QueueError::Produce {
                        topic: "t".into(),
                        error: rdkafka::error::KafkaError::Canceled,
                    })
                } else {
                    Ok(())
                }
            }
        };
        let mut sent = vec![false; entries.len()];
        let first = futures_lite::future::block_on(send_unsent(&entries, &mut sent, send));
        assert_eq!(first.map(|(n, _)| n), Some(2), "two entries failed");
        assert_eq!(sent, [true, true, false, true, false, true]);
        let second = futures_lite::future::block_on(send_unsent(&entries, &mut sent, send));
        assert!(second.is_none());
        assert_eq!(
            *log.borrow(),
            [0, 1, 2, 3, 4, 5, 2, 4],
            "only 2 and 4 again, in order"
        );
        let third = futures_lite::future::block_on(send_unsent(&entries, &mut sent, send));
        assert!(third.is_none());
        assert_eq!(log.borrow().len(), 8, "nothing sent once all are delivered");
    }
}
