//! The operations API (Backbeat's paths): health, liveness, readiness and Prometheus
//! metrics. Served by hyper on a glommio executor of its own, so replication load cannot
//! starve it. Listens on 127.0.0.1 unless configured; with a token file, every request must
//! carry `Authorization: Bearer <token>` (required on non-loopback addresses).
//!
//! Owns: the API's routes and the command line's requests to them (`cli`).
//! May call: `metrics`, `s3` (clients, and the glommio socket adapter hyper serves on),
//! `queue` (control, failed and status topics), `shard`, `replication` (the destination
//! check of the per-object progress route), `time`.

pub mod cli;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::Full;
use hyper::body::Incoming;

use crate::metrics::Stats;
use crate::s3::http::{HyperIo, Stream};
use crate::s3::{Client, Endpoint};
use crate::shard::Shutdown;

/// What the API reports on.
pub struct ApiState {
    /// Counters per destination site.
    pub sites: BTreeMap<String, Arc<Stats>>,
    pub brokers: String,
    /// (name, endpoint, bucket) checked by the health check.
    pub endpoints: Vec<(String, Arc<Endpoint>, String)>,
    /// The bearer token, when one is configured.
    pub token: Option<String>,
    /// The replication topic, and each site's consumer group (for the backlog).
    pub replication_topic: String,
    /// The control topic (pause/resume).
    pub control_topic: String,
    /// The failed topic (failed entries, listed and retried).
    pub failed_topic: String,
    pub groups: BTreeMap<String, String>,
    /// Where each site replicates to (the per-object progress route asks the destination).
    pub routes: BTreeMap<String, SiteRoute>,
    /// Set once every role has started.
    pub ready: AtomicBool,
}

/// A site's source and destination, for the progress route.
pub struct SiteRoute {
    pub source: Arc<Endpoint>,
    pub dest: Arc<Endpoint>,
    /// Source bucket -> destination bucket (the same name when not listed).
    pub buckets: BTreeMap<String, String>,
    pub dest_versioned: bool,
}

/// What the API keeps on its own executor: the control topic's state per site, and a
/// producer to change it.
struct Local {
    control: BTreeMap<String, std::rc::Rc<std::cell::RefCell<crate::queue::control::SiteControl>>>,
    producer: Option<crate::queue::kafka::Producer>,
    control_topic: String,
    /// The failed topic, materialized: key `bucket/key/versionId/site` -> last failure.
    failed: Option<crate::queue::control::Compacted>,
    replication_topic: String,
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on {addr}: {message}")]
    Listen { addr: SocketAddr, message: String },
    #[error("cannot read the API token file {path}: {message}")]
    Token { path: String, message: String },
}

/// Reads a token file (the token is its first line).
pub fn read_token(path: &std::path::Path) -> Result<String, ApiError> {
    let t = std::fs::read_to_string(path).map_err(|e| ApiError::Token {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let t = t.lines().next().unwrap_or("").trim().to_string();
    if t.is_empty() {
        return Err(ApiError::Token {
            path: path.display().to_string(),
            message: "the file is empty".into(),
        });
    }
    Ok(t)
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("response")
}

/// Compares in constant time.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn health(state: &ApiState) -> Response<Full<Bytes>> {
    let brokers = state.brokers.clone();
    let kafka = glommio::executor()
        .spawn_blocking(move || {
            use rdkafka::consumer::{BaseConsumer, Consumer as _};
            let c: Result<BaseConsumer, _> = crate::queue::kafka::client_config(&brokers).create();
            match c {
                Ok(c) => c
                    .fetch_metadata(None, Duration::from_secs(3))
                    .map(|m| m.brokers().len())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
    let mut ok = kafka.is_ok();
    let mut endpoints = serde_json::Map::new();
    for (name, ep, bucket) in &state.endpoints {
        let c = Client::new(ep.clone(), None);
        let r = c.head_bucket(bucket).await;
        ok &= r.is_ok();
        endpoints.insert(
            name.clone(),
            serde_json::json!({ "endpoint": ep.label(), "bucket": bucket, "ok": r.is_ok(), "error": r.err().map(|e| e.to_string()) }),
        );
    }
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "degraded" },
        "kafka": { "ok": kafka.is_ok(), "brokers": kafka.as_ref().ok(), "error": kafka.err() },
        "endpoints": endpoints,
    });
    json(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body,
    )
}

/// Entries of the replication topic not yet committed by `group` (its lag).
fn kafka_lag(brokers: &str, topic: &str, group: &str) -> Result<i64, String> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let c: BaseConsumer = crate::queue::kafka::client_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let t = Duration::from_secs(3);
    let md = c
        .fetch_metadata(Some(topic), t)
        .map_err(|e| e.to_string())?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|tp| tp.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in &parts {
        tpl.add_partition(topic, *p);
    }
    let committed = c.committed_offsets(tpl, t).map_err(|e| e.to_string())?;
    let mut lag = 0;
    for p in parts {
        let (low, high) = c.fetch_watermarks(topic, p, t).map_err(|e| e.to_string())?;
        let at = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(rdkafka::Offset::Offset(o)) => o,
            _ => low,
        };
        lag += (high - at).max(0);
    }
    Ok(lag)
}

