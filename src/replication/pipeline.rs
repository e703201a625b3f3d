//! The per-version pipeline: one attempt ([`replicate_once`]), its retries
//! ([`replicate`]) and a key's versions in order ([`replicate_key`]), with the integrity
//! checks every copy passes.

use std::sync::Arc;
use std::time::Instant;

use super::policy::Acl;
use super::{
    multipart, multipart_etag_parts, order, DataPath, ErrorKind, Options, Outcome,
    ReplicationError, Route, Stage, Verdict, Version, META_ORIGIN, META_SOURCE_ENCRYPTION,
    META_SOURCE_ETAG, META_SOURCE_VERSION, REPLICA_AT_SOURCE,
};
use crate::metrics::{Failure, Stats};
use crate::retry::{retry, GaveUp};
use crate::s3::body::PipeBody;
use crate::s3::http::ReqBody;
use crate::s3::ops::get_object::{GetObjectError, GetObjectOutput, GetObjectRequest};
use crate::s3::ops::head_object::{HeadObjectError, HeadObjectRequest};
use crate::s3::ops::put_object::{PutObjectRequest, UploadChecksum};
use crate::s3::ops::{ObjectHead, ObjectMetadata};
use crate::s3::store::ObjectStore;
use crate::s3::{checksum, ChecksumTransport};

/// Metadata to write at the destination: the source's, plus where it came from, where it
/// stands in the key's history (see [`super::order`]) and its origin, `site/bucket/version`
/// (kept when the source is itself a replica).
fn destination_metadata<S: ObjectStore>(
    route: &Route<S>,
    head: &ObjectHead,
    v: &Version,
) -> ObjectMetadata {
    let source = (&route.source.site(), &route.source_bucket);
    let ours = [
        META_SOURCE_VERSION,
        META_SOURCE_ETAG,
        order::META_SOURCE_LAST_MODIFIED,
        order::META_SOURCE_SEQUENCER,
        META_ORIGIN,
        META_SOURCE_ENCRYPTION,
    ];
    let origin = match head.user_meta(META_ORIGIN) {
        Some(o) => o.to_string(),
        None => format!("{}/{}/{}", source.0, source.1, v.version_id),
    };
    let mut m = head.metadata.clone();
    m.user.retain(|(k, _)| !ours.contains(&k.as_str()));
    m.user.push((META_ORIGIN.to_string(), origin));
    m.user
        .push((META_SOURCE_VERSION.to_string(), v.version_id.clone()));
    let etag = head.etag.trim_matches('"');
    m.user
        .push((META_SOURCE_ETAG.to_string(), etag.to_string()));
    // An unversioned source may have been overwritten since the entry was made: the bytes
    // read are then those of a later object, and the entry's sequencer is not theirs.
    let same = v.version_id != "null" || (!v.etag.is_empty() && v.etag.trim_matches('"') == etag);
    m.user.extend(order::recorded(head, &v.order, same));
    let encryption = match (&head.sse, &head.sse_customer_algorithm) {
        (_, Some(_)) => Some("customer"),
        (Some(s), None) if s != "AES256" => Some("aws:kms"),
        _ => None,
    };
    if let Some(e) = encryption {
        m.user
            .push((META_SOURCE_ENCRYPTION.to_string(), e.to_string()));
    }
    m.write = route.policy.attributes(head);
    m
}

/// Whether the source's and the replica's ETags may be compared: neither is encrypted in a
/// way that makes its ETag something other than a hash of the bytes (SSE-KMS, SSE-C).
pub(crate) fn etags_comparable(head: &ObjectHead, meta: &ObjectMetadata) -> bool {
    meta.write.etag_is_md5()
        && head.sse.as_deref().is_none_or(|s| s == "AES256")
        && head.sse_customer_algorithm.is_none()
}

