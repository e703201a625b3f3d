//! Transient sources' figures on this node: versions and bytes deleted from the source
//! once every site held them, versions kept (a site did not hold them when checked, or the
//! source refused), versions given up by the bounded aggregation, and how far reclaim is
//! behind (versions waiting for a site's COMPLETED, the oldest one's wait).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::names::*;

#[derive(Debug, Default)]
pub struct TransientStats {
    pub reclaimed_versions: AtomicU64,
    pub reclaimed_bytes: AtomicU64,
    pub kept: AtomicU64,
    pub given_up: AtomicU64,
    /// Versions some of whose sites have not reported COMPLETED yet (gauge).
    pub waiting: AtomicU64,
    /// Seconds the oldest of them has waited (gauge).
    pub oldest_wait_seconds: AtomicU64,
}

impl TransientStats {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        for (name, kind, help, v) in [
            (TRANSIENT_RECLAIMED, "counter", "Versions deleted from transient source buckets once every site held them.", load(&self.reclaimed_versions)),
            (TRANSIENT_RECLAIMED_BYTES, "counter", "Bytes reclaimed from transient source buckets.", load(&self.reclaimed_bytes)),
            (TRANSIENT_KEPT, "counter", "Versions of transient buckets kept at the source after the check before deletion (a site did not hold them, or the source refused).", load(&self.kept)),
            (TRANSIENT_GIVEN_UP, "counter", "Versions the bounded aggregation gave up on (they stay at the source).", load(&self.given_up)),
            (TRANSIENT_WAITING, "gauge", "Versions of transient buckets waiting for some site's COMPLETED.", load(&self.waiting)),
            (TRANSIENT_OLDEST_WAIT, "gauge", "Seconds the oldest version of a transient bucket has waited for every site's COMPLETED (reclaim falling behind).", load(&self.oldest_wait_seconds)),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
        out
    }
}
