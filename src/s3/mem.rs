//! An in-memory [`ObjectStore`] with S3's versioning semantics ([`MemStore`]), and a wrapper
//! that injects failures into another store ([`Flaky`]): what unit tests of the replication
//! pipeline run against, in the manner of mountpoint-s3's mock and failure clients. Real
//! servers stay the judge in the integration tests.
//!
//! ETags are content hashes of the store's own (32 hex digits from the CRC32C, `-N` for
//! multipart), so ETag comparisons behave as with MD5.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use super::client::ChecksumTransport;
use super::error::RequestError;
use super::http::{ReqBody, RespBody};
use super::ops::abort_multipart_upload::AbortMultipartUploadError;
use super::ops::acl::{Grant, ObjectAcl};
use super::ops::complete_multipart_upload::{CompleteMultipartUploadError, CompleteOutput};
use super::ops::create_multipart_upload::CreateMultipartUploadError;
use super::ops::delete_object::{DeleteObjectError, DeleteObjectOutput};
use super::ops::get_object::{GetObjectError, GetObjectOutput, GetObjectRequest};
use super::ops::head_object::{HeadObjectError, HeadObjectRequest};
use super::ops::list_multipart_uploads::{ListMultipartUploadsError, OpenUpload};
use super::ops::list_object_versions::{
    ListObjectVersionsError, ListObjectVersionsPage, ListObjectVersionsRequest, ListedVersion,
};
use super::ops::list_objects_v2::{ListObjectsV2Page, ListObjectsV2Request};
use super::ops::put_object::{PutObjectError, PutObjectOutput, PutObjectRequest, UploadChecksum};
use super::ops::tagging::TaggingError;
use super::ops::upload_part::{CompletedPart, UploadPartError, UploadPartRequest};
use super::ops::{ObjectHead, ObjectMetadata};
use super::store::{MetadataWrite, ObjectStore};

/// One stored version or delete marker.
#[derive(Debug, Clone)]
pub struct Stored {
    pub version_id: String,
    pub delete_marker: bool,
    pub data: Bytes,
    pub metadata: ObjectMetadata,
    pub tags: Vec<(String, String)>,
    pub etag: String,
    pub crc32c: u32,
    /// Sizes of the parts it was uploaded in (empty: a single PUT).
    pub part_sizes: Vec<u64>,
    pub last_modified: String,
}

#[derive(Default)]
struct Bucket {
    versioned: bool,
    /// Per key, oldest first.
    keys: BTreeMap<String, Vec<Stored>>,
    uploads: BTreeMap<String, Upload>,
}

struct Upload {
    key: String,
    metadata: ObjectMetadata,
    tags: Vec<(String, String)>,
    parts: BTreeMap<u32, Bytes>,
}

/// Buckets of versions in memory, on one shard.
pub struct MemStore {
    buckets: RefCell<BTreeMap<String, Bucket>>,
    seq: Cell<u64>,
    /// Seconds since 1_790_000_000 of the next write (LastModified has whole seconds).
    clock: Cell<u64>,
    /// When set, writes do not move the clock (versions written in the same second).
    clock_held: Cell<bool>,
    /// Calls per operation name (e.g. `"put_object"`), to assert round trips.
    calls: RefCell<BTreeMap<&'static str, u32>>,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

fn etag_of(data: &[u8]) -> String {
    let c = crc32c::crc32c(data);
    format!("\"{c:08x}{:08x}{c:08x}{:08x}\"", !c, data.len() as u32)
}

fn service(status: u16, code: &str) -> RequestError {
    RequestError::Service {
        status,
        code: code.to_string(),
        message: format!("in-memory store: {code}"),
        request_id: String::new(),
    }
}

impl MemStore {
    pub fn new() -> Self {
        Self {
            buckets: RefCell::default(),
            seq: Cell::new(0),
            clock: Cell::new(0),
            clock_held: Cell::new(false),
            calls: RefCell::default(),
        }
    }

    pub fn create_bucket(&self, name: &str, versioned: bool) {
        let b = Bucket {
            versioned,
            ..Bucket::default()
        };
        self.buckets.borrow_mut().insert(name.to_string(), b);
    }

    /// How many times operation `op` was called.
    pub fn calls(&self, op: &str) -> u32 {
        self.calls.borrow().get(op).copied().unwrap_or(0)
    }