fn pair(count: impl serde::Serialize, size: impl serde::Serialize) -> serde_json::Value {
    serde_json::json!({ "count": count, "size": size })
}

/// Backbeat's `/_/metrics/crr/{site|all}/{metric}`.
async fn crr_metrics(state: &ApiState, site: &str, metric: &str) -> Response<Full<Bytes>> {
    let sites: Vec<(&String, &Arc<Stats>)> = state
        .sites
        .iter()
        .filter(|(n, _)| site == "all" || n.as_str() == site)
        .collect();
    if sites.is_empty() {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": format!("no site {site}") }),
        );
    }
    let known = [
        "backlog",
        "completions",
        "failures",
        "throughput",
        "pending",
        "all",
    ];
    if !known.contains(&metric) {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": format!("no metric {metric} (use {})", known.join(", ")) }),
        );
    }
    let sum = |f: &dyn Fn(&Stats) -> u64| sites.iter().map(|(_, s)| f(s)).sum::<u64>();
    let day = sites.iter().fold(
        crate::metrics::window::Totals::default(),
        |mut t, (_, s)| {
            let w = s
                .window
                .lock()
                .map(|w| w.totals(24 * 60))
                .unwrap_or_default();
            t.ok += w.ok;
            t.ok_bytes += w.ok_bytes;
            t.failed += w.failed;
            t.failed_bytes += w.failed_bytes;
            t
        },
    );
    let quarter = sites.iter().fold((0u64, 0u64), |t, (_, s)| {
        let w = s.window.lock().map(|w| w.totals(15)).unwrap_or_default();
        (t.0 + w.ok, t.1 + w.ok_bytes)
    });
    let mut out = serde_json::Map::new();
    if metric == "backlog" || metric == "all" {
        let mut count: i64 = 0;
        let mut error = None;
        for (name, _) in &sites {
            let (b, t, g) = (
                state.brokers.clone(),
                state.replication_topic.clone(),
                state.groups.get(*name).cloned().unwrap_or_default(),
            );
            let lag = glommio::executor().spawn_blocking(move || kafka_lag(&b, &t, &g));
            let timeout = async {
                glommio::timer::sleep(Duration::from_secs(10)).await;
                Err("Kafka did not answer within 10 s".to_string())
            };
            match futures_lite::future::or(lag, timeout).await {
                Ok(n) => count += n,
                Err(e) => error = Some(e),
            }
        }
        // Entries carry their size, but reading them to add it up would cost a pass over the
        // backlog: the size is estimated from the average size of completed copies.
        let avg = day.ok_bytes.checked_div(day.ok).unwrap_or(0);
        let mut v = serde_json::json!({
            "description": "Number of incomplete replication operations (count) and number of incomplete bytes transferred (size)",
            "results": pair(count, count.max(0) as u64 * avg),
        });
        if let Some(e) = error {
            v["error"] = serde_json::json!(e);
        }
        out.insert("backlog".into(), v);
    }
    if metric == "completions" || metric == "all" {
        out.insert("completions".into(), serde_json::json!({
            "description": "Number of completed replication operations (count) and number of bytes transferred (size) in the last 86400 seconds",
            "results": pair(day.ok, day.ok_bytes),
        }));
    }
    if metric == "failures" || metric == "all" {
        out.insert("failures".into(), serde_json::json!({
            "description": "Number of failed replication operations (count) and bytes (size) in the last 86400 seconds",
            "results": pair(day.failed, day.failed_bytes),
        }));
    }
    if metric == "throughput" || metric == "all" {
        out.insert("throughput".into(), serde_json::json!({
            "description": "Current throughput for replication operations in ops/s (count) and bytes/s (size) in the last 900 seconds",
            "results": pair(format!("{:.2}", quarter.0 as f64 / 900.0), format!("{:.2}", quarter.1 as f64 / 900.0)),
        }));
    }
    if metric == "pending" || metric == "all" {
        out.insert("pending".into(), serde_json::json!({
            "description": "Number of pending replication operations (count) and bytes (size)",
            "results": pair(sum(&|s| Stats::get(&s.in_flight)), sum(&|s| Stats::get(&s.in_flight_bytes))),
        }));
    }
    json(StatusCode::OK, serde_json::Value::Object(out))
}

