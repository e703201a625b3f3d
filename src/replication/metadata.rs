//! Metadata-only updates: a version's tags, ACL, retention or legal hold changed at the
//! source, and its replica follows without its bytes being read or written again.
//!
//! An update never carries a value: it reads what the source version has now and writes
//! that to the replica when the replica differs. So an update that arrives twice, late or
//! out of order writes nothing stale, and one whose replica is not there yet writes nothing
//! (the copy, when it comes, reads the same current state).
//!
//! Owns: finding the replica of a source version, and the comparison and writes. May call:
//! `s3` (through [`ObjectStore`]), `order` (what a replica records), `time` (dates compared).

use super::order::Replica;
use super::policy::Acl;
use super::{
    source_version_id, ErrorKind, Outcome, ReplicationError, Route, Stage, Version,
    GONE_FROM_SOURCE, META_SOURCE_VERSION, REPLICA_AT_SOURCE,
};
use crate::s3::ops::acl::ObjectAcl;
use crate::s3::ops::head_object::{HeadObjectError, HeadObjectRequest};
use crate::s3::ops::{ObjectHead, ObjectLock};
use crate::s3::store::{MetadataWrite, ObjectStore};

pub use crate::s3::ops::MetadataField;

/// Versions of a key looked through for the replica of a source version, at most.
const MAX_VERSIONS_SEARCHED: usize = 1000;

/// The replica of a source version: the destination's version id and its HEAD.
pub struct Found {
    pub version_id: Option<String>,
    pub head: ObjectHead,
}

/// Brings the replica of `v` in line with the source's current `fields`. `Skipped` when
/// nothing differed, `Superseded` when there is nothing to update (the source version is
/// gone, is itself a replica, or its replica is not at the destination).
pub async fn update<S: ObjectStore>(
    route: &Route<S>,
    v: &Version,
    fields: &[MetadataField],
    replicate_replicas: bool,
) -> Result<Outcome, ReplicationError> {
    let (replica, writes) = match plan(route, v, fields, replicate_replicas).await? {
        Ok(p) => p,
        Err(why) => return Ok(Outcome::Superseded(why)),
    };
    for w in &writes {
        let dest_vid = replica.version_id.as_deref();
        let put = route
            .dest
            .put_object_metadata(&route.dest_bucket, &v.key, dest_vid, w);
        put.await.map_err(|e| {
            let mut e = ReplicationError::op(Stage::PutDestination, e);
            e.message = format!("{}: {}", w.operation(), e.message);
            e
        })?;
    }
    Ok(match writes.len() {
        0 => Outcome::Skipped,
        n => Outcome::MetadataUpdated { writes: n as u32 },
    })
}

/// What of the replica of `v` differs from the source (its tags, and its ACL when the site
/// copies it), for a scan: nothing when the replica is not there. Retention and legal hold
/// are left to their events: a destination's own protections (a default retention, a hold
/// placed there) are never taken for drift and removed.
pub async fn drift<S: ObjectStore>(
    route: &Route<S>,
    v: &Version,
) -> Result<Vec<MetadataField>, ReplicationError> {
    use MetadataField::*;
    let all = [Tags, Acl];
    let Ok((_, writes)) = plan(route, v, &all, false).await? else {
        return Ok(Vec::new());
    };
    let mut fields: Vec<MetadataField> = writes.iter().map(field_of).collect();
    fields.dedup();
    Ok(fields)
}

fn field_of(w: &MetadataWrite) -> MetadataField {
    match w {
        MetadataWrite::Tags(_) | MetadataWrite::DeleteTags => MetadataField::Tags,
        MetadataWrite::Acl(_) => MetadataField::Acl,
        MetadataWrite::Retention { .. } => MetadataField::Retention,
        MetadataWrite::LegalHold(_) => MetadataField::LegalHold,
    }
}

