//! Replication entries and status events as JSON, versioned with `"v": 1`.
//!
//! A message that does not decode is never dropped: [`Malformed`] says why, for the failed
//! topic.

use serde::{Deserialize, Serialize};

/// The current format version.
pub const VERSION: u32 = 1;

/// What an entry replicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryType {
    Put,
    DeleteMarker,
    /// The version's tags, ACL, retention or legal hold changed (`fields` says which): its
    /// replica follows, its bytes are not copied again.
    Metadata,
}

/// One object version (or delete marker) to replicate, naming every site it must reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicationEntry {
    pub v: u32,
    #[serde(rename = "type")]
    pub kind: EntryType,
    pub bucket: String,
    pub key: String,
    pub version_id: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub etag: String,
    /// The source version's LastModified (RFC 3339), when the scan listed it.
    #[serde(default)]
    pub last_modified: Option<String>,
    /// The sequencer of the event that announced the version (S3's per-key event order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequencer: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub user_metadata: Vec<(String, String)>,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// The source's CRC32C (base64), when it has one.
    #[serde(default)]
    pub checksum: Option<String>,
    pub sites: Vec<String>,
    /// Every site the change must reach, when `sites` was narrowed to one (a replay or a
    /// retry for one site): what its status records name (transient sources wait for all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all_sites: Vec<String>,
    /// For a metadata entry, what changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<crate::s3::ops::MetadataField>,
    #[serde(default)]
    pub rule_id: Option<String>,
    /// When the source changed (RFC 3339), for replication latency.
    #[serde(default)]
    pub source_event_time: Option<String>,
    #[serde(default)]
    pub attempt: u32,
    /// Set on an entry sent to a site's replay topics: when it is due, and its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<Replay>,
}

/// Where an entry waiting for replay stands (see `engine::site_worker::lines`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Replay {
    /// Its place in its key's waiting line: entries of a key run in ticket order.
    pub ticket: u64,
    /// The replay topic (step of the delay schedule) it was sent to.
    pub step: u32,
    /// When it may run again (Unix milliseconds).
    pub due_ms: u64,
    /// When it first failed (Unix milliseconds; the patience counts from here). Zero for an
    /// entry that never failed and only waits behind an earlier version of its key.
    #[serde(default)]
    pub failed_since_ms: u64,
}

/// A record of the failed topic for an entry that failed at a site after its retry budget
/// (keyed `bucket/key/versionId/site`; a tombstone clears it once a retry completes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRecord {
    pub v: u32,
    /// Always `"failed"`.
    pub kind: String,
    pub entry: ReplicationEntry,
    pub site: String,
    #[serde(default)]
    pub error: Option<ErrorRecord>,
    #[serde(default)]
    pub at: String,
}

impl FailedRecord {
    pub fn new(
        entry: ReplicationEntry,
        site: &str,
        error: Option<ErrorRecord>,
        at: String,
    ) -> Self {
        Self {
            v: VERSION,
            kind: "failed".into(),
            entry,
            site: site.to_string(),
            error,
            at,
        }
    }

    /// The failed topic's key of an entry at a site. A metadata entry's is apart
    /// (`.../SITE/metadata`): its failure, or the tombstone of its retry, never replaces
    /// the record of the version's copy.
    pub fn key(entry: &ReplicationEntry, site: &str) -> String {
        let (b, k, v) = (&entry.bucket, &entry.key, &entry.version_id);
        match entry.kind {
            EntryType::Metadata => format!("{b}/{k}/{v}/{site}/metadata"),
            _ => format!("{b}/{k}/{v}/{site}"),
        }
    }
}

/// A record of the failed topic for a message of `topic` that is not run (keyed
/// `KIND/TOPIC/PARTITION/OFFSET`), with the reason and the payload as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MalformedRecord {
    pub v: u32,
    /// `"malformed"` (the message does not decode) or `"refused"` (a well-formed entry the
    /// configuration does not allow: a bucket it does not name).
    pub kind: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub reason: String,
    pub payload: String,
    pub site: String,
    pub at: String,
}

impl MalformedRecord {
    /// The failed topic's key of this record.
    pub fn record_key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.kind, self.topic, self.partition, self.offset
        )
    }
}

/// Outcome of an entry at one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pending,
    Completed,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Durations {
    pub queue_wait_ms: u64,
    pub transfer_ms: u64,
    /// From the entry's Kafka timestamp to its receipt by the site's data mover: its time
    /// in the replication topic, in librdkafka's local queue, and waiting for a free slot
    /// of the mover (a slot is taken before a message is received). The timestamp is the
    /// producer's clock (CreateTime, the populator's node) or the broker's (LogAppendTime);
    /// absent when that clock is ahead of the mover's. A replayed entry is timed from its
    /// return to the topic, so only its last crossing counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_topic_ms: Option<u64>,
}

pub use crate::failure::ErrorRecord;

