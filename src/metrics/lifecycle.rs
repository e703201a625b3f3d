//! Lifecycle's counters: actions by bucket, kind and outcome, versions scanned and passes
//! finished by bucket, and the duration of bucket passes. Keyed by the configured buckets
//! (and the five action kinds and four outcomes), so bounded by the configuration.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use super::names::{
    LIFECYCLE_ACTIONS, LIFECYCLE_PASSES, LIFECYCLE_PASS_SECONDS, LIFECYCLE_SCANNED,
};

/// Lifecycle counters of this node.
#[derive(Debug, Default)]
pub struct LifecycleStats {
    /// (bucket, action kind, outcome) -> actions.
    actions: Mutex<BTreeMap<(String, &'static str, &'static str), u64>>,
    /// bucket -> versions and delete markers listed by bucket processors.
    scanned: Mutex<BTreeMap<String, u64>>,
    /// bucket -> (passes finished, their seconds in all, the last one's seconds).
    passes: Mutex<BTreeMap<String, (u64, f64, f64)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LifecycleStats {
    /// One action carried out (`done`), skipped, failed, or (dry run) only planned.
    pub fn action(&self, bucket: &str, kind: &'static str, outcome: &'static str) {
        *lock(&self.actions)
            .entry((bucket.to_string(), kind, outcome))
            .or_default() += 1;
    }

    pub fn scanned(&self, bucket: &str, n: u64) {
        *lock(&self.scanned).entry(bucket.to_string()).or_default() += n;
    }

    pub fn pass_finished(&self, bucket: &str, took: Duration) {
        let mut p = lock(&self.passes);
        let e = p.entry(bucket.to_string()).or_default();
        e.0 += 1;
        e.1 += took.as_secs_f64();
        e.2 = took.as_secs_f64();
    }

    /// Actions counted for (bucket, kind, outcome).
    pub fn actions(&self) -> BTreeMap<(String, &'static str, &'static str), u64> {
        lock(&self.actions).clone()
    }

    /// The Prometheus text exposition of these counters.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP {LIFECYCLE_ACTIONS} Lifecycle actions by bucket, kind and outcome (done, skipped, failed).");
        let _ = writeln!(out, "# TYPE {LIFECYCLE_ACTIONS} counter");
        for ((b, k, o), n) in lock(&self.actions).iter() {
            let _ = writeln!(
                out,
                "{LIFECYCLE_ACTIONS}{{bucket=\"{b}\",action=\"{k}\",outcome=\"{o}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP {LIFECYCLE_SCANNED} Versions and delete markers listed by lifecycle passes."
        );
        let _ = writeln!(out, "# TYPE {LIFECYCLE_SCANNED} counter");
        for (b, n) in lock(&self.scanned).iter() {
            let _ = writeln!(out, "{LIFECYCLE_SCANNED}{{bucket=\"{b}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP {LIFECYCLE_PASSES} Lifecycle passes finished, and their duration."
        );
        let _ = writeln!(out, "# TYPE {LIFECYCLE_PASSES} counter");
        for (b, (n, _, _)) in lock(&self.passes).iter() {
            let _ = writeln!(out, "{LIFECYCLE_PASSES}{{bucket=\"{b}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP {LIFECYCLE_PASS_SECONDS} Duration of lifecycle passes over a bucket (from the start of the pass to its last step).");
        let _ = writeln!(out, "# TYPE {LIFECYCLE_PASS_SECONDS} summary");
        for (b, (n, sum, _)) in lock(&self.passes).iter() {
            let _ = writeln!(out, "{LIFECYCLE_PASS_SECONDS}_sum{{bucket=\"{b}\"}} {sum}");
            let _ = writeln!(out, "{LIFECYCLE_PASS_SECONDS}_count{{bucket=\"{b}\"}} {n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_actions_scans_and_passes() {
        let s = LifecycleStats::default();
        s.action("b", "expire_current", "done");
        s.action("b", "expire_current", "done");
        s.action("b", "delete_version", "skipped");
        s.scanned("b", 7);
        s.pass_finished("b", Duration::from_millis(1500));
        let text = s.render();
        for line in [
            "backbeat_lifecycle_actions_total{bucket=\"b\",action=\"expire_current\",outcome=\"done\"} 2",
            "backbeat_lifecycle_actions_total{bucket=\"b\",action=\"delete_version\",outcome=\"skipped\"} 1",
            "backbeat_lifecycle_versions_scanned_total{bucket=\"b\"} 7",
            "backbeat_lifecycle_passes_total{bucket=\"b\"} 1",
            "backbeat_lifecycle_pass_seconds_sum{bucket=\"b\"} 1.5",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
