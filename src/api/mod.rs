//! The operations API (Backbeat's paths): health, liveness, readiness and Prometheus
//! metrics. Served by hyper on a glommio executor of its own, so replication load cannot
//! starve it. Listens on 127.0.0.1 unless configured; with a token file, every request must
//! carry `Authorization: Bearer <token>` (required on non-loopback addresses).
//!
//! May call: `metrics`, `s3`, `queue`, `shard`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::metrics::Stats;
use crate::s3::transport::{HyperIo, Stream};
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
    /// Set once every role has started.
    pub ready: AtomicBool,
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

async fn handle(state: Arc<ApiState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
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
    if req.method() != http::Method::GET {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({ "error": "only GET is served here" }),
        );
    }
    match req.uri().path() {
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
        "/metrics" => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(crate::metrics::prometheus::render(
                &state.sites,
            ))))
            .expect("response"),
        other => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "error": format!("no route {other}") }),
        ),
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
                while !shutdown.is_set() {
                    let accept = async { Some(listener.accept().await) };
                    let tick = async {
                        glommio::timer::sleep(Duration::from_millis(200)).await;
                        None
                    };
                    let Some(Ok(stream)) = futures_lite::future::or(accept, tick).await else {
                        continue;
                    };
                    let state = state.clone();
                    glommio::spawn_local(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(handle(state, req).await) }
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