/// A write refused because it carries Object Lock to a bucket without it, said so with what
/// to do; any other error as it is.
pub(crate) fn explain_refusal(
    e: ReplicationError,
    meta: &ObjectMetadata,
    bucket: &str,
) -> ReplicationError {
    let lock = &meta.write.lock;
    let locked = lock.mode.is_some() || lock.legal_hold;
    let said = e.message.to_ascii_lowercase().replace(' ', "");
    // "Bucket is missing Object Lock Configuration" (AWS), "...ObjectLockConfiguration" (moto);
    // not the other Object Lock refusals (a missing checksum, a past date).
    let refused = matches!(e.code(), "InvalidRequest" | "InvalidArgument")
        && said.contains("missingobjectlock");
    if !(locked && refused) {
        return e;
    }
    let what = match (&lock.mode, &lock.retain_until) {
        (Some(m), Some(u)) => format!("retention {m} until {u}"),
        _ => "no retention".to_string(),
    };
    let hold = if lock.legal_hold {
        "legal hold ON"
    } else {
        "no legal hold"
    };
    let message = format!(
        "the source version is under Object Lock ({what}, {hold}) and destination bucket \
         {bucket} has no Object Lock configuration, so the lock cannot be carried: create the \
         destination bucket with Object Lock enabled (or map the source bucket to one that \
         has it), then `backbeat failed retry`; the server said: {}",
        e.message
    );
    ReplicationError {
        kind: ErrorKind::Request {
            code: "DestinationWithoutObjectLock".into(),
            retryable: false,
        },
        message,
        ..e
    }
}

/// The upload checksum mode for a body whose CRC32C may be known upfront.
pub(crate) fn upload_checksum(
    dest: &impl ObjectStore,
    known: Option<u32>,
) -> (UploadChecksum, bool) {
    match (known, dest.checksum_transport()) {
        (Some(c), _) => (UploadChecksum::Header(c), false),
        (None, ChecksumTransport::Trailer) => (UploadChecksum::Trailer, true),
        (None, ChecksumTransport::Header) => (UploadChecksum::None, false),
    }
}

/// Compares the CRC32C we computed with what the destination reports having stored.
pub(crate) fn verify(computed: Option<u32>, reported: Option<u32>) -> Result<(), ReplicationError> {
    let Some(computed) = computed else {
        return Err(ReplicationError::new(
            Stage::Verify,
            ErrorKind::BadLength("IncompleteBody"),
            "the upload finished before every byte went through",
        ));
    };
    match reported {
        Some(r) if r != computed => Err(ReplicationError::new(
            Stage::Verify,
            ErrorKind::ChecksumMismatch,
            format!(
                "destination stored CRC32C {} but the bytes sent have {}",
                checksum::encode(r),
                checksum::encode(computed)
            ),
        )),
        _ => Ok(()),
    }
}

/// A plain MD5 ETag (single-part upload, no SSE-KMS): the MD5 of the object's bytes.
fn md5_etag(etag: &str) -> Option<&str> {
    let e = etag.trim_matches('"');
    (e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit())).then_some(e)
}

/// Compares the destination's ETag with the source's when both are content hashes the
/// servers computed themselves (plain MD5, or a multipart ETag when the part layout was
/// kept). This catches corruption on servers that store a client's CRC32C unverified.
pub(crate) fn verify_etag(
    source: &str,
    dest: &str,
    same_layout: bool,
) -> Result<(), ReplicationError> {
    let (s, d) = (source.trim_matches('"'), dest.trim_matches('"'));
    let comparable = match (md5_etag(s), md5_etag(d)) {
        (Some(_), Some(_)) => true,
        _ => same_layout && multipart_etag_parts(s).is_some() && multipart_etag_parts(d).is_some(),
    };
    if comparable && !s.eq_ignore_ascii_case(d) {
        return Err(ReplicationError::new(Stage::Verify, ErrorKind::ChecksumMismatch, format!("destination ETag {d} differs from the source's {s}: the bytes were altered in transit")));
    }
    Ok(())
}

/// Removes a version we just wrote and found corrupt, so it never stays at the destination.
pub(crate) async fn discard_version<S: ObjectStore>(
    route: &Route<S>,
    key: &str,
    version_id: Option<&str>,
) {
    if let Some(vid) = version_id {
        if let Err(e) = route
            .dest
            .delete_object(&route.dest_bucket, key, Some(vid))
            .await
        {
            tracing::warn!(key, version = vid, error = %e, "could not delete a corrupt destination version");
        }
    } else if !route.dest_versioned {
        // Unversioned: no earlier version survives under it, and a reader must never get
        // corrupt bytes; the next attempt writes the object again.
        if let Err(e) = route
            .dest
            .delete_object(&route.dest_bucket, key, None)
            .await
        {
            tracing::warn!(key, error = %e, "could not delete a corrupt destination object");
        }
    }
}

