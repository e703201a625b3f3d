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

use super::events::{self, ChangeKind};
use super::rules::ReplicationConfig;
use super::scan::{scan, KeyVersions};
use crate::metrics::Stats;
use crate::queue::codec::{EntryType, ReplicationEntry, VERSION};
use crate::queue::kafka::{self, Producer, QueueError, Topics};
use crate::replication::{Route, Version};
use crate::retry::{retry, RetryPolicy};
use crate::s3::ops::bucket::BucketError;
use crate::s3::ops::tagging::TaggingError;
use crate::s3::{Client, Endpoint};
use crate::shard::Shutdown;

/// A destination site as the populator needs it (for `--missing-only`).
#[derive(Clone)]
pub struct SiteTarget {
    pub endpoint: Arc<Endpoint>,
    pub buckets: BTreeMap<String, String>,
    pub versioned: bool,
}

/// What the populator needs.
#[derive(Clone)]
pub struct PopulateConfig {
    pub brokers: String,
    pub topics: Topics,
    pub group: String,
    pub session_timeout_ms: u32,
    pub source: Arc<Endpoint>,
    /// Source buckets to replicate; events of other buckets are ignored.
    pub buckets: Vec<String>,
    pub rules_file: Option<PathBuf>,
    /// Configured sites: rules naming other sites are ignored for them.
    pub sites: BTreeMap<String, SiteTarget>,
    /// With the embedded broker: wait while too many entries are unconsumed.
    pub backpressure: Option<Arc<crate::queue::backpressure::Backpressure>>,
    pub shutdown: Shutdown,
}

/// Why populating failed.
#[derive(Debug, thiserror::Error)]
pub enum PopulateError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("rules of bucket {bucket}: {message}")]
    Rules { bucket: String, message: String },
    #[error("scan failed: {0}")]
    Scan(String),
}

/// Rules per bucket, loaded once (from the file, or GetBucketReplication).
struct RulesCache {
    file: Option<Arc<ReplicationConfig>>,
    /// Filled as buckets are met (a `RefCell`, borrowed only between awaits).
    by_bucket: std::cell::RefCell<HashMap<String, Option<Arc<ReplicationConfig>>>>,
}

impl RulesCache {
    fn new(cfg: &PopulateConfig) -> Result<Self, PopulateError> {
        let file = match &cfg.rules_file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| PopulateError::Rules {
                    bucket: "*".into(),
                    message: format!("{}: {e}", p.display()),
                })?;
                Some(Arc::new(ReplicationConfig::parse(&text).map_err(|e| {
                    PopulateError::Rules {
                        bucket: "*".into(),
                        message: format!("{}: {e}", p.display()),
                    }
                })?))
            }
            None => None,
        };
        Ok(Self {
            file,
            by_bucket: Default::default(),
        })
    }

    async fn get(
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
            Err(BucketError::NoReplicationConfiguration) => {
                tracing::warn!(
                    bucket,
                    "no replication configuration: its changes are not replicated"
                );
                None
            }
            Err(e) if e.is_retryable() => {
                return Err(PopulateError::Rules {
                    bucket: bucket.into(),
                    message: e.to_string(),
                })
            }
            Err(e) => {
                tracing::warn!(bucket, error = %e, "cannot read the replication configuration: its changes are not replicated");
                None
            }
        };
        self.by_bucket
            .borrow_mut()
            .insert(bucket.to_string(), r.clone());
        Ok(r)
    }
}

/// The entry for one version, or `None` when no configured site must receive it.
async fn entry_for(
    cfg: &PopulateConfig,
    source: &Client,
    rules: &ReplicationConfig,
    bucket: &str,
    v: &Version,
    event_time: Option<String>,
) -> Result<Option<ReplicationEntry>, PopulateError> {
    let needs_tags = !v.delete_marker
        && rules
            .rules
            .iter()
            .any(|r| r.enabled && !r.filter.tags.is_empty());
    let tags = if needs_tags {
        let vid = (v.version_id != "null").then_some(v.version_id.as_str());
        match source.get_object_tagging(bucket, &v.key, vid).await {
            Ok(t) => t,
            Err(TaggingError::NotFound) => return Ok(None),
            Err(e) => {
                return Err(PopulateError::Rules {
                    bucket: bucket.into(),
                    message: format!("tags of {}: {e}", v.key),
                })
            }
        }
    } else {
        Vec::new()
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
        kind: if v.delete_marker {
            EntryType::DeleteMarker
        } else {
            EntryType::Put
        },
        bucket: bucket.to_string(),
        key: v.key.clone(),
        version_id: v.version_id.clone(),
        size: v.size,
        etag: v.etag.clone(),
        last_modified: None,
        content_type: None,
        user_metadata: Vec::new(),
        tags,
        checksum: None,
        sites,
        rule_id: Some(decision.rule_id),
        source_event_time: event_time,
        attempt: 0,
    }))
}

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

