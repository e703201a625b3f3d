//! The route table: a request's method and path to the call it names, with its path
//! parameters percent-decoded, or why none: 404 for an unknown path, 405 for a known path
//! with another method, 400 for a path that misses a part (saying which). Queries are read
//! by one parser, [`query`], into typed structs.

use http::Method;
use serde::de::DeserializeOwned;

/// What a request asks for. Sites are names or `all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Live,
    Ready,
    Health,
    Prometheus,
    Metrics {
        site: String,
        metric: String,
    },
    /// `versionId` comes from the query.
    Progress {
        site: String,
        bucket: String,
        key: String,
    },
    Status {
        site: String,
    },
    Pause {
        site: String,
    },
    Resume {
        site: String,
    },
    Schedules {
        site: String,
    },
    Schedule {
        site: String,
    },
    CancelSchedule {
        site: String,
    },
    /// `site` and `marker` come from the query.
    FailedList,
    FailedGet {
        bucket: String,
        key: String,
        version_id: String,
    },
    FailedRetry,
    /// Site-level replication: each known source bucket, its site buckets and figures.
    Buckets,
    /// Ingestion per bucket (`all`: every ingested bucket).
    IngestionStatus {
        bucket: String,
    },
    IngestionPause {
        bucket: String,
    },
    IngestionResume {
        bucket: String,
    },
}

/// Why a request names no call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    NotFound(String),
    /// The methods the path answers.
    MethodNotAllowed(Vec<Method>),
    BadRequest(String),
}

