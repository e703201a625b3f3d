//! Liveness, readiness, the health check and the Prometheus exposition (with each site's
//! backlog, its consumer group's Kafka lag, asked at scrape time).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::model::{EndpointHealth, Health, KafkaHealth, Probe};
use super::{reply, ApiState, Reply};
use crate::metrics::Stats;
use crate::s3::Client;

fn probe(status: StatusCode, s: &str) -> Reply {
    reply(status, &Probe { status: s.into() })
}

/// `GET /_/live`.
pub(super) fn live() -> Reply {
    probe(StatusCode::OK, "ok")
}

/// `GET /_/ready`: 200 once every role has started.
pub(super) fn ready(state: &ApiState) -> Reply {
    if state.ready.load(Ordering::SeqCst) {
        probe(StatusCode::OK, "ok")
    } else {
        probe(StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

/// How many brokers the cluster's metadata names (asked off the executor).
async fn kafka_brokers(brokers: String) -> Result<usize, String> {
    glommio::executor()
        .spawn_blocking(move || {
            use rdkafka::consumer::{BaseConsumer, Consumer as _};
            let c: BaseConsumer = crate::queue::kafka::client_config(&brokers)
                .create()
                .map_err(|e| e.to_string())?;
            c.fetch_metadata(None, Duration::from_secs(3))
                .map(|m| m.brokers().len())
                .map_err(|e| e.to_string())
        })
        .await
}

/// `GET /_/healthcheck`: Kafka and every S3 endpoint reachable? 200, else 503.
pub(super) async fn health(state: &ApiState) -> Reply {
    let kafka = kafka_brokers(state.brokers.clone()).await;
    let mut endpoints = BTreeMap::new();
    for (name, ep, bucket) in &state.endpoints {
        let r = Client::new(ep.clone(), None).head_bucket(bucket).await;
        let h = EndpointHealth {
            bucket: bucket.clone(),
            endpoint: ep.label().to_string(),
            error: r.as_ref().err().map(|e| e.to_string()),
            ok: r.is_ok(),
        };
        endpoints.insert(name.clone(), h);
    }
    let ok = kafka.is_ok() && endpoints.values().all(|e| e.ok);
    let doc = Health {
        endpoints,
        kafka: KafkaHealth {
            brokers: kafka.as_ref().ok().copied(),
            ok: kafka.is_ok(),
            error: kafka.err(),
        },
        status: if ok { "ok" } else { "degraded" }.into(),
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply(status, &doc)
}

/// Entries of the replication topic not yet committed by `group` (its lag). Blocking.
fn kafka_lag(brokers: &str, topic: &str, group: &str) -> Result<u64, String> {
    crate::queue::lag::GroupReader::new(brokers, topic, group)
        .and_then(|r| r.lag())
        .map_err(|e| e.to_string())
}

/// A site's backlog (its group's lag), asked off the executor, within `limit`.
pub(super) async fn backlog(state: &ApiState, site: &str, limit: Duration) -> Result<u64, String> {
    let (b, t, g) = (
        state.brokers.clone(),
        state.replication_topic.clone(),
        state.groups.get(site).cloned().unwrap_or_default(),
    );
    let lag = glommio::executor().spawn_blocking(move || kafka_lag(&b, &t, &g));
    let timeout = async {
        glommio::timer::sleep(limit).await;
        Err(format!("Kafka did not answer within {} s", limit.as_secs()))
    };
    futures_lite::future::or(lag, timeout).await
}

/// The age of the oldest entry a site's group has not committed (0 when none), asked off
/// the executor, within `limit`.
async fn oldest_unconsumed(state: &ApiState, site: &str, limit: Duration) -> Result<f64, String> {
    let (b, t, g) = (
        state.brokers.clone(),
        state.replication_topic.clone(),
        state.groups.get(site).cloned().unwrap_or_default(),
    );
    let age = glommio::executor().spawn_blocking(move || {
        crate::queue::lag::GroupReader::new(&b, &t, &g)
            .and_then(|r| r.oldest_unconsumed_age(&b))
            .map(|a| a.unwrap_or_default().as_secs_f64())
            .map_err(|e| e.to_string())
    });
    let timeout = async {
        glommio::timer::sleep(limit).await;
        Err(format!("Kafka did not answer within {} s", limit.as_secs()))
    };
    futures_lite::future::or(age, timeout).await
}

/// What `/metrics` asks Kafka at scrape time, per site (a site whose figure is unknown has
/// no sample).
#[derive(Default)]
pub struct QueueFigures {
    pub backlogs: BTreeMap<String, u64>,
    pub oldest: BTreeMap<String, f64>,
}

/// The Prometheus text exposition of `/metrics`: every site's counters and histograms, and
/// its queue's figures.
pub fn exposition(sites: &BTreeMap<String, Arc<Stats>>, q: &QueueFigures) -> String {
    let mut text = crate::metrics::prometheus::render(sites);
    let name = crate::metrics::names::BACKLOG;
    text.push_str(&format!("# HELP {name} Replication entries not yet committed by the site's consumer group.\n# TYPE {name} gauge\n"));
    for (site, n) in &q.backlogs {
        text.push_str(&format!("{name}{{site=\"{site}\"}} {n}\n"));
    }
    let name = crate::metrics::names::OLDEST_UNCONSUMED;
    text.push_str(&format!("# HELP {name} Age of the oldest replication entry the site's group has not committed: entries older than the topic's retention are deleted unreplicated.\n# TYPE {name} gauge\n"));
    for (site, age) in &q.oldest {
        text.push_str(&format!("{name}{{site=\"{site}\"}} {age:.3}\n"));
    }
    text
}

/// `GET /metrics`, each site's backlog and oldest entry asked at scrape time.
pub(super) async fn prometheus(state: &ApiState) -> Reply {
    let mut q = QueueFigures::default();
    for site in state.sites.keys() {
        if let Ok(n) = backlog(state, site, Duration::from_secs(5)).await {
            q.backlogs.insert(site.clone(), n);
        }
        match oldest_unconsumed(state, site, Duration::from_secs(5)).await {
            Ok(age) => {
                q.oldest.insert(site.clone(), age);
            }
            Err(e) => tracing::debug!(site, error = %e, "oldest unconsumed entry unknown"),
        }
    }
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain; version=0.0.4")
        .body(Full::new(Bytes::from(
            exposition(&state.sites, &q)
                + &state.lifecycle.render()
                + &crate::metrics::buckets::render(&state.sites, &state.buckets.stats)
                + &state.buckets.ingest_stats.render()
                + &state.buckets.transient_stats.render(),
        )))
        .expect("response")
}