/// Consumes the events topic until shutdown.
pub async fn run_events(
    cfg: PopulateConfig,
    stats: Arc<Stats>,
    shutdown: Shutdown,
) -> Result<(), PopulateError> {
    let consumer = kafka::consumer(
        &cfg.brokers,
        &cfg.group,
        cfg.session_timeout_ms,
        DefaultConsumerContext,
    )?;
    consumer
        .subscribe(&[&cfg.topics.events])
        .map_err(QueueError::Consume)?;
    let producer = kafka::producer(&cfg.brokers)?;
    let source = Client::new(cfg.source.clone(), None);
    let rules = RulesCache::new(&cfg)?;
    while !shutdown.is_set() {
        // A batch: the first message waits, then whatever is already there (up to 512).
        let mut batch: Vec<(i32, i64, Vec<u8>)> = Vec::new();
        match kafka::recv_within(&consumer, Duration::from_millis(200)).await {
            None => continue,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "consume error");
                glommio::timer::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Some(Ok(m)) => batch.push((
                m.partition(),
                m.offset(),
                m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            )),
        }
        while batch.len() < 512 {
            match futures_lite::future::poll_once(consumer.recv()).await {
                Some(Ok(m)) => batch.push((
                    m.partition(),
                    m.offset(),
                    m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                )),
                _ => break,
            }
        }
        // Retry the batch until its entries are produced (or shutdown): never skip one.
        // Entries are sent in message order, so an object's versions keep their order.
        let attempt = |_| handle_batch(&cfg, &source, &producer, &rules, &stats, &batch);
        let what = "turning events into entries";
        let never = |_: &PopulateError| false;
        if retry(&RetryPolicy::UNTIL_DONE, &shutdown, what, never, attempt)
            .await
            .is_err()
        {
            return Ok(());
        }
        let mut next: std::collections::BTreeMap<i32, i64> = std::collections::BTreeMap::new();
        for (p, o, _) in &batch {
            let e = next.entry(*p).or_insert(0);
            *e = (*e).max(o + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in next {
            let _ = tpl.add_partition_offset(&cfg.topics.events, p, Offset::Offset(o));
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(error = %e, "commit failed");
        }
    }
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    consumer.unsubscribe();
    Ok(())
}

async fn handle_batch(
    cfg: &PopulateConfig,
    source: &Client,
    producer: &Producer,
    rules: &RulesCache,
    stats: &Stats,
    batch: &[(i32, i64, Vec<u8>)],
) -> Result<(), PopulateError> {
    let mut entries = Vec::new();
    for (partition, offset, payload) in batch {
        let changes = match events::parse(payload) {
            Ok(c) => c,
            Err(e) => {
                let doc = serde_json::json!({
                    "v": VERSION, "kind": "malformed-event", "topic": cfg.topics.events, "partition": partition,
                    "offset": offset, "reason": e.0, "payload": String::from_utf8_lossy(payload),
                });
                let k = format!("malformed/{}/{partition}/{offset}", cfg.topics.events);
                kafka::send(
                    producer,
                    &cfg.topics.failed,
                    &k,
                    Some(doc.to_string().as_bytes()),
                )
                .await?;
                Stats::add(&stats.failed, 1);
                tracing::warn!(partition, offset, reason = %e, "malformed event sent to the failed topic");
                continue;
            }
        };
        for c in changes {
            if !cfg.buckets.is_empty() && !cfg.buckets.contains(&c.bucket) {
                continue;
            }
            let Some(r) = rules.get(source, &c.bucket).await? else {
                continue;
            };
            let v = Version {
                key: c.key.clone(),
                version_id: c.version_id.clone(),
                delete_marker: c.kind == ChangeKind::DeleteMarker,
                size: c.size,
                etag: c.etag.clone(),
            };
            if let Some(e) = entry_for(cfg, source, &r, &c.bucket, &v, c.event_time.clone()).await?
            {
                entries.push(e);
            }
        }
    }
    // Admissions first, one by one, then every send at once: librdkafka enqueues them in
    // this order, so an object's versions stay in order in their partition.
    if let Some(b) = &cfg.backpressure {
        for admitted in 0..entries.len() {
            if !b.admit(&cfg.shutdown).await {
                for _ in 0..admitted {
                    b.cancel();
                }
                return Err(QueueError::Produce {
                    topic: cfg.topics.replication.clone(),
                    error: rdkafka::error::KafkaError::Canceled,
                }
                .into());
            }
        }
    }
    let encoded: Vec<(String, Vec<u8>)> = entries
        .iter()
        .map(|e| (e.kafka_key(), e.encode()))
        .collect();
    let sends = encoded
        .iter()
        .map(|(k, v)| kafka::send(producer, &cfg.topics.replication, k, Some(v)));
    let results = futures_util::future::join_all(sends).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if failed > 0 {
        if let Some(b) = &cfg.backpressure {
            for _ in 0..failed {
                b.cancel();
            }
        }
        for r in results {
            r?;
        }
    }
    Stats::add(&stats.versions_seen, entries.len() as u64);
    Ok(())
}

/// What a scan enqueued.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ScanSummary {
    pub versions_found: u64,
    pub entries_enqueued: u64,
    pub already_present: u64,
}