/// Which handler a route's method goes to (the table's values; parameters are read after).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Id {
    Live,
    Ready,
    Health,
    Prometheus,
    Metrics,
    Progress,
    Status,
    Pause,
    Resume,
    Schedules,
    Schedule,
    CancelSchedule,
    FailedList,
    FailedGet,
    FailedRetry,
    Buckets,
    IngestionStatus,
    IngestionPause,
    IngestionResume,
    /// The lifecycle routes: the same calls, for lifecycle as a whole.
    Lifecycle(LcId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LcId {
    Status,
    Pause,
    Resume,
    Schedules,
    Schedule,
    CancelSchedule,
}

/// What `/_/lifecycle/status` and `GET /_/lifecycle/resume` report on: lifecycle as a whole
/// and its transitions to each site.
pub const LIFECYCLE_EVERY: &str = "lifecycle/*";

const PROGRESS_HINT: &str =
    "name a bucket and a key: /_/metrics/crr/{site}/progress/{bucket}/{key}?versionId=";
const METRICS_HINT: &str = "use /_/metrics/crr/{site|all}/{backlog|completions|failures|throughput|pending|all} or /_/metrics/crr/{site}/progress/{bucket}/{key}?versionId=";
const FAILED_HINT: &str = "name an entry: /_/crr/failed/{bucket}/{key}/{versionId}";

/// The routes, each path with the methods it answers.
const TABLE: &[(&str, &[(Method, Id)])] = &[
    ("/_/live", &[(Method::GET, Id::Live)]),
    ("/_/ready", &[(Method::GET, Id::Ready)]),
    ("/_/healthcheck", &[(Method::GET, Id::Health)]),
    ("/metrics", &[(Method::GET, Id::Prometheus)]),
    (
        "/_/metrics/crr/{site}/{metric}",
        &[(Method::GET, Id::Metrics)],
    ),
    (
        "/_/metrics/crr/{site}/progress",
        &[(Method::GET, Id::Progress)],
    ),
    (
        "/_/metrics/crr/{site}/progress/{*rest}",
        &[(Method::GET, Id::Progress)],
    ),
    ("/_/buckets", &[(Method::GET, Id::Buckets)]),
    ("/_/ingestion/status", &[(Method::GET, Id::IngestionStatus)]),
    (
        "/_/ingestion/status/{site}",
        &[(Method::GET, Id::IngestionStatus)],
    ),
    ("/_/ingestion/pause", &[(Method::POST, Id::IngestionPause)]),
    (
        "/_/ingestion/pause/{site}",
        &[(Method::POST, Id::IngestionPause)],
    ),
    (
        "/_/ingestion/resume",
        &[(Method::POST, Id::IngestionResume)],
    ),
    (
        "/_/ingestion/resume/{site}",
        &[(Method::POST, Id::IngestionResume)],
    ),
    ("/_/crr/status", &[(Method::GET, Id::Status)]),
    ("/_/crr/status/{site}", &[(Method::GET, Id::Status)]),
    ("/_/crr/pause", &[(Method::POST, Id::Pause)]),
    ("/_/crr/pause/{site}", &[(Method::POST, Id::Pause)]),
    (
        "/_/crr/resume",
        &[(Method::GET, Id::Schedules), (Method::POST, Id::Resume)],
    ),
    (
        "/_/crr/resume/{site}",
        &[(Method::GET, Id::Schedules), (Method::POST, Id::Resume)],
    ),
    (
        "/_/crr/resume/{site}/schedule",
        &[
            (Method::GET, Id::Schedules),
            (Method::POST, Id::Schedule),
            (Method::DELETE, Id::CancelSchedule),
        ],
    ),
    (
        "/_/crr/failed",
        &[
            (Method::GET, Id::FailedList),
            (Method::POST, Id::FailedRetry),
        ],
    ),
    ("/_/crr/failed/{*rest}", &[(Method::GET, Id::FailedGet)]),
    (
        "/_/lifecycle/status",
        &[(Method::GET, Id::Lifecycle(LcId::Status))],
    ),
    (
        "/_/lifecycle/pause",
        &[(Method::POST, Id::Lifecycle(LcId::Pause))],
    ),
    (
        "/_/lifecycle/pause/{site}",
        &[(Method::POST, Id::Lifecycle(LcId::Pause))],
    ),
    (
        "/_/lifecycle/resume",
        &[
            (Method::GET, Id::Lifecycle(LcId::Schedules)),
            (Method::POST, Id::Lifecycle(LcId::Resume)),
        ],
    ),
    (
        "/_/lifecycle/resume/{site}",
        &[
            (Method::GET, Id::Lifecycle(LcId::Schedules)),
            (Method::POST, Id::Lifecycle(LcId::Resume)),
        ],
    ),
    (
        "/_/lifecycle/resume/{site}/schedule",
        &[
            (Method::GET, Id::Lifecycle(LcId::Schedules)),
            (Method::POST, Id::Lifecycle(LcId::Schedule)),
            (Method::DELETE, Id::Lifecycle(LcId::CancelSchedule)),
        ],
    ),
];

/// The API's routes.
pub struct Router {
    table: matchit::Router<&'static [(Method, Id)]>,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    pub fn new() -> Self {
        let mut table = matchit::Router::new();
        for (path, methods) in TABLE {
            table.insert(*path, *methods).expect("the route table");
        }
        Router { table }
    }

    /// The call `method path` names. A trailing `/` is ignored, as are empty segments under
    /// `/_/crr/`.
    pub fn route(&self, method: &Method, path: &str) -> Result<Call, Reject> {
        let normalized = normalize(path);
        let found = self
            .table
            .at(&normalized)
            .map_err(|_| Reject::NotFound(not_found(&normalized)))?;
        let id = found
            .value
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, id)| *id)
            .ok_or_else(|| {
                Reject::MethodNotAllowed(found.value.iter().map(|(m, _)| m.clone()).collect())
            })?;
        let param = |name: &str| decode(found.params.get(name).unwrap_or("all"));
        call(id, &param, found.params.get("rest").unwrap_or(""))
    }
}

