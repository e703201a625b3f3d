//! Site-level replication: the source's buckets discovered (ListBuckets every
//! `source.discover_interval_seconds`, and at once when the populator reads a
//! bucket-creation event), each new selected bucket adopted (its site buckets created where
//! a site has `create_buckets`, then its existing versions enqueued), and the adopted
//! buckets recorded on the compacted `<prefix>buckets` topic, so a restart or another node
//! does not adopt them again. The adopter is whichever member of its group holds that
//! topic's only partition; every node refreshes its own list of known buckets.
//!
//! Buckets that exist when site-level replication first starts are adopted as they are (their
//! site buckets created, their objects left to `populate --scan`), as a bucket named in
//! `source.buckets` always was: the record `#baseline` says that first pass is done. A
//! bucket created after that start is new: its existing versions are enqueued.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer as _;
use rdkafka::message::Message as _;

use crate::buckets::{Known, Selection};
use crate::populate::worker::{self as populate, PopulateConfig, ScanMode};
use crate::queue::buckets::{BucketRecord, BASELINE, SEEN};
use crate::queue::kafka::{self, Producer, QueueError};
use crate::s3::ops::bucket::BucketError;
use crate::s3::Client;
use crate::shard::Shutdown;

/// Makes sure a site has the bucket a source bucket replicates to, versioned: created when
/// missing (with Object Lock when the source bucket has it), versioning enabled when it is
/// off (a creation interrupted before it). True when it was created.
pub async fn ensure_site_bucket(
    source: &Client,
    site: &Client,
    source_bucket: &str,
    site_bucket: &str,
) -> Result<bool, String> {
    match site.get_bucket_versioning(site_bucket).await {
        Ok(crate::s3::ops::bucket::Versioning::Enabled) => return Ok(false),
        Ok(_) => {
            site.put_bucket_versioning(site_bucket, true)
                .await
                .map_err(|e| format!("PutBucketVersioning {site_bucket}: {e}"))?;
            return Ok(false);
        }
        Err(BucketError::NoSuchBucket) => {}
        // A server without versioning: the bucket is there, as it can be.
        Err(e) if e.code() == "NotImplemented" => return Ok(false),
        Err(e) => return Err(format!("GetBucketVersioning {site_bucket}: {e}")),
    }
    crate::buckets::check_name(site_bucket)?;
    let lock = source
        .object_lock_enabled(source_bucket)
        .await
        .map_err(|e| format!("Object Lock configuration of source bucket {source_bucket}: {e}"))?;
    site.create_bucket_with(site_bucket, lock)
        .await
        .map_err(|e| format!("CreateBucket {site_bucket}: {e}"))?;
    site.put_bucket_versioning(site_bucket, true)
        .await
        .map_err(|e| format!("PutBucketVersioning {site_bucket}: {e}"))?;
    tracing::info!(
        source_bucket,
        site_bucket,
        object_lock = lock,
        site = site.endpoint().label(),
        "site bucket created (versioned)"
    );
    Ok(true)
}

/// The selected source buckets that exist now.
pub async fn list_selected(source: &Client, sel: &Selection) -> Result<Vec<String>, BucketError> {
    let all = source.list_buckets().await?;
    Ok(all.into_iter().filter(|b| sel.matches(b)).collect())
}

/// What discovery needs.
#[derive(Clone)]
pub struct Discovery {
    pub pc: PopulateConfig,
    pub selection: Selection,
    pub known: Arc<Known>,
    /// 0: only at start and on a bucket-creation event.
    pub interval: Duration,
    /// The group whose member holding the topic's partition adopts.
    pub group: String,
    pub stats: Arc<crate::metrics::buckets::BucketStats>,
    /// The buckets this node found at start: before the first pass is recorded
    /// (`#baseline`), these are adopted as they are; any other is new.
    pub at_start: Vec<String>,
}

