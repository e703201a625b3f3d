//! S3 event notifications as MinIO, Ceph RGW and CloudServer publish them to Kafka (the AWS
//! event JSON: `Records[].eventName`, `s3.bucket.name`, `s3.object.key` URL-encoded,
//! `versionId`, `size`, `eTag`, `sequencer`). One message may hold many records.

use serde::{Deserialize, Serialize};

use crate::replication::MetadataField;

/// What a record asks to replicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// `ObjectCreated:*`
    Created,
    /// `ObjectRemoved:DeleteMarkerCreated`
    DeleteMarker,
    /// A version's tags, ACL, retention or legal hold changed: `ObjectTagging:Put|Delete`,
    /// `ObjectAcl:Put`, `ObjectRetention:Put`, `ObjectLegalHold:Put`, and MinIO's
    /// `ObjectCreated:PutTagging|DeleteTagging|PutRetention|PutLegalHold`.
    Metadata(MetadataField),
    /// `BucketCreated` (MinIO's `s3:BucketCreated:*`): a bucket to adopt with site-level
    /// replication; the change has no key.
    BucketCreated,
}

/// The kind of change an event name announces (`None`: not replicated).
fn kind_of(name: &str) -> Option<ChangeKind> {
    use MetadataField::*;
    let field = match name {
        "ObjectTagging:Put" | "ObjectTagging:Delete" => Some(Tags),
        "ObjectCreated:PutTagging" | "ObjectCreated:DeleteTagging" => Some(Tags),
        "ObjectAcl:Put" => Some(Acl),
        "ObjectRetention:Put" | "ObjectCreated:PutRetention" => Some(Retention),
        "ObjectLegalHold:Put" | "ObjectCreated:PutLegalHold" => Some(LegalHold),
        _ => None,
    };
    match field {
        Some(f) => Some(ChangeKind::Metadata(f)),
        None if name.starts_with("ObjectCreated:") => Some(ChangeKind::Created),
        None if name == "BucketCreated" || name.starts_with("BucketCreated:") => {
            Some(ChangeKind::BucketCreated)
        }
        None if name == "ObjectRemoved:DeleteMarkerCreated" => Some(ChangeKind::DeleteMarker),
        None => None,
    }
}

/// One change to replicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Change {
    pub kind: ChangeKind,
    pub bucket: String,
    /// Decoded key.
    pub key: String,
    /// `null` when the bucket is not versioned.
    pub version_id: String,
    pub size: u64,
    pub etag: String,
    pub sequencer: String,
    pub event_time: Option<String>,
}

/// Why a message is not an event notification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed S3 event: {0}")]
pub struct MalformedEvent(pub String);

#[derive(Deserialize)]
struct Message {
    #[serde(rename = "Records")]
    records: Option<Vec<Record>>,
    /// MinIO's webhook-style wrapper also carries the records at top level; some
    /// publishers send test events with only `Event: s3:TestEvent`.
    #[serde(rename = "Event")]
    event: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    event_name: String,
    event_time: Option<String>,
    s3: S3Part,
}

#[derive(Deserialize)]
struct S3Part {
    bucket: BucketPart,
    #[serde(default)]
    object: ObjectPart,
}

#[derive(Deserialize)]
struct BucketPart {
    name: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ObjectPart {
    #[serde(default)]
    key: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, rename = "eTag")]
    etag: Option<String>,
    #[serde(default)]
    version_id: Option<String>,
    #[serde(default)]
    sequencer: Option<String>,
}

/// Decodes a URL-encoded event key (`+` is a space).
pub fn decode_key(k: &str) -> Result<String, MalformedEvent> {
    let plus = k.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| MalformedEvent(format!("key {k:?} is not URL-encoded UTF-8")))
}

