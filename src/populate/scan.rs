//! Bucket scan: ListObjectVersions page by page, grouped by key, each key's versions and
//! delete markers oldest first (the reverse of the listing's order, which is reliable even
//! where timestamps have one-second resolution). Servers without ListObjectVersions are
//! listed with ListObjectsV2 (current objects, as unversioned).

use std::future::Future;

use crate::replication::Version;
use crate::s3::ops::list_object_versions::{
    sort_newest_first, ListObjectVersionsError, ListObjectVersionsRequest, ListedVersion,
};
use crate::s3::ops::list_objects_v2::ListObjectsV2Request;
use crate::s3::Client;
use crate::shard::Shutdown;

/// All versions of one key, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersions {
    pub key: String,
    pub versions: Vec<Version>,
}

pub(super) fn to_version(l: ListedVersion) -> Version {
    Version {
        key: l.key,
        version_id: l.version_id,
        delete_marker: l.delete_marker,
        size: l.size,
        order: crate::replication::SourceOrder::of_version(Some(&l.last_modified), None, &l.etag),
        etag: l.etag,
    }
}

/// A key whose listed entries (newest first) may continue on the next page.
pub type Pending = Option<(String, Vec<ListedVersion>)>;

/// Orders one key's entries oldest first (see [`sort_newest_first`]).
fn finish(key: String, mut entries: Vec<ListedVersion>) -> KeyVersions {
    sort_newest_first(&mut entries);
    entries.reverse();
    KeyVersions {
        key,
        versions: entries.into_iter().map(to_version).collect(),
    }
}

/// Groups one page's entries by key into `out`, oldest first; the page's last key stays in
/// `pending`, since its versions may continue on the next page.
pub fn group(pending: &mut Pending, mut entries: Vec<ListedVersion>, out: &mut Vec<KeyVersions>) {
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    for l in entries {
        match pending {
            Some((k, list)) if *k == l.key => list.push(l),
            _ => {
                if let Some((k, list)) = pending.take() {
                    out.push(finish(k, list));
                }
                *pending = Some((l.key.clone(), vec![l]));
            }
        }
    }
}

/// Flushes the last pending key.
pub fn flush(pending: &mut Pending) -> Option<KeyVersions> {
    pending.take().map(|(k, list)| finish(k, list))
}

/// Scans `bucket` under `prefix`, calling `emit` for each key once all its versions are
/// known. Stops early when `emit` returns false or on shutdown. A server without
/// ListObjectVersions is listed with ListObjectsV2: each current object as version `null`.
pub async fn scan<F, Fut>(
    client: &Client,
    bucket: &str,
    prefix: Option<&str>,
    shutdown: &Shutdown,
    mut emit: F,
) -> Result<(), ListObjectVersionsError>
where
    F: FnMut(KeyVersions) -> Fut,
    Fut: Future<Output = bool>,
{
    match scan_versions(client, bucket, prefix, shutdown, &mut emit).await {
        Err(e) if e.code() == "NotImplemented" => {
            tracing::info!(
                bucket,
                "the source does not implement ListObjectVersions: listing its current objects \
                 with ListObjectsV2, replicated as unversioned"
            );
            scan_objects(client, bucket, prefix, shutdown, &mut emit).await
        }
        other => other,
    }
}

/// [`scan`] with ListObjectsV2: one version (`null`) per key.
async fn scan_objects<F, Fut>(
    client: &Client,
    bucket: &str,
    prefix: Option<&str>,
    shutdown: &Shutdown,
    emit: &mut F,
) -> Result<(), ListObjectVersionsError>
where
    F: FnMut(KeyVersions) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut token: Option<String> = None;
    loop {
        if shutdown.is_set() {
            return Ok(());
        }
        let r = ListObjectsV2Request {
            prefix,
            continuation_token: token.as_deref(),
            start_after: None,
            max_keys: Some(1000),
        };
        let page = client.list_objects_v2(bucket, r).await?;
        for o in page.objects {
            let kv = KeyVersions {
                key: o.key.clone(),
                versions: vec![to_version(o)],
            };
            if !emit(kv).await {
                return Ok(());
            }
        }
        match page.next_continuation_token {
            Some(t) if page.is_truncated => token = Some(t),
            None if page.is_truncated => {
                return Err(crate::s3::RequestError::BadResponse(
                    "truncated ListObjectsV2 page without NextContinuationToken".into(),
                )
                .into())
            }
            _ => return Ok(()),
        }
    }
}