/// The in-flight record of `v` when it is tracked (per-object progress).
fn tracked<S: ObjectStore>(
    route: &Route<S>,
    dp: &DataPath,
    v: &Version,
) -> Option<Arc<crate::metrics::objects::Transfer>> {
    let id = (
        route.source_bucket.clone(),
        v.key.clone(),
        v.version_id.clone(),
    );
    dp.stats
        .objects
        .lock()
        .expect("object tracker")
        .transfer(&id)
}

/// Counters a copy of `v` adds its bytes to: the run's, and the version's own when the
/// version is tracked.
pub(super) fn progress_counters<S: ObjectStore>(
    route: &Route<S>,
    dp: &DataPath,
    v: &Version,
) -> Vec<Arc<std::sync::atomic::AtomicU64>> {
    let mut c = vec![dp.stats.bytes_moved.clone()];
    c.extend(tracked(route, dp, v).map(|t| t.done.clone()));
    c
}

/// Restarts a tracked version's progress (a new attempt sends every byte again).
fn reset_progress<S: ObjectStore>(route: &Route<S>, dp: &DataPath, v: &Version) {
    if let Some(t) = tracked(route, dp, v) {
        t.done.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Replicates one version, once (no retry); a site that copies ACLs then gives the replica
/// the source's grants.
pub async fn replicate_once<S: ObjectStore>(
    route: &Route<S>,
    dp: &DataPath,
    v: &Version,
) -> Result<Outcome, ReplicationError> {
    with_acl(route, v, copy_once(route, dp, v, false).await?).await
}

/// A copied version gets the source's grants when the site copies ACLs.
async fn with_acl<S: ObjectStore>(
    route: &Route<S>,
    v: &Version,
    out: Outcome,
) -> Result<Outcome, ReplicationError> {
    if let (Outcome::Copied { .. }, Acl::Copy) = (&out, &route.policy.acl) {
        let acl = [super::MetadataField::Acl];
        super::metadata::update(route, v, &acl, true).await?;
    }
    Ok(out)
}

/// A version found at the destination on a retry: done, once its ACL is the source's when
/// the site copies ACLs (the attempt that copied it may have failed on the ACL).
async fn applied<S: ObjectStore>(
    route: &Route<S>,
    v: &Version,
) -> Result<Outcome, ReplicationError> {
    if route.policy.acl == Acl::Copy && !v.delete_marker {
        super::metadata::update(route, v, &[super::MetadataField::Acl], true).await?;
    }
    Ok(Outcome::Skipped)
}

/// Copies one version (or writes its delete marker), once; `if_absent`: a single PUT is made
/// only if the key has no object at the destination.
async fn copy_once<S: ObjectStore>(
    route: &Route<S>,
    dp: &DataPath,
    v: &Version,
    if_absent: bool,
) -> Result<Outcome, ReplicationError> {
    if v.delete_marker {
        return replicate_delete_marker(route, v).await;
    }
    reset_progress(route, dp, v);
    let vid = super::source_version_id(&v.version_id);
    let Some(SourceVersion { head, get }) = read_source(route, dp, v, vid).await? else {
        if if_absent {
            return Err(not_as_listed());
        }
        return replicate_delete_marker(route, v).await;
    };
    if head.user_meta(META_SOURCE_VERSION).is_some() && !dp.opts.replicate_replicas {
        // Dropping an unread GET closes its connection; a replica is rarely small enough
        // for that to matter more than reading it would.
        return Ok(Outcome::Superseded(REPLICA_AT_SOURCE));
    }
    let tags = if head.tag_count > 0 {
        let tags = route
            .source
            .get_object_tagging(&route.source_bucket, &v.key, vid);
        let tags = tags.await;
        tags.map_err(|e| ReplicationError::op(Stage::GetSourceTags, e))?
    } else {
        Vec::new()
    };
    let meta = destination_metadata(route, &head, v);
    let get = match get {
        Some(g) => g,
        None if if_absent && multipart::wanted(&head, &dp.opts) => return Err(not_as_listed()),
        None if multipart::wanted(&head, &dp.opts) => {
            let bytes = multipart::copy(route, dp, v, &head, &meta, &tags).await?;
            return Ok(Outcome::Copied { bytes });
        }
        None => {
            let get = route
                .source
                .get_object(&route.source_bucket, &v.key, get_request(vid));
            get.await
                .map_err(|e| ReplicationError::op(Stage::GetSource, e))?
        }
    };
    if get.head.content_length == 0 {
        if if_absent {
            return Err(not_as_listed());
        }
        return replicate_empty(route, v, get, &meta, &tags).await;
    }
    put_streamed(route, dp, v, get, (&meta, &tags), if_absent).await
}

/// A write without asking first found the source's version other than listed (now a
/// delete marker, empty, or multipart): only the single streamed PUT carries the condition,
/// so the key goes the usual way instead (a permanent failure of that attempt).
fn not_as_listed() -> ReplicationError {
    ReplicationError::new(
        Stage::PutDestination,
        ErrorKind::Request {
            code: "PreconditionFailed".into(),
            retryable: false,
        },
        "the source's version is not what its listing said: checked at the destination first",
    )
}

/// What the source says of a version: its head, and the GET already answered when one
/// request was enough.
struct SourceVersion {
    head: ObjectHead,
    get: Option<GetObjectOutput>,
}

fn get_request(version_id: Option<&str>) -> GetObjectRequest<'_> {
    GetObjectRequest {
        version_id,
        checksum_mode: true,
        ..Default::default()
    }
}

/// Reads what the source holds of `v`; `None` when it is a delete marker. A version known
/// to be small and not multipart is read with one GET, whose head says everything a HEAD
/// would; anything unexpected (a delete marker, an error, a larger or multipart object than
/// announced) falls back to HEAD first.
async fn read_source<S: ObjectStore>(
    route: &Route<S>,
    dp: &DataPath,
    v: &Version,
    vid: Option<&str>,
) -> Result<Option<SourceVersion>, ReplicationError> {
    let threshold = dp.opts.multipart_threshold;
    if v.size < threshold && multipart_etag_parts(&v.etag).is_none() {
        let get = route
            .source
            .get_object(&route.source_bucket, &v.key, get_request(vid));
        match get.await {
            Ok(g)
                if multipart_etag_parts(&g.head.etag).is_none()
                    && g.head.content_length < threshold =>
            {
                let head = g.head.clone();
                return Ok(Some(SourceVersion { head, get: Some(g) }));
            }
            Ok(_) => {}
            Err(e) if maybe_delete_marker(&e) => {}
            Err(e) => return Err(ReplicationError::op(Stage::GetSource, e)),
        }
    }
    let req = HeadObjectRequest {
        version_id: vid,
        part_number: None,
        checksum_mode: true,
    };
    match route
        .source
        .head_object(&route.source_bucket, &v.key, req)
        .await
    {
        Ok(head) => Ok(Some(SourceVersion { head, get: None })),
        Err(HeadObjectError::DeleteMarker { .. }) => Ok(None),
        Err(e) => Err(ReplicationError::op(Stage::HeadSource, e)),
    }
}

/// A GET that failed as a delete marker does (not found, or not allowed on a marker's
/// version): the HEAD tells them apart.
fn maybe_delete_marker(e: &GetObjectError) -> bool {
    match e {
        GetObjectError::NotFound => true,
        GetObjectError::Request(r) => {
            matches!(r.code(), "NoSuchKey" | "NoSuchVersion" | "MethodNotAllowed")
        }
        GetObjectError::InvalidRange => false,
    }
}

/// Streams the source's GET body into the destination's PUT, then verifies what the
/// destination stored (a corrupt version is removed at once).
async fn put_streamed<S: ObjectStore>(
    route: &Route<S>,
    dp: &DataPath,
    v: &Version,
    get: GetObjectOutput,
    (meta, tags): (&ObjectMetadata, &[(String, String)]),
    if_none_match: bool,
) -> Result<Outcome, ReplicationError> {
    let len = get.head.content_length;
    let (mode, chunked) = upload_checksum(&route.dest, get.head.crc32c);
    let counters = progress_counters(route, dp, v);
    let (pipe, result) = PipeBody::new(get.body, len, get.head.crc32c, chunked, counters);
    let pipe = pipe.with_limit(dp.limit.clone());
    let put = PutObjectRequest {
        body: ReqBody::Stream(Box::new(pipe)),
        length: len,
        metadata: meta,
        tags,
        checksum: mode,
        if_none_match,
    };
    let out = route.dest.put_object(&route.dest_bucket, &v.key, put).await;
    let out = out.map_err(|e| {
        let e = ReplicationError::op(Stage::PutDestination, e);
        explain_refusal(e, meta, &route.dest_bucket)
    })?;
    let comparable = etags_comparable(&get.head, meta);
    if let Err(e) = verify(result.crc32c(), out.crc32c).and_then(|_| match comparable {
        true => verify_etag(&get.head.etag, &out.etag, true),
        false => Ok(()),
    }) {
        discard_version(route, &v.key, out.version_id.as_deref()).await;
        return Err(e);
    }
    Ok(Outcome::Copied { bytes: len })
}

/// A zero-byte version: nothing to stream, the source's body is only drained.
async fn replicate_empty<S: ObjectStore>(
    route: &Route<S>,
    v: &Version,
    mut get: GetObjectOutput,
    meta: &ObjectMetadata,
    tags: &[(String, String)],
) -> Result<Outcome, ReplicationError> {
    while let Some(chunk) = get.body.data().await {
        let chunk = chunk.map_err(|e| ReplicationError::op(Stage::GetSource, e))?;
        if !chunk.is_empty() {
            return Err(ReplicationError::new(
                Stage::GetSource,
                ErrorKind::BadLength("BadLength"),
                "the source announced 0 bytes but sent some",
            ));
        }
    }
    if let Some(c) = get.head.crc32c.filter(|c| *c != 0) {
        return Err(ReplicationError::new(
            Stage::GetSource,
            ErrorKind::ChecksumMismatch,
            format!(
                "the source's CRC32C {} is not that of 0 bytes",
                checksum::encode(c)
            ),
        ));
    }
    replicate_small_empty(route, v, meta, tags).await?;
    Ok(Outcome::Copied { bytes: 0 })
}

/// Reads a destination version back and returns its CRC32C (see
/// [`crate::s3::EndpointConfig::verify_after_write`]).
pub(crate) async fn read_back_crc<S: ObjectStore>(
    route: &Route<S>,
    key: &str,
    version_id: Option<&str>,
) -> Result<u32, ReplicationError> {
    let mut get = route
        .dest
        .get_object(
            &route.dest_bucket,
            key,
            GetObjectRequest {
                version_id,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| ReplicationError::op(Stage::Verify, e))?;
    let mut crc = 0u32;
    while let Some(chunk) = get.body.data().await {
        let chunk = chunk.map_err(|e| ReplicationError::op(Stage::Verify, e))?;
        crc = crc32c::crc32c_append(crc, &chunk);
    }
    Ok(crc)
}

/// An empty object (used when a multipart source turns out to hold no bytes).
pub(crate) async fn replicate_small_empty<S: ObjectStore>(
    route: &Route<S>,
    v: &Version,
    meta: &ObjectMetadata,
    tags: &[(String, String)],
) -> Result<u64, ReplicationError> {
    route
        .dest
        .put_object(
            &route.dest_bucket,
            &v.key,
            PutObjectRequest {
                body: ReqBody::Empty,
                length: 0,
                metadata: meta,
                tags,
                checksum: UploadChecksum::Header(0),
                if_none_match: false,
            },
        )
        .await
        .map_err(|e| {
            let e = ReplicationError::op(Stage::PutDestination, e);
            explain_refusal(e, meta, &route.dest_bucket)
        })?;
    Ok(0)
}

async fn replicate_delete_marker<S: ObjectStore>(
    route: &Route<S>,
    v: &Version,
) -> Result<Outcome, ReplicationError> {
    route
        .dest
        .delete_object(&route.dest_bucket, &v.key, None)
        .await
        .map_err(|e| ReplicationError::op(Stage::DeleteDestination, e))?;
    Ok(Outcome::DeleteMarker)
}

/// Replicates one version with retries. Before a retry of a copy, one HEAD checks whether
/// the previous attempt landed after all (its response lost), so a retry never duplicates.
pub async fn replicate<S: ObjectStore>(
    route: &Route<S>,
    dp: &DataPath,
    v: &Version,
) -> Result<Outcome, GaveUp<ReplicationError>> {
    replicate_with(route, dp, v, false).await
}

/// [`replicate`]; `if_absent`: the first attempt writes only if the key has no object at
/// the destination (`If-None-Match: *`), and fails for good when it has one.
async fn replicate_with<S: ObjectStore>(
    route: &Route<S>,
    dp: &DataPath,
    v: &Version,
    if_absent: bool,
) -> Result<Outcome, GaveUp<ReplicationError>> {
    let _window = admit(dp, v).await?;
    let label = VersionLabel(v);
    let permanent = ReplicationError::is_permanent;
    let breaker = dp.breaker.as_deref();
    retry(&dp.opts.retry, &dp.cancel, &label, permanent, |attempt| {
        // A run again after an outage decides again first, as a retry does (the run the
        // outage cut may have landed).
        let mut runs = 0;
        super::breaker::through(breaker, &v.key, &dp.cancel, move || {
            runs += 1;
            let as_attempt = if runs > 1 { attempt.max(2) } else { attempt };
            attempt_once(route, dp, v, (as_attempt, if_absent))
        })
    })
    .await
}

/// Waits for the shard's byte window to admit a version of 1 MiB or more.
async fn admit<'a>(
    dp: &'a DataPath,
    v: &Version,
) -> Result<Option<glommio::sync::Permit<'a>>, GaveUp<ReplicationError>> {
    let units = window_units(&dp.opts, v.size);
    if units == 0 {
        return Ok(None);
    }
    let closed = |_| GaveUp {
        error: ReplicationError::new(
            Stage::Multipart,
            ErrorKind::Cancelled,
            "the shard's window is closed",
        ),
        attempts: 1,
        cancelled: true,
    };
    Ok(Some(
        dp.byte_window.acquire_permit(units).await.map_err(closed)?,
    ))
}

