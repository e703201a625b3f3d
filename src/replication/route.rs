//! Where versions go: a source bucket and a destination bucket with their clients, and what
//! the destination already reflects of a key: the decision, by the source's order, to write
//! a version or not ([`Route::decide`]), which makes a replayed, repeated, reordered or
//! retried entry harmless.

use std::cmp::Ordering;

use super::order::{Replica, SourceOrder};
use super::{ReplicationError, Stage, Version};
use crate::s3::ops::head_object::{HeadObjectError, HeadObjectRequest};
use crate::s3::ops::list_object_versions::{
    sort_newest_first, ListObjectVersionsError, ListObjectVersionsRequest, ListedVersion,
};
use crate::s3::ops::list_objects_v2::ListObjectsV2Request;
use crate::s3::store::ObjectStore;
use crate::s3::Client;

/// A source bucket and the destination bucket it replicates to (over real clients, or any
/// [`ObjectStore`] in tests).
#[derive(Clone)]
pub struct Route<S = Client> {
    pub source: S,
    pub source_bucket: String,
    pub dest: S,
    pub dest_bucket: String,
    /// Whether the destination keeps versions (decides how delete markers are checked).
    pub dest_versioned: bool,
    /// What the site's replicas carry beyond bytes and metadata.
    pub policy: std::sync::Arc<super::policy::ReplicaPolicy>,
}

/// What the destination's state means for a version about to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it: the destination reflects only earlier versions of the key (or none).
    Apply,
    /// The destination already holds it.
    Applied,
    /// Never to be written: the destination reflects a later version of the key, or the
    /// source no longer holds this one. The reason, for status records and logs.
    Superseded(&'static str),
}

/// The destination reflects a later version of the key.
pub const NEWER_AT_DESTINATION: &str = "a later version of the key is at the destination";
/// The source no longer holds the version (deleted by version id, or an undone delete).
pub const GONE_FROM_SOURCE: &str = "the source no longer holds this version";
/// The source version is itself a replica: not sent back (two-way replication).
pub const REPLICA_AT_SOURCE: &str =
    "the source version is itself a replica (two-way replication): not replicated back";

impl<S: ObjectStore> Route<S> {
    /// Whether to write `v`, decided by the source's order. The common case (the
    /// destination's current object is a replica whose recorded order compares with `v`'s)
    /// costs one HEAD; a tie, a delete marker at either end, or an unversioned destination
    /// without the key adds a listing of the key at the source (and, under destination
    /// delete markers, at the destination).
    pub async fn decide(&self, v: &Version) -> Result<Verdict, ReplicationError> {
        if v.delete_marker {
            // A marker carries no metadata: written only while the source still holds it and
            // the destination reflects nothing at or after it.
            return self.by_history(v).await;
        }
        match self.head_dest(&v.key, None).await {
            Ok(h) => match Replica::of(&h) {
                None => Ok(Verdict::Apply),
                Some(r) if r.is_of(v) => Ok(if r.intact {
                    Verdict::Applied
                } else {
                    Verdict::Apply
                }),
                Some(r) => self.against_replica(v, &r).await,
            },
            Err(HeadObjectError::NotFound) if self.dest_versioned || v.version_id == "null" => {
                Ok(Verdict::Apply)
            }
            Err(HeadObjectError::NotFound) | Err(HeadObjectError::DeleteMarker { .. }) => {
                self.by_history(v).await
            }
            Err(e) => Err(ReplicationError::op(Stage::CheckDestination, e)),
        }
    }

    /// `v` against the replica of another source version that is the destination's
    /// current object: their recorded order, else their places in the source's listing.
    async fn against_replica(&self, v: &Version, r: &Replica) -> Result<Verdict, ReplicationError> {
        match r.order.compare(&v.order) {
            Some(Ordering::Greater) => return Ok(Verdict::Superseded(NEWER_AT_DESTINATION)),
            Some(Ordering::Less) => return Ok(Verdict::Apply),
            _ => {}
        }
        if v.version_id == "null" {
            return self.against_current(&v.key, r).await;
        }
        let history = self.source_history(&v.key).await?;
        let Some(i) = history
            .iter()
            .position(|x| !x.delete_marker && x.version_id == v.version_id)
        else {
            return Ok(Verdict::Superseded(GONE_FROM_SOURCE));
        };
        let at_dest = history.iter().position(|x| !x.delete_marker && r.is_of(x));
        Ok(match at_dest {
            Some(j) if j > i => Verdict::Superseded(NEWER_AT_DESTINATION),
            Some(_) => Verdict::Apply,
            // The destination holds a version the source no longer lists: `v` goes there
            // only if nothing newer is at the source (whose own entry will bring it).
            None if history[i + 1..].iter().any(|x| !x.delete_marker) => {
                Verdict::Superseded(NEWER_AT_DESTINATION)
            }
            None => Verdict::Apply,
        })
    }