/// The replica of `v` and the writes that bring its `fields` in line, or why there is
/// nothing to update.
async fn plan<S: ObjectStore>(
    route: &Route<S>,
    v: &Version,
    fields: &[MetadataField],
    replicate_replicas: bool,
) -> Result<Result<(Found, Vec<MetadataWrite>), &'static str>, ReplicationError> {
    let vid = source_version_id(&v.version_id);
    let req = HeadObjectRequest {
        version_id: vid,
        ..Default::default()
    };
    let source = match route
        .source
        .head_object(&route.source_bucket, &v.key, req)
        .await
    {
        Ok(h) => h,
        Err(HeadObjectError::NotFound | HeadObjectError::DeleteMarker { .. }) => {
            return Ok(Err(GONE_FROM_SOURCE))
        }
        Err(e) => return Err(ReplicationError::op(Stage::HeadSource, e)),
    };
    if source.user_meta(META_SOURCE_VERSION).is_some() && !replicate_replicas {
        return Ok(Err(REPLICA_AT_SOURCE));
    }
    let (was, now) = (v.etag.trim_matches('"'), source.etag.trim_matches('"'));
    if v.version_id == "null" && !was.is_empty() && was != now {
        // An unversioned object overwritten since: its metadata is the new object's.
        return Ok(Err(GONE_FROM_SOURCE));
    }
    let Some(replica) = find_replica(route, v).await? else {
        return Ok(Err(NOT_REPLICATED_YET));
    };
    let writes = wanted(route, v, &source, &replica, fields).await?;
    Ok(Ok((replica, writes)))
}

/// The replica is not at the destination: its copy, when it runs, reads the current state.
pub const NOT_REPLICATED_YET: &str =
    "the version is not at the destination yet: its copy will carry its current metadata";

/// The writes that make the replica's `fields` equal the source's.
async fn wanted<S: ObjectStore>(
    route: &Route<S>,
    v: &Version,
    source: &ObjectHead,
    replica: &Found,
    fields: &[MetadataField],
) -> Result<Vec<MetadataWrite>, ReplicationError> {
    let mut out = Vec::new();
    for f in fields {
        match f {
            MetadataField::Tags => {
                let have = tags(&route.dest, &route.dest_bucket, v, &replica.head, true).await?;
                let want = tags(&route.source, &route.source_bucket, v, source, false).await?;
                if have != want {
                    out.push(match want.is_empty() {
                        true => MetadataWrite::DeleteTags,
                        false => MetadataWrite::Tags(want),
                    });
                }
            }
            MetadataField::Acl => {
                if let Some(w) = acl(route, v, replica).await? {
                    out.push(w);
                }
            }
            MetadataField::Retention => {
                if let Some(w) = retention(&replica.head.lock, &source.lock) {
                    out.push(w);
                }
            }
            MetadataField::LegalHold => {
                if replica.head.lock.legal_hold != source.lock.legal_hold {
                    out.push(MetadataWrite::LegalHold(source.lock.legal_hold));
                }
            }
        }
    }
    Ok(out)
}

/// The retention write that gives the replica the source's retention: none when the source
/// has none or an expired one (a replica's own retention is never removed), nor when both
/// dates are the same time however written.
fn retention(have: &ObjectLock, want: &ObjectLock) -> Option<MetadataWrite> {
    let when = |l: &ObjectLock| {
        l.retain_until
            .as_deref()
            .and_then(crate::time::parse_rfc3339)
    };
    let until = when(want).filter(|t| *t > std::time::SystemTime::now())?;
    if have.mode == want.mode && when(have) == Some(until) {
        return None;
    }
    Some(MetadataWrite::Retention {
        mode: want.mode.clone(),
        retain_until: want.retain_until.clone(),
    })
}

/// A version's tags (none read when its HEAD counts none).
async fn tags<S: ObjectStore>(
    store: &S,
    bucket: &str,
    v: &Version,
    head: &ObjectHead,
    at_dest: bool,
) -> Result<Vec<(String, String)>, ReplicationError> {
    if head.tag_count == 0 {
        return Ok(Vec::new());
    }
    let vid = match at_dest {
        true => head.version_id.as_deref().filter(|v| *v != "null"),
        false => source_version_id(&v.version_id),
    };
    let stage = match at_dest {
        true => Stage::CheckDestination,
        false => Stage::GetSourceTags,
    };
    let mut t = store
        .get_object_tagging(bucket, &v.key, vid)
        .await
        .map_err(|e| ReplicationError::op(stage, e))?;
    t.sort();
    Ok(t)
}

