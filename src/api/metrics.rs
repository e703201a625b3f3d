//! Backbeat's metric routes: `/_/metrics/crr/{site|all}/{metric}`.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::model::{Family, Metrics, Results, METRICS};
use super::{error, health, reply, ApiState, Reply};
use crate::metrics::window::Totals;
use crate::metrics::Stats;

/// Outcomes over the last `minutes`, summed over `sites`.
fn totals(sites: &[(&String, &Arc<Stats>)], minutes: u64) -> Totals {
    sites.iter().fold(Totals::default(), |mut t, (_, s)| {
        let w = s
            .window
            .lock()
            .map(|w| w.totals(minutes))
            .unwrap_or_default();
        t.ok += w.ok;
        t.ok_bytes += w.ok_bytes;
        t.failed += w.failed;
        t.failed_bytes += w.failed_bytes;
        t
    })
}

fn family<T>(description: &str, count: T, size: T) -> Family<T> {
    Family {
        description: description.into(),
        error: None,
        results: Results { count, size },
    }
}

/// The sites' Kafka lag; its size is estimated from `avg`, the average completed copy
/// (entries carry their size, but adding it up would cost a pass over the backlog).
async fn backlog(state: &ApiState, sites: &[(&String, &Arc<Stats>)], avg: u64) -> Family<u64> {
    let mut count = 0;
    let mut error = None;
    for (name, _) in sites {
        match health::backlog(state, name, Duration::from_secs(10)).await {
            Ok(n) => count += n,
            Err(e) => error = Some(e),
        }
    }
    let mut f = family(
        "Number of incomplete replication operations (count) and number of incomplete bytes transferred (size)",
        count,
        count * avg,
    );
    f.error = error;
    f
}

/// `GET /_/metrics/crr/{site|all}/{metric}`.
pub(super) async fn crr_metrics(state: &ApiState, site: &str, metric: &str) -> Reply {
    let sites: Vec<(&String, &Arc<Stats>)> = state
        .sites
        .iter()
        .filter(|(n, _)| site == "all" || n.as_str() == site)
        .collect();
    if sites.is_empty() {
        return error(StatusCode::NOT_FOUND, format!("no site {site}"));
    }
    if !METRICS.contains(&metric) {
        let use_ = METRICS.join(", ");
        return error(
            StatusCode::NOT_FOUND,
            format!("no metric {metric} (use {use_})"),
        );
    }
    let wants = |m: &str| metric == m || metric == "all";
    let day = totals(&sites, 24 * 60);
    let quarter = totals(&sites, 15);
    let sum = |f: &dyn Fn(&Stats) -> u64| sites.iter().map(|(_, s)| f(s)).sum::<u64>();
    let mut out = Metrics::default();
    if wants("backlog") {
        let avg = day.ok_bytes.checked_div(day.ok).unwrap_or(0);
        out.backlog = Some(backlog(state, &sites, avg).await);
    }
    out.completions = wants("completions").then(|| family(
        "Number of completed replication operations (count) and number of bytes transferred (size) in the last 86400 seconds",
        day.ok, day.ok_bytes,
    ));
    out.failures = wants("failures").then(|| family(
        "Number of failed replication operations (count) and bytes (size) in the last 86400 seconds",
        day.failed, day.failed_bytes,
    ));
    out.throughput = wants("throughput").then(|| family(
        "Current throughput for replication operations in ops/s (count) and bytes/s (size) in the last 900 seconds",
        format!("{:.2}", quarter.ok as f64 / 900.0),
        format!("{:.2}", quarter.ok_bytes as f64 / 900.0),
    ));
    if metric == "all" {
        out.bandwidth = sites.iter().find_map(|(_, s)| s.bandwidth.get()).map(|b| {
            crate::api::model::Bandwidth {
                configured: b.timetable().text().to_string(),
                bytes_per_second: b.rate_now(),
            }
        });
    }
    out.pending = wants("pending").then(|| {
        family(
            "Number of pending replication operations (count) and bytes (size)",
            sum(&|s| Stats::get(&s.in_flight)),
            sum(&|s| Stats::get(&s.in_flight_bytes)),
        )
    });
    reply(StatusCode::OK, &out)
}