    fn count(&self, op: &'static str) {
        *self.calls.borrow_mut().entry(op).or_default() += 1;
    }

    /// Holds the clock (`true`: the next writes share one LastModified second) or lets it
    /// move again, one second per write.
    pub fn hold_clock(&self, held: bool) {
        self.clock_held.set(held);
    }

    fn next_id(&self) -> (String, String) {
        let n = self.seq.get() + 1;
        self.seq.set(n);
        if !self.clock_held.get() || self.clock.get() == 0 {
            self.clock.set(self.clock.get() + 1);
        }
        let at = UNIX_EPOCH + Duration::from_secs(1_790_000_000 + self.clock.get());
        (format!("v{n:06}"), crate::time::rfc3339(at))
    }

    /// Stores a new version (or replaces the object when unversioned); returns its id.
    fn store(&self, bucket: &str, key: &str, mut s: Stored) -> Result<String, RequestError> {
        let (id, at) = self.next_id();
        let mut buckets = self.buckets.borrow_mut();
        let b = buckets
            .get_mut(bucket)
            .ok_or_else(|| service(404, "NoSuchBucket"))?;
        s.version_id = if b.versioned { id } else { "null".into() };
        s.last_modified = at;
        let versions = b.keys.entry(key.to_string()).or_default();
        if !b.versioned {
            versions.clear();
        }
        versions.push(s.clone());
        Ok(s.version_id)
    }

    /// Seeds a version with `data` (tests).
    pub fn put(&self, bucket: &str, key: &str, data: &[u8]) -> String {
        self.put_with(bucket, key, data, ObjectMetadata::default(), Vec::new())
    }

    /// Seeds a version with metadata and tags (tests).
    pub fn put_with(
        &self,
        bucket: &str,
        key: &str,
        data: &[u8],
        metadata: ObjectMetadata,
        tags: Vec<(String, String)>,
    ) -> String {
        let s = Stored {
            version_id: String::new(),
            delete_marker: false,
            data: Bytes::copy_from_slice(data),
            metadata,
            tags,
            etag: etag_of(data),
            crc32c: crc32c::crc32c(data),
            part_sizes: Vec::new(),
            last_modified: String::new(),
        };
        self.store(bucket, key, s).expect("seeded bucket exists")
    }

    /// Seeds a version uploaded in parts (tests).
    pub fn put_parts(&self, bucket: &str, key: &str, parts: &[&[u8]]) -> String {
        let data: Vec<u8> = parts.concat();
        let s = Stored {
            part_sizes: parts.iter().map(|p| p.len() as u64).collect(),
            etag: multipart_etag(parts.iter().map(|p| etag_of(p))),
            ..self.stored(&data)
        };
        self.store(bucket, key, s).expect("seeded bucket exists")
    }

    fn stored(&self, data: &[u8]) -> Stored {
        Stored {
            version_id: String::new(),
            delete_marker: false,
            data: Bytes::copy_from_slice(data),
            metadata: ObjectMetadata::default(),
            tags: Vec::new(),
            etag: etag_of(data),
            crc32c: crc32c::crc32c(data),
            part_sizes: Vec::new(),
            last_modified: String::new(),
        }
    }

    /// Seeds a delete marker (tests); returns its id.
    pub fn delete_marker(&self, bucket: &str, key: &str) -> String {
        let s = Stored {
            delete_marker: true,
            ..self.stored(b"")
        };
        self.store(bucket, key, s).expect("seeded bucket exists")
    }

    /// Every version and delete marker of `key`, oldest first (tests' assertions).
    pub fn versions(&self, bucket: &str, key: &str) -> Vec<Stored> {
        let buckets = self.buckets.borrow();
        let b = buckets.get(bucket);
        b.and_then(|b| b.keys.get(key)).cloned().unwrap_or_default()
    }

    /// Uploads in progress in `bucket`.
    pub fn open_uploads(&self, bucket: &str) -> usize {
        self.buckets
            .borrow()
            .get(bucket)
            .map_or(0, |b| b.uploads.len())
    }

