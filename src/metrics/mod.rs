//! Counters and latency histograms of the engine.
//!
//! Owns: [`Stats`] (lock-free counters shared by every shard and read by progress display
//! and summaries), per-shard latency histograms, lifecycle's counters (`lifecycle`),
//! per-bucket figures and discovery's (`buckets`), ingestion's (`ingest`), transient
//! sources' (`transient`), and the metric names (`names`).
//! May call: `failure` (the recorded form of an error), `bandwidth` (a site's limit, shown).

pub mod buckets;
pub mod ingest;
pub mod lifecycle;
pub mod names;
pub mod objects;
pub mod prometheus;
pub mod transient;
pub mod window;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;

/// One version that could not be replicated.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    pub key: String,
    pub version_id: String,
    #[serde(flatten)]
    pub error: crate::failure::ErrorRecord,
    pub attempts: u32,
}

/// Failures a run keeps for its summary (each one is logged, and the engine records them
/// on the failed topic).
pub const FAILURES_KEPT: usize = 1000;

/// Counters of a replication run.
#[derive(Default, Debug)]
pub struct Stats {
    /// Found by the scan (versions and delete markers) and their bytes.
    pub versions_seen: AtomicU64,
    pub bytes_seen: AtomicU64,
    pub scan_done: std::sync::atomic::AtomicBool,
    pub versions_copied: AtomicU64,
    pub delete_markers: AtomicU64,
    /// Metadata-only updates applied (tags, ACL, retention, legal hold), apart from copies.
    pub metadata_updates: AtomicU64,
    pub skipped: AtomicU64,
    /// Versions not written because the destination reflects a later version of the key
    /// (or the source no longer holds them).
    pub superseded: AtomicU64,
    pub failed: AtomicU64,
    /// Bytes of completed copies.
    pub bytes_copied: AtomicU64,
    /// Bytes that went through the data path, including unfinished and retried transfers.
    pub bytes_moved: Arc<AtomicU64>,
    pub retries: AtomicU64,
    /// Entries sent to a replay topic after failing for a reason that may pass.
    pub replays: AtomicU64,
    /// Entries parked behind an earlier version of their key (by shard).
    pub parked: Mutex<Vec<Arc<AtomicU64>>>,
    /// Entries of this node's partitions out on the replay topics (by shard).
    pub replay_waiting: Mutex<Vec<Arc<AtomicU64>>>,
    pub checksum_mismatches: AtomicU64,
    pub failures: Mutex<Vec<Failure>>,
    /// Time each entry spent in the mover, from its receipt to its outcome.
    pub latency: Histograms,
    /// Recovery point: time from the source change to the version at the destination.
    pub rpo: Histograms,
    /// Versions in flight and recently finished (per-object progress).
    pub objects: Mutex<objects::Tracker>,
    /// Outcomes by minute over the last day.
    pub window: Mutex<window::Window>,
    /// Partitions owned by each shard of this process (gauges).
    pub shard_partitions: Mutex<Vec<Arc<std::sync::atomic::AtomicI64>>>,
    /// Shards whose circuit breaker for the site is open (the site out of reach).
    pub unavailable_shards: Arc<AtomicU64>,
    /// Entries being replicated now, and their bytes.
    pub in_flight: AtomicU64,
    pub in_flight_bytes: AtomicU64,
    /// The site's bandwidth limit on this node, when it has one.
    pub bandwidth: std::sync::OnceLock<Arc<crate::bandwidth::NodeLimit>>,
    /// Outcomes per source bucket.
    pub per_bucket: buckets::PerBucket,
}

impl Stats {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts a failure, and keeps it for the summary while fewer than [`FAILURES_KEPT`]
    /// are kept (the count goes on; the log names every one).
    pub fn record_failure(&self, f: Failure) {
        Self::add(&self.failed, 1);
        let mut kept = self.failures.lock().expect("failures lock");
        if kept.len() < FAILURES_KEPT {
            kept.push(f);
        }
    }

    /// (p50, p99, p99.9, max) of per-version replication latency.
    pub fn latency_percentiles(&self) -> Option<[Duration; 4]> {
        let h = self.latency.snapshot();
        if h.is_empty() {
            return None;
        }
        let us = |q: f64| Duration::from_micros(h.value_at_quantile(q));
        Some([us(0.5), us(0.99), us(0.999), Duration::from_micros(h.max())])
    }
}

/// Histograms recorded per shard (each shard locks only its own) and merged when read.
#[derive(Default, Debug)]
pub struct Histograms {
    /// Histograms of finished runs, merged.
    merged: Mutex<Option<Histogram<u64>>>,
    /// Live per-shard histograms.
    shards: Mutex<Vec<Arc<Mutex<Histogram<u64>>>>>,
}

impl Histograms {
    /// Merges a finished shard's histogram.
    pub fn merge(&self, h: &Histogram<u64>) {
        let mut l = self.merged.lock().expect("histogram lock");
        match l.as_mut() {
            Some(all) => {
                let _ = all.add(h);
            }
            None => *l = Some(h.clone()),
        }
    }

    /// A histogram a shard records into as it goes; reads merge it.
    pub fn register(&self) -> Arc<Mutex<Histogram<u64>>> {
        let h = Arc::new(Mutex::new(latency_histogram()));
        self.shards
            .lock()
            .expect("histogram registry")
            .push(h.clone());
        h
    }

    /// Everything recorded so far, merged.
    pub fn snapshot(&self) -> Histogram<u64> {
        let mut all = latency_histogram();
        if let Some(h) = self.merged.lock().expect("histogram lock").as_ref() {
            let _ = all.add(h);
        }
        for h in self.shards.lock().expect("histogram registry").iter() {
            let _ = all.add(&*h.lock().expect("shard histogram"));
        }
        all
    }
}

/// A latency histogram in microseconds, 1 µs to 1 hour, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Quantiles 0, 0.01, ..., 1 plus 0.995, 0.999 and 0.9999 of a microsecond histogram, as
/// (quantile, milliseconds): a latency CDF small enough for a JSON report.
pub fn cdf_ms(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut qs: Vec<f64> = (0..=100).map(|i| f64::from(i) / 100.0).collect();
    qs.extend([0.995, 0.999, 0.9999]);
    qs.sort_by(f64::total_cmp);
    qs.into_iter()
        .map(|q| [q, h.value_at_quantile(q) as f64 / 1000.0])
        .collect()
}
