//! The Prometheus text exposition of the engine's counters and latency histograms.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use super::names::*;
use super::Stats;

/// Upper bounds (seconds) of the exported latency buckets.
const BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

fn counter(out: &mut String, name: &str, help: &str, values: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (site, v) in values {
        let _ = writeln!(out, "{name}{{site=\"{site}\"}} {v}");
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    sites: &BTreeMap<String, Arc<Stats>>,
    get: impl Fn(&Stats) -> hdrhistogram::Histogram<u64>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (site, s) in sites {
        let h = get(s);
        for le in BUCKETS {
            let upto = (le * 1e6) as u64;
            let n: u64 = h
                .iter_recorded()
                .filter(|v| v.value_iterated_to() <= upto)
                .map(|v| v.count_at_value())
                .sum();
            let _ = writeln!(out, "{name}_bucket{{site=\"{site}\",le=\"{le}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{site=\"{site}\",le=\"+Inf\"}} {}",
            h.len()
        );
        let _ = writeln!(
            out,
            "{name}_sum{{site=\"{site}\"}} {}",
            h.mean() * h.len() as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{site=\"{site}\"}} {}", h.len());
    }
}

/// Renders every site's counters and its replication latency histogram (per-shard
/// hdrhistograms merged now).
pub fn render(sites: &BTreeMap<String, Arc<Stats>>) -> String {
    let mut out = String::new();
    let get = |f: fn(&Stats) -> u64| {
        sites
            .iter()
            .map(|(n, s)| (n.as_str(), f(s)))
            .collect::<Vec<_>>()
    };
    counter(
        &mut out,
        VERSIONS_COPIED,
        "Object versions replicated.",
        &get(|s| Stats::get(&s.versions_copied)),
    );
    counter(
        &mut out,
        DELETE_MARKERS,
        "Delete markers replicated.",
        &get(|s| Stats::get(&s.delete_markers)),
    );
    counter(
        &mut out,
        SKIPPED,
        "Versions already at the destination.",
        &get(|s| Stats::get(&s.skipped)),
    );
    counter(
        &mut out,
        FAILED,
        "Versions (and malformed messages) that failed.",
        &get(|s| Stats::get(&s.failed)),
    );
    counter(
        &mut out,
        BYTES_COPIED,
        "Bytes of completed copies.",
        &get(|s| Stats::get(&s.bytes_copied)),
    );
    counter(
        &mut out,
        RETRIES,
        "Attempts retried after a retryable error.",
        &get(|s| Stats::get(&s.retries)),
    );
    counter(
        &mut out,
        CHECKSUM_MISMATCHES,
        "Copies whose checksum did not match.",
        &get(|s| Stats::get(&s.checksum_mismatches)),
    );
    let _ = writeln!(out, "# HELP {PARTITIONS_OWNED} Replication topic partitions owned, per shard of this process.\n# TYPE {PARTITIONS_OWNED} gauge");
    for (site, st) in sites {
        for (i, p) in st
            .shard_partitions
            .lock()
            .expect("partition gauges")
            .iter()
            .enumerate()
        {
            let _ = writeln!(
                out,
                "{PARTITIONS_OWNED}{{site=\"{site}\",shard=\"{i}\"}} {}",
                p.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP {IN_FLIGHT} Entries being replicated now.\n# TYPE {IN_FLIGHT} gauge"
    );
    for (site, st) in sites {
        let _ = writeln!(
            out,
            "{IN_FLIGHT}{{site=\"{site}\"}} {}",
            Stats::get(&st.in_flight)
        );
    }
    let _ = writeln!(
        out,
        "# HELP {OLDEST_CHANGE_IN_FLIGHT} Age of the oldest source change being replicated now.\n# TYPE {OLDEST_CHANGE_IN_FLIGHT} gauge"
    );
    for (site, st) in sites {
        let age = st
            .objects
            .lock()
            .expect("object tracker")
            .oldest_in_flight()
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{OLDEST_CHANGE_IN_FLIGHT}{{site=\"{site}\"}} {}",
            age.as_secs_f64()
        );
    }
    histogram(
        &mut out,
        REPLICATION_LATENCY,
        "Time an entry spent in the mover, from its receipt to its outcome.",
        sites,
        |s| s.latency.snapshot(),
    );
    histogram(
        &mut out,
        RPO,
        "Recovery point: time from the source change to the version at the destination.",
        sites,
        |s| s.rpo.snapshot(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let s = Stats::new();
        Stats::add(&s.versions_copied, 3);
        let h = s.latency.register();
        for us in [5_000u64, 200_000, 2_000_000] {
            h.lock().unwrap().record(us).unwrap();
        }
        let mut sites = BTreeMap::new();
        sites.insert("a".to_string(), s);
        let text = render(&sites);
        assert!(
            text.contains("backbeat_versions_copied_total{site=\"a\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("backbeat_replication_latency_seconds_bucket{site=\"a\",le=\"0.01\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("backbeat_replication_latency_seconds_bucket{site=\"a\",le=\"0.25\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("backbeat_replication_latency_seconds_bucket{site=\"a\",le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("backbeat_replication_latency_seconds_count{site=\"a\"} 3"),
            "{text}"
        );
    }
}