    /// The version asked for (or the latest).
    fn find(
        &self,
        bucket: &str,
        key: &str,
        vid: Option<&str>,
    ) -> Result<Option<Stored>, RequestError> {
        let buckets = self.buckets.borrow();
        let b = buckets
            .get(bucket)
            .ok_or_else(|| service(404, "NoSuchBucket"))?;
        let versions = b.keys.get(key);
        Ok(match vid {
            None => versions.and_then(|v| v.last()).cloned(),
            Some(id) => versions
                .and_then(|v| v.iter().find(|s| s.version_id == id))
                .cloned(),
        })
    }
}

fn multipart_etag(part_etags: impl Iterator<Item = String>) -> String {
    let all: Vec<String> = part_etags.collect();
    let joined = all.concat();
    let inner = etag_of(joined.as_bytes());
    format!("{}-{}\"", inner.trim_end_matches('"'), all.len())
}

fn head_of(s: &Stored, part: Option<u32>, checksum_mode: bool) -> ObjectHead {
    let (len, parts_count) = match part {
        Some(n) if !s.part_sizes.is_empty() => (
            s.part_sizes.get(n as usize - 1).copied().unwrap_or(0),
            Some(s.part_sizes.len() as u32),
        ),
        _ => (s.data.len() as u64, None),
    };
    let whole = s.part_sizes.is_empty();
    ObjectHead {
        content_length: len,
        etag: s.etag.clone(),
        last_modified: Some(s.last_modified.clone()),
        version_id: Some(s.version_id.clone()),
        metadata: s.metadata.clone(),
        crc32c: (checksum_mode && whole).then_some(s.crc32c),
        checksum_crc32c_raw: None,
        parts_count,
        tag_count: s.tags.len() as u32,
        range_total: None,
        storage_class: s.metadata.write.storage_class.clone(),
        lock: s.metadata.write.lock.clone(),
        sse: s.metadata.write.sse.clone(),
        sse_kms_key_id: s.metadata.write.kms_key_id.clone(),
        ..Default::default()
    }
}

/// Reads a request body to its end (aws-chunked bodies are not taken).
async fn read_body(body: ReqBody, checksum: &UploadChecksum) -> Result<Bytes, RequestError> {
    if matches!(checksum, UploadChecksum::Trailer) {
        return Err(RequestError::InvalidRequest(
            "the in-memory store takes no aws-chunked bodies".into(),
        ));
    }
    let mut body = body;
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_request_error())?;
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
        }
    }
    let out = out.freeze();
    match checksum {
        UploadChecksum::Header(c) if *c != crc32c::crc32c(&out) => Err(service(400, "BadDigest")),
        _ => Ok(out),
    }
}

fn frames(data: Bytes) -> RespBody {
    let chunk = 64 * 1024;
    let n = data.len().div_ceil(chunk);
    RespBody::from_frames((0..n).map(|i| data.slice(i * chunk..((i + 1) * chunk).min(data.len()))))
}

impl ObjectStore for MemStore {
    fn checksum_transport(&self) -> ChecksumTransport {
        ChecksumTransport::Header
    }

    fn verify_after_write(&self) -> bool {
        false
    }

    fn site(&self) -> String {
        "mem".into()
    }

