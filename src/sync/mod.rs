//! `backbeat sync`: one-shot replication of a whole bucket (or prefix), no Kafka needed.
//!
//! The scan runs on shard 0 and hands each key (all its versions, oldest first) to the shard
//! chosen by the key's hash; each shard replicates up to `concurrency` keys at once, each
//! key's versions in order. The destination is listed alongside the source: a key it holds
//! nothing of is written without a HEAD first, on condition that it is still absent
//! ([`dest_keys`]). Owns: the job's wiring, progress and summary.
//! May call: `s3`, `replication`, `populate`, `shard`, `metrics`, `bandwidth`.

use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::io::IsTerminal;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::{latency_histogram, Failure, Stats};
use crate::populate::scan::{scan, KeyVersions};
use crate::replication::{replicate_key, DataPath, Options, Route};
use crate::s3::ops::bucket::{BucketError, Versioning};
use crate::s3::{Client, Endpoint};
use crate::shard::{self, Placement, Shutdown};

mod dest_keys;
use dest_keys::DestKeys;

/// A key to copy, and whether the destination's listing held nothing of it.
type Job = (KeyVersions, bool);

/// `s3://bucket[/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub prefix: Option<String>,
}

impl std::str::FromStr for S3Url {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{s:?} is not an s3://BUCKET[/PREFIX] URL"))?;
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, (!p.is_empty()).then(|| p.to_string())),
            None => (rest, None),
        };
        if bucket.is_empty() {
            return Err(format!("{s:?} has no bucket name"));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix,
        })
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}", self.bucket)?;
        if let Some(p) = &self.prefix {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

/// A sync job, fully resolved.
pub struct SyncJob {
    pub source: S3Url,
    pub destination: S3Url,
    pub source_endpoint: Arc<Endpoint>,
    pub destination_endpoint: Arc<Endpoint>,
    pub shards: usize,
    pub placement: Placement,
    /// Keys in flight per shard.
    pub concurrency: usize,
    /// Parts in flight per shard, across objects.
    pub shard_parts: usize,
    pub options: Options,
    /// What the replicas carry beyond bytes and metadata.
    pub policy: Arc<crate::replication::ReplicaPolicy>,
    /// A bandwidth limit shared by the shards (none: no limit).
    pub bandwidth: Option<crate::bandwidth::Timetable>,
    pub progress: bool,
}

/// Why a sync could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Preflight(String),
    #[error(transparent)]
    Shard(#[from] shard::ShardError),
    #[error("listing the source failed: {0}")]
    Scan(String),
}

/// The outcome of a sync, as printed at the end (and as JSON with `--json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub source: String,
    pub destination: String,
    pub versions_found: u64,
    pub versions_copied: u64,
    pub delete_markers: u64,
    pub skipped: u64,
    /// Not written: a later version of the key is at the destination, or the source no
    /// longer holds them.
    pub superseded: u64,
    pub failed: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub gb_per_s: f64,
    pub objects_per_s: f64,
    pub retries: u64,
    pub checksum_mismatches: u64,
    pub latency_ms: Option<LatencySummary>,
    /// Per-version latency distribution: (quantile, milliseconds).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency_cdf_ms: Vec<[f64; 2]>,
    pub interrupted: bool,
    pub failures: Vec<Failure>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

fn describe(side: &str, bucket: &str, ep: &Endpoint, e: &BucketError) -> String {
    let url = ep.label();
    match e {
        BucketError::NoSuchBucket => format!("{side} bucket {bucket:?} does not exist at {url}: create it or fix the bucket name"),
        BucketError::Request(r) => match r.code() {
            "ConnectError" => format!("cannot reach the {side} endpoint {url}: is the server running and the URL right? ({r})"),
            "TlsError" => format!("TLS with the {side} endpoint {url} failed: {r}"),
            "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken" | "ExpiredToken" => format!(
                "the {side} endpoint {url} rejected the credentials ({}): check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or --{side}-profile",
                r.code()
            ),
            _ => format!("the {side} endpoint {url} failed on bucket {bucket:?}: {r}"),
        },
        other => format!("the {side} endpoint {url} failed on bucket {bucket:?}: {other}"),
    }
}

async fn check_bucket(side: &str, client: &Client, bucket: &str) -> Result<Versioning, String> {
    match client.get_bucket_versioning(bucket).await {
        Ok(v) => Ok(v),
        // Servers without versioning (s3s-fs) do not implement it: check the bucket exists.
        Err(BucketError::Request(e)) if e.code() == "NotImplemented" => client
            .head_bucket(bucket)
            .await
            .map(|_| Versioning::Unversioned)
            .map_err(|e| describe(side, bucket, client.endpoint(), &e)),
        Err(e) => Err(describe(side, bucket, client.endpoint(), &e)),
    }
}

fn shard_of(key: &str, shards: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % shards as u64) as usize
}

