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

/// A counter family exported per site.
struct Counter {
    name: &'static str,
    help: &'static str,
    read: fn(&Stats) -> u64,
}

/// The counters exported per site, in exposition order.
const COUNTERS: &[Counter] = &[
    Counter {
        name: VERSIONS_COPIED,
        help: "Object versions replicated.",
        read: |s| Stats::get(&s.versions_copied),
    },
    Counter {
        name: DELETE_MARKERS,
        help: "Delete markers replicated.",
        read: |s| Stats::get(&s.delete_markers),
    },
    Counter {
        name: METADATA_UPDATES,
        help: "Metadata-only updates applied to replicas (tags, ACL, retention, legal hold), bytes untouched.",
        read: |s| Stats::get(&s.metadata_updates),
    },
    Counter {
        name: SKIPPED,
        help: "Versions already at the destination.",
        read: |s| Stats::get(&s.skipped),
    },
    Counter {
        name: SUPERSEDED,
        help: "Versions not written: a later version of the key is at the destination, or the source no longer holds them.",
        read: |s| Stats::get(&s.superseded),
    },
    Counter {
        name: FAILED,
        help: "Versions (and malformed messages) that failed.",
        read: |s| Stats::get(&s.failed),
    },
    Counter {
        name: BYTES_COPIED,
        help: "Bytes of completed copies.",
        read: |s| Stats::get(&s.bytes_copied),
    },
    Counter {
        name: BYTES_MOVED,
        help: "Bytes sent through the data path as they move, including unfinished and retried transfers.",
        read: |s| Stats::get(&s.bytes_moved),
    },
    Counter {
        name: RETRIES,
        help: "Attempts retried after a retryable error.",
        read: |s| Stats::get(&s.retries),
    },
    Counter {
        name: REPLAYS,
        help: "Entries sent to a replay topic after failing for a reason that may pass (each time).",
        read: |s| Stats::get(&s.replays),
    },
    Counter {
        name: CHECKSUM_MISMATCHES,
        help: "Copies whose checksum did not match.",
        read: |s| Stats::get(&s.checksum_mismatches),
    },
];

/// The sum of a gauge kept per shard.
fn summed(shards: &std::sync::Mutex<Vec<Arc<std::sync::atomic::AtomicU64>>>) -> u64 {
    let shards = shards.lock().expect("shard gauges");
    let load = |g: &Arc<std::sync::atomic::AtomicU64>| g.load(std::sync::atomic::Ordering::Relaxed);
    shards.iter().map(load).sum()
}

/// Writes the `# HELP` and `# TYPE` lines of one metric family.
fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes one counter family: a sample per site.
fn counter(
    out: &mut String,
    name: &str,
    help: &str,
    sites: &BTreeMap<String, Arc<Stats>>,
    read: fn(&Stats) -> u64,
) {
    header(out, name, help, "counter");
    for (site, s) in sites {
        let _ = writeln!(out, "{name}{{site=\"{site}\"}} {}", read(s));
    }
}

/// Writes one gauge family with a sample per site.
fn gauge<V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    help: &str,
    sites: &BTreeMap<String, Arc<Stats>>,
    read: impl Fn(&Stats) -> V,
) {
    header(out, name, help, "gauge");
    for (site, s) in sites {
        let _ = writeln!(out, "{name}{{site=\"{site}\"}} {}", read(s));
    }
}

/// Writes the partitions-owned gauge: a sample per site and shard.
fn partitions_owned(out: &mut String, sites: &BTreeMap<String, Arc<Stats>>) {
    header(
        out,
        PARTITIONS_OWNED,
        "Replication topic partitions owned, per shard of this process.",
        "gauge",
    );
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
}

/// Writes one histogram family: cumulative buckets, sum and count per site.
fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    sites: &BTreeMap<String, Arc<Stats>>,
    get: impl Fn(&Stats) -> hdrhistogram::Histogram<u64>,
) {
    header(out, name, help, "histogram");
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
    for c in COUNTERS {
        counter(&mut out, c.name, c.help, sites, c.read);
    }
    partitions_owned(&mut out, sites);
    gauge(
        &mut out,
        IN_FLIGHT,
        "Entries being replicated now.",
        sites,
        |s| Stats::get(&s.in_flight),
    );
    gauge(
        &mut out,
        BANDWIDTH_LIMIT,
        "The site's bandwidth limit in force now on this node, shared by its shards (0: none).",
        sites,
        |s| s.bandwidth.get().and_then(|b| b.rate_now()).unwrap_or(0),
    );
    gauge(
        &mut out,
        UNAVAILABLE_SHARDS,
        "Shards that found the site out of reach: they take no entries and probe it until it answers.",
        sites,
        |s| Stats::get(&s.unavailable_shards),
    );
    gauge(
        &mut out,
        PARKED,
        "Entries waiting in memory behind an earlier version of their key (a partition holding 1000 is paused).",
        sites,
        |s| summed(&s.parked),
    );
    gauge(
        &mut out,
        REPLAY_WAITING,
        "Entries of this node's partitions waiting on the replay topics (failed, or behind a failed version of their key).",
        sites,
        |s| summed(&s.replay_waiting),
    );
    gauge(
        &mut out,
        OLDEST_CHANGE_IN_FLIGHT,
        "Age of the oldest source change being replicated now.",
        sites,
        |s| {
            let objects = s.objects.lock().expect("object tracker");
            objects.oldest_in_flight().unwrap_or_default().as_secs_f64()
        },
    );
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