/// Names a version in the log.
struct VersionLabel<'a>(&'a Version);

impl std::fmt::Display for VersionLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replicating {} version {}",
            self.0.key, self.0.version_id
        )
    }
}

/// One attempt of [`replicate`]. A retry first decides again (the previous attempt may have
/// landed, its response lost, or a later version may have landed meanwhile), so a retry
/// never writes a duplicate version, a second delete marker, or older data over newer.
async fn attempt_once<S: ObjectStore>(
    route: &Route<S>,
    dp: &DataPath,
    v: &Version,
    (attempt, if_absent): (u32, bool),
) -> Result<Outcome, ReplicationError> {
    if attempt > 1 {
        Stats::add(&dp.stats.retries, 1);
        match route.decide(v).await? {
            Verdict::Apply => {}
            Verdict::Applied => return applied(route, v).await,
            Verdict::Superseded(why) => return Ok(Outcome::Superseded(why)),
        }
    }
    let first_unasked = if_absent && attempt == 1;
    let result = match copy_once(route, dp, v, first_unasked).await {
        Ok(out) => with_acl(route, v, out).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        if e.kind == ErrorKind::ChecksumMismatch {
            Stats::add(&dp.stats.checksum_mismatches, 1);
        }
    }
    result
}

/// Window units (MiB) a version of `size` bytes takes: none below 1 MiB, never more than the
/// whole window.
pub fn window_units(opts: &Options, size: u64) -> u64 {
    if opts.window < 1 << 20 || size < 1 << 20 {
        return 0;
    }
    (size >> 20).min(opts.window >> 20)
}