    /// An unversioned source holds one object per key, and a copy reads what it holds now:
    /// nothing to write when the destination already holds that object.
    async fn against_current(&self, key: &str, r: &Replica) -> Result<Verdict, ReplicationError> {
        let req = HeadObjectRequest::default();
        match self.source.head_object(&self.source_bucket, key, req).await {
            Ok(h) if r.is_of_etag(&h.etag) && r.intact => {
                Ok(Verdict::Superseded(NEWER_AT_DESTINATION))
            }
            Ok(_) => Ok(Verdict::Apply),
            Err(HeadObjectError::NotFound) | Err(HeadObjectError::DeleteMarker { .. }) => {
                Ok(Verdict::Superseded(GONE_FROM_SOURCE))
            }
            Err(e) => Err(ReplicationError::op(Stage::HeadSource, e)),
        }
    }

    /// `v` against the key's whole history: how much of it the destination reflects, and
    /// where `v` stands in it.
    async fn by_history(&self, v: &Version) -> Result<Verdict, ReplicationError> {
        let history = self.source_history(&v.key).await?;
        let Some(i) = history
            .iter()
            .position(|x| x.version_id == v.version_id && x.delete_marker == v.delete_marker)
        else {
            return Ok(Verdict::Superseded(GONE_FROM_SOURCE));
        };
        let reflected = self.applied_prefix(&v.key, &history).await?;
        Ok(if i + 1 == reflected {
            Verdict::Applied
        } else if i < reflected {
            Verdict::Superseded(NEWER_AT_DESTINATION)
        } else {
            Verdict::Apply
        })
    }

    /// The key's history at the source, oldest first.
    pub async fn source_history(&self, key: &str) -> Result<Vec<Version>, ReplicationError> {
        let mut entries = list_key(&self.source, &self.source_bucket, key)
            .await
            .map_err(|e| ReplicationError::op(Stage::HeadSource, e))?;
        sort_newest_first(&mut entries);
        entries.reverse();
        Ok(entries.into_iter().map(Version::from).collect())
    }

    /// How many of a key's versions (oldest first) the destination reflects: its current
    /// object's place in `versions` (one HEAD), or when that is a delete marker, its newest
    /// real version's place plus the markers above it (a listing of the destination).
    pub async fn applied_prefix(
        &self,
        key: &str,
        versions: &[Version],
    ) -> Result<usize, ReplicationError> {
        match self.head_dest(key, None).await {
            Ok(h) => Ok(Replica::of(&h).map_or(0, |r| place(versions, &r))),
            Err(HeadObjectError::NotFound) => {
                // On an unversioned destination a replicated delete removes the object.
                let ends_deleted = versions.last().map(|v| v.delete_marker).unwrap_or(false);
                Ok(if !self.dest_versioned && ends_deleted {
                    versions.len()
                } else {
                    0
                })
            }
            Err(HeadObjectError::DeleteMarker { .. }) => {
                self.applied_under_markers(key, versions).await
            }
            Err(e) => Err(ReplicationError::op(Stage::CheckDestination, e)),
        }
    }

    /// The destination's latest is a delete marker: find its newest real version under the
    /// markers, then walk the source's history after that version, one source marker for
    /// each destination marker (versions in between were superseded).
    async fn applied_under_markers(
        &self,
        key: &str,
        versions: &[Version],
    ) -> Result<usize, ReplicationError> {
        let mut entries = list_key(&self.dest, &self.dest_bucket, key)
            .await
            .map_err(|e| ReplicationError::op(Stage::CheckDestination, e))?;
        sort_newest_first(&mut entries);
        let markers_then_real = entries.iter().position(|lv| !lv.delete_marker);
        let mut markers = markers_then_real.unwrap_or(entries.len());
        let mut applied = match markers_then_real {
            Some(i) => {
                let h = self
                    .head_dest(key, Some(&entries[i].version_id))
                    .await
                    .map_err(|e| ReplicationError::op(Stage::CheckDestination, e))?;
                Replica::of(&h).map_or(0, |r| place(versions, &r))
            }
            None => 0,
        };
        let mut j = applied;
        while markers > 0 && j < versions.len() {
            if versions[j].delete_marker {
                markers -= 1;
                applied = j + 1;
            }
            j += 1;
        }
        Ok(applied)
    }