fn sites_named<'a>(state: &'a ApiState, site: &str) -> Option<Vec<&'a String>> {
    let v: Vec<&String> = state
        .sites
        .keys()
        .filter(|n| site == "all" || n.as_str() == site)
        .collect();
    (!v.is_empty()).then_some(v)
}

fn no_site(site: &str) -> Response<Full<Bytes>> {
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({ "error": format!("no site {site}") }),
    )
}

/// How long a pause, resume or schedule waits for the control topic before answering 503.
const CONTROL_WRITE_TIMEOUT: Duration = Duration::from_secs(15);

async fn set_control(
    local: &Local,
    site: &str,
    f: impl Fn(&mut crate::queue::control::SiteControl),
) -> Result<(), String> {
    let Some(cell) = local.control.get(site) else {
        return Err(format!("no site {site}"));
    };
    let mut next = cell.borrow().clone();
    f(&mut next);
    let p = local.producer.as_ref().ok_or("no Kafka producer")?;
    let publish = async {
        Some(
            crate::queue::control::publish(p, &local.control_topic, site, &next)
                .await
                .map_err(|e| e.to_string()),
        )
    };
    let limit = async {
        glommio::timer::sleep(CONTROL_WRITE_TIMEOUT).await;
        None
    };
    match futures_lite::future::or(publish, limit).await {
        Some(r) => r?,
        None => {
            return Err(format!(
                "the control topic {} did not acknowledge the change within {} s: check the brokers (GET /_/healthcheck) and try again",
                local.control_topic,
                CONTROL_WRITE_TIMEOUT.as_secs()
            ))
        }
    }
    *cell.borrow_mut() = next;
    Ok(())
}

/// Applies `f` to the control state of every named site.
async fn control_all(
    state: &ApiState,
    local: &Local,
    site: &str,
    f: impl Fn(&mut crate::queue::control::SiteControl),
) -> Option<Response<Full<Bytes>>> {
    let Some(sites) = sites_named(state, site) else {
        return Some(no_site(site));
    };
    for n in sites {
        if let Err(e) = set_control(local, n, &f).await {
            return Some(json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "error": e }),
            ));
        }
    }
    None
}

/// One failed entry as Backbeat lists it.
fn failed_item(doc: &serde_json::Value) -> serde_json::Value {
    let e = &doc["entry"];
    serde_json::json!({
        "Bucket": e["bucket"], "Key": e["key"], "VersionId": e["versionId"], "StorageClass": doc["site"],
        "Size": e["size"], "LastModified": e["lastModified"], "Error": doc["error"], "FailedAt": doc["at"],
    })
}