/// Replicates a key's versions, oldest first, skipping those already at the destination.
/// A failed version stops the key: later versions are reported as blocked, so a rerun
/// resumes in order. `dest_absent`: the destination's listing held nothing of the key, so
/// its first version is written without asking first (one request fewer), on condition
/// that the key is still absent; when it is not, the key is asked for as any other.
pub async fn replicate_key<S: ObjectStore>(
    route: &Route<S>,
    dp: &DataPath,
    (key, versions): (&str, &[Version]),
    dest_absent: bool,
    latency: &std::cell::RefCell<hdrhistogram::Histogram<u64>>,
) {
    // On an unversioned destination a replicated delete leaves nothing: a key whose history
    // ends deleted is absent there when done, so absence proves nothing (the HEAD decides).
    // A key with a delete marker in its history is asked for as always: the conditional
    // PUT is taken over a current marker, which may be a later one written meanwhile.
    let any_marker = versions.iter().any(|v| v.delete_marker);
    let mut if_absent = dest_absent
        && !any_marker
        && versions.first().is_some_and(|v| {
            v.size > 0
                && v.size < dp.opts.multipart_threshold
                && multipart_etag_parts(&v.etag).is_none()
        });
    let mut i = 0;
    if !if_absent {
        let Some(n) = applied_count(route, dp, key, versions).await else {
            return;
        };
        i = n;
    }
    while let Some(v) = versions.get(i) {
        if dp.cancel.is_set() {
            return;
        }
        let t = Instant::now();
        match replicate_with(route, dp, v, if_absent).await {
            Ok(out) => record(dp, out, t, latency),
            Err(gave_up) if if_absent && refused(&gave_up) => {
                // Written meanwhile (412, or 409 for a write racing it), a server that takes
                // no condition, or the version not as listed: ask, as for any key.
                if_absent = false;
                let Some(n) = applied_count(route, dp, key, versions).await else {
                    return;
                };
                i = n;
                continue;
            }
            Err(GaveUp {
                error: e, attempts, ..
            }) => {
                fail(dp, v, &e, attempts);
                block_after(dp, &versions[i + 1..], v, &e);
                return;
            }
        }
        if_absent = false;
        i += 1;
    }
}

