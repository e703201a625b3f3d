//! The source's order of a key's versions, and what a replica records of it.
//!
//! Every replica carries, in user metadata, the source version it came from, that version's
//! ETag, its LastModified (whole seconds, as S3 gives it) and, when the entry came from an
//! event, the event's sequencer. Two versions of a key are ordered by their sequencers when
//! both have one (S3's per-key event order: hex strings compared after left-padding with
//! zeros), else by LastModified when the seconds differ and neither is a multipart upload's
//! (whose LastModified is when the upload started, not when the version was made); otherwise
//! the order is unknown from metadata alone and the source's listing of the key decides (see
//! `Route::decide`).

use std::cmp::Ordering;
use std::time::UNIX_EPOCH;

use super::{META_SOURCE_ETAG, META_SOURCE_VERSION};
pub use crate::s3::checksum::is_multipart_etag;
use crate::s3::ops::ObjectHead;

/// User metadata: the source version's LastModified, in seconds since the epoch.
pub const META_SOURCE_LAST_MODIFIED: &str = "backbeat-source-last-modified";
/// User metadata: the sequencer of the event that announced the source version.
pub const META_SOURCE_SEQUENCER: &str = "backbeat-source-sequencer";

/// Where a version stands in its key's history, as far as it is known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceOrder {
    /// LastModified, whole seconds since the epoch.
    pub last_modified: Option<i64>,
    /// The event's sequencer (upper-case hex, no leading zeros).
    pub sequencer: Option<String>,
    /// A multipart upload's version: its LastModified orders nothing.
    pub multipart: bool,
}

impl SourceOrder {
    /// An order from a LastModified (HTTP date or RFC 3339) and a sequencer, either of which
    /// may be missing or unreadable (then it is unknown, never guessed).
    pub fn new(last_modified: Option<&str>, sequencer: Option<&str>) -> Self {
        Self {
            last_modified: last_modified.and_then(parse_time),
            sequencer: sequencer.and_then(normalize_sequencer),
            multipart: false,
        }
    }

    /// The order of a version whose ETag is `etag` (a multipart upload's is marked so).
    pub fn of_version(last_modified: Option<&str>, sequencer: Option<&str>, etag: &str) -> Self {
        Self {
            multipart: is_multipart_etag(etag),
            ..Self::new(last_modified, sequencer)
        }
    }

    /// How `self` stands against `other`, when the metadata says: by sequencers when both
    /// have one, else by LastModified when the seconds differ. `None`: unknown.
    pub fn compare(&self, other: &SourceOrder) -> Option<Ordering> {
        if let (Some(a), Some(b)) = (&self.sequencer, &other.sequencer) {
            return Some(a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        }
        if self.multipart || other.multipart {
            return None;
        }
        match (self.last_modified, other.last_modified) {
            (Some(a), Some(b)) if a != b => Some(a.cmp(&b)),
            _ => None,
        }
    }
}

/// Seconds since the epoch of an HTTP date (`Last-Modified`) or an RFC 3339 time
/// (`LastModified` in listings).
pub fn parse_time(s: &str) -> Option<i64> {
    let t = httpdate::parse_http_date(s)
        .ok()
        .or_else(|| crate::time::parse_rfc3339(s))?;
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// A sequencer in a form where longer means later and equal lengths compare as strings:
/// upper-case, leading zeros dropped. Not hex: `None`.
fn normalize_sequencer(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let t = s.trim_start_matches('0');
    Some(if t.is_empty() { "0" } else { t }.to_ascii_uppercase())
}

/// What a destination object says of the source version it replicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub source_version: String,
    /// The source's ETag, unquoted (empty when not recorded).
    pub source_etag: String,
    pub order: SourceOrder,
    /// Bytes of the replica.
    pub size: u64,
    /// False when the stored bytes are known to differ from the source's: both ETags are
    /// plain MD5s and they differ (a corrupt copy on an unversioned destination).
    pub intact: bool,
}

impl Replica {
    /// The replica a destination object is, or `None` for an object we did not write.
    pub fn of(h: &ObjectHead) -> Option<Self> {
        let source_version = h.user_meta(META_SOURCE_VERSION)?.to_string();
        let source_etag = h
            .user_meta(META_SOURCE_ETAG)
            .unwrap_or("")
            .trim_matches('"')
            .to_string();
        let order = SourceOrder {
            last_modified: h
                .user_meta(META_SOURCE_LAST_MODIFIED)
                .and_then(|s| s.parse().ok()),
            sequencer: h
                .user_meta(META_SOURCE_SEQUENCER)
                .and_then(normalize_sequencer),
            multipart: is_multipart_etag(&source_etag),
        };
        // An ETag under SSE-KMS or SSE-C (at either end) is not the MD5 of the bytes.
        let opaque = h.user_meta(super::META_SOURCE_ENCRYPTION).is_some()
            || h.sse.as_deref().is_some_and(|s| s != "AES256")
            || h.sse_customer_algorithm.is_some();
        let intact = opaque || !differ_as_md5(&source_etag, &h.etag);
        Some(Self {
            source_version,
            source_etag,
            order,
            size: h.content_length,
            intact,
        })
    }

