//! One file per S3 operation, each with its request, output and error types, and `xml`: the
//! serde reading and writing of S3 XML documents their models share.

pub mod abort_multipart_upload;
pub mod acl;
pub mod bucket;
pub mod complete_multipart_upload;
pub mod copy_object;
pub mod create_multipart_upload;
pub mod delete_object;
pub mod get_object;
pub mod head_object;
pub mod list_buckets;
pub mod list_multipart_uploads;
pub mod list_object_versions;
pub mod list_objects_v2;
pub mod object_lock;
pub mod put_object;
pub mod tagging;
pub mod upload_part;
pub(crate) mod xml;

use http::HeaderMap;

use super::checksum;
use super::client::Req;
use super::error::RequestError;

/// The object attributes replication preserves.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectMetadata {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<String>,
    /// `x-amz-meta-*` pairs, names without the prefix, lower-case.
    pub user: Vec<(String, String)>,
    /// What the write sets beyond metadata (storage class, encryption, Object Lock, ACL):
    /// set by replication for a replica, never read from a response.
    #[serde(skip)]
    pub write: WriteAttributes,
}

/// A part of a version's metadata that may change without its bytes (and that a replica
/// follows).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum MetadataField {
    Tags,
    Acl,
    Retention,
    LegalHold,
}

/// What a replica is written with beyond its bytes and metadata. Each absent: the
/// destination bucket's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteAttributes {
    pub storage_class: Option<String>,
    /// `AES256` or `aws:kms`.
    pub sse: Option<String>,
    /// The KMS key of `aws:kms` (absent: the destination's default key).
    pub kms_key_id: Option<String>,
    pub lock: ObjectLock,
    /// A canned ACL (`x-amz-acl`).
    pub acl: Option<String>,
    /// Written with an SSE-C key (whose headers the client adds, see `customer_key`).
    pub customer_key: bool,
}

impl WriteAttributes {
    /// Whether the written ETag is the MD5 of the bytes (not under SSE-KMS or SSE-C).
    pub fn etag_is_md5(&self) -> bool {
        self.sse.as_deref() != Some("aws:kms") && !self.customer_key
    }

    fn headers(&self) -> [(&'static str, Option<&str>); 6] {
        let l = &self.lock;
        [
            ("x-amz-storage-class", self.storage_class.as_deref()),
            ("x-amz-server-side-encryption", self.sse.as_deref()),
            (
                "x-amz-server-side-encryption-aws-kms-key-id",
                self.kms_key_id.as_deref(),
            ),
            (
                "x-amz-object-lock-mode",
                l.mode.as_deref().filter(|_| l.retain_until.is_some()),
            ),
            (
                "x-amz-object-lock-retain-until-date",
                l.retain_until.as_deref().filter(|_| l.mode.is_some()),
            ),
            ("x-amz-acl", self.acl.as_deref()),
        ]
    }
}

/// What HEAD (or the headers of a GET) say about an object version.
#[derive(Debug, Clone, Default)]
pub struct ObjectHead {
    /// Bytes of the response body (the object, the range or the part).
    pub content_length: u64,
    pub etag: String,
    pub last_modified: Option<String>,
    pub version_id: Option<String>,
    pub metadata: ObjectMetadata,
    /// Full-object CRC32C, when the server stored one (not for composite checksums).
    pub crc32c: Option<u32>,
    /// The raw `x-amz-checksum-crc32c` value (may be composite, `...-N`).
    pub checksum_crc32c_raw: Option<String>,
    /// Number of parts, when asked with `partNumber` and the object is multipart.
    pub parts_count: Option<u32>,
    pub tag_count: u32,
    /// `Content-Range` total, for ranged GETs.
    pub range_total: Option<u64>,
    /// `x-amz-storage-class` (absent for STANDARD).
    pub storage_class: Option<String>,
    /// Object Lock: retention mode and date, and legal hold.
    pub lock: ObjectLock,
    /// `x-amz-server-side-encryption`: `AES256` or `aws:kms` (absent: not encrypted, or
    /// SSE-C).
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    /// `x-amz-server-side-encryption-customer-algorithm`: encrypted with a customer key.
    pub sse_customer_algorithm: Option<String>,
}

/// A version's Object Lock state, as HEAD returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectLock {
    /// GOVERNANCE or COMPLIANCE.
    pub mode: Option<String>,
    pub retain_until: Option<String>,
    pub legal_hold: bool,
}