/// The conditional write's first attempt was refused for good by the destination (an error
/// elsewhere, at the source say, fails the key as it would the usual way).
fn refused(g: &GaveUp<ReplicationError>) -> bool {
    g.attempts == 1 && !g.cancelled && g.error.stage == Stage::PutDestination
}

/// Records the versions after a failed one as blocked behind it.
fn block_after(dp: &DataPath, later: &[Version], failed: &Version, e: &ReplicationError) {
    let blocked = ReplicationError::new(
        e.stage,
        ErrorKind::Blocked,
        format!(
            "not attempted: version {} of this key failed first",
            failed.version_id
        ),
    );
    for v in later {
        fail(dp, v, &blocked, 0);
    }
}

/// How many of a key's versions the destination already reflects (counted as skipped);
/// `None` when asking failed for good (every version recorded as failed).
async fn applied_count<S: ObjectStore>(
    route: &Route<S>,
    dp: &DataPath,
    key: &str,
    versions: &[Version],
) -> Option<usize> {
    let label = format!("checking what the destination holds of {key}");
    let permanent = ReplicationError::is_permanent;
    let start = retry(&dp.opts.retry, &dp.cancel, &label, permanent, |attempt| {
        if attempt > 1 {
            Stats::add(&dp.stats.retries, 1);
        }
        route.applied_prefix(key, versions)
    })
    .await;
    match start {
        Ok(n) => {
            Stats::add(&dp.stats.skipped, n as u64);
            Some(n)
        }
        Err(gave_up) => {
            for v in versions {
                fail(dp, v, &gave_up.error, gave_up.attempts);
            }
            None
        }
    }
}