    /// Whether the destination holds an intact replica of `v` itself (any of the key's
    /// versions there), not merely something later: one listing of the key, then a HEAD per
    /// version until one is `v`'s replica.
    pub async fn holds_version(&self, v: &Version) -> Result<bool, ReplicationError> {
        let entries = list_key(&self.dest, &self.dest_bucket, &v.key)
            .await
            .map_err(|e| ReplicationError::op(Stage::CheckDestination, e))?;
        for lv in entries.iter().filter(|lv| !lv.delete_marker) {
            match self.head_dest(&v.key, Some(&lv.version_id)).await {
                Ok(h) if Replica::of(&h).is_some_and(|r| r.is_of(v) && r.intact) => {
                    return Ok(true)
                }
                Ok(_) | Err(HeadObjectError::NotFound) => {}
                Err(e) => return Err(ReplicationError::op(Stage::CheckDestination, e)),
            }
        }
        Ok(false)
    }

    async fn head_dest(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<crate::s3::ops::ObjectHead, HeadObjectError> {
        let req = HeadObjectRequest {
            version_id,
            ..Default::default()
        };
        self.dest.head_object(&self.dest_bucket, key, req).await
    }
}

/// How many of `versions` (oldest first) replica `r` reflects: up to and including the
/// version it replicates (excluded when its bytes are corrupt, so it is copied again), or,
/// when the source no longer lists that version, the versions its recorded order says are
/// older.
fn place(versions: &[Version], r: &Replica) -> usize {
    let found = versions
        .iter()
        .rposition(|v| !v.delete_marker && r.is_of(v));
    match found {
        Some(p) if r.intact => p + 1,
        Some(p) => p,
        None => versions
            .iter()
            .take_while(|v| v.order.compare(&r.order) == Some(Ordering::Less))
            .count(),
    }
}

impl From<ListedVersion> for Version {
    fn from(l: ListedVersion) -> Self {
        Version {
            key: l.key,
            version_id: l.version_id,
            delete_marker: l.delete_marker,
            size: l.size,
            order: SourceOrder::of_version(Some(&l.last_modified), None, &l.etag),
            etag: l.etag,
        }
    }
}

/// Every listed entry of exactly `key` (versions and delete markers), in listing order. A
/// server without ListObjectVersions lists the current object only, as version `null`.
pub async fn list_key(
    client: &impl ObjectStore,
    bucket: &str,
    key: &str,
) -> Result<Vec<ListedVersion>, ListObjectVersionsError> {
    match list_key_versions(client, bucket, key).await {
        Err(e) if e.code() == "NotImplemented" => {}
        other => return other,
    }
    let r = ListObjectsV2Request {
        prefix: Some(key),
        max_keys: Some(1),
        ..Default::default()
    };
    let page = client.list_objects_v2(bucket, r).await?;
    Ok(page.objects.into_iter().filter(|o| o.key == key).collect())
}

async fn list_key_versions(
    client: &impl ObjectStore,
    bucket: &str,
    key: &str,
) -> Result<Vec<ListedVersion>, ListObjectVersionsError> {
    let mut entries = Vec::new();
    let mut key_marker: Option<String> = None;
    let mut vid_marker: Option<String> = None;
    loop {
        let page = client
            .list_object_versions(
                bucket,
                ListObjectVersionsRequest {
                    prefix: Some(key),
                    key_marker: key_marker.as_deref(),
                    version_id_marker: vid_marker.as_deref(),
                    max_keys: Some(1000),
                },
            )
            .await?;
        let past = page.versions.iter().any(|lv| lv.key.as_str() > key);
        entries.extend(page.versions.into_iter().filter(|lv| lv.key == key));
        if !page.is_truncated || past {
            return Ok(entries);
        }
        key_marker = page.next_key_marker;
        vid_marker = page.next_version_id_marker;
    }
}