/// A status event, one per outcome per site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusEvent {
    pub v: u32,
    pub bucket: String,
    pub key: String,
    pub version_id: String,
    pub site: String,
    pub status: Status,
    pub bytes: u64,
    pub durations: Durations,
    #[serde(default)]
    pub error: Option<ErrorRecord>,
    pub attempt: u32,
    /// RFC 3339.
    pub at: String,
    /// From the source change (`sourceEventTime`) to this outcome, when known: the
    /// replication latency (RPO) of this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Why a completed entry wrote nothing ("already at the destination", "superseded:
    /// ..."): absent when it copied or wrote a delete marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every site the entry must reach (transient sources delete a version once all of
    /// them report it COMPLETED).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
}

/// Why a message is not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed replication entry: {reason}")]
pub struct Malformed {
    pub reason: String,
}

impl ReplicationEntry {
    /// Every site the change must reach (see `all_sites`).
    pub fn every_site(&self) -> &[String] {
        if self.all_sites.is_empty() {
            &self.sites
        } else {
            &self.all_sites
        }
    }

    /// The entry for `site` alone, remembering every site the change must reach.
    pub fn for_site(&self, site: &str) -> Self {
        let mut e = self.clone();
        e.all_sites = self.every_site().to_vec();
        e.sites = vec![site.to_string()];
        e
    }

    /// The Kafka key: all versions of one object land in one partition, in order.
    pub fn kafka_key(&self) -> String {
        format!("{}/{}", self.bucket, self.key)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("entries always serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let bad = |reason: String| Malformed { reason };
        let e: ReplicationEntry = serde_json::from_slice(bytes).map_err(|e| {
            // Say which version when the version is the problem.
            match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(v) if v.get("v").and_then(|x| x.as_u64()) != Some(VERSION as u64) => {
                    bad(format!(
                        "unsupported format version {} (expected {VERSION})",
                        v.get("v").unwrap_or(&serde_json::Value::Null)
                    ))
                }
                _ => bad(e.to_string()),
            }
        })?;
        if e.v != VERSION {
            return Err(bad(format!(
                "unsupported format version {} (expected {VERSION})",
                e.v
            )));
        }
        if e.bucket.is_empty() {
            return Err(bad("empty bucket".into()));
        }
        if e.key.is_empty() {
            return Err(bad("empty key".into()));
        }
        if e.version_id.is_empty() {
            return Err(bad("empty versionId".into()));
        }
        if e.sites.is_empty() || e.sites.iter().any(|s| s.is_empty()) {
            return Err(bad("no destination site".into()));
        }
        if let Some(c) = &e.checksum {
            if crate::s3::checksum::decode(c).is_none() && !c.contains('-') {
                return Err(bad(format!("checksum {c:?} is not a base64 CRC32C")));
            }
        }
        Ok(e)
    }
}