/// Failed entries: list (paged by 100 with a marker), get one object's, retry a list.
async fn crr_failed(
    state: &ApiState,
    local: &Local,
    method: &http::Method,
    rest: &[&str],
    query: &str,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let _ = state;
    let Some(failed) = &local.failed else {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": "the failed topic cannot be read" }),
        );
    };
    let docs: Vec<(String, serde_json::Value)> = failed
        .borrow()
        .iter()
        .filter_map(|(k, v)| {
            serde_json::from_slice::<serde_json::Value>(v)
                .ok()
                .map(|d| (k.clone(), d))
        })
        .filter(|(_, d)| d["kind"] == "failed")
        .collect();
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| {
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned()
                })
        })
    };
    match (method, rest.len()) {
        (&http::Method::GET, 1) => {
            let site = param("site");
            let marker = param("marker");
            let mut page: Vec<&(String, serde_json::Value)> = docs
                .iter()
                .filter(|(_, d)| site.as_deref().is_none_or(|s| d["site"] == s))
                .filter(|(k, _)| marker.as_deref().is_none_or(|m| k.as_str() > m))
                .collect();
            let truncated = page.len() > 100;
            page.truncate(100);
            let mut out = serde_json::json!({
                "IsTruncated": truncated,
                "Versions": page.iter().map(|(_, d)| failed_item(d)).collect::<Vec<_>>(),
            });
            if truncated {
                out["NextMarker"] = serde_json::json!(page.last().map(|(k, _)| k.clone()));
            }
            json(StatusCode::OK, out)
        }
        (&http::Method::GET, n) if n >= 4 => {
            // bucket / key (may hold slashes) / versionId
            let bucket = rest[1];
            let vid = rest[n - 1];
            let key = rest[2..n - 1].join("/");
            let items: Vec<serde_json::Value> = docs
                .iter()
                .filter(|(_, d)| {
                    d["entry"]["bucket"] == bucket
                        && d["entry"]["key"] == key.as_str()
                        && d["entry"]["versionId"] == vid
                })
                .map(|(_, d)| failed_item(d))
                .collect();
            json(
                StatusCode::OK,
                serde_json::json!({ "IsTruncated": false, "Versions": items }),
            )
        }
        (&http::Method::POST, 1) => {
            let wanted: Vec<serde_json::Value> = match serde_json::from_slice(body) {
                Ok(serde_json::Value::Array(a)) => a,
                _ => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({ "error": "expected a JSON list of {Bucket, Key, VersionId, StorageClass}" }),
                    )
                }
            };
            let Some(p) = &local.producer else {
                return json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({ "error": "no Kafka producer" }),
                );
            };
            let mut retried = Vec::new();
            for w in wanted {
                let key = format!(
                    "{}/{}/{}/{}",
                    w["Bucket"].as_str().unwrap_or(""),
                    w["Key"].as_str().unwrap_or(""),
                    w["VersionId"].as_str().unwrap_or(""),
                    w["StorageClass"].as_str().unwrap_or("")
                );
                let Some((_, doc)) = docs.iter().find(|(k, _)| *k == key) else {
                    continue;
                };
                let Ok(mut entry) = serde_json::from_value::<crate::queue::codec::ReplicationEntry>(
                    doc["entry"].clone(),
                ) else {
                    continue;
                };
                entry.sites = vec![doc["site"].as_str().unwrap_or("").to_string()];
                entry.attempt += 1;
                if let Err(e) = crate::queue::kafka::send(
                    p,
                    &local.replication_topic,
                    &entry.kafka_key(),
                    Some(&entry.encode()),
                )
                .await
                {
                    return json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        serde_json::json!({ "error": e.to_string() }),
                    );
                }
                let mut item = failed_item(doc);
                item["Status"] = serde_json::json!("PENDING");
                retried.push(item);
            }
            json(StatusCode::OK, serde_json::Value::Array(retried))
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "no such route" }),
        ),
    }
}