/// The call a route's handler makes, from its path parameters.
fn call(id: Id, param: &dyn Fn(&str) -> String, rest: &str) -> Result<Call, Reject> {
    let site = || param("site");
    Ok(match id {
        Id::Live => Call::Live,
        Id::Ready => Call::Ready,
        Id::Health => Call::Health,
        Id::Prometheus => Call::Prometheus,
        Id::Metrics => Call::Metrics {
            site: site(),
            metric: param("metric"),
        },
        Id::Progress => {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() || key.split('/').all(str::is_empty) {
                return Err(Reject::BadRequest(PROGRESS_HINT.into()));
            }
            Call::Progress {
                site: site(),
                bucket: decode(bucket),
                key: decode(key),
            }
        }
        Id::Status => Call::Status { site: site() },
        Id::Pause => Call::Pause { site: site() },
        Id::Resume => Call::Resume { site: site() },
        Id::Schedules => Call::Schedules { site: site() },
        Id::Schedule => Call::Schedule { site: site() },
        Id::CancelSchedule => Call::CancelSchedule { site: site() },
        Id::FailedList => Call::FailedList,
        Id::FailedRetry => Call::FailedRetry,
        Id::Buckets => Call::Buckets,
        Id::IngestionStatus => Call::IngestionStatus { bucket: site() },
        Id::IngestionPause => Call::IngestionPause { bucket: site() },
        Id::IngestionResume => Call::IngestionResume { bucket: site() },
        Id::Lifecycle(lc) => {
            let named = crate::queue::control::lifecycle_key(&site());
            let every = match lc {
                LcId::Status | LcId::Schedules if site() == "all" => LIFECYCLE_EVERY.to_string(),
                _ => named,
            };
            let site = every;
            match lc {
                LcId::Status => Call::Status { site },
                LcId::Pause => Call::Pause { site },
                LcId::Resume => Call::Resume { site },
                LcId::Schedules => Call::Schedules { site },
                LcId::Schedule => Call::Schedule { site },
                LcId::CancelSchedule => Call::CancelSchedule { site },
            }
        }
        Id::FailedGet => {
            // bucket / key (may hold slashes) / versionId
            let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
            let [bucket, key @ .., version_id] = parts.as_slice() else {
                return Err(Reject::BadRequest(FAILED_HINT.into()));
            };
            if key.is_empty() {
                return Err(Reject::BadRequest(FAILED_HINT.into()));
            }
            Call::FailedGet {
                bucket: decode(bucket),
                key: key.iter().map(|k| decode(k)).collect::<Vec<_>>().join("/"),
                version_id: decode(version_id),
            }
        }
    })
}

/// The path without a trailing `/`, and under `/_/crr/` without empty segments.
fn normalize(path: &str) -> String {
    if let Some(rest) = path.strip_prefix("/_/crr/") {
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        return format!("/_/crr/{}", parts.join("/"));
    }
    match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p.to_string(),
        _ => path.to_string(),
    }
}

