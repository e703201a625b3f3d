//! Failed entries, from the compacted failed topic: listed (100 a page, with a marker),
//! one object's, and retried (queued again to the replication topic).

use http::StatusCode;
use serde::Deserialize;

use super::model::{FailedItem, FailedPage, RetryRequest};
use super::router::query;
use super::{answer, Local, Refusal, Reply};
use crate::queue::codec::FailedRecord;

/// A page's length.
const PAGE: usize = 100;

/// A record of the failed topic, as the site worker writes it.
type Record = FailedRecord;

/// A failed record as the API lists it.
trait AsItem {
    fn item(&self) -> FailedItem;
}

impl AsItem for Record {
    fn item(&self) -> FailedItem {
        FailedItem {
            bucket: self.entry.bucket.clone(),
            error: self.error.clone(),
            failed_at: self.at.clone(),
            key: self.entry.key.clone(),
            last_modified: self.entry.last_modified.clone(),
            size: self.entry.size,
            status: None,
            storage_class: self.site.clone(),
            version_id: self.entry.version_id.clone(),
        }
    }
}

/// The failed entries by topic key (`bucket/key/versionId/site`), in key order; `Err` is
/// the answer when the topic is not followed.
fn records(local: &Local) -> Result<Vec<(String, Record)>, Refusal> {
    let Some(failed) = &local.failed else {
        let e = "the failed topic cannot be read";
        return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, e));
    };
    let records = failed
        .borrow()
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), serde_json::from_slice::<Record>(v).ok()?)))
        .filter(|(_, r)| r.kind == "failed")
        .collect();
    Ok(records)
}

#[derive(Deserialize)]
struct ListQuery {
    site: Option<String>,
    marker: Option<String>,
}

/// `GET /_/crr/failed[?site=&marker=]`.
pub(super) fn list(local: &Local, q: Option<&str>) -> Reply {
    answer(page(local, q))
}

fn page(local: &Local, q: Option<&str>) -> Result<FailedPage, Refusal> {
    let q: ListQuery = query(q).map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e))?;
    let records = records(local)?;
    let mut page: Vec<&(String, Record)> = records
        .iter()
        .filter(|(_, r)| q.site.as_deref().is_none_or(|s| r.site == s))
        .filter(|(k, _)| q.marker.as_deref().is_none_or(|m| k.as_str() > m))
        .collect();
    let truncated = page.len() > PAGE;
    page.truncate(PAGE);
    Ok(FailedPage {
        is_truncated: truncated,
        next_marker: page.last().filter(|_| truncated).map(|(k, _)| k.clone()),
        versions: page.iter().map(|(_, r)| r.item()).collect(),
    })
}

/// `GET /_/crr/failed/{bucket}/{key}/{versionId}`: the version's failures, at every site.
pub(super) fn get(local: &Local, bucket: &str, key: &str, version_id: &str) -> Reply {
    let versions = records(local).map(|records| {
        records
            .iter()
            .filter(|(_, r)| {
                r.entry.bucket == bucket && r.entry.key == key && r.entry.version_id == version_id
            })
            .map(|(_, r)| r.item())
            .collect()
    });
    answer(versions.map(|versions| FailedPage {
        is_truncated: false,
        next_marker: None,
        versions,
    }))
}

/// `POST /_/crr/failed` with a list of `{Bucket, Key, VersionId, StorageClass}`: queues each
/// listed failed entry again for its site; answers those queued, `Status` `PENDING`.
pub(super) async fn retry(local: &Local, body: &[u8]) -> Reply {
    answer(requeue(local, body).await)
}

async fn requeue(local: &Local, body: &[u8]) -> Result<Vec<FailedItem>, Refusal> {
    let wanted = serde_json::from_slice::<Vec<RetryRequest>>(body).map_err(|_| {
        let e = "expected a JSON list of {Bucket, Key, VersionId, StorageClass}";
        Refusal::new(StatusCode::BAD_REQUEST, e)
    })?;
    let records = records(local)?;
    let Some(p) = &local.producer else {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no Kafka producer",
        ));
    };
    let mut retried = Vec::new();
    for w in wanted {
        let key = format!(
            "{}/{}/{}/{}",
            w.bucket, w.key, w.version_id, w.storage_class
        );
        let Some((_, record)) = records.iter().find(|(k, _)| *k == key) else {
            continue;
        };
        let mut entry = record.entry.clone();
        entry.sites = vec![record.site.clone()];
        entry.attempt += 1;
        // A person asked: a fresh start, with its own patience.
        entry.replay = None;
        let topic = &local.replication_topic;
        crate::queue::kafka::send(p, topic, &entry.kafka_key(), Some(&entry.encode()))
            .await
            .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        let mut item = record.item();
        item.status = Some("PENDING".into());
        retried.push(item);
    }
    Ok(retried)
}
