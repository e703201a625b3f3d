//! Incremental ingestion's figures on this node, per bucket: the pass under way (or the
//! last), what it cost in listing requests, what it enqueued, and how far it is with an
//! estimate of when it ends.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::buckets::MAX_BUCKETS;
use super::names::*;

/// One bucket's ingestion.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BucketIngest {
    /// `listing` (a pass under way), `waiting` (for the next pass), `paused`, `failing`.
    pub state: String,
    pub pass: u64,
    pub keys: u64,
    pub pages: u64,
    pub enqueued: u64,
    /// Unix seconds.
    pub started: u64,
    /// The key the listing has reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// 0 to 1 (see the populator's `Progress::fraction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
    /// The last finished pass: keys, listing requests, entries, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pass: Option<LastPass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Since this process started.
    pub passes_total: u64,
    pub list_requests_total: u64,
    pub entries_total: u64,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LastPass {
    pub pass: u64,
    pub keys: u64,
    pub pages: u64,
    pub enqueued: u64,
    pub seconds: u64,
    /// Unix seconds.
    pub finished: u64,
}

/// A per-bucket family: name, kind, help, and what it reads.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&BucketIngest) -> f64,
);

/// Ingestion's figures on this node.
#[derive(Debug, Default)]
pub struct IngestStats {
    /// This node runs ingestion (holds its group's partition).
    pub leader: AtomicBool,
    buckets: Mutex<BTreeMap<String, BucketIngest>>,
}

/// When a pass `fraction` done after `elapsed` seconds ends, at the same pace.
pub fn eta(fraction: Option<f64>, elapsed: u64) -> Option<u64> {
    let f = fraction.filter(|f| *f > 0.0)?;
    Some(((elapsed as f64) * (1.0 - f) / f).round() as u64)
}

impl IngestStats {
    /// Changes one bucket's figures.
    pub fn update(&self, bucket: &str, f: impl FnOnce(&mut BucketIngest)) {
        let mut m = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !m.contains_key(bucket) && m.len() >= MAX_BUCKETS {
            return;
        }
        f(m.entry(bucket.to_string()).or_default());
    }

    pub fn snapshot(&self) -> BTreeMap<String, BucketIngest> {
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// The Prometheus families.
    pub fn render(&self) -> String {
        let snap = self.snapshot();
        let mut out = String::new();
        let families: [Family; 4] = [
            (INGEST_LIST_REQUESTS, "counter", "Listing requests sent by ingestion passes (their whole cost in requests, tags aside).", |b| b.list_requests_total as f64),
            (INGEST_ENTRIES, "counter", "Entries enqueued by ingestion passes (versions new since the last pass).", |b| b.entries_total as f64),
            (INGEST_PASSES, "counter", "Ingestion passes finished.", |b| b.passes_total as f64),
            (INGEST_PROGRESS, "gauge", "How far the ingestion pass under way is through its bucket (0 to 1).", |b| b.fraction.unwrap_or(0.0)),
        ];
        for (name, kind, help, read) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (b, s) in &snap {
                let _ = writeln!(out, "{name}{{bucket=\"{b}\"}} {}", read(s));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_at_the_same_pace() {
        assert_eq!(eta(Some(0.25), 60), Some(180));
        assert_eq!(eta(Some(1.0), 60), Some(0));
        assert_eq!(eta(None, 60), None);
        assert_eq!(eta(Some(0.0), 60), None);
    }

    #[test]
    fn renders_per_bucket() {
        let s = IngestStats::default();
        s.update("b", |b| b.list_requests_total = 21);
        assert!(s
            .render()
            .contains("backbeat_ingestion_list_requests_total{bucket=\"b\"} 21"));
    }
}