/// Runs the job to completion (or until `shutdown`), showing progress on a terminal.
pub fn run(job: SyncJob, shutdown: Shutdown) -> Result<Summary, SyncError> {
    let stats = Stats::new();
    let dest_versioned = preflight(&job)?;
    let queues = Arc::new(KeyQueues::new(job.shards.max(1)));
    let started = Instant::now();
    let job = Arc::new(job);
    let shared = ShardShared {
        job: job.clone(),
        stats: stats.clone(),
        shutdown: shutdown.clone(),
        scan_error: Arc::default(),
        dest_versioned,
        bandwidth: job
            .bandwidth
            .clone()
            .map(|t| crate::bandwidth::NodeLimit::new(t, job.shards.max(1))),
    };
    let runner = spawn_shards(shared.clone(), queues);
    wait_with_progress(&runner, &stats, job.progress);
    runner
        .join()
        .map_err(|_| SyncError::Shard(shard::ShardError::Panicked(0)))??;
    if let Some(e) = shared.scan_error.lock().expect("scan error").take() {
        return Err(SyncError::Scan(e));
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(summarize(&job, &stats, seconds, shutdown.is_set()))
}

/// Preflight: both buckets reachable, credentials accepted. Returns whether the destination
/// keeps versions.
fn preflight(job: &SyncJob) -> Result<bool, SyncError> {
    let (src_ep, dst_ep) = (
        job.source_endpoint.clone(),
        job.destination_endpoint.clone(),
    );
    let (sb, db) = (job.source.bucket.clone(), job.destination.bucket.clone());
    shard::block_on(async move {
        let src = Client::new(src_ep, None);
        let dst = Client::new(dst_ep, None);
        check_bucket("source", &src, &sb).await?;
        let v = check_bucket("destination", &dst, &db).await?;
        Ok::<_, String>(v == Versioning::Enabled)
    })?
    .map_err(SyncError::Preflight)
}

/// What every shard of a sync job shares.
#[derive(Clone)]
struct ShardShared {
    job: Arc<SyncJob>,
    stats: Arc<Stats>,
    shutdown: Shutdown,
    /// Set by the scan when listing the source fails.
    scan_error: Arc<std::sync::Mutex<Option<String>>>,
    dest_versioned: bool,
    bandwidth: Option<Arc<crate::bandwidth::NodeLimit>>,
}

/// One bounded queue of keys per shard; the scan (on shard 0) takes every sender.
struct KeyQueues {
    senders: std::sync::Mutex<Option<Vec<async_channel::Sender<Job>>>>,
    receivers: Vec<async_channel::Receiver<Job>>,
}

impl KeyQueues {
    /// A queue of 256 keys for each of `shards` shards.
    fn new(shards: usize) -> Self {
        let mut senders = Vec::with_capacity(shards);
        let mut receivers = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = async_channel::bounded::<Job>(256);
            senders.push(tx);
            receivers.push(rx);
        }
        KeyQueues {
            senders: std::sync::Mutex::new(Some(senders)),
            receivers,
        }
    }
}

/// Starts one shard per queue on a thread of its own; the thread ends when every shard has.
fn spawn_shards(
    shared: ShardShared,
    queues: Arc<KeyQueues>,
) -> std::thread::JoinHandle<Result<Vec<()>, shard::ShardError>> {
    let shards = queues.receivers.len();
    let placement = shared.job.placement;
    std::thread::spawn(move || {
        shard::run(shards, placement, move |i| {
            let shared = shared.clone();
            let rx = queues.receivers[i].clone();
            let senders = if i == 0 {
                queues.senders.lock().expect("senders").take()
            } else {
                None
            };
            shard_task(shared, rx, senders)
        })
    })
}