    /// Whether this replica is of source version `v`. A `null` version id (an unversioned
    /// source) names no single version: its ETag must match too, or when the source lists
    /// none (s3s-fs), its LastModified and size (two writes of one size within one second
    /// are then told apart by nothing).
    pub fn is_of(&self, v: &super::Version) -> bool {
        if self.source_version != v.version_id {
            return false;
        }
        if v.version_id != "null" {
            return true;
        }
        if !v.etag.trim_matches('"').is_empty() {
            return self.is_of_etag(&v.etag);
        }
        let same_time = match (v.order.last_modified, self.order.last_modified) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        same_time && (v.size == self.size || v.delete_marker)
    }

    /// Whether this replica's source ETag is `etag` (the current object of an unversioned
    /// source).
    pub fn is_of_etag(&self, etag: &str) -> bool {
        self.source_etag
            .eq_ignore_ascii_case(etag.trim_matches('"'))
    }
}

/// True when both are plain MD5 ETags (a single-part upload's content hash) and differ.
fn differ_as_md5(a: &str, b: &str) -> bool {
    let md5 = |e: &str| {
        let e = e.trim_matches('"');
        (e.len() == 32 && e.bytes().all(|b| b.is_ascii_hexdigit())).then(|| e.to_string())
    };
    match (md5(a), md5(b)) {
        (Some(a), Some(b)) => !a.eq_ignore_ascii_case(&b),
        _ => false,
    }
}

/// The order metadata a replica of source object `head` carries: its LastModified, and the
/// announcing event's sequencer when the bytes read are those of the announced version.
pub fn recorded(
    head: &ObjectHead,
    announced: &SourceOrder,
    same_version: bool,
) -> Vec<(String, String)> {
    let mut m = Vec::new();
    if let Some(t) = head.last_modified.as_deref().and_then(parse_time) {
        m.push((META_SOURCE_LAST_MODIFIED.to_string(), t.to_string()));
    }
    if let Some(s) = announced.sequencer.as_ref().filter(|_| same_version) {
        m.push((META_SOURCE_SEQUENCER.to_string(), s.clone()));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(s: &str) -> SourceOrder {
        SourceOrder::new(None, Some(s))
    }

    #[test]
    fn a_multipart_versions_last_modified_orders_nothing() {
        assert!(is_multipart_etag("\"9b2cf535f27731c974343645a3985328-3\""));
        assert!(!is_multipart_etag("\"9b2cf535f27731c974343645a3985328\""));
        assert!(!is_multipart_etag("a-b") && !is_multipart_etag("-3"));
        let t = Some("2026-11-25T10:00:00Z");
        let mpu = SourceOrder::of_version(t, None, "\"abc-2\"");
        let plain = SourceOrder::of_version(Some("2026-11-25T10:00:09Z"), None, "\"abc\"");
        assert!(
            mpu.multipart && mpu.last_modified.is_some(),
            "kept, for entries"
        );
        assert_eq!(plain.compare(&mpu), None, "unknown: the listing decides");
        let with_seq = SourceOrder::of_version(t, Some("0A"), "\"abc-2\"");
        assert_eq!(with_seq.compare(&seq("0B")), Some(Ordering::Less));
    }

    #[test]
    fn sequencers_compare_after_left_padding() {
        assert_eq!(seq("0A").compare(&seq("9")), Some(Ordering::Greater));
        assert_eq!(seq("00ff").compare(&seq("FF")), Some(Ordering::Equal));
        assert_eq!(
            seq("005F3B2C").compare(&seq("005F3B2D")),
            Some(Ordering::Less)
        );
        assert_eq!(seq("not hex").sequencer, None);
    }

    #[test]
    fn times_order_only_when_the_seconds_differ() {
        let a = SourceOrder::new(Some("Wed, 25 Nov 2026 10:00:00 GMT"), None);
        let b = SourceOrder::new(Some("2026-11-25T10:00:00.900Z"), None);
        let c = SourceOrder::new(Some("2026-11-25T10:00:01.000Z"), None);
        assert_eq!(a.compare(&b), None, "same second: unknown");
        assert_eq!(a.compare(&c), Some(Ordering::Less));
        assert_eq!(c.compare(&a), Some(Ordering::Greater));
        assert_eq!(a.compare(&SourceOrder::default()), None);
    }

    #[test]
    fn sequencers_win_over_times() {
        let a = SourceOrder::new(Some("2026-11-25T10:00:05Z"), Some("01"));
        let b = SourceOrder::new(Some("2026-11-25T10:00:01Z"), Some("02"));
        assert_eq!(a.compare(&b), Some(Ordering::Less));
    }

    #[test]
    fn null_versions_are_told_apart_by_etag() {
        let version = |id: &str, etag: &str, lm: Option<i64>, size: u64| super::super::Version {
            key: "k".into(),
            version_id: id.into(),
            delete_marker: false,
            size,
            etag: etag.into(),
            order: SourceOrder {
                last_modified: lm,
                ..SourceOrder::default()
            },
        };
        let r = Replica {
            source_version: "null".into(),
            source_etag: "abc".into(),
            order: SourceOrder::new(Some("2026-11-25T10:00:00Z"), None),
            size: 5,
            intact: true,
        };
        let t = r.order.last_modified;
        assert!(r.is_of(&version("null", "\"ABC\"", None, 9)));
        assert!(!r.is_of(&version("null", "\"abd\"", t, 5)));
        assert!(!r.is_of(&version("v1", "\"abc\"", t, 5)));
        // listed without ETags (s3s-fs): LastModified and size
        assert!(r.is_of(&version("null", "", t, 5)));
        assert!(!r.is_of(&version("null", "", t.map(|t| t + 1), 5)));
        assert!(!r.is_of(&version("null", "", t, 6)));
        let v = Replica {
            source_version: "v1".into(),
            ..r
        };
        assert!(
            v.is_of(&version("v1", "\"other\"", None, 1)),
            "a version id is enough"
        );
    }

    #[test]
    fn corrupt_copies_are_not_intact() {
        assert!(differ_as_md5(
            "0123456789abcdef0123456789abcdef",
            "\"0123456789abcdef0123456789abcdee\""
        ));
        assert!(!differ_as_md5(
            "0123456789abcdef0123456789abcdef",
            "\"abc-2\""
        ));
        assert!(!differ_as_md5("", "\"0123456789abcdef0123456789abcdee\""));
    }
}