/// Enqueues the existing versions of `bucket` (under `prefix`). With `missing_only`, each
/// site is first checked and only the versions it lacks are sent to it. `progress` is
/// called after each key.
pub async fn scan_enqueue(
    cfg: &PopulateConfig,
    bucket: &str,
    prefix: Option<&str>,
    missing_only: bool,
    shutdown: &Shutdown,
    mut progress: impl FnMut(&ScanSummary),
) -> Result<ScanSummary, PopulateError> {
    let producer = kafka::producer(&cfg.brokers)?;
    let source = Client::new(cfg.source.clone(), None);
    let rules = RulesCache::new(cfg)?;
    let Some(r) = rules.get(&source, bucket).await? else {
        return Err(PopulateError::Rules { bucket: bucket.into(), message: "no replication configuration (set source.rules_file or the bucket's ReplicationConfiguration)".into() });
    };
    let routes: BTreeMap<String, Route> = cfg
        .sites
        .iter()
        .map(|(name, s)| {
            let dest_bucket = s.buckets.get(bucket).map_or(bucket, |b| b.as_str());
            let route = Route {
                source: source.clone(),
                source_bucket: bucket.to_string(),
                dest: Client::new(s.endpoint.clone(), None),
                dest_bucket: dest_bucket.to_string(),
                dest_versioned: s.versioned,
            };
            (name.clone(), route)
        })
        .collect();
    let summary = std::cell::RefCell::new(ScanSummary::default());
    let failure: std::cell::RefCell<Option<PopulateError>> = std::cell::RefCell::new(None);
    let progress = std::cell::RefCell::new(&mut progress);
    let started = Instant::now();
    let result = scan(&source, bucket, prefix, shutdown, |kv: KeyVersions| {
        let (r, producer, routes, source) = (&r, &producer, &routes, &source);
        let (summary, failure, progress) = (&summary, &failure, &progress);
        async move {
            let mut applied: HashMap<&str, usize> = HashMap::new();
            if missing_only {
                for (name, route) in routes {
                    match route.applied_prefix(&kv.key, &kv.versions).await {
                        Ok(n) => {
                            applied.insert(name.as_str(), n);
                        }
                        Err(e) => {
                            *failure.borrow_mut() = Some(PopulateError::Scan(format!(
                                "checking {} at site {name}: {e}",
                                kv.key
                            )));
                            return false;
                        }
                    }
                }
            }
            for (i, v) in kv.versions.iter().enumerate() {
                summary.borrow_mut().versions_found += 1;
                let e = match entry_for(cfg, source, r, bucket, v, None).await {
                    Ok(Some(e)) => e,
                    Ok(None) => continue,
                    Err(e) => {
                        *failure.borrow_mut() = Some(e);
                        return false;
                    }
                };
                let mut e = e;
                if missing_only {
                    e.sites
                        .retain(|s| applied.get(s.as_str()).is_none_or(|n| i >= *n));
                    if e.sites.is_empty() {
                        summary.borrow_mut().already_present += 1;
                        continue;
                    }
                }
                if let Err(err) = produce(cfg, producer, &e).await {
                    *failure.borrow_mut() = Some(err.into());
                    return false;
                }
                summary.borrow_mut().entries_enqueued += 1;
            }
            (progress.borrow_mut())(&summary.borrow());
            true
        }
    })
    .await;
    if let Some(f) = failure.into_inner() {
        return Err(f);
    }
    result.map_err(|e| PopulateError::Scan(e.to_string()))?;
    tracing::info!(elapsed = ?started.elapsed(), "scan done");
    Ok(summary.into_inner())
}
