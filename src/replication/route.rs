//! Where versions go: a source bucket and a destination bucket with their clients, and what
//! the destination already holds of a key (the idempotence and ordering checks that make a
//! replayed, repeated or retried entry harmless).

use super::{ReplicationError, Stage, Version, META_SOURCE_VERSION};
use crate::s3::ops::head_object::{HeadObjectError, HeadObjectRequest};
use crate::s3::ops::list_object_versions::{
    sort_newest_first, ListObjectVersionsError, ListObjectVersionsRequest, ListedVersion,
};
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
}

impl<S: ObjectStore> Route<S> {
    /// Whether the destination already reflects `v`: one HEAD for a version, the key's
    /// history for a delete marker (which carries no metadata).
    pub async fn is_applied(&self, v: &Version) -> Result<bool, ReplicationError> {
        if v.delete_marker {
            self.version_applied(v).await
        } else {
            self.already_at_destination(v).await
        }
    }

    /// True when the destination's current object came from source version `v`.
    pub async fn already_at_destination(&self, v: &Version) -> Result<bool, ReplicationError> {
        match self.head_dest(&v.key, None).await {
            Ok(h) => Ok(h.user_meta(META_SOURCE_VERSION) == Some(v.version_id.as_str())),
            Err(HeadObjectError::NotFound) => Ok(false),
            Err(HeadObjectError::DeleteMarker { .. }) => Ok(false),
            Err(e) => Err(ReplicationError::op(Stage::CheckDestination, e)),
        }
    }

    /// How many of a key's versions (oldest first) the destination already holds, found with
    /// one HEAD (plus a listing when the destination's latest is a delete marker).
    pub async fn applied_prefix(
        &self,
        key: &str,
        versions: &[Version],
    ) -> Result<usize, ReplicationError> {
        match self.head_dest(key, None).await {
            Ok(h) => Ok(position(versions, h.user_meta(META_SOURCE_VERSION))
                .map(|p| p + 1)
                .unwrap_or(0)),
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
    /// markers, then count the source's markers that follow that version.
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
                match position(versions, h.user_meta(META_SOURCE_VERSION)) {
                    Some(p) => p + 1,
                    None => return Ok(0),
                }
            }
            None => 0,
        };
        while markers > 0 && applied < versions.len() && versions[applied].delete_marker {
            applied += 1;
            markers -= 1;
        }
        Ok(applied)
    }

    /// Whether the destination already reflects source version `v` (or a later one), judged
    /// from the key's whole history: used for delete markers, which carry no metadata.
    pub async fn version_applied(&self, v: &Version) -> Result<bool, ReplicationError> {
        let mut entries = list_key(&self.source, &self.source_bucket, &v.key)
            .await
            .map_err(|e| ReplicationError::op(Stage::HeadSource, e))?;
        sort_newest_first(&mut entries);
        entries.reverse();
        let versions: Vec<Version> = entries.into_iter().map(Version::from).collect();
        let Some(i) = versions.iter().position(|x| x.version_id == v.version_id) else {
            return Ok(false);
        };
        Ok(i < self.applied_prefix(&v.key, &versions).await?)
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

/// The position (oldest first) of the newest real version with source version id `sid`.
fn position(versions: &[Version], sid: Option<&str>) -> Option<usize> {
    let sid = sid?;
    versions
        .iter()
        .rposition(|v| !v.delete_marker && v.version_id == sid)
}

impl From<ListedVersion> for Version {
    fn from(l: ListedVersion) -> Self {
        Version {
            key: l.key,
            version_id: l.version_id,
            delete_marker: l.delete_marker,
            size: l.size,
            etag: l.etag,
        }
    }
}

/// Every listed entry of exactly `key` (versions and delete markers), in listing order.
pub async fn list_key(
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