/// One shard: scans the source if it holds the senders (shard 0), and replicates the keys of
/// its own queue.
async fn shard_task(
    shared: ShardShared,
    rx: async_channel::Receiver<Job>,
    senders: Option<Vec<async_channel::Sender<Job>>>,
) {
    let job = &shared.job;
    let route = Rc::new(Route {
        source: Client::new(job.source_endpoint.clone(), None),
        source_bucket: job.source.bucket.clone(),
        dest: Client::new(job.destination_endpoint.clone(), None),
        dest_bucket: job.destination.bucket.clone(),
        dest_versioned: shared.dest_versioned,
        policy: job.policy.clone(),
    });
    let mut data = DataPath::new(
        job.options.clone(),
        job.shard_parts,
        shared.stats.clone(),
        shared.shutdown.clone(),
    );
    data.limit = shared.bandwidth.as_ref().map(|n| Rc::new(n.shard()));
    let data = Rc::new(data);
    if let Some(senders) = senders {
        glommio::spawn_local(scan_source(route.clone(), shared.clone(), senders)).detach();
    }
    replicate_queue(route, data, &shared, rx).await;
}

/// Lists the source and sends each key to the queue of the shard its hash chooses, counting
/// what it finds; records a listing failure and marks the scan done.
async fn scan_source(
    route: Rc<Route>,
    shared: ShardShared,
    senders: Vec<async_channel::Sender<Job>>,
) {
    let ShardShared {
        job,
        stats,
        shutdown,
        scan_error,
        ..
    } = shared;
    let prefix = job.source.prefix.clone();
    let dest = Rc::new(DestKeys::follow(
        route.dest.clone(),
        route.dest_bucket.clone(),
        prefix.clone(),
        shutdown.clone(),
    ));
    let r = scan(
        &route.source,
        &job.source.bucket,
        prefix.as_deref(),
        &shutdown,
        |kv| {
            let (stats, dest) = (stats.clone(), dest.clone());
            let tx = senders[shard_of(&kv.key, senders.len())].clone();
            async move {
                Stats::add(&stats.versions_seen, kv.versions.len() as u64);
                Stats::add(&stats.bytes_seen, kv.versions.iter().map(|v| v.size).sum());
                let absent = dest.absent(&kv.key).await;
                tx.send((kv, absent)).await.is_ok()
            }
        },
    )
    .await;
    if let Err(e) = r {
        *scan_error.lock().expect("scan error") = Some(e.to_string());
    }
    stats
        .scan_done
        .store(true, std::sync::atomic::Ordering::SeqCst);
    drop(senders);
}

/// Replicates the keys of one shard's queue, up to `concurrency` at once, until the queue
/// closes; then waits for every key in flight and merges the shard's latencies.
async fn replicate_queue(
    route: Rc<Route>,
    data: Rc<DataPath>,
    shared: &ShardShared,
    rx: async_channel::Receiver<Job>,
) {
    let concurrency = shared.job.concurrency.max(1) as u64;
    let slots = Rc::new(glommio::sync::Semaphore::new(concurrency));
    let latency = Rc::new(RefCell::new(latency_histogram()));
    while let Ok((kv, absent)) = rx.recv().await {
        let Ok(permit) = Rc::clone(&slots).acquire_static_permit(1).await else {
            break;
        };
        let (route, data, latency) = (route.clone(), data.clone(), latency.clone());
        glommio::spawn_local(async move {
            let key = (kv.key.as_str(), kv.versions.as_slice());
            replicate_key(&route, &data, key, absent, &latency).await;
            drop(permit);
        })
        .detach();
    }
    // Wait for every key in flight.
    let _ = slots.acquire(concurrency).await;
    shared.stats.latency.merge(&latency.borrow());
}

