//! Multipart copies: parts fetched with ranged GETs (or by part number, keeping the
//! source's part layout so the ETag matches) and uploaded in parallel, bounded per object
//! and per shard. A failed copy waits for the parts already sent, then aborts its upload
//! (again while the abort fails for a passing reason): no orphan parts are left behind.
//!
//! May call: `s3` (the stores), `retry` (the abort), `pipeline` (the steps a single PUT
//! shares: checksums, verification, refusals explained).

use futures_util::stream::{self, StreamExt};

use super::pipeline::{progress_counters, replicate_small_empty, upload_checksum, verify};
use super::{DataPath, ErrorKind, ReplicationError, Route, Stage, Version};
use crate::retry::{retry, RetryPolicy};
use crate::s3::body::PipeBody;
use crate::s3::http::ReqBody;
use crate::s3::ops::abort_multipart_upload::AbortMultipartUploadError;
use crate::s3::ops::get_object::GetObjectRequest;
use crate::s3::ops::head_object::HeadObjectRequest;
use crate::s3::ops::put_object::UploadChecksum;
use crate::s3::ops::upload_part::CompletedPart;
use crate::s3::ops::{ObjectHead, ObjectMetadata};
use crate::s3::store::ObjectStore;
use crate::s3::ChecksumTransport;

/// S3's limit on parts per upload.
const MAX_PARTS: u64 = 10_000;

/// Where a part's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartSource {
    /// The source object's own part: its byte range, found with HEAD partNumber (a GET by
    /// part number is not honoured by every server).
    Part(u64, u64),
    /// An inclusive byte range of the source object.
    Range(u64, u64),
}

/// One part of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlan {
    pub number: u32,
    pub source: PartSource,
}

/// Splits `size` bytes into parts of `part_size` (grown if needed to stay within 10,000).
pub fn plan_ranges(size: u64, part_size: u64) -> Vec<PartPlan> {
    let mut ps = part_size.max(5 * 1024 * 1024);
    if size.div_ceil(ps) > MAX_PARTS {
        ps = size.div_ceil(MAX_PARTS);
    }
    let mut parts = Vec::new();
    let mut off = 0;
    let mut n = 1;
    while off < size {
        let end = (off + ps).min(size) - 1;
        parts.push(PartPlan {
            number: n,
            source: PartSource::Range(off, end),
        });
        off = end + 1;
        n += 1;
    }
    if parts.is_empty() {
        parts.push(PartPlan {
            number: 1,
            source: PartSource::Range(0, 0),
        });
    }
    parts
}

/// The byte ranges of the source's `n` parts, from one HEAD partNumber per part.
async fn source_layout<S: ObjectStore>(
    route: &Route<S>,
    v: &Version,
    vid: Option<&str>,
    n: u32,
    first_len: u64,
    total: u64,
) -> Result<Vec<PartPlan>, ReplicationError> {
    let mut sizes = vec![first_len];
    let rest: Vec<Result<u64, ReplicationError>> = stream::iter(2..=n)
        .map(|number| async move {
            route
                .source
                .head_object(
                    &route.source_bucket,
                    &v.key,
                    HeadObjectRequest {
                        version_id: vid,
                        part_number: Some(number),
                        checksum_mode: false,
                    },
                )
                .await
                .map(|h| h.content_length)
                .map_err(|e| ReplicationError::op(Stage::HeadSource, e))
        })
        .buffered(16)
        .collect()
        .await;
    for r in rest {
        sizes.push(r?);
    }
    if sizes.iter().sum::<u64>() != total {
        return Err(ReplicationError::new(
            Stage::HeadSource,
            ErrorKind::BadLength("InconsistentParts"),
            format!("the source's {n} parts do not add up to its {total} bytes"),
        ));
    }
    let mut off = 0;
    Ok(sizes
        .iter()
        .enumerate()
        .map(|(i, len)| {
            let p = PartPlan {
                number: i as u32 + 1,
                source: PartSource::Part(off, off + len - 1),
            };
            off += len;
            p
        })
        .collect())
}