async fn scan_versions<F, Fut>(
    client: &Client,
    bucket: &str,
    prefix: Option<&str>,
    shutdown: &Shutdown,
    emit: &mut F,
) -> Result<(), ListObjectVersionsError>
where
    F: FnMut(KeyVersions) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut key_marker: Option<String> = None;
    let mut vid_marker: Option<String> = None;
    let mut pending: Pending = None;
    let mut ready = Vec::new();
    loop {
        if shutdown.is_set() {
            return Ok(());
        }
        let page = client
            .list_object_versions(
                bucket,
                ListObjectVersionsRequest {
                    prefix,
                    key_marker: key_marker.as_deref(),
                    version_id_marker: vid_marker.as_deref(),
                    max_keys: Some(1000),
                },
            )
            .await?;
        let truncated = page.is_truncated;
        let (nk, nv) = (
            page.next_key_marker.clone(),
            page.next_version_id_marker.clone(),
        );
        group(&mut pending, page.versions, &mut ready);
        for kv in ready.drain(..) {
            if !emit(kv).await {
                return Ok(());
            }
        }
        if !truncated {
            break;
        }
        if nk.is_none() && nv.is_none() {
            return Err(crate::s3::RequestError::BadResponse(
                "truncated ListObjectVersions page without NextKeyMarker".into(),
            )
            .into());
        }
        key_marker = nk;
        vid_marker = nv;
    }
    if let Some(last) = flush(&mut pending) {
        emit(last).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv(key: &str, vid: &str, dm: bool) -> ListedVersion {
        // version ids end with a digit giving their age order
        let t = vid.chars().last().unwrap();
        ListedVersion {
            key: key.into(),
            version_id: vid.into(),
            delete_marker: dm,
            last_modified: format!("2026-01-01T00:00:0{t}.000Z"),
            ..Default::default()
        }
    }

    #[test]
    fn delete_markers_listed_after_versions() {
        // moto's layout: all versions, then all delete markers
        let mut pending = None;
        let mut out = Vec::new();
        let entries = vec![
            lv("a", "a3", false),
            lv("a", "a1", false),
            lv("b", "b1", false),
            lv("a", "a4", true),
            lv("a", "a2", true),
        ];
        group(&mut pending, entries, &mut out);
        out.extend(flush(&mut pending));
        let ids: Vec<_> = out[0]
            .versions
            .iter()
            .map(|v| (v.version_id.as_str(), v.delete_marker))
            .collect();
        assert_eq!(
            ids,
            [("a1", false), ("a2", true), ("a3", false), ("a4", true)]
        );
        assert_eq!(out[1].key, "b");
    }

    #[test]
    fn same_second_keeps_listing_order_latest_last() {
        let mut pending = None;
        let mut out = Vec::new();
        let mut e = vec![
            lv("k", "x1", false),
            lv("k", "y1", false),
            lv("k", "z1", false),
        ];
        e[1].is_latest = true; // listed second but flagged latest
        group(&mut pending, e, &mut out);
        out.extend(flush(&mut pending));
        let ids: Vec<_> = out[0]
            .versions
            .iter()
            .map(|v| v.version_id.as_str())
            .collect();
        assert_eq!(ids, ["z1", "x1", "y1"]);
    }

    #[test]
    fn groups_across_pages_oldest_first() {
        let mut pending = None;
        let mut out = Vec::new();
        group(
            &mut pending,
            vec![
                lv("a", "a2", true),
                lv("a", "a1", false),
                lv("b", "b3", false),
            ],
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let ids: Vec<_> = out[0]
            .versions
            .iter()
            .map(|v| v.version_id.as_str())
            .collect();
        assert_eq!(ids, ["a1", "a2"]);
        // b continues on the next page
        group(
            &mut pending,
            vec![
                lv("b", "b2", false),
                lv("b", "b1", false),
                lv("c", "c1", false),
            ],
            &mut out,
        );
        assert_eq!(out.len(), 2);
        let ids: Vec<_> = out[1]
            .versions
            .iter()
            .map(|v| v.version_id.as_str())
            .collect();
        assert_eq!(ids, ["b1", "b2", "b3"]);
        assert_eq!(pending.as_ref().unwrap().0, "c");
    }
}