/// Pause, resume, scheduled resume and status, per site or for all (Backbeat's paths).
async fn crr_control(
    state: &ApiState,
    local: &Local,
    method: &http::Method,
    rest: &[&str],
    body: &[u8],
) -> Response<Full<Bytes>> {
    use http::Method;
    let site = rest.get(1).copied().unwrap_or("all");
    let per_site =
        |f: &dyn Fn(&crate::queue::control::SiteControl) -> serde_json::Value| match sites_named(
            state, site,
        ) {
            Some(sites) => {
                let m: serde_json::Map<String, serde_json::Value> = sites
                    .iter()
                    .map(|n| {
                        (
                            (*n).clone(),
                            local
                                .control
                                .get(*n)
                                .map(|c| f(&c.borrow()))
                                .unwrap_or(serde_json::Value::Null),
                        )
                    })
                    .collect();
                json(StatusCode::OK, serde_json::Value::Object(m))
            }
            None => no_site(site),
        };
    match (method, rest.first().copied(), rest.get(2).copied()) {
        (&Method::GET, Some("status"), None) => {
            per_site(&|c| serde_json::json!(if c.paused { "disabled" } else { "enabled" }))
        }
        (&Method::POST, Some(op @ ("pause" | "resume")), None) => {
            let pause = op == "pause";
            control_all(state, local, site, |c| {
                c.paused = pause;
                c.scheduled_resume = None;
            })
            .await
            .unwrap_or_else(|| json(StatusCode::OK, serde_json::json!({})))
        }
        (&Method::POST, Some("resume"), Some("schedule")) => {
            let hours = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["hours"].as_f64())
                .unwrap_or(6.0);
            if !(hours > 0.0 && hours <= 24.0 * 365.0) {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({ "error": "hours must be a positive number" }),
                );
            }
            let at = crate::time::rfc3339(
                std::time::SystemTime::now() + Duration::from_secs_f64(hours * 3600.0),
            );
            control_all(state, local, site, |c| {
                c.paused = true;
                c.scheduled_resume = Some(at.clone());
            })
            .await
            .unwrap_or_else(|| json(StatusCode::OK, serde_json::json!({ "scheduledResume": at })))
        }
        (&Method::DELETE, Some("resume"), Some("schedule")) => {
            control_all(state, local, site, |c| c.scheduled_resume = None)
                .await
                .unwrap_or_else(|| json(StatusCode::OK, serde_json::json!({})))
        }
        (&Method::GET, Some("resume"), _) => per_site(&|c| {
            serde_json::json!(c.scheduled_resume.clone().unwrap_or_else(|| "none".into()))
        }),
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": "no such route" }),
        ),
    }
}
async fn handle(
    state: Arc<ApiState>,
    local: std::rc::Rc<Local>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Some(token) = &state.token {
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.trim().as_bytes(), token.as_bytes())) {
            return json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({ "error": "a bearer token is required (Authorization: Bearer <token>)" }),
            );
        }
    }
    let path = req.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/_/crr/") {
        let method = req.method().clone();
        let req_query = req.uri().query().map(str::to_string);
        let mut body = Vec::new();
        let mut incoming = req.into_body();
        while let Some(Ok(frame)) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut incoming).poll_frame(cx)).await
        {
            if let Ok(d) = frame.into_data() {
                if body.len() + d.len() > 64 * 1024 {
                    return json(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        serde_json::json!({ "error": "body too large" }),
                    );
                }
                body.extend_from_slice(&d);
            }
        }
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        if parts.first() == Some(&"failed") {
            let query = req_query.unwrap_or_default();
            let decoded: Vec<String> = parts
                .iter()
                .map(|p| {
                    percent_encoding::percent_decode_str(p)
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .collect();
            let decoded: Vec<&str> = decoded.iter().map(String::as_str).collect();
            return crr_failed(&state, &local, &method, &decoded, &query, &body).await;
        }
        return crr_control(&state, &local, &method, &parts, &body).await;
    }
    if req.method() != http::Method::GET {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({ "error": "only GET is served here" }),
        );
    }
    match path.as_str() {
        "/_/live" => json(StatusCode::OK, serde_json::json!({ "status": "ok" })),
        "/_/ready" => {
            if state.ready.load(Ordering::SeqCst) {
                json(StatusCode::OK, serde_json::json!({ "status": "ok" }))
            } else {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({ "status": "starting" }),
                )
            }
        }
        "/_/healthcheck" => health(&state).await,
        p if p.starts_with("/_/metrics/crr/") => {
            let rest: Vec<&str> = p.trim_start_matches("/_/metrics/crr/").split('/').collect();
            match rest.as_slice() {
                [_, "progress", bucket, key @ ..]
                    if bucket.is_empty() || key.iter().all(|k| k.is_empty()) =>
                {
                    json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({ "error": "name a bucket and a key: /_/metrics/crr/{site}/progress/{bucket}/{key}?versionId=" }),
                    )
                }
                [site, "progress", bucket, key @ ..] => {
                    let dec = |s: &str| {
                        percent_encoding::percent_decode_str(s)
                            .decode_utf8_lossy()
                            .into_owned()
                    };
                    let vid = req.uri().query().and_then(|q| {
                        q.split('&')
                            .find_map(|kv| kv.strip_prefix("versionId=").map(dec))
                    });
                    crr_progress(
                        &state,
                        &local,
                        &dec(site),
                        &dec(bucket),
                        &dec(&key.join("/")),
                        vid.as_deref().filter(|v| !v.is_empty()),
                    )
                    .await
                }
                [site, metric] => crr_metrics(&state, site, metric).await,
                _ => json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({ "error": "use /_/metrics/crr/{site|all}/{backlog|completions|failures|throughput|pending|all} or /_/metrics/crr/{site}/progress/{bucket}/{key}?versionId=" }),
                ),
            }
        }
        "/metrics" => {
            let mut text = crate::metrics::prometheus::render(&state.sites);
            // Backlog: each site group's Kafka lag, asked at scrape time.
            let name = crate::metrics::names::BACKLOG;
            text.push_str(&format!("# HELP {name} Replication entries not yet committed by the site's consumer group.\n# TYPE {name} gauge\n"));
            for site in state.sites.keys() {
                let (b, t, g) = (
                    state.brokers.clone(),
                    state.replication_topic.clone(),
                    state.groups.get(site).cloned().unwrap_or_default(),
                );
                let lag = glommio::executor().spawn_blocking(move || kafka_lag(&b, &t, &g));
                let timeout = async {
                    glommio::timer::sleep(Duration::from_secs(5)).await;
                    Err(String::new())
                };
                if let Ok(n) = futures_lite::future::or(lag, timeout).await {
                    text.push_str(&format!("{name}{{site=\"{site}\"}} {n}\n"));
                }
            }
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "text/plain; version=0.0.4")
                .body(Full::new(Bytes::from(text)))
                .expect("response")
        }
        other => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": format!("no route {other}") }),
        ),
    }
}