/// Aborts uploads of this exact key left open at the destination by a mover that was killed
/// mid-copy (a stopped mover aborts its own): a replayed copy starts by cleaning up. Only
/// backbeat writes to a replication destination, and versions of one key are never copied
/// at once, so an open upload of this key is an orphan. Best effort: errors are logged.
async fn abort_stale_uploads<S: ObjectStore>(route: &Route<S>, dp: &DataPath, key: &str) {
    match route
        .dest
        .list_multipart_uploads(&route.dest_bucket, Some(key))
        .await
    {
        Ok(open) => {
            for u in open.into_iter().filter(|u| u.key == key) {
                if abort(route, dp, key, &u.upload_id).await {
                    tracing::info!(key, upload_id = %u.upload_id, "aborted an upload left open by an earlier attempt");
                }
            }
        }
        Err(e) => tracing::debug!(key, error = %e, "cannot list open uploads"),
    }
}

/// Aborts one upload, trying again while the error is retryable (an upload already gone
/// counts as aborted). Says whether it succeeded; a failure is logged with what to do.
async fn abort<S: ObjectStore>(route: &Route<S>, dp: &DataPath, key: &str, id: &str) -> bool {
    let what = format!("abort of upload {id} of {key}");
    let permanent = |e: &AbortMultipartUploadError| !e.is_retryable();
    let done = retry(
        &RetryPolicy::ABORT_UPLOAD,
        &dp.cancel,
        &what,
        permanent,
        |_| {
            route
                .dest
                .abort_multipart_upload(&route.dest_bucket, key, id)
        },
    )
    .await;
    match done {
        Ok(()) => true,
        Err(g) => {
            tracing::warn!(key, upload_id = id, attempts = g.attempts, error = %g.error,
                "could not abort a multipart upload: the next copy of this key aborts it, or a lifecycle rule's AbortIncompleteMultipartUpload does");
            false
        }
    }
}

/// Whether a version is copied with a multipart upload: the source was uploaded in parts
/// (its layout is kept), or it is at least the multipart threshold.
pub fn wanted(head: &ObjectHead, opts: &super::Options) -> bool {
    let large = opts.multipart_threshold > 0 && head.content_length >= opts.multipart_threshold;
    super::multipart_etag_parts(&head.etag).is_some() || large
}

/// Copies a version with a multipart upload. Returns the bytes copied.
pub async fn copy<S: ObjectStore>(
    route: &Route<S>,
    dp: &DataPath,
    v: &Version,
    head: &ObjectHead,
    meta: &ObjectMetadata,
    tags: &[(String, String)],
) -> Result<u64, ReplicationError> {
    let vid = super::source_version_id(&v.version_id);
    let (plan, same_layout) = plan_for(route, dp, v, vid, head).await?;
    if head.content_length == 0 {
        // Nothing to split: a zero-byte multipart source becomes a plain empty object.
        return replicate_small_empty(route, v, meta, tags).await;
    }
    let with_crc = route.dest.checksum_transport() == ChecksumTransport::Trailer;
    abort_stale_uploads(route, dp, &v.key).await;
    let create =
        route
            .dest
            .create_multipart_upload(&route.dest_bucket, &v.key, meta, tags, with_crc);
    let upload_id = create.await.map_err(|e| {
        let e = ReplicationError::op(Stage::Multipart, e);
        super::pipeline::explain_refusal(e, meta, &route.dest_bucket)
    })?;
    let upload = Upload {
        route,
        dp,
        v,
        vid,
        upload_id: &upload_id,
        with_crc,
        stopping: std::cell::Cell::new(false),
    };
    let comparable = super::pipeline::etags_comparable(head, meta);
    match complete_and_verify(&upload, head, &plan, same_layout, comparable).await {
        Ok(()) => Ok(head.content_length),
        Err(e) => {
            abort(route, dp, &v.key, &upload_id).await;
            Err(e)
        }
    }
}