impl StatusEvent {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("status events always serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, Malformed> {
        let e: StatusEvent = serde_json::from_slice(bytes).map_err(|e| Malformed {
            reason: e.to_string(),
        })?;
        if e.v != VERSION {
            return Err(Malformed {
                reason: format!("unsupported format version {} (expected {VERSION})", e.v),
            });
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry() -> ReplicationEntry {
        ReplicationEntry {
            v: 1,
            kind: EntryType::Put,
            bucket: "b".into(),
            key: "k/é".into(),
            version_id: "v1".into(),
            size: 5,
            etag: "\"e\"".into(),
            last_modified: Some("2026-11-25T00:00:00Z".into()),
            sequencer: Some("0055AED6DCD90281E5".into()),
            content_type: Some("text/plain".into()),
            user_metadata: vec![("a".into(), "b".into())],
            tags: vec![],
            checksum: Some("mnG7TA==".into()),
            sites: vec!["site2".into()],
            all_sites: Vec::new(),
            fields: Vec::new(),
            rule_id: Some("r1".into()),
            source_event_time: None,
            attempt: 0,
            replay: None,
        }
    }

    #[test]
    fn a_status_record_written_before_in_topic_ms_still_decodes() {
        let old = br#"{"v":1,"bucket":"b","key":"k","versionId":"v","site":"a","status":"COMPLETED","bytes":3,"durations":{"queueWaitMs":1,"transferMs":2},"attempt":1,"at":"2026-12-01T00:00:00Z"}"#;
        let s = StatusEvent::decode(old).unwrap();
        assert_eq!(s.durations.in_topic_ms, None);
        assert_eq!(s.durations.transfer_ms, 2);
        let encoded = String::from_utf8(s.encode()).unwrap();
        assert!(!encoded.contains("inTopicMs"), "{encoded}");
    }

    #[test]
    fn an_entry_for_one_site_remembers_every_site() {
        let mut e = entry();
        e.sites = vec!["a".into(), "b".into()];
        let one = e.for_site("b");
        assert_eq!(
            (one.sites.as_slice(), one.every_site()),
            (&["b".to_string()][..], &e.sites[..])
        );
        let again = ReplicationEntry::decode(&one.for_site("b").encode()).unwrap();
        assert_eq!(
            again.every_site(),
            e.sites,
            "a replay of a replay still names both"
        );
        assert_eq!(e.every_site(), e.sites);
    }

    #[test]
    fn failed_and_malformed_records_round_trip_with_their_keys() {
        let error = ErrorRecord {
            code: "NoSuchBucket".into(),
            message: "gone".into(),
            retryable: false,
        };
        let r = FailedRecord::new(
            entry(),
            "site-a",
            Some(error),
            "2026-12-02T10:00:00.000Z".into(),
        );
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"kind\":\"failed\""), "{text}");
        assert_eq!(serde_json::from_str::<FailedRecord>(&text).unwrap(), r);
        let e = entry();
        let key = format!("{}/{}/{}/site-a", e.bucket, e.key, e.version_id);
        assert_eq!(FailedRecord::key(&e, "site-a"), key);
        let m = MalformedRecord {
            v: VERSION,
            kind: "malformed".into(),
            topic: "t-replication".into(),
            partition: 3,
            offset: 42,
            key: "b/k".into(),
            reason: "not JSON".into(),
            payload: "{".into(),
            site: "site-a".into(),
            at: "2026-12-02T10:00:00.000Z".into(),
        };
        assert_eq!(m.record_key(), "malformed/t-replication/3/42");
        let back: MalformedRecord =
            serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn wire_format() {
        let s = String::from_utf8(entry().encode()).unwrap();
        assert!(
            s.contains("\"v\":1")
                && s.contains("\"type\":\"put\"")
                && s.contains("\"versionId\":\"v1\""),
            "{s}"
        );
        let dm = ReplicationEntry {
            kind: EntryType::DeleteMarker,
            ..entry()
        };
        assert!(String::from_utf8(dm.encode())
            .unwrap()
            .contains("\"type\":\"delete-marker\""));
        assert_eq!(entry().kafka_key(), "b/k/é");
    }

    #[test]
    fn malformed_entries_say_why() {
        let cases: &[(&str, &str)] = &[
            ("not json", "expected"),
            (
                r#"{"v":2,"type":"put","bucket":"b","key":"k","versionId":"v","sites":["s"]}"#,
                "unsupported format version 2",
            ),
            (
                r#"{"v":1,"type":"move","bucket":"b","key":"k","versionId":"v","sites":["s"]}"#,
                "unknown variant",
            ),
            (
                r#"{"v":1,"type":"put","bucket":"","key":"k","versionId":"v","sites":["s"]}"#,
                "empty bucket",
            ),
            (
                r#"{"v":1,"type":"put","bucket":"b","key":"k","versionId":"v","sites":[]}"#,
                "no destination site",
            ),
            (
                r#"{"v":1,"type":"put","bucket":"b","key":"k","versionId":"v","sites":["s"],"extra":1}"#,
                "unknown field",
            ),
            (
                r#"{"v":1,"type":"put","bucket":"b","key":"k","versionId":"v","sites":["s"],"checksum":"zz"}"#,
                "not a base64 CRC32C",
            ),
        ];
        for (input, want) in cases {
            let err = ReplicationEntry::decode(input.as_bytes()).unwrap_err();
            assert!(err.reason.contains(want), "{input}: {err}");
        }
    }

    proptest! {
        #[test]
        fn entries_round_trip(
            bucket in "[a-z0-9.-]{3,20}",
            key in "\\PC{1,64}",
            vid in "[A-Za-z0-9._-]{1,32}",
            size in any::<u64>(),
            sites in prop::collection::vec("[a-z0-9-]{1,10}", 1..4),
            meta in prop::collection::vec(("[a-z]{1,8}", "\\PC{0,16}"), 0..4),
            dm in any::<bool>(),
            attempt in 0u32..100,
            replay in proptest::option::of((any::<u64>(), 0u32..10, any::<u64>(), any::<u64>())),
        ) {
            let replay = replay.map(|(ticket, step, due_ms, failed_since_ms)| Replay { ticket, step, due_ms, failed_since_ms });
            let e = ReplicationEntry {
                kind: if dm { EntryType::DeleteMarker } else { EntryType::Put },
                bucket, key, version_id: vid, size, sites, user_metadata: meta, attempt, replay,
                ..entry()
            };
            prop_assert_eq!(ReplicationEntry::decode(&e.encode()).unwrap(), e);
        }

        #[test]
        fn status_round_trips(site in "[a-z]{1,8}", bytes in any::<u64>(), failed in any::<bool>(), msg in "\\PC{0,40}") {
            let s = StatusEvent {
                v: 1, bucket: "b".into(), key: "k".into(), version_id: "v".into(), site,
                status: if failed { Status::Failed } else { Status::Completed },
                bytes,
                durations: Durations { queue_wait_ms: 1, transfer_ms: 2, in_topic_ms: Some(3) },
                error: failed.then(|| ErrorRecord { code: "X".into(), message: msg, retryable: true }),
                attempt: 1, at: "2026-11-25T00:00:00Z".into(), latency_ms: Some(bytes % 1000),
                reason: (!failed).then(|| "superseded: x".into()),
                sites: vec!["a".into(), "b".into()],
            };
            prop_assert_eq!(StatusEvent::decode(&s.encode()).unwrap(), s);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = ReplicationEntry::decode(&bytes);
            let _ = StatusEvent::decode(&bytes);
        }
    }
}