    async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        opts: HeadObjectRequest<'_>,
    ) -> Result<ObjectHead, HeadObjectError> {
        self.count("head_object");
        match self.find(bucket, key, opts.version_id)? {
            None => Err(HeadObjectError::NotFound),
            Some(s) if s.delete_marker => Err(HeadObjectError::DeleteMarker {
                version_id: Some(s.version_id),
            }),
            Some(s) => Ok(head_of(&s, opts.part_number, opts.checksum_mode)),
        }
    }

    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        opts: GetObjectRequest<'_>,
    ) -> Result<GetObjectOutput, GetObjectError> {
        self.count("get_object");
        let s = match self.find(bucket, key, opts.version_id)? {
            Some(s) if !s.delete_marker => s,
            _ => return Err(GetObjectError::NotFound),
        };
        let mut head = head_of(&s, None, opts.checksum_mode);
        let data = match opts.range {
            None => s.data.clone(),
            Some((a, b)) if a < s.data.len() as u64 => {
                let end = (b + 1).min(s.data.len() as u64);
                head.crc32c = None;
                head.range_total = Some(s.data.len() as u64);
                s.data.slice(a as usize..end as usize)
            }
            Some(_) => return Err(GetObjectError::InvalidRange),
        };
        head.content_length = data.len() as u64;
        Ok(GetObjectOutput {
            head,
            body: frames(data),
        })
    }

    async fn get_object_tagging(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Vec<(String, String)>, TaggingError> {
        self.count("get_object_tagging");
        match self.find(bucket, key, version_id)? {
            Some(s) if !s.delete_marker => Ok(s.tags),
            _ => Err(TaggingError::NotFound),
        }
    }

    async fn get_object_acl(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Vec<Grant>, TaggingError> {
        // Grants are not kept: every version has the store's default (none listed).
        self.count("get_object_acl");
        match self.find(bucket, key, version_id)? {
            Some(s) if !s.delete_marker => Ok(Vec::new()),
            _ => Err(TaggingError::NotFound),
        }
    }

    async fn put_object_metadata(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        w: &MetadataWrite,
    ) -> Result<(), TaggingError> {
        self.count(w.operation());
        let mut buckets = self.buckets.borrow_mut();
        let b = buckets
            .get_mut(bucket)
            .ok_or_else(|| service(404, "NoSuchBucket"))?;
        let versions = b.keys.get_mut(key).ok_or(TaggingError::NotFound)?;
        let s = match version_id {
            None => versions.last_mut(),
            Some(id) => versions.iter_mut().find(|s| s.version_id == id),
        };
        let s = s
            .filter(|s| !s.delete_marker)
            .ok_or(TaggingError::NotFound)?;
        let write = &mut s.metadata.write;
        match w {
            MetadataWrite::Tags(t) => s.tags = t.clone(),
            MetadataWrite::DeleteTags => s.tags.clear(),
            MetadataWrite::Acl(ObjectAcl::Canned(c)) => write.acl = Some(c.clone()),
            MetadataWrite::Acl(ObjectAcl::Grants(_)) => write.acl = None,
            MetadataWrite::Retention { mode, retain_until } => {
                write.lock.mode = mode.clone();
                write.lock.retain_until = retain_until.clone();
            }
            MetadataWrite::LegalHold(on) => write.lock.legal_hold = *on,
        }
        Ok(())
    }

    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        r: PutObjectRequest<'_>,
    ) -> Result<PutObjectOutput, PutObjectError> {
        self.count("put_object");
        if !self.buckets.borrow().contains_key(bucket) {
            return Err(PutObjectError::NoSuchBucket);
        }
        let data = read_body(r.body, &r.checksum).await?;
        // As S3 and moto do: a current delete marker is no object.
        if r.if_none_match && matches!(self.find(bucket, key, None)?, Some(s) if !s.delete_marker) {
            return Err(PutObjectError::KeyExists);
        }
        if data.len() as u64 != r.length {
            return Err(service(400, "IncompleteBody").into());
        }
        let s = Stored {
            metadata: r.metadata.clone(),
            tags: r.tags.to_vec(),
            ..self.stored(&data)
        };
        let (etag, crc) = (s.etag.clone(), s.crc32c);
        let vid = self.store(bucket, key, s)?;
        Ok(PutObjectOutput {
            etag,
            version_id: (vid != "null").then_some(vid),
            crc32c: Some(crc),
        })
    }

    async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<DeleteObjectOutput, DeleteObjectError> {
        self.count("delete_object");
        let versioned = {
            let buckets = self.buckets.borrow();
            let b = buckets
                .get(bucket)
                .ok_or_else(|| service(404, "NoSuchBucket"))?;
            b.versioned
        };
        if let Some(id) = version_id {
            let mut buckets = self.buckets.borrow_mut();
            let b = buckets.get_mut(bucket).expect("checked above");
            if let Some(v) = b.keys.get_mut(key) {
                v.retain(|s| s.version_id != id);
            }
            let version_id = Some(id.to_string());
            return Ok(DeleteObjectOutput {
                delete_marker: false,
                version_id,
            });
        }
        if !versioned {
            let mut buckets = self.buckets.borrow_mut();
            buckets
                .get_mut(bucket)
                .expect("checked above")
                .keys
                .remove(key);
            return Ok(DeleteObjectOutput {
                delete_marker: false,
                version_id: None,
            });
        }
        let id = self.delete_marker(bucket, key);
        Ok(DeleteObjectOutput {
            delete_marker: true,
            version_id: Some(id),
        })
    }

    async fn list_object_versions(
        &self,
        bucket: &str,
        r: ListObjectVersionsRequest<'_>,
    ) -> Result<ListObjectVersionsPage, ListObjectVersionsError> {
        self.count("list_object_versions");
        let buckets = self.buckets.borrow();
        let b = buckets
            .get(bucket)
            .ok_or(ListObjectVersionsError::NoSuchBucket)?;
        let prefix = r.prefix.unwrap_or("");
        let all: Vec<ListedVersion> = b
            .keys
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .flat_map(|(k, versions)| {
                let n = versions.len();
                versions
                    .iter()
                    .rev()
                    .enumerate()
                    .map(move |(i, s)| ListedVersion {
                        key: k.clone(),
                        version_id: s.version_id.clone(),
                        is_latest: i == 0 && n > 0,
                        delete_marker: s.delete_marker,
                        last_modified: s.last_modified.clone(),
                        etag: s.etag.clone(),
                        size: s.data.len() as u64,
                        storage_class: String::new(),
                    })
            })
            .collect();
        Ok(page(all, &r))
    }

    async fn list_objects_v2(
        &self,
        bucket: &str,
        r: ListObjectsV2Request<'_>,
    ) -> Result<ListObjectsV2Page, ListObjectVersionsError> {
        self.count("list_objects_v2");
        let all = self
            .list_object_versions(
                bucket,
                ListObjectVersionsRequest {
                    prefix: r.prefix,
                    ..Default::default()
                },
            )
            .await?;
        let objects = all
            .versions
            .into_iter()
            .filter(|v| v.is_latest && !v.delete_marker)
            .map(|v| ListedVersion {
                version_id: "null".into(),
                ..v
            })
            .collect();
        Ok(ListObjectsV2Page {
            objects,
            ..Default::default()
        })
    }

    async fn list_multipart_uploads(
        &self,
        bucket: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<OpenUpload>, ListMultipartUploadsError> {
        self.count("list_multipart_uploads");
        let buckets = self.buckets.borrow();
        let b = buckets
            .get(bucket)
            .ok_or_else(|| service(404, "NoSuchBucket"))?;
        let prefix = prefix.unwrap_or("");
        Ok(b.uploads
            .iter()
            .filter(|(_, u)| u.key.starts_with(prefix))
            .map(|(id, u)| OpenUpload {
                key: u.key.clone(),
                upload_id: id.clone(),
                initiated: String::new(),
            })
            .collect())
    }

    async fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        metadata: &ObjectMetadata,
        tags: &[(String, String)],
        _crc32c: bool,
    ) -> Result<String, CreateMultipartUploadError> {
        self.count("create_multipart_upload");
        let (id, _) = self.next_id();
        let mut buckets = self.buckets.borrow_mut();
        let b = buckets
            .get_mut(bucket)
            .ok_or(CreateMultipartUploadError::NoSuchBucket)?;
        let upload = Upload {
            key: key.to_string(),
            metadata: metadata.clone(),
            tags: tags.to_vec(),
            parts: BTreeMap::new(),
        };
        let id = format!("upload-{id}");
        b.uploads.insert(id.clone(), upload);
        Ok(id)
    }

    async fn upload_part(
        &self,
        bucket: &str,
        _key: &str,
        r: UploadPartRequest<'_>,
    ) -> Result<CompletedPart, UploadPartError> {
        self.count("upload_part");
        let data = read_body(r.body, &r.checksum).await?;
        let mut buckets = self.buckets.borrow_mut();
        let b = buckets
            .get_mut(bucket)
            .ok_or_else(|| service(404, "NoSuchBucket"))?;
        let u = b
            .uploads
            .get_mut(r.upload_id)
            .ok_or(UploadPartError::NoSuchUpload)?;
        let part = CompletedPart {
            part_number: r.part_number,
            etag: etag_of(&data),
            crc32c: Some(crc32c::crc32c(&data)),
        };
        u.parts.insert(r.part_number, data);
        Ok(part)
    }

    async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<CompleteOutput, CompleteMultipartUploadError> {
        self.count("complete_multipart_upload");
        let upload = {
            let mut buckets = self.buckets.borrow_mut();
            let b = buckets
                .get_mut(bucket)
                .ok_or_else(|| service(404, "NoSuchBucket"))?;
            b.uploads
                .remove(upload_id)
                .ok_or(CompleteMultipartUploadError::NoSuchUpload)?
        };
        let mut chunks = Vec::new();
        for p in parts {
            let data = upload.parts.get(&p.part_number).cloned();
            chunks.push(data.ok_or_else(|| service(400, "InvalidPart"))?);
        }
        let data: Vec<u8> = chunks.concat();
        let s = Stored {
            metadata: upload.metadata,
            tags: upload.tags,
            part_sizes: chunks.iter().map(|c| c.len() as u64).collect(),
            etag: multipart_etag(chunks.iter().map(|c| etag_of(c))),
            ..self.stored(&data)
        };
        let etag = s.etag.clone();
        let vid = self.store(bucket, key, s)?;
        Ok(CompleteOutput {
            etag,
            version_id: (vid != "null").then_some(vid),
        })
    }

    async fn abort_multipart_upload(
        &self,
        bucket: &str,
        _key: &str,
        upload_id: &str,
    ) -> Result<(), AbortMultipartUploadError> {
        self.count("abort_multipart_upload");
        let mut buckets = self.buckets.borrow_mut();
        if let Some(b) = buckets.get_mut(bucket) {
            b.uploads.remove(upload_id);
        }
        Ok(())
    }
}

