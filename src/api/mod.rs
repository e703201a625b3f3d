//! The operations API (Backbeat's paths): health, liveness, readiness and Prometheus
//! metrics, Backbeat's metric and per-object progress routes, pause and resume, failed
//! entries. Served by hyper on a glommio executor of its own, so replication load cannot
//! starve it. Listens on 127.0.0.1 unless configured; with a token file, every request must
//! carry `Authorization: Bearer <token>` (required on non-loopback addresses). A request
//! goes through the route table (`router`) to one handler per route (`health`, `metrics`,
//! `control`, `failed`, `progress`); the documents they answer are the types of `model`,
//! which the command line (`cli`) reads back. `conn` bounds the connections (a cap, header
//! and body timeouts) so that idle or slow clients cannot take the API or the node's
//! descriptors.
//!
//! Owns: the API's routes and documents, and the command line's requests to them (`cli`).
//! May call: `metrics`, `s3` (clients, and the glommio socket adapter hyper serves on),
//! `queue` (control, failed and status topics), `shard`, `replication` (the destination
//! check of the per-object progress route), `failure` (the recorded error of a failed
//! entry), `time`, `bandwidth` (a site's limit shown), `buckets` (the known source buckets
//! and their names at each site).

mod buckets;
pub mod cli;
mod conn;
mod control;
mod failed;
mod health;
mod ingestion;
mod metrics;
pub use conn::{tls_config, Limits};
pub mod model;
mod progress;
mod router;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Serialize;

pub use health::{exposition, QueueFigures};

use crate::metrics::Stats;
use crate::s3::Endpoint;
use crate::shard::Shutdown;
use model::ErrorBody;
use router::{Call, Reject, Router};

/// What the API reports on.
pub struct ApiState {
    /// Counters per destination site.
    pub sites: BTreeMap<String, Arc<Stats>>,
    /// Lifecycle's counters.
    pub lifecycle: Arc<crate::metrics::lifecycle::LifecycleStats>,
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
    /// Bounds on connections.
    pub limits: Limits,
    /// `/_/live`, `/_/ready` and `/metrics` answer without the token (probes, scrapers).
    pub open_probes: bool,
    /// Serve HTTPS with these settings (`api.cert_file`, `api.key_file`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The source buckets known and what discovery did (`/_/buckets`).
    pub buckets: BucketsView,
}

/// What `/_/buckets` reports from.
#[derive(Default)]
pub struct BucketsView {
    pub known: Arc<crate::buckets::Known>,
    pub stats: Arc<crate::metrics::buckets::BucketStats>,
    /// Site -> what it calls each source bucket.
    pub names: BTreeMap<String, crate::buckets::NameMap>,
    /// The buckets ingestion lists (`source.ingest_buckets`), and its figures.
    pub ingest: crate::buckets::Selection,
    pub ingest_stats: Arc<crate::metrics::ingest::IngestStats>,
    /// Transient sources' figures.
    pub transient_stats: Arc<crate::metrics::transient::TransientStats>,
}

/// A site's source and destination, for the progress route.
pub struct SiteRoute {
    pub source: Arc<Endpoint>,
    pub dest: Arc<Endpoint>,
    /// What the site calls each source bucket.
    pub buckets: crate::buckets::NameMap,
    pub dest_versioned: bool,
}

/// What the API keeps on its own executor: the control topic's state per site, and a
/// producer to change it.
struct Local {
    control: BTreeMap<String, Rc<std::cell::RefCell<crate::queue::control::SiteControl>>>,
    producer: Option<crate::queue::kafka::Producer>,
    control_topic: String,
    /// The failed topic, materialized: key `bucket/key/versionId/site` -> last failure.
    /// The failed topic's failed entries, by topic key (`bucket/key/versionId/site`).
    failed: Option<crate::queue::control::Compacted<crate::queue::codec::FailedRecord>>,
    replication_topic: String,
    /// The control topic's every key (ingestion's per bucket are read from it).
    ingestion: Option<crate::queue::control::Compacted<crate::queue::control::SiteControl>>,
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

type Reply = Response<Full<Bytes>>;

/// A JSON answer.
fn reply<T: Serialize>(status: StatusCode, doc: &T) -> Reply {
    let body = serde_json::to_vec(doc).expect("API documents serialize");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

/// `{"error": message}`.
fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    reply(status, &ErrorBody::new(message))
}

/// Why a handler answers no document: a status and `{"error": ...}` (with the source's
/// error code from the progress route).
struct Refusal {
    status: StatusCode,
    body: ErrorBody,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            body: ErrorBody::new(message),
        }
    }
}

impl From<Refusal> for Reply {
    fn from(r: Refusal) -> Reply {
        reply(r.status, &r.body)
    }
}

/// A handler's answer: its document with 200, or its refusal.
fn answer<T: Serialize>(r: Result<T, Refusal>) -> Reply {
    match r {
        Ok(doc) => reply(StatusCode::OK, &doc),
        Err(r) => r.into(),
    }
}