fn not_found(path: &str) -> String {
    if path.starts_with("/_/metrics/crr/") {
        METRICS_HINT.into()
    } else {
        format!("no route {path}")
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Reads a query string into `T`. A `+` is taken as itself, not as a space, as the API
/// always has (S3 version ids may hold one).
pub fn query<T: DeserializeOwned>(q: Option<&str>) -> Result<T, String> {
    let q = q.unwrap_or("").replace('+', "%2B");
    serde_urlencoded::from_str(&q).map_err(|e| format!("cannot read the query string: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Method, path: &str) -> Result<Call, Reject> {
        Router::new().route(&method, path)
    }

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn every_route_names_its_call() {
        let cases = [
            (Method::GET, "/_/live", Call::Live),
            (Method::GET, "/_/ready", Call::Ready),
            (Method::GET, "/_/healthcheck", Call::Health),
            (Method::GET, "/metrics", Call::Prometheus),
            (
                Method::GET,
                "/_/metrics/crr/all/backlog",
                Call::Metrics {
                    site: s("all"),
                    metric: s("backlog"),
                },
            ),
            (
                Method::GET,
                "/_/metrics/crr/site-b/progress/bkt/dir/a%20b",
                Call::Progress {
                    site: s("site-b"),
                    bucket: s("bkt"),
                    key: s("dir/a b"),
                },
            ),
            (
                Method::GET,
                "/_/crr/status",
                Call::Status { site: s("all") },
            ),
            (
                Method::GET,
                "/_/crr/status/site-b",
                Call::Status { site: s("site-b") },
            ),
            (Method::POST, "/_/crr/pause", Call::Pause { site: s("all") }),
            (
                Method::POST,
                "/_/crr/pause/site-b/",
                Call::Pause { site: s("site-b") },
            ),
            (
                Method::POST,
                "/_/crr/resume",
                Call::Resume { site: s("all") },
            ),
            (
                Method::POST,
                "/_/crr/resume/site-b",
                Call::Resume { site: s("site-b") },
            ),
            (
                Method::GET,
                "/_/crr/resume/site-b",
                Call::Schedules { site: s("site-b") },
            ),
            (
                Method::POST,
                "/_/crr/resume/site-b/schedule",
                Call::Schedule { site: s("site-b") },
            ),
            (
                Method::DELETE,
                "/_/crr/resume/site-b/schedule",
                Call::CancelSchedule { site: s("site-b") },
            ),
            (Method::GET, "/_/crr/failed", Call::FailedList),
            (
                Method::POST,
                "/_/lifecycle/pause",
                Call::Pause {
                    site: s("lifecycle/all"),
                },
            ),
            (
                Method::POST,
                "/_/lifecycle/resume/all/schedule",
                Call::Schedule {
                    site: s("lifecycle/all"),
                },
            ),
            (
                Method::GET,
                "/_/lifecycle/status",
                Call::Status {
                    site: s("lifecycle/*"),
                },
            ),
            (
                Method::POST,
                "/_/lifecycle/pause/site-b",
                Call::Pause {
                    site: s("lifecycle/site-b"),
                },
            ),
            (Method::POST, "/_/crr/failed", Call::FailedRetry),
            (
                Method::GET,
                "/_/crr/failed/bkt/a/b%2Fc/v%2B1",
                Call::FailedGet {
                    bucket: s("bkt"),
                    key: s("a/b/c"),
                    version_id: s("v+1"),
                },
            ),
        ];
        for (method, path, want) in cases {
            assert_eq!(route(method.clone(), path), Ok(want), "{method} {path}");
        }
    }

    #[test]
    fn unknown_paths_are_404_and_other_methods_405() {
        assert_eq!(
            route(Method::GET, "/nope"),
            Err(Reject::NotFound(s("no route /nope")))
        );
        assert_eq!(
            route(Method::GET, "/_/metrics/crr/a/b/c"),
            Err(Reject::NotFound(s(METRICS_HINT)))
        );
        assert!(matches!(
            route(Method::GET, "/_/crr/nope/x/y/z"),
            Err(Reject::NotFound(_))
        ));
        assert_eq!(
            route(Method::POST, "/_/live"),
            Err(Reject::MethodNotAllowed(vec![Method::GET]))
        );
        assert_eq!(
            route(Method::GET, "/_/crr/pause/site-b"),
            Err(Reject::MethodNotAllowed(vec![Method::POST]))
        );
        assert_eq!(
            route(Method::PUT, "/_/crr/failed"),
            Err(Reject::MethodNotAllowed(vec![Method::GET, Method::POST]))
        );
        assert_eq!(
            route(Method::DELETE, "/_/crr/failed/b/k/v"),
            Err(Reject::MethodNotAllowed(vec![Method::GET]))
        );
    }

    #[test]
    fn missing_parts_are_400_saying_what_to_name() {
        for path in [
            "/_/metrics/crr/site-a/progress",
            "/_/metrics/crr/site-a/progress/",
            "/_/metrics/crr/site-a/progress/bkt/",
            "/_/metrics/crr/site-a/progress//big",
        ] {
            assert_eq!(
                route(Method::GET, path),
                Err(Reject::BadRequest(s(PROGRESS_HINT))),
                "{path}"
            );
        }
        for path in ["/_/crr/failed/bkt", "/_/crr/failed/bkt/vid"] {
            assert_eq!(
                route(Method::GET, path),
                Err(Reject::BadRequest(s(FAILED_HINT))),
                "{path}"
            );
        }
    }

    #[test]
    fn queries_are_read_into_types() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Q {
            site: Option<String>,
            #[serde(rename = "versionId")]
            version_id: Option<String>,
        }
        let q: Q = query(Some("site=a%20b&versionId=x+y/z&other=1")).unwrap();
        assert_eq!(q.site.as_deref(), Some("a b"));
        assert_eq!(q.version_id.as_deref(), Some("x+y/z"));
        let q: Q = query(None).unwrap();
        assert_eq!(q.site, None);
        assert!(matches!(
            query::<Q>(Some("site=a&site=b")),
            Err(e) if e.contains("site")
        ));
    }
}