/// One page of a listing, after the markers.
fn page(all: Vec<ListedVersion>, r: &ListObjectVersionsRequest<'_>) -> ListObjectVersionsPage {
    let start = match (r.key_marker, r.version_id_marker) {
        (Some(k), Some(v)) => all
            .iter()
            .position(|l| l.key == k && l.version_id == v)
            .map_or(0, |i| i + 1),
        (Some(k), None) => all
            .iter()
            .position(|l| l.key.as_str() > k)
            .unwrap_or(all.len()),
        _ => 0,
    };
    let max = r.max_keys.unwrap_or(1000).max(1) as usize;
    let rest = &all[start.min(all.len())..];
    let versions: Vec<ListedVersion> = rest.iter().take(max).cloned().collect();
    let is_truncated = rest.len() > max;
    let last = versions.last().filter(|_| is_truncated);
    ListObjectVersionsPage {
        is_truncated,
        next_key_marker: last.map(|l| l.key.clone()),
        next_version_id_marker: last.map(|l| l.version_id.clone()),
        versions,
    }
}

/// When a [`Flaky`] fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// The request fails and does nothing.
    Before,
    /// The request is carried out, then its response is lost (the caller sees an error).
    After,
}

/// A fault: some calls of one operation fail with an S3 error.
pub struct Fault {
    op: &'static str,
    status: u16,
    code: &'static str,
    /// Calls let through before the fault strikes.
    skip: Cell<u32>,
    times: Cell<u32>,
    when: When,
}

