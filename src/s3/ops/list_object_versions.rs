//! ListObjectVersions: one page of versions and delete markers, in the server's order
//! (keys ascending, each key's versions newest first).

use http::Method;

use super::walk_xml;
use crate::s3::client::{Client, Req};
use crate::s3::error::op_error;

op_error! {
    /// Why ListObjectVersions failed.
    ListObjectVersionsError {
        #[error("bucket does not exist")]
        NoSuchBucket => false, "NoSuchBucket";
    }
}

/// A version or a delete marker, as listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListedVersion {
    pub key: String,
    pub version_id: String,
    pub is_latest: bool,
    pub delete_marker: bool,
    pub last_modified: String,
    pub etag: String,
    pub size: u64,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListObjectVersionsPage {
    /// In document order.
    pub versions: Vec<ListedVersion>,
    pub is_truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_version_id_marker: Option<String>,
}

/// Where a listing starts.
#[derive(Debug, Clone, Default)]
pub struct ListObjectVersionsRequest<'a> {
    pub prefix: Option<&'a str>,
    pub key_marker: Option<&'a str>,
    pub version_id_marker: Option<&'a str>,
    pub max_keys: Option<u32>,
}

/// Orders one key's entries newest first. Servers list a key's versions newest first, but
/// not all interleave versions and delete markers (moto lists every version, then every
/// delete marker): entries are ordered by LastModified, the latest one first, and otherwise
/// kept in listing order (a stable sort).
pub fn sort_newest_first(entries: &mut [ListedVersion]) {
    entries.sort_by(|a, b| {
        b.last_modified
            .cmp(&a.last_modified)
            .then(b.is_latest.cmp(&a.is_latest))
    });
}

/// Parses a `ListVersionsResult` document.
pub fn parse_page(body: &[u8]) -> Result<ListObjectVersionsPage, crate::s3::error::RequestError> {
    let mut page = ListObjectVersionsPage::default();
    let mut cur = ListedVersion::default();
    walk_xml(body, |path, text| match (path, text) {
        ("Version", None) => cur = ListedVersion::default(),
        ("DeleteMarker", None) => {
            cur = ListedVersion {
                delete_marker: true,
                ..Default::default()
            }
        }
        ("Version/", None) | ("DeleteMarker/", None) => {
            page.versions.push(std::mem::take(&mut cur))
        }
        ("IsTruncated", Some(t)) => page.is_truncated = t.trim() == "true",
        ("NextKeyMarker", Some(t)) => page.next_key_marker = Some(t.to_string()),
        ("NextVersionIdMarker", Some(t)) => page.next_version_id_marker = Some(t.to_string()),
        (p, Some(t)) => {
            let field = p.rsplit('/').next().unwrap_or("");
            if p.starts_with("Version/") || p.starts_with("DeleteMarker/") {
                match field {
                    "Key" => cur.key = t.to_string(),
                    "VersionId" => cur.version_id = t.to_string(),
                    "IsLatest" => cur.is_latest = t.trim() == "true",
                    "LastModified" => cur.last_modified = t.to_string(),
                    "ETag" => cur.etag = t.to_string(),
                    "Size" => cur.size = t.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        _ => {}
    })?;
    Ok(page)
}

impl Client {
    pub async fn list_object_versions(
        &self,
        bucket: &str,
        r: ListObjectVersionsRequest<'_>,
    ) -> Result<ListObjectVersionsPage, ListObjectVersionsError> {
        let mut req = Req::new(Method::GET, bucket, None).query("versions", "");
        if let Some(p) = r.prefix {
            req = req.query("prefix", p);
        }
        if let Some(k) = r.key_marker {
            req = req.query("key-marker", k);
        }
        if let Some(v) = r.version_id_marker {
            req = req.query("version-id-marker", v);
        }
        if let Some(m) = r.max_keys {
            req = req.query("max-keys", m.to_string());
        }
        let resp = match self.send("ListObjectVersions", req, &[]).await {
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
    fn keeps_document_order() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix></Prefix><KeyMarker></KeyMarker><IsTruncated>true</IsTruncated>
  <NextKeyMarker>k&amp;2</NextKeyMarker><NextVersionIdMarker>v9</NextVersionIdMarker>
  <DeleteMarker><Key>a</Key><VersionId>d1</VersionId><IsLatest>true</IsLatest><LastModified>2026-01-01T00:00:02.000Z</LastModified></DeleteMarker>
  <Version><Key>a</Key><VersionId>v2</VersionId><IsLatest>false</IsLatest><LastModified>2026-01-01T00:00:01.000Z</LastModified><ETag>"e2"</ETag><Size>3</Size></Version>
  <Version><Key>k&amp;2</Key><VersionId>v9</VersionId><IsLatest>true</IsLatest><ETag>"e9"</ETag><Size>0</Size></Version>
</ListVersionsResult>"#;
        let p = parse_page(xml).unwrap();
        assert!(p.is_truncated);
        assert_eq!(p.next_key_marker.as_deref(), Some("k&2"));
        assert_eq!(p.versions.len(), 3);
        assert!(p.versions[0].delete_marker && p.versions[0].is_latest);
        assert_eq!(p.versions[1].version_id, "v2");
        assert_eq!(p.versions[1].size, 3);
        assert_eq!(p.versions[2].key, "k&2");
        assert_eq!(p.versions[2].etag, "\"e9\"");
    }
}
