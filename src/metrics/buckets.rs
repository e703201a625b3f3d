//! Per-bucket figures: each site's outcomes per source bucket (at most [`MAX_BUCKETS`]
//! buckets named; the rest counted under `(other)`), and bucket discovery's state (buckets
//! known, adopted, adoptions that failed and why).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::names::*;
use super::Stats;

/// Buckets named in per-bucket figures; beyond, outcomes are counted under `(other)`.
pub const MAX_BUCKETS: usize = 10_000;
const OTHER: &str = "(other)";

/// One site's outcomes for one source bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BucketCounts {
    /// Versions and delete markers written, metadata updates applied, versions found there.
    pub completed: u64,
    pub bytes: u64,
    pub failed: u64,
}

/// A site's outcomes per source bucket.
#[derive(Debug, Default)]
pub struct PerBucket {
    map: Mutex<BTreeMap<String, BucketCounts>>,
}

impl PerBucket {
    /// Counts one outcome for `bucket`.
    pub fn record(&self, bucket: &str, ok: bool, bytes: u64) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let name = if m.contains_key(bucket) || m.len() < MAX_BUCKETS {
            bucket
        } else {
            OTHER
        };
        let c = m.entry(name.to_string()).or_default();
        if ok {
            c.completed += 1;
            c.bytes += bytes;
        } else {
            c.failed += 1;
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, BucketCounts> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What discovery did with one bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Adoption {
    /// Site buckets created (`site:bucket`).
    pub created: usize,
    /// Entries enqueued for the versions it held when adopted.
    pub enqueued: u64,
    /// Why its last adoption failed (none once adopted).
    pub error: Option<String>,
}

/// Bucket discovery's figures on this node.
#[derive(Debug, Default)]
pub struct BucketStats {
    pub known: AtomicU64,
    pub adopted: AtomicU64,
    pub adoption_failures: AtomicU64,
    adoptions: Mutex<BTreeMap<String, Adoption>>,
}

impl BucketStats {
    pub fn set_known(&self, n: usize) {
        self.known.store(n as u64, Ordering::Relaxed);
    }

    pub fn adopted(&self, bucket: &str, created: usize, enqueued: u64) {
        self.adopted.fetch_add(1, Ordering::Relaxed);
        let a = Adoption {
            created,
            enqueued,
            error: None,
        };
        self.keep(bucket, a);
    }

    pub fn adoption_failed(&self, bucket: &str, error: &str) {
        self.adoption_failures.fetch_add(1, Ordering::Relaxed);
        let a = Adoption {
            error: Some(error.to_string()),
            ..Default::default()
        };
        self.keep(bucket, a);
    }

    fn keep(&self, bucket: &str, a: Adoption) {
        let mut m = self.adoptions.lock().unwrap_or_else(|e| e.into_inner());
        if m.contains_key(bucket) || m.len() < MAX_BUCKETS {
            m.insert(bucket.to_string(), a);
        }
    }

    /// The adoptions this node made or tried, by bucket.
    pub fn adoptions(&self) -> BTreeMap<String, Adoption> {
        self.adoptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Escapes a label value (bucket names have no quote or backslash, `(other)` neither; kept
/// safe anyway).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A per-bucket counter family: name, help, and what it reads.
type Family = (&'static str, &'static str, fn(&BucketCounts) -> u64);

/// The per-bucket families and discovery's figures, in Prometheus text.
pub fn render(sites: &BTreeMap<String, Arc<Stats>>, d: &BucketStats) -> String {
    let mut out = String::new();
    let families: [Family; 3] = [
        (BUCKET_COMPLETED, "Entries completed per source bucket (copies, delete markers, metadata updates, versions already there).", |c| c.completed),
        (BUCKET_BYTES, "Bytes copied per source bucket.", |c| c.bytes),
        (BUCKET_FAILED, "Entries failed per source bucket.", |c| c.failed),
    ];
    let snaps: Vec<(&String, BTreeMap<String, BucketCounts>)> = sites
        .iter()
        .map(|(n, s)| (n, s.per_bucket.snapshot()))
        .collect();
    for (name, help, read) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (site, snap) in &snaps {
            for (b, c) in snap {
                let _ = writeln!(
                    out,
                    "{name}{{site=\"{site}\",bucket=\"{}\"}} {}",
                    label(b),
                    read(c)
                );
            }
        }
    }
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    for (name, kind, help, v) in [
        (BUCKETS_KNOWN, "gauge", "Selected source buckets known to exist.", load(&d.known)),
        (BUCKETS_ADOPTED, "counter", "Source buckets adopted by this node (site buckets made sure of, existing versions enqueued).", load(&d.adopted)),
        (BUCKET_ADOPTION_FAILURES, "counter", "Adoptions that failed (tried again at the next discovery pass).", load(&d.adoption_failures)),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_bucket_with_a_bound() {
        let p = PerBucket::default();
        p.record("a", true, 10);
        p.record("a", false, 0);
        let s = p.snapshot();
        assert_eq!(
            s["a"],
            BucketCounts {
                completed: 1,
                bytes: 10,
                failed: 1
            }
        );
        for i in 0..MAX_BUCKETS + 5 {
            p.record(&format!("b{i}"), true, 1);
        }
        let s = p.snapshot();
        assert_eq!(s.len(), MAX_BUCKETS + 1);
        assert_eq!(s[OTHER].completed, 6);
    }

    #[test]
    fn renders_per_site_and_bucket() {
        let st = Stats::new();
        st.per_bucket.record("photos", true, 7);
        let sites = BTreeMap::from([("dr".to_string(), st)]);
        let d = BucketStats::default();
        d.set_known(3);
        let text = render(&sites, &d);
        assert!(
            text.contains(
                "backbeat_bucket_entries_completed_total{site=\"dr\",bucket=\"photos\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("backbeat_bucket_bytes_copied_total{site=\"dr\",bucket=\"photos\"} 7")
        );
        assert!(text.contains("backbeat_source_buckets_known 3"));
    }
}