impl Fault {
    /// The next call of `op` fails with `status` and `code`, before it is carried out.
    pub fn new(op: &'static str, status: u16, code: &'static str) -> Self {
        Self {
            op,
            status,
            code,
            skip: Cell::new(0),
            times: Cell::new(1),
            when: When::Before,
        }
    }

    /// Strikes `n` calls in a row.
    pub fn times(self, n: u32) -> Self {
        self.times.set(n);
        self
    }

    /// Lets `n` calls through first.
    pub fn after_calls(self, n: u32) -> Self {
        self.skip.set(n);
        self
    }

    /// Carries the call out, then loses its response.
    pub fn response_lost(mut self) -> Self {
        self.when = When::After;
        self
    }
}

/// Another store with failures injected per operation, in the manner of neon's unreliable
/// wrapper: `Flaky::new(store).fail(Fault::new("put_object", 503, "SlowDown").times(2))`.
pub struct Flaky<S> {
    pub inner: S,
    faults: RefCell<Vec<Fault>>,
}

impl<S> Flaky<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            faults: RefCell::default(),
        }
    }

    pub fn fail(self, fault: Fault) -> Self {
        self.faults.borrow_mut().push(fault);
        self
    }

    /// The fault striking this call of `op`, if any (it is used up).
    fn strike(&self, op: &str) -> Option<(When, RequestError)> {
        let faults = self.faults.borrow();
        let f = faults.iter().find(|f| f.op == op && f.times.get() > 0)?;
        if f.skip.get() > 0 {
            f.skip.set(f.skip.get() - 1);
            return None;
        }
        f.times.set(f.times.get() - 1);
        Some((f.when, service(f.status, f.code)))
    }
}

