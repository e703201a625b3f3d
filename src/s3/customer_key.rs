//! SSE-C: objects encrypted with a key the client gives on every request that reads or
//! writes their bytes. A key is read from a file (32 raw bytes, or their base64) and sent
//! as the three `x-amz-server-side-encryption-customer-*` headers on GetObject, HeadObject,
//! PutObject, CreateMultipartUpload, UploadPart and CompleteMultipartUpload for the buckets
//! it is given for. Its
//! bytes never appear in a log, an error or `Debug` output: only its MD5 does.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use md5::Digest as _;

/// A customer key, as its headers carry it.
#[derive(Clone, PartialEq, Eq)]
pub struct CustomerKey {
    key_b64: String,
    md5_b64: String,
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomerKey(md5 {})", self.md5_b64)
    }
}

/// The operations that carry the key.
const OPERATIONS: [&str; 6] = [
    "GetObject",
    "HeadObject",
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    // AWS wants the key again on Complete when the upload has a checksum algorithm.
    "CompleteMultipartUpload",
];

impl CustomerKey {
    /// A 256-bit key.
    pub fn new(key: &[u8; 32]) -> Self {
        let b64 = base64::engine::general_purpose::STANDARD;
        Self {
            key_b64: b64.encode(key),
            md5_b64: b64.encode(md5::Md5::digest(key)),
        }
    }

    /// Reads a key file: 32 raw bytes, or their base64 (surrounding whitespace ignored).
    /// The error names the file, never its content.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let raw = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let bad = || {
            format!(
                "{}: not an SSE-C key (32 bytes, or their base64)",
                path.display()
            )
        };
        let key: Vec<u8> = if raw.len() == 32 {
            raw
        } else {
            let text = std::str::from_utf8(&raw).map_err(|_| bad())?.trim();
            let b64 = base64::engine::general_purpose::STANDARD;
            b64.decode(text).map_err(|_| bad())?
        };
        let key: [u8; 32] = key.try_into().map_err(|_| bad())?;
        Ok(Self::new(&key))
    }

    /// The MD5 of the key (base64), which servers report and which names it safely.
    pub fn md5(&self) -> &str {
        &self.md5_b64
    }

    /// The headers `op` carries, if it is one that reads or writes bytes.
    pub(crate) fn headers(&self, op: &str) -> Option<[(&'static str, &str); 3]> {
        OPERATIONS.contains(&op).then_some([
            ("x-amz-server-side-encryption-customer-algorithm", "AES256"),
            ("x-amz-server-side-encryption-customer-key", &self.key_b64),
            (
                "x-amz-server-side-encryption-customer-key-md5",
                &self.md5_b64,
            ),
        ])
    }
}

/// The customer keys of an endpoint: per bucket, and one for any other bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerKeys {
    pub by_bucket: BTreeMap<String, CustomerKey>,
    pub any_bucket: Option<CustomerKey>,
}

impl CustomerKeys {
    pub fn for_bucket(&self, bucket: &str) -> Option<&CustomerKey> {
        self.by_bucket.get(bucket).or(self.any_bucket.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.by_bucket.is_empty() && self.any_bucket.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_from_files_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        std::fs::write(&raw, [7u8; 32]).unwrap();
        let text = dir.path().join("b64");
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        std::fs::write(&text, format!("{b64}\n")).unwrap();
        let (a, b) = (
            CustomerKey::from_file(&raw).unwrap(),
            CustomerKey::from_file(&text).unwrap(),
        );
        assert_eq!(a, b);
        assert!(!format!("{a:?}").contains(&b64), "Debug shows the MD5 only");
        let short = dir.path().join("short");
        std::fs::write(&short, "c2hvcnQ=").unwrap();
        let e = CustomerKey::from_file(&short).unwrap_err();
        assert!(
            e.contains("not an SSE-C key") && !e.contains("c2hvcnQ"),
            "{e}"
        );
        assert!(a.headers("PutObjectTagging").is_none());
        let h = a.headers("UploadPart").unwrap();
        assert_eq!(h[1].1, b64);
        assert_eq!(h[2].1, a.md5());
    }
}
