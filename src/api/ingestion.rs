//! `/_/ingestion/...` (Backbeat's paths): each ingested bucket's state and pass figures, and
//! pause or resume per bucket (`all`: every ingested bucket), through the control topic's
//! `ingestion/BUCKET` keys.

use std::time::Duration;

use http::StatusCode;

use super::model::{Done, Ingestion, IngestionBucket};
use super::{answer, ApiState, Local, Refusal, Reply};
use crate::queue::control::{self, SiteControl};

/// How long a pause or resume waits for the control topic before answering 503.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// The ingested buckets `bucket` names (`all`: every one known), or 404.
fn named(state: &ApiState, bucket: &str) -> Result<Vec<String>, Refusal> {
    let v = &state.buckets;
    let all: Vec<String> = (v.known.list().into_iter())
        .filter(|b| v.ingest.matches(b))
        .filter(|b| bucket == "all" || b == bucket)
        .collect();
    if all.is_empty() && bucket != "all" {
        let m = format!(
            "no ingested bucket {bucket} (source.ingest_buckets: {})",
            v.ingest.text()
        );
        return Err(Refusal::new(StatusCode::NOT_FOUND, m));
    }
    Ok(all)
}

fn paused(local: &Local, bucket: &str) -> bool {
    let key = control::ingestion_key(bucket);
    let c = local.ingestion.as_ref();
    c.is_some_and(|c| c.borrow().get(&key).is_some_and(|s| s.paused_now()))
}

/// `GET /_/ingestion/status[/{bucket}]`.
pub(super) fn status(state: &ApiState, local: &Local, bucket: &str) -> Reply {
    let r = named(state, bucket).map(|names| {
        let figures = state.buckets.ingest_stats.snapshot();
        let buckets = names.into_iter().map(|b| {
            let control = if paused(local, &b) {
                "disabled"
            } else {
                "enabled"
            };
            let pass = figures.get(&b).cloned();
            (
                b,
                IngestionBucket {
                    control: control.into(),
                    pass,
                },
            )
        });
        Ingestion {
            buckets: buckets.collect(),
            leader: state.buckets.ingest_stats.is_leader(),
        }
    });
    answer(r)
}

/// `POST /_/ingestion/pause/{bucket}` and `POST /_/ingestion/resume/{bucket}`.
pub(super) async fn pause(state: &ApiState, local: &Local, bucket: &str, pause: bool) -> Reply {
    answer(set(state, local, bucket, pause).await.map(|()| Done {}))
}

async fn set(state: &ApiState, local: &Local, bucket: &str, pause: bool) -> Result<(), Refusal> {
    let unavailable = |m: String| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, m);
    let p = local
        .producer
        .as_ref()
        .ok_or_else(|| unavailable("no Kafka producer".into()))?;
    let next = SiteControl {
        paused: pause,
        scheduled_resume: None,
    };
    for b in named(state, bucket)? {
        let key = control::ingestion_key(&b);
        let publish = async { Some(control::publish(p, &local.control_topic, &key, &next).await) };
        let limit = async {
            glommio::timer::sleep(WRITE_TIMEOUT).await;
            None
        };
        match futures_lite::future::or(publish, limit).await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(unavailable(e.to_string())),
            None => {
                return Err(unavailable(format!(
                    "the control topic {} did not acknowledge the change within {} s: check the brokers (GET /_/healthcheck) and try again",
                    local.control_topic,
                    WRITE_TIMEOUT.as_secs()
                )))
            }
        }
        if let Some(c) = &local.ingestion {
            c.borrow_mut().insert(key, next.clone());
        }
    }
    Ok(())
}