/// Waits for the shards' thread to finish, drawing progress meanwhile if `progress`.
fn wait_with_progress<T>(runner: &std::thread::JoinHandle<T>, stats: &Stats, progress: bool) {
    let bar = progress.then(progress_bar);
    while !runner.is_finished() {
        if let Some(bar) = &bar {
            draw_progress(bar, stats);
        }
        std::thread::sleep(Duration::from_millis(if bar.is_some() { 100 } else { 5 }));
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
}

/// The progress bar: versions done, bytes moved, throughput and ETA.
fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Redraws the progress bar from the job's counters.
fn draw_progress(bar: &indicatif::ProgressBar, stats: &Stats) {
    let done_versions = Stats::get(&stats.versions_copied)
        + Stats::get(&stats.delete_markers)
        + Stats::get(&stats.skipped)
        + Stats::get(&stats.superseded)
        + Stats::get(&stats.failed);
    bar.set_length(Stats::get(&stats.bytes_seen));
    bar.set_position(Stats::get(&stats.bytes_moved).min(Stats::get(&stats.bytes_seen)));
    let scanning = if stats.scan_done.load(std::sync::atomic::Ordering::Relaxed) {
        ""
    } else {
        " (scanning)"
    };
    bar.set_message(format!(
        "{done_versions}/{} versions{scanning}, {} failed",
        Stats::get(&stats.versions_seen),
        Stats::get(&stats.failed)
    ));
    bar.tick();
}

/// The summary of a finished (or interrupted) job, from its counters.
fn summarize(job: &SyncJob, stats: &Stats, secs: f64, interrupted: bool) -> Summary {
    let bytes = Stats::get(&stats.bytes_copied);
    let copied = Stats::get(&stats.versions_copied) + Stats::get(&stats.delete_markers);
    let mut failures = stats.failures.lock().expect("failures").clone();
    failures.sort_by(|a, b| (&a.key, &a.version_id).cmp(&(&b.key, &b.version_id)));
    Summary {
        source: job.source.to_string(),
        destination: job.destination.to_string(),
        versions_found: Stats::get(&stats.versions_seen),
        versions_copied: Stats::get(&stats.versions_copied),
        delete_markers: Stats::get(&stats.delete_markers),
        skipped: Stats::get(&stats.skipped),
        superseded: Stats::get(&stats.superseded),
        failed: Stats::get(&stats.failed),
        bytes,
        seconds: secs,
        gb_per_s: bytes as f64 / 1e9 / secs.max(1e-9),
        objects_per_s: copied as f64 / secs.max(1e-9),
        retries: Stats::get(&stats.retries),
        checksum_mismatches: Stats::get(&stats.checksum_mismatches),
        latency_ms: stats
            .latency_percentiles()
            .map(|[a, b, c, d]| LatencySummary {
                p50: a.as_secs_f64() * 1e3,
                p99: b.as_secs_f64() * 1e3,
                p999: c.as_secs_f64() * 1e3,
                max: d.as_secs_f64() * 1e3,
            }),
        latency_cdf_ms: crate::metrics::cdf_ms(&stats.latency.snapshot()),
        interrupted,
        failures,
    }
}

/// Whether progress should be drawn (standard error is a terminal).
pub fn progress_wanted() -> bool {
    std::io::stderr().is_terminal()
}

impl Summary {
    /// The human-readable summary.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} -> {}\n  versions copied   {}\n  delete markers    {}\n  skipped (present) {}\n  superseded        {}\n  failed            {}\n  bytes             {} ({:.3} GB/s, {:.1} objects/s, {:.2} s)\n",
            self.source,
            self.destination,
            self.versions_copied,
            self.delete_markers,
            self.skipped,
            self.superseded,
            self.failed,
            self.bytes,
            self.gb_per_s,
            self.objects_per_s,
            self.seconds
        );
        if self.retries > 0 || self.checksum_mismatches > 0 {
            s.push_str(&format!(
                "  retries           {} ({} checksum mismatches)\n",
                self.retries, self.checksum_mismatches
            ));
        }
        if let Some(l) = &self.latency_ms {
            s.push_str(&format!(
                "  latency ms        p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}\n",
                l.p50, l.p99, l.p999, l.max
            ));
        }
        if self.interrupted {
            s.push_str("  interrupted: run the same command again to finish\n");
        }
        for f in &self.failures {
            s.push_str(&format!(
                "  FAILED {} (version {}): {} [{} attempt(s)]\n",
                f.key, f.version_id, f.error.message, f.attempts
            ));
        }
        let unnamed = self.failed.saturating_sub(self.failures.len() as u64);
        if unnamed > 0 {
            s.push_str(&format!(
                "  ... and {unnamed} more failures (the log names each one)\n"
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls() {
        let u: S3Url = "s3://b/p/q".parse().unwrap();
        assert_eq!((u.bucket.as_str(), u.prefix.as_deref()), ("b", Some("p/q")));
        let u: S3Url = "s3://b".parse().unwrap();
        assert_eq!(u.prefix, None);
        assert!("b/k".parse::<S3Url>().is_err());
        assert!("s3://".parse::<S3Url>().is_err());
    }
}
