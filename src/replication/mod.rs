//! Replicates one object version (or delete marker) from a source bucket to a destination
//! bucket: the per-entry pipeline, multipart copies and retries.
//!
//! Owns: the idempotence check, the streaming copy, multipart copies, metadata and tag
//! preservation, checksum verification, retry with backoff.
//! May call: `s3` (clients), `metrics` (counters), `shard` (shutdown signal), `time`.

pub mod multipart;
pub mod retry;
pub mod worker;

use std::sync::Arc;
use std::time::Instant;

use crate::metrics::{Failure, Stats};
use crate::s3::body::{PipeBody, ReqBody};
use crate::s3::error::OpError;
use crate::s3::ops::get_object::GetObjectRequest;
use crate::s3::ops::head_object::{HeadObjectError, HeadObjectRequest};
use crate::s3::ops::list_object_versions::{sort_newest_first, ListObjectVersionsRequest};
use crate::s3::ops::put_object::{PutObjectRequest, UploadChecksum};
use crate::s3::ops::{ObjectHead, ObjectMetadata};
use crate::s3::{checksum, ChecksumTransport, Client};
use crate::shard::Shutdown;
pub use retry::RetryPolicy;

/// User metadata the destination object carries: the source version it came from.
pub const META_SOURCE_VERSION: &str = "backbeat-source-version-id";
/// User metadata the destination object carries: the source ETag.
pub const META_SOURCE_ETAG: &str = "backbeat-source-etag";

/// Sizes and bounds of the data path.
#[derive(Debug, Clone)]
pub struct Options {
    /// Objects of this size or more are copied with a multipart upload.
    pub multipart_threshold: u64,
    /// Part size when the source's layout is unknown.
    pub part_size: u64,
    /// Parts of one object in flight at once.
    pub part_concurrency: usize,
    /// Object bytes in flight per shard, across objects (0: no bound beyond the count of
    /// transfers). Objects of 1 MiB or more take their size (at most the window) from it,
    /// so a shard copies many small objects at once but few large ones.
    pub window: u64,
    pub retry: RetryPolicy,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            multipart_threshold: 64 * 1024 * 1024,
            part_size: 16 * 1024 * 1024,
            part_concurrency: 4,
            window: 64 << 20,
            retry: RetryPolicy::default(),
        }
    }
}

/// Everything a shard needs to replicate versions from one bucket to another.
pub struct Ctx {
    pub source: Client,
    pub source_bucket: String,
    pub dest: Client,
    pub dest_bucket: String,
    /// Whether the destination keeps versions (decides how delete markers are checked).
    pub dest_versioned: bool,
    pub opts: Options,
    pub stats: Arc<Stats>,
    /// Bounds parts in flight on this shard, across objects.
    pub part_slots: glommio::sync::Semaphore,
    /// Bounds object bytes in flight on this shard (units of 1 MiB; see [`Options::window`]);
    /// shared by every context of the shard.
    pub byte_window: std::rc::Rc<glommio::sync::Semaphore>,
    pub shutdown: Shutdown,
}

/// One version to replicate, as the scan (or a replication entry) names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub key: String,
    /// `null` for a version written while versioning was off.
    pub version_id: String,
    pub delete_marker: bool,
    pub size: u64,
    pub etag: String,
}

/// What happened to a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Copied {
        bytes: u64,
    },
    DeleteMarker,
    /// Already at the destination.
    Skipped,
}

/// The step of the pipeline that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Stage {
    HeadSource,
    GetSource,
    GetSourceTags,
    CheckDestination,
    PutDestination,
    Multipart,
    DeleteDestination,
    Verify,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::HeadSource => "reading the source version's metadata",
            Stage::GetSource => "reading the source version",
            Stage::GetSourceTags => "reading the source version's tags",
            Stage::CheckDestination => "checking the destination",
            Stage::PutDestination => "writing the destination",
            Stage::Multipart => "multipart upload to the destination",
            Stage::DeleteDestination => "writing the delete marker to the destination",
            Stage::Verify => "verifying the destination's checksum",
        })
    }
}

