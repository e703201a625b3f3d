//! Failed entries, from the compacted failed topic (decoded once as they arrive, indexed
//! by topic key): listed (100 a page, from a marker), one object's, and retried (queued
//! again to the replication topic, at most a page per request).

use std::collections::BTreeMap;
use std::ops::Bound;

use http::StatusCode;
use serde::Deserialize;

use super::model::{FailedItem, FailedPage, RetryRequest};
use super::router::query;
use super::{answer, Local, Refusal, Reply};
use crate::queue::codec::FailedRecord;

/// A page's length.
const PAGE: usize = 100;

/// Entries one retry request may name (its body stays far below the API's limit).
const MAX_RETRY: usize = PAGE;

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

/// A failed entry as the API keeps it: the failed topic's records of kind `failed` (parked
/// changes and malformed messages are on the topic for people and tools, not retried here).
pub(super) fn decode(v: &[u8]) -> Option<Record> {
    serde_json::from_slice::<Record>(v)
        .ok()
        .filter(|r| r.kind == "failed")
}

/// The index of failed entries; `Err` is the answer when the topic is not followed.
fn records(local: &Local) -> Result<std::cell::Ref<'_, BTreeMap<String, Record>>, Refusal> {
    let Some(failed) = &local.failed else {
        let e = "the failed topic cannot be read";
        return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, e));
    };
    Ok(failed.borrow())
}

#[derive(Deserialize)]
struct ListQuery {
    /// `sitename` as Backbeat names it.
    #[serde(alias = "sitename")]
    site: Option<String>,
    marker: Option<String>,
}

/// `GET /_/crr/failed[?site=&marker=]` (`sitename=` as Backbeat says it).
pub(super) fn list(local: &Local, q: Option<&str>) -> Reply {
    answer(page(local, q))
}

fn page(local: &Local, q: Option<&str>) -> Result<FailedPage, Refusal> {
    let q: ListQuery = query(q).map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e))?;
    let records = records(local)?;
    let after = match q.marker {
        Some(m) => Bound::Excluded(m),
        None => Bound::Unbounded,
    };
    let mut page: Vec<(&String, &Record)> = records
        .range((after, Bound::Unbounded))
        .filter(|(_, r)| q.site.as_deref().is_none_or(|s| r.site == s))
        .take(PAGE + 1)
        .collect();
    let truncated = page.len() > PAGE;
    page.truncate(PAGE);
    Ok(FailedPage {
        is_truncated: truncated,
        next_marker: page.last().filter(|_| truncated).map(|(k, _)| (*k).clone()),
        versions: page.iter().map(|(_, r)| r.item()).collect(),
    })
}

/// `GET /_/crr/failed/{bucket}/{key}/{versionId}`: the version's failures, at every site.
pub(super) fn get(local: &Local, bucket: &str, key: &str, version_id: &str) -> Reply {
    let versions = records(local).map(|records| {
        let prefix = format!("{bucket}/{key}/{version_id}/");
        records
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
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
    if wanted.len() > MAX_RETRY {
        let e = format!("at most {MAX_RETRY} entries a request (a page of the list is {PAGE})");
        return Err(Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, e));
    }
    let Some(p) = &local.producer else {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no Kafka producer",
        ));
    };
    let found: Vec<Record> = {
        let records = records(local)?;
        let key = |w: &RetryRequest| {
            let (b, k, v, s) = (&w.bucket, &w.key, &w.version_id, &w.storage_class);
            format!("{b}/{k}/{v}/{s}")
        };
        wanted
            .iter()
            .filter_map(|w| records.get(&key(w)).cloned())
            .collect()
    };
    // Sent all at once: the producer keeps them in order per partition.
    let sends = found.iter().map(|record| {
        let mut entry = record.entry.for_site(&record.site);
        entry.attempt += 1;
        // A person asked: a fresh start, with its own patience.
        entry.replay = None;
        let topic = &local.replication_topic;
        async move {
            let (k, v) = (entry.kafka_key(), entry.encode());
            crate::queue::kafka::send(p, topic, &k, Some(&v)).await
        }
    });
    for sent in futures_util::future::join_all(sends).await {
        sent.map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    }
    let pending = |r: &Record| {
        let mut item = r.item();
        item.status = Some("PENDING".into());
        item
    };
    Ok(found.iter().map(pending).collect())
}