/// The parts to copy: the source's own layout when it was uploaded in parts (so the ETag
/// matches; the flag says so), else ranges of the configured part size.
async fn plan_for<S: ObjectStore>(
    route: &Route<S>,
    dp: &DataPath,
    v: &Version,
    vid: Option<&str>,
    head: &ObjectHead,
) -> Result<(Vec<PartPlan>, bool), ReplicationError> {
    if super::multipart_etag_parts(&head.etag).is_some() {
        let req = HeadObjectRequest {
            version_id: vid,
            part_number: Some(1),
            checksum_mode: false,
        };
        let h1 = route
            .source
            .head_object(&route.source_bucket, &v.key, req)
            .await;
        let h1 = h1.map_err(|e| ReplicationError::op(Stage::HeadSource, e))?;
        if let Some(n) = h1.parts_count.filter(|n| *n > 0) {
            let total = head.content_length;
            let plan = source_layout(route, v, vid, n, h1.content_length, total).await?;
            return Ok((plan, true));
        }
    }
    Ok((plan_ranges(head.content_length, dp.opts.part_size), false))
}

/// Uploads the parts, completes the upload and checks what the destination stored: the
/// ETag when the layout was kept, else (on servers that do not check CRC32C themselves) the
/// object read back. A corrupt version is removed before the error is returned.
async fn complete_and_verify<S: ObjectStore>(
    u: &Upload<'_, S>,
    head: &ObjectHead,
    plan: &[PartPlan],
    same_layout: bool,
    etags_comparable: bool,
) -> Result<(), ReplicationError> {
    let (route, key) = (u.route, &u.v.key);
    let whole_crc = std::cell::Cell::new(None);
    let parts = upload_parts(u, plan, &whole_crc).await?;
    let complete =
        route
            .dest
            .complete_multipart_upload(&route.dest_bucket, key, u.upload_id, &parts);
    let out = complete
        .await
        .map_err(|e| ReplicationError::op(Stage::Multipart, e))?;
    let mut check = match etags_comparable {
        true => super::pipeline::verify_etag(&head.etag, &out.etag, same_layout),
        false => Ok(()),
    };
    if check.is_ok() && (!same_layout || !etags_comparable) && route.dest.verify_after_write() {
        let vid = out.version_id.as_deref();
        let got = super::pipeline::read_back_crc(route, key, vid).await?;
        check = read_back_matches(got, whole_crc.get());
    }
    if check.is_err() {
        super::pipeline::discard_version(route, key, out.version_id.as_deref()).await;
    }
    check
}

/// Compares the CRC32C of an object read back with that of the bytes sent.
fn read_back_matches(got: u32, expected: Option<u32>) -> Result<(), ReplicationError> {
    if Some(got) == expected {
        return Ok(());
    }
    let encode = crate::s3::checksum::encode;
    let message = format!(
        "the destination holds CRC32C {} but the bytes sent have {}",
        encode(got),
        expected.map(encode).unwrap_or_default()
    );
    Err(ReplicationError::new(
        Stage::Verify,
        ErrorKind::ChecksumMismatch,
        message,
    ))
}

/// One multipart upload in progress: what each of its parts needs.
struct Upload<'a, S: ObjectStore> {
    route: &'a Route<S>,
    dp: &'a DataPath,
    v: &'a Version,
    vid: Option<&'a str>,
    upload_id: &'a str,
    /// Each part carries a CRC32C trailer.
    with_crc: bool,
    /// A part failed: parts not yet started are not sent.
    stopping: std::cell::Cell<bool>,
}