/// Parses one message. Records of other kinds (removals of a version, restores, ...) are
/// not replicated and are skipped; a message that is not an event at all is an error.
pub fn parse(bytes: &[u8]) -> Result<Vec<Change>, MalformedEvent> {
    let m: Message = serde_json::from_slice(bytes).map_err(|e| MalformedEvent(e.to_string()))?;
    let Some(records) = m.records else {
        if m.event.as_deref() == Some("s3:TestEvent") {
            return Ok(Vec::new());
        }
        return Err(MalformedEvent("no Records".into()));
    };
    let mut out = Vec::new();
    for r in records {
        let name = r.event_name.trim_start_matches("s3:");
        let Some(kind) = kind_of(name) else {
            continue;
        };
        let no_key = r.s3.object.key.is_empty() && kind != ChangeKind::BucketCreated;
        if r.s3.bucket.name.is_empty() || no_key {
            return Err(MalformedEvent("record without bucket or key".into()));
        }
        out.push(Change {
            kind,
            bucket: r.s3.bucket.name,
            key: decode_key(&r.s3.object.key)?,
            version_id: r
                .s3
                .object
                .version_id
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "null".into()),
            size: r.s3.object.size.unwrap_or(0),
            etag: r.s3.object.etag.unwrap_or_default(),
            sequencer: r.s3.object.sequencer.unwrap_or_default(),
            event_time: r.event_time,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIO: &str = r#"{"EventName":"s3:ObjectCreated:Put","Key":"photos/a b.jpg","Records":[
      {"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"","eventTime":"2026-11-25T10:00:00.000Z","eventName":"s3:ObjectCreated:Put",
       "s3":{"s3SchemaVersion":"1.0","bucket":{"name":"photos","arn":"arn:aws:s3:::photos"},
             "object":{"key":"a+b%2Bc%C3%A9.jpg","size":1234,"eTag":"abc","contentType":"image/jpeg","versionId":"v-1","sequencer":"17B"}}},
      {"eventName":"ObjectRemoved:DeleteMarkerCreated","s3":{"bucket":{"name":"photos"},"object":{"key":"old","versionId":"dm-1","sequencer":"17C"}}},
      {"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"photos"},"object":{"key":"x","versionId":"v-9"}}},
      {"eventName":"ObjectCreated:CompleteMultipartUpload","s3":{"bucket":{"name":"photos"},"object":{"key":"big","size":99}}},
      {"eventName":"s3:ObjectCreated:PutTagging","s3":{"bucket":{"name":"photos"},"object":{"key":"t","versionId":"v-2"}}},
      {"eventName":"s3:ObjectTagging:Delete","s3":{"bucket":{"name":"photos"},"object":{"key":"t","versionId":"v-2"}}},
      {"eventName":"s3:ObjectAcl:Put","s3":{"bucket":{"name":"photos"},"object":{"key":"t","versionId":"v-2"}}},
      {"eventName":"s3:ObjectCreated:PutRetention","s3":{"bucket":{"name":"photos"},"object":{"key":"t","versionId":"v-2"}}},
      {"eventName":"s3:ObjectCreated:PutLegalHold","s3":{"bucket":{"name":"photos"},"object":{"key":"t","versionId":"v-2"}}},
      {"eventName":"s3:BucketCreated:*","s3":{"bucket":{"name":"new-bucket"}}}
    ]}"#;

    #[test]
    fn parses_records() {
        let c = parse(MINIO.as_bytes()).unwrap();
        assert_eq!(c.len(), 9, "the version delete is not replicated");
        assert_eq!(
            (c[8].kind, c[8].bucket.as_str(), c[8].key.as_str()),
            (ChangeKind::BucketCreated, "new-bucket", "")
        );
        assert_eq!(c[0].kind, ChangeKind::Created);
        assert_eq!(c[0].key, "a b+cé.jpg");
        assert_eq!(
            (c[0].version_id.as_str(), c[0].size, c[0].sequencer.as_str()),
            ("v-1", 1234, "17B")
        );
        assert_eq!(c[0].event_time.as_deref(), Some("2026-11-25T10:00:00.000Z"));
        assert_eq!(c[1].kind, ChangeKind::DeleteMarker);
        assert_eq!(c[1].version_id, "dm-1");
        assert_eq!(c[2].version_id, "null", "unversioned bucket");
        let kinds: Vec<ChangeKind> = c[3..8].iter().map(|c| c.kind).collect();
        use MetadataField::*;
        assert_eq!(
            kinds,
            [Tags, Tags, Acl, Retention, LegalHold].map(ChangeKind::Metadata),
            "metadata changes are told apart from new versions"
        );
    }

    #[test]
    fn malformed_messages_say_why() {
        assert!(parse(b"{}").unwrap_err().0.contains("no Records"));
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"%FF"}}}]}"#)
            .unwrap_err()
            .0
            .contains("URL-encoded"));
        assert_eq!(parse(br#"{"Event":"s3:TestEvent"}"#).unwrap(), vec![]);
    }
}