/// A request the route table refuses: 404, 405 (with `Allow`) or 400.
fn reject(r: Reject) -> Reply {
    match r {
        Reject::NotFound(e) => error(StatusCode::NOT_FOUND, e),
        Reject::BadRequest(e) => error(StatusCode::BAD_REQUEST, e),
        Reject::MethodNotAllowed(allowed) => {
            let allowed: Vec<&str> = allowed.iter().map(http::Method::as_str).collect();
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("this path answers {} only", allowed.join(", ")),
            );
            let allow = http::HeaderValue::from_str(&allowed.join(", ")).expect("methods");
            r.headers_mut().insert(http::header::ALLOW, allow);
            r
        }
    }
}

/// Compares in constant time.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request carries the configured bearer token (always, without one).
fn authorized(state: &ApiState, req: &Request<Incoming>) -> bool {
    let Some(token) = &state.token else {
        return true;
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    given.is_some_and(|g| same(g.trim().as_bytes(), token.as_bytes()))
}

/// The largest request body read.
const BODY_LIMIT: usize = 256 * 1024;

/// Reads a request's body, up to [`BODY_LIMIT`] (413 past it) and within `deadline` (408
/// past it).
async fn read_body(incoming: Incoming, deadline: Duration) -> Result<Vec<u8>, Reply> {
    let read = async { Some(read_limited(incoming).await) };
    let late = async {
        glommio::timer::sleep(deadline).await;
        None
    };
    match futures_lite::future::or(read, late).await {
        Some(r) => r,
        None => {
            let e = format!("the request's body did not arrive within {deadline:?}");
            Err(error(StatusCode::REQUEST_TIMEOUT, e))
        }
    }
}

async fn read_limited(mut incoming: Incoming) -> Result<Vec<u8>, Reply> {
    let mut body = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut incoming).poll_frame(cx)).await
    {
        let frame = frame.map_err(|e| {
            let e = format!("the request's body was cut short: {e}");
            error(StatusCode::BAD_REQUEST, e)
        })?;
        if let Ok(d) = frame.into_data() {
            if body.len() + d.len() > BODY_LIMIT {
                return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"));
            }
            body.extend_from_slice(&d);
        }
    }
    Ok(body)
}