impl ObjectLock {
    /// Whether the version may not be deleted now: under legal hold, or retained until a
    /// time not yet reached (an unreadable date counts as retained).
    pub fn holds(&self, now: std::time::SystemTime) -> bool {
        let retained = match (&self.mode, &self.retain_until) {
            (Some(_), Some(until)) => crate::time::parse_rfc3339(until).is_none_or(|t| t > now),
            (Some(_), None) => true,
            _ => false,
        };
        self.legal_hold || retained
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn header_string(h: &HeaderMap, name: &str) -> Option<String> {
    header(h, name).map(str::to_string)
}

impl ObjectHead {
    pub(crate) fn from_headers(h: &HeaderMap) -> Self {
        let mut user = Vec::new();
        for (name, value) in h.iter() {
            if let Some(n) = name.as_str().strip_prefix("x-amz-meta-") {
                let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
                user.push((n.to_string(), v));
            }
        }
        user.sort();
        let raw = header_string(h, "x-amz-checksum-crc32c");
        Self {
            content_length: header(h, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            etag: header_string(h, "etag").unwrap_or_default(),
            last_modified: header_string(h, "last-modified"),
            version_id: header_string(h, "x-amz-version-id"),
            metadata: ObjectMetadata {
                content_type: header_string(h, "content-type"),
                cache_control: header_string(h, "cache-control"),
                content_disposition: header_string(h, "content-disposition"),
                content_encoding: header_string(h, "content-encoding"),
                content_language: header_string(h, "content-language"),
                expires: header_string(h, "expires"),
                user,
                write: WriteAttributes::default(),
            },
            crc32c: raw.as_deref().and_then(checksum::decode),
            checksum_crc32c_raw: raw,
            parts_count: header(h, "x-amz-mp-parts-count").and_then(|v| v.parse().ok()),
            tag_count: header(h, "x-amz-tagging-count")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            range_total: header(h, "content-range")
                .and_then(|v| v.rsplit('/').next())
                .and_then(|v| v.parse().ok()),
            storage_class: header_string(h, "x-amz-storage-class"),
            lock: ObjectLock {
                mode: header_string(h, "x-amz-object-lock-mode"),
                retain_until: header_string(h, "x-amz-object-lock-retain-until-date"),
                legal_hold: header(h, "x-amz-object-lock-legal-hold") == Some("ON"),
            },
            sse: header_string(h, "x-amz-server-side-encryption"),
            sse_kms_key_id: header_string(h, "x-amz-server-side-encryption-aws-kms-key-id"),
            sse_customer_algorithm: header_string(
                h,
                "x-amz-server-side-encryption-customer-algorithm",
            ),
        }
    }

    /// The user metadata value of `name` (without the `x-amz-meta-` prefix).
    pub fn user_meta(&self, name: &str) -> Option<&str> {
        self.metadata
            .user
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Adds the headers that set metadata on a PUT or CreateMultipartUpload.
pub(crate) fn apply_metadata<'a>(
    mut req: Req<'a>,
    m: &ObjectMetadata,
) -> Result<Req<'a>, RequestError> {
    for (name, value) in [
        ("content-type", &m.content_type),
        ("cache-control", &m.cache_control),
        ("content-disposition", &m.content_disposition),
        ("content-encoding", &m.content_encoding),
        ("content-language", &m.content_language),
        ("expires", &m.expires),
    ] {
        if let Some(v) = value {
            req = req.header(name, v)?;
        }
    }
    for (k, v) in &m.user {
        req = req.header_dyn(&format!("x-amz-meta-{k}"), v)?;
    }
    for (name, value) in m.write.headers() {
        if let Some(v) = value {
            req = req.header(name, v)?;
        }
    }
    if m.write.lock.legal_hold {
        req = req.header("x-amz-object-lock-legal-hold", "ON")?;
    }
    Ok(req)
}

/// URL-encodes tags for the `x-amz-tagging` header.
pub fn encode_tagging(tags: &[(String, String)]) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const SET: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    tags.iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, SET),
                utf8_percent_encode(v, SET)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}