async fn upload_parts<S: ObjectStore>(
    u: &Upload<'_, S>,
    plan: &[PartPlan],
    whole_crc: &std::cell::Cell<Option<u32>>,
) -> Result<Vec<CompletedPart>, ReplicationError> {
    let mut results = stream::iter(plan.iter().copied())
        .map(|p| upload_one(u, p))
        .buffer_unordered(u.dp.opts.part_concurrency.max(1));
    let mut parts = Vec::with_capacity(plan.len());
    let mut failed = None;
    while let Some(r) = results.next().await {
        match r {
            Ok(part) => parts.push(part),
            // Parts already sent are waited for, not dropped: a server may still store a
            // part it is receiving after the upload is aborted, leaving it open.
            Err(e) => {
                u.stopping.set(true);
                failed.get_or_insert(e);
            }
        }
        if u.dp.cancel.is_set() {
            return Err(ReplicationError::new(
                Stage::Multipart,
                ErrorKind::Cancelled,
                "stopped before the upload completed",
            ));
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    parts.sort_by_key(|p| p.0.part_number);
    // CRC32C of the whole object, from the parts' CRCs.
    let mut crc = 0u32;
    for (_, part_crc, len) in &parts {
        crc = crc32c::crc32c_combine(crc, *part_crc, *len as usize);
    }
    whole_crc.set(Some(crc));
    Ok(parts.into_iter().map(|(p, _, _)| p).collect())
}

/// A slot of the shard's part semaphore for the next part, unless a part of the upload
/// failed (then the part is not sent).
async fn part_slot<'a, S: ObjectStore>(
    u: &Upload<'a, S>,
) -> Result<glommio::sync::Permit<'a>, ReplicationError> {
    let not_started = || {
        let why = "not sent: another part of the upload failed";
        ReplicationError::new(Stage::Multipart, ErrorKind::Cancelled, why)
    };
    if u.stopping.get() {
        return Err(not_started());
    }
    let permit = u.dp.part_slots.acquire_permit(1).await.map_err(|_| {
        ReplicationError::new(Stage::Multipart, ErrorKind::Cancelled, "part slots closed")
    })?;
    match u.stopping.get() {
        true => Err(not_started()),
        false => Ok(permit),
    }
}

async fn upload_one<S: ObjectStore>(
    u: &Upload<'_, S>,
    p: PartPlan,
) -> Result<(CompletedPart, u32, u64), ReplicationError> {
    let Upload {
        route,
        dp,
        v,
        vid,
        upload_id,
        with_crc,
        ..
    } = *u;
    let _permit = part_slot(u).await?;
    let (PartSource::Part(a, b) | PartSource::Range(a, b)) = p.source;
    let req = GetObjectRequest {
        version_id: vid,
        range: Some((a, b)),
        checksum_mode: false,
        part_number: None,
    };
    let get = route
        .source
        .get_object(&route.source_bucket, &v.key, req)
        .await
        .map_err(|e| ReplicationError::op(Stage::GetSource, e))?;
    let len = get.head.content_length;
    if len != b - a + 1 {
        return Err(ReplicationError::new(
            Stage::GetSource,
            ErrorKind::BadLength("BadRange"),
            format!("asked for bytes {a}-{b}, got {len} bytes"),
        ));
    }
    // Ranged reads carry no checksum: the CRC32C is computed in flight and sent as a trailer.
    let known = None;
    let (mode, chunked) = if with_crc {
        upload_checksum(&route.dest, known)
    } else {
        (UploadChecksum::None, false)
    };
    let (pipe, result) = PipeBody::new(
        get.body,
        len,
        known,
        chunked,
        progress_counters(route, dp, v),
    );
    let pipe = pipe.with_limit(dp.limit.clone());
    let mut part = route
        .dest
        .upload_part(
            &route.dest_bucket,
            &v.key,
            crate::s3::ops::upload_part::UploadPartRequest {
                upload_id,
                part_number: p.number,
                body: ReqBody::Stream(Box::new(pipe)),
                length: len,
                checksum: mode,
            },
        )
        .await
        .map_err(|e| ReplicationError::op(Stage::Multipart, e))?;
    verify(result.crc32c(), part.crc32c)?;
    let crc = result.crc32c().unwrap_or_default();
    part.crc32c = if with_crc { Some(crc) } else { None };
    Ok((part, crc, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_exactly() {
        let mib = 1024 * 1024;
        let p = plan_ranges(20 * mib + 1, 8 * mib);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].source, PartSource::Range(0, 8 * mib - 1));
        assert_eq!(p[2].source, PartSource::Range(16 * mib, 20 * mib));
        // at most 10,000 parts
        let p = plan_ranges(100_000 * 5 * mib, 5 * mib);
        assert!(p.len() <= 10_000);
        let mut next = 0;
        for part in &p {
            let PartSource::Range(a, b) = part.source else {
                panic!()
            };
            assert_eq!(a, next);
            next = b + 1;
        }
        assert_eq!(next, 100_000 * 5 * mib);
    }
}