const PROGRESS_DESCRIPTION: &str = "Number of bytes to be replicated (pending), number of bytes transferred to the destination (completed), and percentage of the object that has completed replication (progress)";

fn progress_doc(state: &str, size: u64, done: u64, version_id: &str) -> serde_json::Value {
    let complete = if state == "COMPLETED" { 100 } else { 0 };
    let pct = (done.min(size) * 100).checked_div(size).unwrap_or(complete);
    serde_json::json!({
        "description": PROGRESS_DESCRIPTION,
        "pending": size - done.min(size),
        "completed": done.min(size),
        "progress": format!("{pct}%"),
        "state": state,
        "versionId": version_id,
    })
}

/// `GET /_/metrics/crr/{site}/progress/{bucket}/{key}?versionId=`: the version's transfer
/// when it is in flight or recently finished on this node, else what the source and the
/// destination hold (COMPLETED when the destination has it, PENDING otherwise; FAILED when
/// the failed topic lists it).
async fn crr_progress(
    state: &ApiState,
    local: &Local,
    site: &str,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
) -> Response<Full<Bytes>> {
    use crate::metrics::objects::ObjectProgress;
    let (Some(stats), Some(route)) = (state.sites.get(site), state.routes.get(site)) else {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": format!("no site {site}: sites are {:?}", state.sites.keys().collect::<Vec<_>>()) }),
        );
    };
    let dest_bucket = route
        .buckets
        .get(bucket)
        .cloned()
        .unwrap_or_else(|| bucket.to_string());
    let source = crate::s3::Client::new(route.source.clone(), None);
    // Without a version id: the source's latest version.
    let (vid, head) = match version_id {
        Some(v) => (v.to_string(), None),
        None => match source.head_object(bucket, key, Default::default()).await {
            Ok(h) => (
                h.version_id.clone().unwrap_or_else(|| "null".into()),
                Some((h.content_length, false)),
            ),
            Err(crate::s3::ops::head_object::HeadObjectError::DeleteMarker {
                version_id: Some(v),
            }) => (v, Some((0, true))),
            Err(e) => return progress_source_error(bucket, key, &e),
        },
    };
    let id = (bucket.to_string(), key.to_string(), vid.clone());
    let known = stats.objects.lock().expect("object tracker").progress(&id);
    match known {
        Some(ObjectProgress::InFlight { size, done }) => {
            return json(
                StatusCode::OK,
                progress_doc("IN_PROGRESS", size, done, &vid),
            )
        }
        Some(ObjectProgress::Finished(f)) if f.completed => {
            return json(
                StatusCode::OK,
                progress_doc("COMPLETED", f.size, f.size, &vid),
            )
        }
        _ => {}
    }
    let failed = local.failed.as_ref().is_some_and(|f| {
        f.borrow().values().any(|v| {
            serde_json::from_slice::<serde_json::Value>(v).is_ok_and(|d| {
                d["kind"] == "failed"
                    && d["site"] == site
                    && d["entry"]["bucket"] == bucket
                    && d["entry"]["key"] == key
                    && d["entry"]["versionId"] == vid.as_str()
            })
        })
    });
    // Ask the source what the version is, then the destination whether it holds it.
    let (size, delete_marker) = match head {
        Some(h) => h,
        None => {
            let req = crate::s3::ops::head_object::HeadObjectRequest {
                version_id: (vid != "null").then_some(vid.as_str()),
                ..Default::default()
            };
            match source.head_object(bucket, key, req).await {
                Ok(h) => (h.content_length, false),
                Err(crate::s3::ops::head_object::HeadObjectError::DeleteMarker { .. }) => (0, true),
                Err(e) => return progress_source_error(bucket, key, &e),
            }
        }
    };
    let route = crate::replication::Route {
        source,
        source_bucket: bucket.to_string(),
        dest: crate::s3::Client::new(route.dest.clone(), None),
        dest_bucket,
        dest_versioned: route.dest_versioned,
    };
    let v = crate::replication::Version {
        key: key.to_string(),
        version_id: vid.clone(),
        delete_marker,
        size,
        etag: String::new(),
    };
    let applied = route.is_applied(&v).await;
    match applied {
        Ok(true) => json(StatusCode::OK, progress_doc("COMPLETED", size, size, &vid)),
        Ok(false) if failed => json(StatusCode::OK, progress_doc("FAILED", size, 0, &vid)),
        Ok(false) => json(StatusCode::OK, progress_doc("PENDING", size, 0, &vid)),
        Err(e) => json(
            StatusCode::BAD_GATEWAY,
            serde_json::json!({ "error": format!("cannot check the destination of {site}: {e}") }),
        ),
    }
}