/// The adopter's view of the topic.
#[derive(Default)]
struct Adopted {
    records: BTreeMap<String, BucketRecord>,
    baseline: bool,
    /// A bucket-creation event was read: list the buckets now.
    kick: bool,
}

impl Adopted {
    fn apply(&mut self, key: &str, payload: Option<&[u8]>) {
        if key == BASELINE {
            self.baseline = payload.is_some();
            return;
        }
        if let Some(bucket) = key.strip_prefix(SEEN) {
            self.kick |= payload.is_some() && !self.records.contains_key(bucket);
            return;
        }
        if key.starts_with('#') {
            return; // a sync marker (see `run`)
        }
        match payload.and_then(BucketRecord::decode) {
            Some(r) if r.adopted.is_some() => {
                self.records.insert(key.to_string(), r);
            }
            _ => {
                self.records.remove(key);
            }
        }
    }
}

/// The key of this member's sync marker: once it reads its own marker back, it has read
/// everything written to the topic before (the topic's watermarks are not trusted).
const SYNC: &str = "#sync";

/// Failed adoptions are tried again after this long, whatever the interval.
const RETRY_FAILED: Duration = Duration::from_secs(30);

/// Runs discovery until shutdown (on its own executor).
pub async fn run(d: Discovery, shutdown: Shutdown) -> Result<(), QueueError> {
    let pc = &d.pc;
    let (topic, membership) = (&pc.topics.buckets, &pc.membership);
    let consumer = kafka::member(&pc.brokers, &d.group, membership, topic)?;
    let producer = kafka::producer(&pc.brokers)?;
    let source = Client::new(pc.source.clone(), None);
    let state = RefCell::new(Adopted::default());
    let (mut caught_up, mut next) = (false, Instant::now());
    let mut sync: Option<String> = None;
    let topic = pc.topics.buckets.clone();
    while !shutdown.is_set() {
        match kafka::recv_within(&consumer, Duration::from_millis(500)).await {
            Some(Ok(m)) => {
                if let (Some(k), Ok(())) = (m.key(), crate::queue::signing::check(&m)) {
                    let k = String::from_utf8_lossy(k).into_owned();
                    if k == SYNC && sync.as_deref().map(str::as_bytes) == m.payload() {
                        // Everything before our marker is read: adopt now.
                        (caught_up, state.borrow_mut().kick) = (true, true);
                    }
                    state.borrow_mut().apply(&k, m.payload());
                }
                continue;
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "bucket discovery: consume error");
                continue;
            }
            None => {}
        }
        let leader = consumer
            .assignment()
            .map(|a| a.count() > 0)
            .unwrap_or(false);
        if !leader {
            (caught_up, sync) = (false, None);
        } else if !caught_up {
            if sync.is_none() {
                let token = format!("{:016x}", rand::random::<u64>());
                if kafka::send(&producer, &topic, SYNC, Some(token.as_bytes()))
                    .await
                    .is_ok()
                {
                    sync = Some(token);
                }
            }
            continue;
        }
        let kick = leader && state.borrow().kick;
        if !kick && Instant::now() < next {
            continue;
        }
        state.borrow_mut().kick = false;
        match list_selected(&source, &d.selection).await {
            Ok(now) => {
                refresh(&d, &now);
                if leader {
                    let work = adopt_new(&d, &producer, &state, &now, &shutdown);
                    let failed =
                        kafka::polled_while(&consumer, &topic, Duration::from_secs(5), work).await;
                    if failed {
                        next = Instant::now() + every(d.interval).min(RETRY_FAILED);
                        continue;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "listing the source's buckets failed; trying again later")
            }
        }
        next = Instant::now() + every(d.interval);
    }
    Ok(())
}

/// The wait between two listings (a year when the interval is 0: only at start and on a
/// bucket-creation event).
fn every(interval: Duration) -> Duration {
    if interval.is_zero() {
        Duration::from_secs(365 * 86_400)
    } else {
        interval
    }
}

