//! Replicates one object version (or delete marker) from a source bucket to a destination
//! bucket. A [`Route`] says where (two buckets and their clients) and owns the idempotence
//! and ordering checks; a [`DataPath`] says how (sizes, the shard's bounds, counters,
//! cancellation); the pipeline takes both.
//!
//! Owns: the source's order of a key's versions and the decision it drives (`order`,
//! `Route::decide`), the streaming copy, multipart copies, metadata and tag
//! preservation, checksum verification, retry with backoff, and the site's circuit breaker
//! that attempts wait on through an outage (`breaker`). Knows nothing of Kafka.
//! May call: `s3` (clients), `metrics` (counters), `shard` (shutdown signal), `retry`,
//! `failure` (the recorded form of its errors), `time` (LastModified read back), `bandwidth`
//! (a shard's share of the site's limit, in its `DataPath`).

pub mod breaker;
mod error;
pub mod metadata;
pub mod multipart;
pub mod order;
mod pipeline;
pub mod policy;
mod route;

use std::sync::Arc;

use crate::metrics::Stats;
pub use crate::retry::RetryPolicy;
use crate::shard::Shutdown;
pub use error::{ErrorKind, ReplicationError, Stage};
pub use metadata::MetadataField;
pub use order::SourceOrder;
pub use pipeline::{replicate, replicate_key, replicate_once, window_units};
pub use policy::ReplicaPolicy;
pub use route::{
    list_key, Route, Verdict, GONE_FROM_SOURCE, NEWER_AT_DESTINATION, REPLICA_AT_SOURCE,
};

/// User metadata the destination object carries: the source version it came from.
pub const META_SOURCE_VERSION: &str = "backbeat-source-version-id";
/// User metadata the destination object carries: the source ETag.
pub const META_SOURCE_ETAG: &str = "backbeat-source-etag";
/// User metadata the destination object carries when the source version's ETag is not the
/// MD5 of its bytes: its encryption (`aws:kms` or `customer`).
pub const META_SOURCE_ENCRYPTION: &str = "backbeat-source-encryption";
/// User metadata the destination object carries: where the version was first written
/// (`bucket/version-id` of the first source), kept across hops.
pub const META_ORIGIN: &str = "backbeat-origin";

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
    /// Replicate versions that are themselves replicas (they carry our metadata). Off by
    /// default: in two-way replication (A to B and B to A) a replica is not sent back, which
    /// stops loops. On for chains (A to B to C), where the origin is kept across hops.
    pub replicate_replicas: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            multipart_threshold: 64 * 1024 * 1024,
            part_size: 16 * 1024 * 1024,
            part_concurrency: 4,
            window: 64 << 20,
            retry: RetryPolicy::default(),
            replicate_replicas: false,
        }
    }
}

/// How a shard moves bytes, whatever the route: sizes and retries, the shard's bounds
/// (parts and bytes in flight), its counters and the signal that abandons transfers.
pub struct DataPath {
    pub opts: Options,
    pub stats: Arc<Stats>,
    /// Bounds parts in flight on this shard, across objects.
    pub part_slots: glommio::sync::Semaphore,
    /// Bounds object bytes in flight on this shard (units of 1 MiB; see [`Options::window`]).
    pub byte_window: glommio::sync::Semaphore,
    /// Set when transfers in flight must be abandoned (their offsets stay uncommitted).
    pub cancel: Shutdown,
    /// The site's circuit breaker (the engine's workers): attempts wait through outages.
    pub breaker: Option<std::rc::Rc<breaker::Breaker>>,
    /// This shard's share of the site's bandwidth limit (none: no limit).
    pub limit: Option<std::rc::Rc<crate::bandwidth::ShardLimit>>,
}

impl DataPath {
    /// A shard's data path: `shard_parts` parts in flight at most, and the byte window of
    /// `opts`.
    pub fn new(opts: Options, shard_parts: usize, stats: Arc<Stats>, cancel: Shutdown) -> Self {
        Self {
            part_slots: glommio::sync::Semaphore::new(shard_parts.max(1) as u64),
            byte_window: glommio::sync::Semaphore::new((opts.window >> 20).max(1)),
            opts,
            stats,
            cancel,
            breaker: None,
            limit: None,
        }
    }
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
    /// Where it stands in its key's history, as far as the entry (or listing) says.
    pub order: SourceOrder,
}

/// What happened to a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Copied {
        bytes: u64,
    },
    DeleteMarker,
    /// Already at the destination (for a metadata update: nothing differed).
    Skipped,
    /// The replica's tags, ACL, retention or legal hold were brought in line with the
    /// source's (this many writes), its bytes untouched.
    MetadataUpdated {
        writes: u32,
    },
    /// Not written: the destination reflects a later version of the key, or the source no
    /// longer holds this one (the reason).
    Superseded(&'static str),
}

/// An ETag of the form `"...-N"`: the object was uploaded in N parts.
pub fn multipart_etag_parts(etag: &str) -> Option<u32> {
    let e = etag.trim_matches('"');
    let (_, n) = e.rsplit_once('-')?;
    n.parse().ok()
}

pub(crate) fn source_version_id(v: &str) -> Option<&str> {
    (v != "null" && !v.is_empty()).then_some(v)
}

#[cfg(test)]
mod metadata_tests;
#[cfg(test)]
mod order_tests;
#[cfg(test)]
mod pipeline_tests;

#[cfg(test)]
mod tests {
    use super::pipeline::{verify, verify_etag};
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
            verify_etag(a, b, true).unwrap_err().code(),
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
        assert_eq!(e.code(), "ChecksumMismatch");
        assert!(e.is_retryable());
        assert!(verify(None, Some(1)).is_err());
    }
}