/// Counts a version's outcome (and its latency, when something was written).
fn record(
    dp: &DataPath,
    out: Outcome,
    t: Instant,
    latency: &std::cell::RefCell<hdrhistogram::Histogram<u64>>,
) {
    let wrote = |latency: &std::cell::RefCell<hdrhistogram::Histogram<u64>>| {
        let us = t.elapsed().as_micros().max(1) as u64;
        latency.borrow_mut().saturating_record(us);
    };
    match out {
        Outcome::Copied { bytes } => {
            Stats::add(&dp.stats.versions_copied, 1);
            Stats::add(&dp.stats.bytes_copied, bytes);
            wrote(latency);
        }
        Outcome::DeleteMarker => {
            Stats::add(&dp.stats.delete_markers, 1);
            wrote(latency);
        }
        Outcome::Skipped => Stats::add(&dp.stats.skipped, 1),
        Outcome::MetadataUpdated { .. } => Stats::add(&dp.stats.metadata_updates, 1),
        Outcome::Superseded(_) => Stats::add(&dp.stats.superseded, 1),
    }
}

fn fail(dp: &DataPath, v: &Version, e: &ReplicationError, attempts: u32) {
    tracing::warn!(key = %v.key, version = %v.version_id, attempts, error = %e, "version failed");
    dp.stats.record_failure(Failure {
        key: v.key.clone(),
        version_id: v.version_id.clone(),
        error: e.record(),
        attempts,
    });
}
