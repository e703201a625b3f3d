//! `GET /_/metrics/crr/{site}/progress/{bucket}/{key}?versionId=`: the version's transfer
//! when it is in flight or recently finished on this node, else what the source and the
//! destination hold (COMPLETED when the destination has it, PENDING otherwise; FAILED when
//! the failed topic lists it).

use http::StatusCode;
use serde::Deserialize;

use super::model::{ErrorBody, Progress, ProgressState};
use super::router::query;
use super::{answer, ApiState, Local, Refusal, Reply, SiteRoute};
use crate::metrics::objects::ObjectProgress;
use crate::s3::ops::head_object::{HeadObjectError, HeadObjectRequest};
use crate::s3::Client;

#[derive(Deserialize)]
struct ProgressQuery {
    #[serde(rename = "versionId")]
    version_id: Option<String>,
}

/// What the source says a version is: its size, and whether it is a delete marker.
type Head = (u64, bool);

/// The version meant (the source's latest without a version id), and its head when asked.
async fn version(
    source: &Client,
    bucket: &str,
    key: &str,
    version_id: Option<String>,
) -> Result<(String, Option<Head>), Refusal> {
    if let Some(v) = version_id.filter(|v| !v.is_empty()) {
        return Ok((v, None));
    }
    match source.head_object(bucket, key, Default::default()).await {
        Ok(h) => Ok((
            h.version_id.clone().unwrap_or_else(|| "null".into()),
            Some((h.content_length, false)),
        )),
        Err(HeadObjectError::DeleteMarker {
            version_id: Some(v),
        }) => Ok((v, Some((0, true)))),
        Err(e) => Err(source_error(bucket, key, &e)),
    }
}

/// The source's head of version `vid`.
async fn head(source: &Client, bucket: &str, key: &str, vid: &str) -> Result<Head, Refusal> {
    let req = HeadObjectRequest {
        version_id: (vid != "null").then_some(vid),
        ..Default::default()
    };
    match source.head_object(bucket, key, req).await {
        Ok(h) => Ok((h.content_length, false)),
        Err(HeadObjectError::DeleteMarker { .. }) => Ok((0, true)),
        Err(e) => Err(source_error(bucket, key, &e)),
    }
}

/// Whether the failed topic lists the version for `site`.
fn listed_failed(local: &Local, site: &str, bucket: &str, key: &str, vid: &str) -> bool {
    let wanted = format!("{bucket}/{key}/{vid}/{site}");
    local
        .failed
        .as_ref()
        .is_some_and(|f| f.borrow().contains_key(&wanted))
}

pub(super) async fn progress(
    state: &ApiState,
    local: &Local,
    site: &str,
    bucket: &str,
    key: &str,
    q: Option<&str>,
) -> Reply {
    answer(find(state, local, site, bucket, key, q).await)
}

async fn find(
    state: &ApiState,
    local: &Local,
    site: &str,
    bucket: &str,
    key: &str,
    q: Option<&str>,
) -> Result<Progress, Refusal> {
    let (Some(stats), Some(route)) = (state.sites.get(site), state.routes.get(site)) else {
        let sites: Vec<&String> = state.sites.keys().collect();
        let e = format!("no site {site}: sites are {sites:?}");
        return Err(Refusal::new(StatusCode::NOT_FOUND, e));
    };
    let q: ProgressQuery = query(q).map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e))?;
    let source = Client::new(route.source.clone(), None);
    let (vid, known_head) = version(&source, bucket, key, q.version_id).await?;
    let id = (bucket.to_string(), key.to_string(), vid.clone());
    let known = stats.objects.lock().expect("object tracker").progress(&id);
    match known {
        Some(ObjectProgress::InFlight { size, done }) => {
            return Ok(Progress::new(ProgressState::InProgress, size, done, &vid))
        }
        Some(ObjectProgress::Finished(f)) if f.completed => {
            return Ok(Progress::new(
                ProgressState::Completed,
                f.size,
                f.size,
                &vid,
            ))
        }
        _ => {}
    }
    let failed = listed_failed(local, site, bucket, key, &vid);
    let h = match known_head {
        Some(h) => h,
        None => head(&source, bucket, key, &vid).await?,
    };
    let size = h.0;
    match at_destination(route, source, bucket, key, &vid, h).await {
        Ok(true) => Ok(Progress::new(ProgressState::Completed, size, size, &vid)),
        Ok(false) if failed => Ok(Progress::new(ProgressState::Failed, size, 0, &vid)),
        Ok(false) => Ok(Progress::new(ProgressState::Pending, size, 0, &vid)),
        Err(e) => Err(Refusal::new(
            StatusCode::BAD_GATEWAY,
            format!("cannot check the destination of {site}: {e}"),
        )),
    }
}

/// Whether the site's destination holds the version.
async fn at_destination(
    route: &SiteRoute,
    source: Client,
    bucket: &str,
    key: &str,
    vid: &str,
    (size, delete_marker): Head,
) -> Result<bool, impl std::fmt::Display> {
    let dest_bucket = route.buckets.dest(bucket);
    let route = crate::replication::Route {
        source,
        source_bucket: bucket.to_string(),
        dest: Client::new(route.dest.clone(), None),
        dest_bucket,
        dest_versioned: route.dest_versioned,
        policy: Default::default(),
    };
    let v = crate::replication::Version {
        key: key.to_string(),
        version_id: vid.to_string(),
        delete_marker,
        size,
        etag: String::new(),
        order: Default::default(),
    };
    let verdict = route.decide(&v).await;
    verdict.map(|v| v != crate::replication::Verdict::Apply)
}

fn source_error(bucket: &str, key: &str, e: &HeadObjectError) -> Refusal {
    let status = if matches!(e.code(), "NoSuchKey" | "NoSuchVersion" | "NotFound") {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::BAD_GATEWAY
    };
    Refusal {
        status,
        body: ErrorBody {
            code: Some(e.code().to_string()),
            error: format!("source {bucket}/{key}: {e}"),
        },
    }
}