/// The ACL write the site's policy wants: the source's grants when they are copied and
/// differs; nothing for a canned ACL (set with each copy) or the destination's default.
async fn acl<S: ObjectStore>(
    route: &Route<S>,
    v: &Version,
    replica: &Found,
) -> Result<Option<MetadataWrite>, ReplicationError> {
    if route.policy.acl != Acl::Copy {
        return Ok(None);
    }
    let vid = source_version_id(&v.version_id);
    let src = route
        .source
        .get_object_acl(&route.source_bucket, &v.key, vid);
    let src = src
        .await
        .map_err(|e| ReplicationError::op(Stage::HeadSource, e))?;
    let dest_vid = replica.version_id.as_deref();
    let dst = route
        .dest
        .get_object_acl(&route.dest_bucket, &v.key, dest_vid);
    let dst = dst
        .await
        .map_err(|e| ReplicationError::op(Stage::CheckDestination, e))?;
    Ok((src != dst).then_some(MetadataWrite::Acl(ObjectAcl::Grants(src))))
}

/// Whether the destination holds `v` whole: a replica recording `v` as its source, with the
/// source's ETag and size, whose bytes are not known to differ (what a transient source
/// checks before deleting `v`).
pub async fn holds<S: ObjectStore>(
    route: &Route<S>,
    v: &Version,
) -> Result<bool, ReplicationError> {
    let Some(found) = find_replica(route, v).await? else {
        return Ok(false);
    };
    let Some(r) = Replica::of(&found.head) else {
        return Ok(false);
    };
    let same_etag = !v.etag.trim_matches('"').is_empty() && r.is_of_etag(&v.etag);
    Ok(r.is_of(v) && r.intact && r.size == v.size && same_etag)
}

/// The destination version that replicates `v`: its current object when that is the
/// replica (one HEAD), else the newest of its versions recording `v` as their source.
pub async fn find_replica<S: ObjectStore>(
    route: &Route<S>,
    v: &Version,
) -> Result<Option<Found>, ReplicationError> {
    let head = |vid: Option<String>| async move {
        let req = HeadObjectRequest {
            version_id: vid.as_deref(),
            ..Default::default()
        };
        match route
            .dest
            .head_object(&route.dest_bucket, &v.key, req)
            .await
        {
            Ok(h) => Ok(Some(h)),
            Err(HeadObjectError::NotFound | HeadObjectError::DeleteMarker { .. }) => Ok(None),
            Err(e) => Err(ReplicationError::op(Stage::CheckDestination, e)),
        }
    };
    let is_replica = |h: &ObjectHead| Replica::of(h).is_some_and(|r| r.is_of(v));
    if let Some(h) = head(None).await?.filter(is_replica) {
        let version_id = h.version_id.clone().filter(|x| x != "null");
        return Ok(Some(Found {
            version_id,
            head: h,
        }));
    }
    if !route.dest_versioned {
        return Ok(None);
    }
    let mut listed = super::list_key(&route.dest, &route.dest_bucket, &v.key)
        .await
        .map_err(|e| ReplicationError::op(Stage::CheckDestination, e))?;
    crate::s3::ops::list_object_versions::sort_newest_first(&mut listed);
    let candidates = listed.iter().filter(|l| !l.delete_marker && !l.is_latest);
    for lv in candidates.take(MAX_VERSIONS_SEARCHED) {
        let Some(h) = head(Some(lv.version_id.clone())).await? else {
            continue;
        };
        if is_replica(&h) {
            let version_id = Some(lv.version_id.clone());
            return Ok(Some(Found {
                version_id,
                head: h,
            }));
        }
    }
    if listed.len() > MAX_VERSIONS_SEARCHED {
        return Err(ReplicationError::new(
            Stage::CheckDestination,
            ErrorKind::Request {
                code: "TooManyVersions".into(),
                retryable: false,
            },
            format!(
                "none of the newest {MAX_VERSIONS_SEARCHED} of the key's {} versions at the \
                 destination replicates this one",
                listed.len()
            ),
        ));
    }
    Ok(None)
}