/// Runs `$call` on the inner store unless a fault strikes before or after it.
macro_rules! flaky {
    ($self:ident, $op:literal, $call:expr) => {{
        match $self.strike($op) {
            Some((When::Before, e)) => Err(e.into()),
            Some((When::After, e)) => {
                let _ = $call.await;
                Err(e.into())
            }
            None => $call.await,
        }
    }};
}

impl<S: ObjectStore> ObjectStore for Flaky<S> {
    fn checksum_transport(&self) -> ChecksumTransport {
        self.inner.checksum_transport()
    }

    fn verify_after_write(&self) -> bool {
        self.inner.verify_after_write()
    }

    fn site(&self) -> String {
        self.inner.site()
    }

    async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        opts: HeadObjectRequest<'_>,
    ) -> Result<ObjectHead, HeadObjectError> {
        flaky!(
            self,
            "head_object",
            self.inner.head_object(bucket, key, opts.clone())
        )
    }

    async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        opts: GetObjectRequest<'_>,
    ) -> Result<GetObjectOutput, GetObjectError> {
        flaky!(
            self,
            "get_object",
            self.inner.get_object(bucket, key, opts.clone())
        )
    }

    async fn get_object_tagging(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Vec<(String, String)>, TaggingError> {
        flaky!(
            self,
            "get_object_tagging",
            self.inner.get_object_tagging(bucket, key, version_id)
        )
    }

    async fn get_object_acl(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Vec<Grant>, TaggingError> {
        flaky!(
            self,
            "get_object_acl",
            self.inner.get_object_acl(bucket, key, version_id)
        )
    }

    async fn put_object_metadata(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        w: &MetadataWrite,
    ) -> Result<(), TaggingError> {
        flaky!(
            self,
            "put_object_metadata",
            self.inner.put_object_metadata(bucket, key, version_id, w)
        )
    }

    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        r: PutObjectRequest<'_>,
    ) -> Result<PutObjectOutput, PutObjectError> {
        flaky!(self, "put_object", self.inner.put_object(bucket, key, r))
    }

    async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<DeleteObjectOutput, DeleteObjectError> {
        flaky!(
            self,
            "delete_object",
            self.inner.delete_object(bucket, key, version_id)
        )
    }

    async fn list_object_versions(
        &self,
        bucket: &str,
        r: ListObjectVersionsRequest<'_>,
    ) -> Result<ListObjectVersionsPage, ListObjectVersionsError> {
        flaky!(
            self,
            "list_object_versions",
            self.inner.list_object_versions(bucket, r.clone())
        )
    }

    async fn list_objects_v2(
        &self,
        bucket: &str,
        r: ListObjectsV2Request<'_>,
    ) -> Result<ListObjectsV2Page, ListObjectVersionsError> {
        flaky!(
            self,
            "list_objects_v2",
            self.inner.list_objects_v2(bucket, r.clone())
        )
    }

    async fn list_multipart_uploads(
        &self,
        bucket: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<OpenUpload>, ListMultipartUploadsError> {
        flaky!(
            self,
            "list_multipart_uploads",
            self.inner.list_multipart_uploads(bucket, prefix)
        )
    }

    async fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        metadata: &ObjectMetadata,
        tags: &[(String, String)],
        crc32c: bool,
    ) -> Result<String, CreateMultipartUploadError> {
        flaky!(
            self,
            "create_multipart_upload",
            self.inner
                .create_multipart_upload(bucket, key, metadata, tags, crc32c)
        )
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        r: UploadPartRequest<'_>,
    ) -> Result<CompletedPart, UploadPartError> {
        flaky!(self, "upload_part", self.inner.upload_part(bucket, key, r))
    }

    async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<CompleteOutput, CompleteMultipartUploadError> {
        flaky!(
            self,
            "complete_multipart_upload",
            self.inner
                .complete_multipart_upload(bucket, key, upload_id, parts)
        )
    }

    async fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), AbortMultipartUploadError> {
        flaky!(
            self,
            "abort_multipart_upload",
            self.inner.abort_multipart_upload(bucket, key, upload_id)
        )
    }
}