/// The node's known buckets become those listed now.
fn refresh(d: &Discovery, now: &[String]) {
    for b in d.known.list() {
        if !now.contains(&b) {
            d.known.remove(&b);
            tracing::info!(bucket = b, "source bucket gone: no longer replicated");
        }
    }
    for b in now {
        if d.known.add(b) {
            tracing::info!(bucket = b, "source bucket found");
        }
    }
    d.stats.set_known(d.known.len());
}

/// Adopts the buckets listed now that the topic does not hold; forgets those gone. True when
/// an adoption failed (tried again soon).
async fn adopt_new(
    d: &Discovery,
    p: &Producer,
    state: &RefCell<Adopted>,
    now: &[String],
    shutdown: &Shutdown,
) -> bool {
    let topic = &d.pc.topics.buckets;
    let gone: Vec<String> = (state.borrow().records.keys())
        .filter(|b| !now.contains(b))
        .cloned()
        .collect();
    for b in gone {
        if kafka::send(p, topic, &b, None).await.is_ok() {
            state.borrow_mut().records.remove(&b);
        }
    }
    let baseline = state.borrow().baseline;
    let mut failed = false;
    let new: Vec<String> = (now.iter())
        .filter(|b| !state.borrow().records.contains_key(*b))
        .cloned()
        .collect();
    for b in new {
        if shutdown.is_set() {
            return failed;
        }
        let as_is = !baseline && d.at_start.contains(&b);
        match adopt(d, &b, as_is, shutdown).await {
            Ok(r) => {
                let body = serde_json::to_vec(&r).expect("a bucket record serializes");
                match kafka::send(p, topic, &b, Some(&body)).await {
                    Ok(_) => {
                        d.stats.adopted(&b, r.created.len(), r.enqueued);
                        state.borrow_mut().records.insert(b, r);
                    }
                    Err(e) => {
                        tracing::warn!(bucket = b, error = %e, "adoption not recorded; done again later")
                    }
                }
            }
            Err(e) => {
                failed = true;
                d.stats.adoption_failed(&b, &e);
                tracing::warn!(bucket = b, error = %e, "bucket not adopted; trying again at the next pass");
            }
        }
    }
    if !baseline && !failed && kafka::send(p, topic, BASELINE, Some(b"{}")).await.is_ok() {
        state.borrow_mut().baseline = true;
    }
    failed
}

/// Adopts one bucket: each site's bucket made sure of, then (unless `as_is`) its existing
/// versions enqueued.
async fn adopt(
    d: &Discovery,
    bucket: &str,
    as_is: bool,
    shutdown: &Shutdown,
) -> Result<BucketRecord, String> {
    let source = Client::new(d.pc.source.clone(), None);
    let mut r = BucketRecord {
        v: 1,
        adopted: Some(crate::time::rfc3339(std::time::SystemTime::now())),
        ..Default::default()
    };
    for (name, s) in &d.pc.sites {
        let dest = s.buckets.dest(bucket);
        let site = Client::new(s.endpoint.clone(), None);
        if s.create_buckets {
            if ensure_site_bucket(&source, &site, bucket, &dest).await? {
                r.created.push(format!("{name}:{dest}"));
            }
        } else if let Err(e) = site.head_bucket(&dest).await {
            tracing::warn!(bucket, site = name, site_bucket = dest, error = %e, "the site has no bucket for this source bucket (set create_buckets = true, or create it): its entries fail until it exists");
        }
        r.sites.insert(name.clone(), dest);
    }
    if !as_is {
        let s = populate::scan_enqueue(&d.pc, bucket, None, ScanMode::All, shutdown, |_| {})
            .await
            .map_err(|e| format!("enqueueing its existing versions: {e}"))?;
        r.enqueued = s.entries_enqueued;
    }
    tracing::info!(bucket, created = ?r.created, enqueued = r.enqueued, "source bucket adopted");
    Ok(r)
}