fn progress_source_error(
    bucket: &str,
    key: &str,
    e: &crate::s3::ops::head_object::HeadObjectError,
) -> Response<Full<Bytes>> {
    let status = if matches!(e.code(), "NoSuchKey" | "NoSuchVersion" | "NotFound") {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::BAD_GATEWAY
    };
    json(
        status,
        serde_json::json!({ "error": format!("source {bucket}/{key}: {e}"), "code": e.code() }),
    )
}

/// Serves the API on its own thread and executor until `shutdown`. Returns once listening.
pub fn serve(
    addr: SocketAddr,
    state: Arc<ApiState>,
    shutdown: Shutdown,
) -> Result<std::thread::JoinHandle<()>, ApiError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            let ex = match glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .name("api")
                .make()
            {
                Ok(ex) => ex,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            ex.run(async move {
                let listener = match glommio::net::TcpListener::bind(addr) {
                    Ok(l) => {
                        let _ = tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let mut control = BTreeMap::new();
                for site in state.sites.keys() {
                    match crate::queue::control::follow(
                        &state.brokers,
                        &state.control_topic,
                        site,
                        shutdown.clone(),
                    )
                    .await
                    {
                        Ok(c) => {
                            control.insert(site.clone(), c);
                        }
                        Err(e) => {
                            tracing::warn!(site, error = %e, "cannot follow the control topic")
                        }
                    }
                }
                let failed = match crate::queue::control::follow_all(
                    &state.brokers,
                    &state.failed_topic,
                    shutdown.clone(),
                ) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot follow the failed topic");
                        None
                    }
                };
                let local = std::rc::Rc::new(Local {
                    control,
                    producer: crate::queue::kafka::producer(&state.brokers).ok(),
                    control_topic: state.control_topic.clone(),
                    failed,
                    replication_topic: state.replication_topic.clone(),
                });
                while !shutdown.is_set() {
                    let accept = async { Some(listener.accept().await) };
                    let tick = async {
                        glommio::timer::sleep(Duration::from_millis(200)).await;
                        None
                    };
                    let Some(Ok(stream)) = futures_lite::future::or(accept, tick).await else {
                        continue;
                    };
                    let (state, local) = (state.clone(), local.clone());
                    glommio::spawn_local(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let (state, local) = (state.clone(), local.clone());
                            async move { Ok::<_, Infallible>(handle(state, local, req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(HyperIo::new(Stream::Plain(stream)), svc)
                            .await;
                    })
                    .detach();
                }
            });
        })
        .map_err(|e| ApiError::Listen {
            addr,
            message: e.to_string(),
        })?;
    match rx.recv() {
        Ok(Ok(())) => Ok(h),
        Ok(Err(message)) => Err(ApiError::Listen { addr, message }),
        Err(_) => Err(ApiError::Listen {
            addr,
            message: "the API thread stopped".into(),
        }),
    }
}