/// A version that could not be replicated (this attempt).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{stage}: {code}: {message}")]
pub struct ReplicationError {
    pub stage: Stage,
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

impl ReplicationError {
    pub fn op(stage: Stage, e: &dyn OpError) -> Self {
        Self {
            stage,
            code: e.code().to_string(),
            message: e.to_string(),
            retryable: e.is_retryable(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// An ETag of the form `"...-N"`: the object was uploaded in N parts.
pub fn multipart_etag_parts(etag: &str) -> Option<u32> {
    let e = etag.trim_matches('"');
    let (_, n) = e.rsplit_once('-')?;
    n.parse().ok()
}

fn source_version_id(v: &str) -> Option<&str> {
    (v != "null" && !v.is_empty()).then_some(v)
}

/// Metadata to write at the destination: the source's, plus where it came from.
fn destination_metadata(head: &ObjectHead, v: &Version) -> ObjectMetadata {
    let mut m = head.metadata.clone();
    m.user
        .retain(|(k, _)| k != META_SOURCE_VERSION && k != META_SOURCE_ETAG);
    m.user
        .push((META_SOURCE_VERSION.to_string(), v.version_id.clone()));
    m.user.push((
        META_SOURCE_ETAG.to_string(),
        head.etag.trim_matches('"').to_string(),
    ));
    m
}

/// The upload checksum mode for a body whose CRC32C may be known upfront.
pub(crate) fn upload_checksum(dest: &Client, known: Option<u32>) -> (UploadChecksum, bool) {
    match (known, dest.endpoint().config.checksum) {
        (Some(c), _) => (UploadChecksum::Header(c), false),
        (None, ChecksumTransport::Trailer) => (UploadChecksum::Trailer, true),
        (None, ChecksumTransport::Header) => (UploadChecksum::None, false),
    }
}

/// Compares the CRC32C we computed with what the destination reports having stored.
pub(crate) fn verify(computed: Option<u32>, reported: Option<u32>) -> Result<(), ReplicationError> {
    let Some(computed) = computed else {
        return Err(ReplicationError {
            stage: Stage::Verify,
            code: "IncompleteBody".into(),
            message: "the upload finished before every byte went through".into(),
            retryable: true,
        });
    };
    match reported {
        Some(r) if r != computed => Err(ReplicationError {
            stage: Stage::Verify,
            code: "ChecksumMismatch".into(),
            message: format!(
                "destination stored CRC32C {} but the bytes sent have {}",
                checksum::encode(r),
                checksum::encode(computed)
            ),
            retryable: true,
        }),
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
        return Err(ReplicationError {
            stage: Stage::Verify,
            code: "ChecksumMismatch".into(),
            message: format!("destination ETag {d} differs from the source's {s}: the bytes were altered in transit"),
            retryable: true,
        });
    }
    Ok(())
}

/// Removes a version we just wrote and found corrupt, so it never stays at the destination.
pub(crate) async fn discard_version(ctx: &Ctx, key: &str, version_id: Option<&str>) {
    if let Some(vid) = version_id {
        if let Err(e) = ctx
            .dest
            .delete_object(&ctx.dest_bucket, key, Some(vid))
            .await
        {
            tracing::warn!(key, version = vid, error = %e, "could not delete a corrupt destination version");
        }
    } else if !ctx.dest_versioned {
        // Unversioned: the next attempt overwrites it.
    }
}

/// True when the destination's current object came from source version `v`.
pub async fn already_at_destination(ctx: &Ctx, v: &Version) -> Result<bool, ReplicationError> {
    match ctx
        .dest
        .head_object(&ctx.dest_bucket, &v.key, HeadObjectRequest::default())
        .await
    {
        Ok(h) => Ok(h.user_meta(META_SOURCE_VERSION) == Some(v.version_id.as_str())),
        Err(HeadObjectError::NotFound) => Ok(false),
        Err(HeadObjectError::DeleteMarker { .. }) => Ok(false),
        Err(e) => Err(ReplicationError::op(Stage::CheckDestination, &e)),
    }
}

/// How many of a key's versions (oldest first) the destination already holds, found with
/// one HEAD (plus a listing when the destination's latest is a delete marker).
pub async fn applied_prefix(
    ctx: &Ctx,
    key: &str,
    versions: &[Version],
) -> Result<usize, ReplicationError> {
    let position = |sid: Option<&str>| -> Option<usize> {
        let sid = sid?;
        versions
            .iter()
            .rposition(|v| !v.delete_marker && v.version_id == sid)
    };
    match ctx
        .dest
        .head_object(&ctx.dest_bucket, key, HeadObjectRequest::default())
        .await
    {
        Ok(h) => Ok(position(h.user_meta(META_SOURCE_VERSION))
            .map(|p| p + 1)
            .unwrap_or(0)),
        Err(HeadObjectError::NotFound) => {
            // On an unversioned destination a replicated delete removes the object.
            if !ctx.dest_versioned && versions.last().map(|v| v.delete_marker).unwrap_or(false) {
                Ok(versions.len())
            } else {
                Ok(0)
            }
        }
        Err(HeadObjectError::DeleteMarker { .. }) => {
            // Find the destination's newest real version under its delete markers.
            let mut entries = list_key(&ctx.dest, &ctx.dest_bucket, key)
                .await
                .map_err(|e| ReplicationError::op(Stage::CheckDestination, &e))?;
            sort_newest_first(&mut entries);
            let markers_then_real = entries.iter().position(|lv| !lv.delete_marker);
            let mut markers = markers_then_real.unwrap_or(entries.len());
            let real = markers_then_real.map(|i| entries[i].version_id.clone());
            let mut applied = match real {
                Some(vid) => {
                    let h = ctx
                        .dest
                        .head_object(
                            &ctx.dest_bucket,
                            key,
                            HeadObjectRequest {
                                version_id: Some(&vid),
                                ..Default::default()
                            },
                        )
                        .await
                        .map_err(|e| ReplicationError::op(Stage::CheckDestination, &e))?;
                    match position(h.user_meta(META_SOURCE_VERSION)) {
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
        Err(e) => Err(ReplicationError::op(Stage::CheckDestination, &e)),
    }
}

/// Every listed entry of exactly `key` (versions and delete markers), in listing order.
pub async fn list_key(
    client: &Client,
    bucket: &str,
    key: &str,
) -> Result<
    Vec<crate::s3::ops::list_object_versions::ListedVersion>,
    crate::s3::ops::list_object_versions::ListObjectVersionsError,
> {
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

/// Whether the destination already reflects source version `v` (or a later one), judged
/// from the key's whole history: used for delete markers, which carry no metadata.
pub async fn version_applied(ctx: &Ctx, v: &Version) -> Result<bool, ReplicationError> {
    let mut entries = list_key(&ctx.source, &ctx.source_bucket, &v.key)
        .await
        .map_err(|e| ReplicationError::op(Stage::HeadSource, &e))?;
    sort_newest_first(&mut entries);
    entries.reverse();
    let versions: Vec<Version> = entries
        .into_iter()
        .map(|l| Version {
            key: l.key,
            version_id: l.version_id,
            delete_marker: l.delete_marker,
            size: l.size,
            etag: l.etag,
        })
        .collect();
    let Some(i) = versions.iter().position(|x| x.version_id == v.version_id) else {
        return Ok(false);
    };
    Ok(i < applied_prefix(ctx, &v.key, &versions).await?)
}

/// The in-flight record of `v` when it is tracked (per-object progress).
fn tracked(ctx: &Ctx, v: &Version) -> Option<Arc<crate::metrics::objects::Transfer>> {
    let id = (
        ctx.source_bucket.clone(),
        v.key.clone(),
        v.version_id.clone(),
    );
    ctx.stats
        .objects
        .lock()
        .expect("object tracker")
        .transfer(&id)
}

/// Counters a copy of `v` adds its bytes to: the run's, and the version's own when the
/// version is tracked.
fn progress_counters(ctx: &Ctx, v: &Version) -> Vec<Arc<std::sync::atomic::AtomicU64>> {
    let mut c = vec![ctx.stats.bytes_moved.clone()];
    c.extend(tracked(ctx, v).map(|t| t.done.clone()));
    c
}

/// Restarts a tracked version's progress (a new attempt sends every byte again).
fn reset_progress(ctx: &Ctx, v: &Version) {
    if let Some(t) = tracked(ctx, v) {
        t.done.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Replicates one version, once (no retry).
pub async fn replicate_once(ctx: &Ctx, v: &Version) -> Result<Outcome, ReplicationError> {
    if v.delete_marker {
        return replicate_delete_marker(ctx, v).await;
    }
    reset_progress(ctx, v);
    let vid = source_version_id(&v.version_id);
    let get_request = || GetObjectRequest {
        version_id: vid,
        checksum_mode: true,
        ..Default::default()
    };
    // A version known to be small and not multipart is read with one GET, whose head says
    // everything a HEAD would; anything unexpected (a delete marker, an error, a larger or
    // multipart object than announced) falls back to HEAD first.
    let direct = v.size < ctx.opts.multipart_threshold && multipart_etag_parts(&v.etag).is_none();
    let early = if direct {
        match ctx
            .source
            .get_object(&ctx.source_bucket, &v.key, get_request())
            .await
        {
            Ok(g)
                if multipart_etag_parts(&g.head.etag).is_none()
                    && g.head.content_length < ctx.opts.multipart_threshold =>
            {
                Some(g)
            }
            Ok(_) => None,
            // Not found or not allowed: maybe a delete marker, which the HEAD tells apart.
            Err(e) if matches!(e.code(), "NoSuchKey" | "NoSuchVersion" | "MethodNotAllowed") => {
                None
            }
            Err(e) => return Err(ReplicationError::op(Stage::GetSource, &e)),
        }
    } else {
        None
    };
    let head = match &early {
        Some(g) => g.head.clone(),
        None => match ctx
            .source
            .head_object(
                &ctx.source_bucket,
                &v.key,
                HeadObjectRequest {
                    version_id: vid,
                    part_number: None,
                    checksum_mode: true,
                },
            )
            .await
        {
            Ok(h) => h,
            Err(HeadObjectError::DeleteMarker { .. }) => {
                return replicate_delete_marker(ctx, v).await
            }
            Err(e) => return Err(ReplicationError::op(Stage::HeadSource, &e)),
        },
    };
    let tags = if head.tag_count > 0 {
        ctx.source
            .get_object_tagging(&ctx.source_bucket, &v.key, vid)
            .await
            .map_err(|e| ReplicationError::op(Stage::GetSourceTags, &e))?
    } else {
        Vec::new()
    };
    let meta = destination_metadata(&head, v);
    let get = match early {
        Some(g) => g,
        None => {
            let source_parts = multipart_etag_parts(&head.etag);
            if source_parts.is_some()
                || (ctx.opts.multipart_threshold > 0
                    && head.content_length >= ctx.opts.multipart_threshold)
            {
                let bytes = multipart::copy(ctx, v, &head, &meta, &tags).await?;
                return Ok(Outcome::Copied { bytes });
            }
            ctx.source
                .get_object(&ctx.source_bucket, &v.key, get_request())
                .await
                .map_err(|e| ReplicationError::op(Stage::GetSource, &e))?
        }
    };
    let len = get.head.content_length;
    if len == 0 {
        return replicate_empty(ctx, v, get, &meta, &tags).await;
    }
    let (mode, chunked) = upload_checksum(&ctx.dest, get.head.crc32c);
    let (pipe, result) = PipeBody::new(
        get.body,
        len,
        get.head.crc32c,
        chunked,
        progress_counters(ctx, v),
    );
    let out = ctx
        .dest
        .put_object(
            &ctx.dest_bucket,
            &v.key,
            PutObjectRequest {
                body: ReqBody::Pipe(Box::new(pipe)),
                length: len,
                metadata: &meta,
                tags: &tags,
                checksum: mode,
            },
        )
        .await
        .map_err(|e| ReplicationError::op(Stage::PutDestination, &e))?;
    if let Err(e) = verify(result.crc32c(), out.crc32c)
        .and_then(|_| verify_etag(&get.head.etag, &out.etag, true))
    {
        discard_version(ctx, &v.key, out.version_id.as_deref()).await;
        return Err(e);
    }
    Ok(Outcome::Copied { bytes: len })
}

/// A zero-byte version: nothing to stream, the source's body is only drained.
async fn replicate_empty(
    ctx: &Ctx,
    v: &Version,
    mut get: crate::s3::ops::get_object::GetObjectOutput,
    meta: &ObjectMetadata,
    tags: &[(String, String)],
) -> Result<Outcome, ReplicationError> {
    while let Some(chunk) = get.body.data().await {
        let chunk = chunk.map_err(|e| ReplicationError::op(Stage::GetSource, &e))?;
        if !chunk.is_empty() {
            return Err(ReplicationError {
                stage: Stage::GetSource,
                code: "BadLength".into(),
                message: "the source announced 0 bytes but sent some".into(),
                retryable: true,
            });
        }
    }
    if let Some(c) = get.head.crc32c.filter(|c| *c != 0) {
        return Err(ReplicationError {
            stage: Stage::GetSource,
            code: "ChecksumMismatch".into(),
            message: format!(
                "the source's CRC32C {} is not that of 0 bytes",
                checksum::encode(c)
            ),
            retryable: true,
        });
    }
    replicate_small_empty(ctx, v, meta, tags).await?;
    Ok(Outcome::Copied { bytes: 0 })
}

/// Reads a destination version back and returns its CRC32C (see
/// [`crate::s3::EndpointConfig::verify_after_write`]).
pub(crate) async fn read_back_crc(
    ctx: &Ctx,
    key: &str,
    version_id: Option<&str>,
) -> Result<u32, ReplicationError> {
    let mut get = ctx
        .dest
        .get_object(
            &ctx.dest_bucket,
            key,
            GetObjectRequest {
                version_id,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| ReplicationError::op(Stage::Verify, &e))?;
    let mut crc = 0u32;
    while let Some(chunk) = get.body.data().await {
        let chunk = chunk.map_err(|e| ReplicationError::op(Stage::Verify, &e))?;
        crc = crc32c::crc32c_append(crc, &chunk);
    }
    Ok(crc)
}

/// An empty object (used when a multipart source turns out to hold no bytes).
pub(crate) async fn replicate_small_empty(
    ctx: &Ctx,
    v: &Version,
    meta: &ObjectMetadata,
    tags: &[(String, String)],
) -> Result<u64, ReplicationError> {
    ctx.dest
        .put_object(
            &ctx.dest_bucket,
            &v.key,
            PutObjectRequest {
                body: ReqBody::Empty,
                length: 0,
                metadata: meta,
                tags,
                checksum: UploadChecksum::Header(0),
            },
        )
        .await
        .map_err(|e| ReplicationError::op(Stage::PutDestination, &e))?;
    Ok(0)
}

async fn replicate_delete_marker(ctx: &Ctx, v: &Version) -> Result<Outcome, ReplicationError> {
    ctx.dest
        .delete_object(&ctx.dest_bucket, &v.key, None)
        .await
        .map_err(|e| ReplicationError::op(Stage::DeleteDestination, &e))?;
    Ok(Outcome::DeleteMarker)
}

/// Replicates one version with retries. Before a retry of a copy, one HEAD checks whether
/// the previous attempt landed after all (its response lost), so a retry never duplicates.
pub async fn replicate(ctx: &Ctx, v: &Version) -> Result<Outcome, (ReplicationError, u32)> {
    let units = window_units(&ctx.opts, v.size);
    let _window = if units > 0 {
        Some(ctx.byte_window.acquire_permit(units).await.map_err(|_| {
            (
                ReplicationError {
                    stage: Stage::Multipart,
                    code: "ShuttingDown".into(),
                    message: "the shard's window is closed".into(),
                    retryable: true,
                },
                1,
            )
        })?)
    } else {
        None
    };
    let mut attempt = 1;
    loop {
        let result = if attempt > 1 && !v.delete_marker {
            match already_at_destination(ctx, v).await {
                Ok(true) => return Ok(Outcome::Skipped),
                Ok(false) => replicate_once(ctx, v).await,
                Err(e) => Err(e),
            }
        } else {
            replicate_once(ctx, v).await
        };
        match result {
            Ok(o) => return Ok(o),
            Err(e) => {
                if e.code == "ChecksumMismatch" {
                    Stats::add(&ctx.stats.checksum_mismatches, 1);
                }
                if !e.retryable || attempt >= ctx.opts.retry.max_attempts || ctx.shutdown.is_set() {
                    return Err((e, attempt));
                }
                tracing::debug!(key = %v.key, version = %v.version_id, attempt, error = %e, "retrying");
                Stats::add(&ctx.stats.retries, 1);
                if !ctx.shutdown.sleep(ctx.opts.retry.backoff(attempt)).await {
                    return Err((e, attempt));
                }
                attempt += 1;
            }
        }
    }
}

/// Window units (MiB) a version of `size` bytes takes: none below 1 MiB, never more than the
/// whole window.
pub fn window_units(opts: &Options, size: u64) -> u64 {
    if opts.window < 1 << 20 || size < 1 << 20 {
        return 0;
    }
    (size >> 20).min(opts.window >> 20)
}

/// A shard's byte window (see [`Options::window`]).
pub fn byte_window(opts: &Options) -> std::rc::Rc<glommio::sync::Semaphore> {
    std::rc::Rc::new(glommio::sync::Semaphore::new((opts.window >> 20).max(1)))
}

/// Replicates a key's versions, oldest first, skipping those already at the destination.
/// A failed version stops the key: later versions are reported as blocked, so a rerun
/// resumes in order.
pub async fn replicate_key(
    ctx: &Ctx,
    key: &str,
    versions: &[Version],
    latency: &std::cell::RefCell<hdrhistogram::Histogram<u64>>,
) {
    let start = {
        let mut attempt = 1;
        loop {
            match applied_prefix(ctx, key, versions).await {
                Ok(n) => break Ok(n),
                Err(e)
                    if e.retryable
                        && attempt < ctx.opts.retry.max_attempts
                        && !ctx.shutdown.is_set() =>
                {
                    Stats::add(&ctx.stats.retries, 1);
                    ctx.shutdown.sleep(ctx.opts.retry.backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => break Err((e, attempt)),
            }
        }
    };
    let start = match start {
        Ok(n) => n,
        Err((e, attempts)) => {
            for v in versions {
                fail(ctx, v, &e, attempts);
            }
            return;
        }
    };
    Stats::add(&ctx.stats.skipped, start as u64);
    for (i, v) in versions.iter().enumerate().skip(start) {
        if ctx.shutdown.is_set() {
            return;
        }
        let t = Instant::now();
        match replicate(ctx, v).await {
            Ok(Outcome::Copied { bytes }) => {
                Stats::add(&ctx.stats.versions_copied, 1);
                Stats::add(&ctx.stats.bytes_copied, bytes);
                latency
                    .borrow_mut()
                    .saturating_record(t.elapsed().as_micros().max(1) as u64);
            }
            Ok(Outcome::DeleteMarker) => {
                Stats::add(&ctx.stats.delete_markers, 1);
                latency
                    .borrow_mut()
                    .saturating_record(t.elapsed().as_micros().max(1) as u64);
            }
            Ok(Outcome::Skipped) => Stats::add(&ctx.stats.skipped, 1),
            Err((e, attempts)) => {
                fail(ctx, v, &e, attempts);
                let blocked = ReplicationError {
                    stage: e.stage,
                    code: "BlockedByEarlierVersion".into(),
                    message: format!(
                        "not attempted: version {} of this key failed first",
                        v.version_id
                    ),
                    retryable: true,
                };
                for later in &versions[i + 1..] {
                    fail(ctx, later, &blocked, 0);
                }
                return;
            }
        }
    }
}

fn fail(ctx: &Ctx, v: &Version, e: &ReplicationError, attempts: u32) {
    tracing::warn!(key = %v.key, version = %v.version_id, attempts, error = %e, "version failed");
    ctx.stats.record_failure(Failure {
        key: v.key.clone(),
        version_id: v.version_id.clone(),
        code: e.code.clone(),
        message: e.to_string(),
        retryable: e.retryable,
        attempts,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_units_spare_small_objects_and_cap_large_ones() {
        let o = Options::default();
        assert_eq!(window_units(&o, 4096), 0);
        assert_eq!(window_units(&o, (1 << 20) - 1), 0);
        assert_eq!(window_units(&o, 16 << 20), 16);
        assert_eq!(
            window_units(&o, 1 << 30),
            64,
            "never more than the whole window"
        );
        let unbounded = Options {
            window: 0,
            ..Options::default()
        };
        assert_eq!(window_units(&unbounded, 1 << 30), 0);
    }

    #[test]
    fn multipart_etags() {
        assert_eq!(multipart_etag_parts("\"abc-3\""), Some(3));
        assert_eq!(multipart_etag_parts("\"abc\""), None);
        assert_eq!(multipart_etag_parts("abc-x"), None);
    }

    #[test]
    fn etag_rules() {
        let a = "\"0123456789abcdef0123456789abcdef\"";
        let b = "\"0123456789abcdef0123456789abcdee\"";
        assert!(verify_etag(a, a, true).is_ok());
        assert_eq!(
            verify_etag(a, b, true).unwrap_err().code,
            "ChecksumMismatch"
        );
        // KMS-style or multipart ETags are not content hashes of the whole body
        assert!(verify_etag("\"abc-2\"", b, true).is_ok());
        assert!(verify_etag("\"abc-2\"", "\"abd-2\"", false).is_ok());
        assert!(verify_etag("\"abc-2\"", "\"abd-2\"", true).is_err());
    }

    #[test]
    fn verify_rules() {
        assert!(verify(Some(1), Some(1)).is_ok());
        assert!(verify(Some(1), None).is_ok());
        let e = verify(Some(1), Some(2)).unwrap_err();
        assert_eq!(e.code, "ChecksumMismatch");
        assert!(e.retryable);
        assert!(verify(None, Some(1)).is_err());
    }
}