/// Serves one request. Its connection counts as busy (not to be closed for a newcomer) only
/// once the request is whole and allowed: a client that sends its body slowly, or sends one
/// to a route that takes none, holds an idle connection.
async fn handle(
    state: Arc<ApiState>,
    local: Rc<Local>,
    router: Rc<Router>,
    slot: Rc<conn::Slot>,
    req: Request<Incoming>,
) -> Reply {
    let call = router.route(req.method(), req.uri().path());
    let probe = matches!(call, Ok(Call::Live | Call::Ready | Call::Prometheus));
    let open = probe && state.open_probes;
    if !open && !authorized(&state, &req) {
        return error(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required (Authorization: Bearer <token>)",
        );
    }
    let call = match call {
        Ok(c) => c,
        Err(r) => return reject(r),
    };
    let query = req.uri().query().map(str::to_string);
    let body = match read_body(req.into_body(), state.limits.body_timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(_busy) = slot.serving() else {
        let e = "the operations API is at its connection cap (api.max_connections): try again";
        return error(StatusCode::SERVICE_UNAVAILABLE, e);
    };
    dispatch(&state, &local, call, query.as_deref(), &body).await
}

/// One handler per call.
async fn dispatch(
    state: &ApiState,
    local: &Local,
    call: Call,
    query: Option<&str>,
    body: &[u8],
) -> Reply {
    match call {
        Call::Live => health::live(),
        Call::Ready => health::ready(state),
        Call::Health => health::health(state).await,
        Call::Prometheus => health::prometheus(state).await,
        Call::Metrics { site, metric } => metrics::crr_metrics(state, &site, &metric).await,
        Call::Progress { site, bucket, key } => {
            progress::progress(state, local, &site, &bucket, &key, query).await
        }
        Call::Status { site } => control::status(state, local, &site),
        Call::Schedules { site } => control::schedules(state, local, &site),
        Call::Pause { site } => control::pause(state, local, &site, true).await,
        Call::Resume { site } => control::pause(state, local, &site, false).await,
        Call::Schedule { site } => control::schedule(state, local, &site, body).await,
        Call::CancelSchedule { site } => control::cancel_schedule(state, local, &site).await,
        Call::FailedList => failed::list(local, query),
        Call::FailedGet {
            bucket,
            key,
            version_id,
        } => failed::get(local, &bucket, &key, &version_id),
        Call::FailedRetry => failed::retry(local, body).await,
        Call::Buckets => reply(StatusCode::OK, &buckets::buckets(state)),
        Call::IngestionStatus { bucket } => ingestion::status(state, local, &bucket),
        Call::IngestionPause { bucket } => ingestion::pause(state, local, &bucket, true).await,
        Call::IngestionResume { bucket } => ingestion::pause(state, local, &bucket, false).await,
    }
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
            let ex = match crate::shard::executor(glommio::Placement::Unbound)
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
                let local = Rc::new(follow_topics(&state, &shutdown).await);
                accept(listener, state, local, shutdown).await;
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

/// Follows the control topic (each site's state) and the failed topic, and makes the
/// producer that changes them; what cannot be followed is warned of and left out.
async fn follow_topics(state: &ApiState, shutdown: &Shutdown) -> Local {
    let mut control = BTreeMap::new();
    let lifecycle: Vec<String> = std::iter::once("all")
        .chain(state.sites.keys().map(String::as_str))
        .map(crate::queue::control::lifecycle_key)
        .collect();
    for site in state.sites.keys().chain(lifecycle.iter()) {
        let followed = crate::queue::control::follow(
            &state.brokers,
            &state.control_topic,
            site,
            shutdown.clone(),
        )
        .await;
        match followed {
            Ok(c) => {
                control.insert(site.clone(), c);
            }
            Err(e) => tracing::warn!(site, error = %e, "cannot follow the control topic"),
        }
    }
    let failed = crate::queue::control::follow_all(
        &state.brokers,
        &state.failed_topic,
        failed::decode,
        shutdown.clone(),
    )
    .inspect_err(|e| tracing::warn!(error = %e, "cannot follow the failed topic"))
    .ok();
    let ingestion = crate::queue::control::follow_all(
        &state.brokers,
        &state.control_topic,
        |b| crate::queue::control::SiteControl::decode(b).ok(),
        shutdown.clone(),
    )
    .inspect_err(|e| tracing::warn!(error = %e, "cannot follow the control topic"))
    .ok();
    Local {
        control,
        ingestion,
        producer: crate::queue::kafka::producer(&state.brokers).ok(),
        control_topic: state.control_topic.clone(),
        failed,
        replication_topic: state.replication_topic.clone(),
    }
}

/// Serves each accepted connection with hyper, its requests marking it busy.
async fn accept(
    listener: glommio::net::TcpListener,
    state: Arc<ApiState>,
    local: Rc<Local>,
    shutdown: Shutdown,
) {
    let router = Rc::new(Router::new());
    let limits = state.limits;
    let tls = state.tls.clone();
    conn::accept(listener, limits, tls, shutdown, move |io, slot| {
        let (state, local, router) = (state.clone(), local.clone(), router.clone());
        async move {
            let svc = hyper::service::service_fn(move |req| {
                let (state, local, router) = (state.clone(), local.clone(), router.clone());
                let slot = slot.clone();
                async move { Ok::<_, Infallible>(handle(state, local, router, slot, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(conn::Timer)
                .header_read_timeout(limits.header_timeout)
                .serve_connection(io, svc)
                .await;
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn state() -> Arc<ApiState> {
        Arc::new(ApiState {
            lifecycle: Default::default(),
            sites: BTreeMap::new(),
            // Nothing listens there: the API starts without its topics, as it would
            // with the broker down.
            brokers: "127.0.0.1:9".into(),
            endpoints: Vec::new(),
            token: None,
            replication_topic: "r".into(),
            control_topic: "c".into(),
            failed_topic: "f".into(),
            groups: BTreeMap::new(),
            routes: BTreeMap::new(),
            ready: AtomicBool::new(true),
            limits: Limits::default(),
            open_probes: false,
            tls: None,
            buckets: Default::default(),
        })
    }

    /// Asks `/_/live` on a new connection; whether a whole answer came within 5 s.
    fn answered(addr: SocketAddr) -> bool {
        let Ok(mut c) = std::net::TcpStream::connect(addr) else {
            return false;
        };
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let ask = "GET /_/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let mut out = String::new();
        c.write_all(ask.as_bytes()).is_ok()
            && c.read_to_string(&mut out).is_ok()
            && out.starts_with("HTTP/1.1 200")
    }

    /// Every connection is answered, however its arrival falls against the accept loop's
    /// other waits (a dropped io_uring accept once lost connections the kernel accepted).
    #[test]
    fn every_connection_is_answered() {
        let addr: SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let shutdown = Shutdown::new();
        let api = serve(addr, state(), shutdown.clone()).unwrap();
        // The first answer comes once the API gave up on its topics (5 s).
        let started = std::time::Instant::now();
        while !answered(addr) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the API answers"
            );
        }
        let until = std::time::Instant::now() + Duration::from_secs(4);
        let clients: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    let (mut asked, mut lost) = (0, 0);
                    while std::time::Instant::now() < until {
                        asked += 1;
                        if !answered(addr) {
                            lost += 1;
                        }
                    }
                    (asked, lost)
                })
            })
            .collect();
        let (asked, lost) = clients
            .into_iter()
            .map(|c| c.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        shutdown.trigger();
        api.join().unwrap();
        assert!(asked > 100, "only {asked} requests made");
        eprintln!("{asked} connections, {lost} unanswered");
        assert_eq!(lost, 0, "{lost} of {asked} connections went unanswered");
    }
}
