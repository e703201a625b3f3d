//! The buckets topic's records (site-level replication): a source bucket adopted, or named
//! by a bucket-creation event and not adopted yet; `#baseline` once the buckets that
//! existed when site-level replication first ran were adopted as they were.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::kafka::{self, Producer, QueueError};

/// The key of the record saying the first pass (buckets adopted as they were) is done.
/// `#` is never in a bucket name.
pub const BASELINE: &str = "#baseline";

/// What the key of a bucket-creation event's record starts with (the bucket follows), apart
/// from the bucket's own key so that it never replaces an adoption record.
pub const SEEN: &str = "#seen/";

/// One record of the buckets topic.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BucketRecord {
    pub v: u8,
    /// When the bucket was adopted (absent: only seen created, not adopted yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted: Option<String>,
    /// When a bucket-creation event named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<String>,
    /// Site -> the site's bucket for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sites: BTreeMap<String, String>,
    /// Site buckets created when it was adopted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created: Vec<String>,
    /// Entries enqueued for its existing versions when it was adopted.
    #[serde(default)]
    pub enqueued: u64,
}

impl BucketRecord {
    pub fn decode(b: &[u8]) -> Option<Self> {
        serde_json::from_slice(b).ok()
    }
}

/// Says that a bucket-creation event named `bucket` (the populator calls this): the adopter
/// lists the source's buckets at once.
pub async fn seen_created(p: &Producer, topic: &str, bucket: &str) -> Result<(), QueueError> {
    let r = BucketRecord {
        v: 1,
        seen: Some(crate::time::rfc3339(std::time::SystemTime::now())),
        ..Default::default()
    };
    let body = serde_json::to_vec(&r).expect("a bucket record serializes");
    let key = format!("{SEEN}{bucket}");
    kafka::send(p, topic, &key, Some(&body)).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back() {
        let r = BucketRecord {
            v: 1,
            adopted: Some("2026-12-03T12:00:00Z".into()),
            sites: [("dr".to_string(), "photos-dr".to_string())].into(),
            created: vec!["dr:photos-dr".into()],
            enqueued: 3,
            ..Default::default()
        };
        let b = serde_json::to_vec(&r).unwrap();
        assert_eq!(BucketRecord::decode(&b), Some(r));
        let seen = BucketRecord::decode(br#"{"v":1,"seen":"t"}"#).unwrap();
        assert!(seen.adopted.is_none());
        assert_eq!(BucketRecord::decode(b"nope"), None);
    }
}
