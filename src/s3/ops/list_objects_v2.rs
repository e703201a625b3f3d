//! ListObjectsV2: one page of current objects, for servers that do not implement
//! ListObjectVersions (each object is listed as version `null`, the latest of its key).

use http::Method;
use serde::Deserialize;

use super::list_object_versions::{ListObjectVersionsError, ListedVersion};
use super::xml::{flag, from_xml, non_empty, number};
use crate::s3::client::{Client, Req};

/// One page of current objects, as versions named `null`.
#[derive(Debug, Clone, Default)]
pub struct ListObjectsV2Page {
    pub objects: Vec<ListedVersion>,
    pub is_truncated: bool,
    pub next_continuation_token: Option<String>,
}

/// Where a listing starts.
#[derive(Debug, Clone, Default)]
pub struct ListObjectsV2Request<'a> {
    pub prefix: Option<&'a str>,
    pub continuation_token: Option<&'a str>,
    /// List the keys after this one (where a stopped listing resumes).
    pub start_after: Option<&'a str>,
    pub max_keys: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResult {
    #[serde(default)]
    contents: Vec<Object>,
    #[serde(default, deserialize_with = "flag")]
    is_truncated: bool,
    #[serde(default, deserialize_with = "non_empty")]
    next_continuation_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", default)]
#[derive(Default)]
struct Object {
    key: String,
    last_modified: String,
    #[serde(rename = "ETag")]
    etag: String,
    #[serde(deserialize_with = "number")]
    size: u64,
}

/// Parses a `ListBucketResult` document.
pub fn parse_page(body: &[u8]) -> Result<ListObjectsV2Page, crate::s3::error::RequestError> {
    let doc: ListBucketResult = from_xml(body, "ListBucketResult")?;
    let objects = doc
        .contents
        .into_iter()
        .map(|o| ListedVersion {
            key: o.key,
            version_id: "null".into(),
            is_latest: true,
            delete_marker: false,
            last_modified: o.last_modified,
            etag: o.etag,
            size: o.size,
            storage_class: String::new(),
        })
        .collect();
    Ok(ListObjectsV2Page {
        objects,
        is_truncated: doc.is_truncated,
        next_continuation_token: doc.next_continuation_token,
    })
}

impl Client {
    pub async fn list_objects_v2(
        &self,
        bucket: &str,
        r: ListObjectsV2Request<'_>,
    ) -> Result<ListObjectsV2Page, ListObjectVersionsError> {
        let mut req = Req::new(Method::GET, bucket, None).query("list-type", "2");
        if let Some(p) = r.prefix {
            req = req.query("prefix", p);
        }
        if let Some(t) = r.continuation_token {
            req = req.query("continuation-token", t);
        }
        if let Some(a) = r.start_after {
            req = req.query("start-after", a);
        }
        if let Some(m) = r.max_keys {
            req = req.query("max-keys", m.to_string());
        }
        let resp = match self.send("ListObjectsV2", req, &[]).await {
            Ok(r) => r,
            Err(e) if e.code() == "NoSuchBucket" => {
                return Err(ListObjectVersionsError::NoSuchBucket)
            }
            Err(e) => return Err(e.into()),
        };
        let body = resp.body.collect(64 * 1024 * 1024).await?;
        Ok(parse_page(&body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_listed_as_null_versions() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix></Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>
  <IsTruncated>true</IsTruncated><NextContinuationToken>t&amp;1</NextContinuationToken>
  <Contents><Key>a b</Key><LastModified>2026-01-01T00:00:01.000Z</LastModified><ETag>"e1"</ETag><Size>3</Size><StorageClass>STANDARD</StorageClass></Contents>
  <Contents><Key>c</Key><LastModified>2026-01-01T00:00:02.000Z</LastModified><ETag>"e2"</ETag><Size>0</Size></Contents>
</ListBucketResult>"#;
        let p = parse_page(xml).unwrap();
        assert!(p.is_truncated);
        assert_eq!(p.next_continuation_token.as_deref(), Some("t&1"));
        let got: Vec<_> = p
            .objects
            .iter()
            .map(|o| (o.key.as_str(), o.version_id.as_str(), o.is_latest, o.size))
            .collect();
        assert_eq!(got, [("a b", "null", true, 3), ("c", "null", true, 0)]);
        let empty =
            parse_page(b"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>");
        assert!(empty.unwrap().objects.is_empty());
    }
}
