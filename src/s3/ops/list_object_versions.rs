//! ListObjectVersions: one page of versions and delete markers, in the server's order
//! (keys ascending, each key's versions newest first).

use http::Method;
use serde::Deserialize;

use super::xml::{flag, from_xml, non_empty, number};
use crate::s3::client::{Client, Req};
use crate::s3::error::op_error;

op_error! {
    /// Why ListObjectVersions failed.
    ListObjectVersionsError {
        #[error("bucket does not exist")]
        NoSuchBucket => false, "NoSuchBucket";
        #[error("the server does not implement ListObjectVersions")]
        NotImplemented => false, "NotImplemented";
    }
}

/// A version or a delete marker, as listed (its `<Version>` or `<DeleteMarker>` element).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListedVersion {
    pub key: String,
    pub version_id: String,
    #[serde(deserialize_with = "flag")]
    pub is_latest: bool,
    /// Set from the element's name, not from its content.
    #[serde(skip)]
    pub delete_marker: bool,
    pub last_modified: String,
    #[serde(rename = "ETag")]
    pub etag: String,
    #[serde(deserialize_with = "number")]
    pub size: u64,
    /// Empty when the server does not say (STANDARD).
    pub storage_class: String,
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

/// Orders one key's entries newest first. Servers list a key's versions newest first, and
/// that order is kept: LastModified cannot replace it (a multipart upload's is when the
/// upload started, so a version may carry an older time than the one before it). Not all
/// servers interleave delete markers with versions (moto lists every version, then every
/// marker). When the listing shows it does not (a marker listed below a version older than
/// it), markers are merged among the versions by LastModified: a marker goes above a version
/// older than it, never above a multipart upload's (the version first on a tie). The entry
/// the server marks latest comes first.
pub fn sort_newest_first(entries: &mut [ListedVersion]) {
    if markers_listed_apart(entries) {
        let split = entries.iter().position(|e| e.delete_marker);
        let (versions, markers) = entries.split_at(split.unwrap_or(entries.len()));
        let merged = merge_markers(versions, markers);
        entries.clone_from_slice(&merged);
    }
    if let Some(i) = entries.iter().position(|e| e.is_latest) {
        entries[..=i].rotate_right(1);
    }
}

/// Whether the listing put markers apart from the versions: no version follows a marker,
/// and some marker is newer than a (single-part) version listed above it.
fn markers_listed_apart(entries: &[ListedVersion]) -> bool {
    let split = entries.iter().position(|e| e.delete_marker);
    let Some(split) = split else {
        return false;
    };
    let (versions, markers) = entries.split_at(split);
    if markers.iter().any(|e| !e.delete_marker) {
        return false;
    }
    markers.iter().any(|m| {
        versions.iter().any(|v| {
            !is_multipart(v) && parse_time(&m.last_modified) > parse_time(&v.last_modified)
        })
    })
}

fn is_multipart(v: &ListedVersion) -> bool {
    crate::s3::checksum::is_multipart_etag(&v.etag)
}

/// Versions and markers, each newest first, merged: a marker goes above a single-part
/// version older than it.
fn merge_markers(versions: &[ListedVersion], markers: &[ListedVersion]) -> Vec<ListedVersion> {
    let mut out = Vec::with_capacity(versions.len() + markers.len());
    let (mut v, mut m) = (versions.iter().peekable(), markers.iter().peekable());
    loop {
        let marker_first = match (v.peek(), m.peek()) {
            (Some(a), Some(b)) => {
                !is_multipart(a) && parse_time(&b.last_modified) > parse_time(&a.last_modified)
            }
            (None, Some(_)) => true,
            (_, None) => false,
        };
        let next = if marker_first { m.next() } else { v.next() };
        match next {
            Some(e) => out.push(e.clone()),
            None => return out,
        }
    }
}

/// A listed LastModified (RFC 3339): unreadable ones sort before any time.
fn parse_time(s: &str) -> Option<std::time::SystemTime> {
    crate::time::parse_rfc3339(s)
}

/// The `ListVersionsResult` document as one list of its children, so that versions and
/// delete markers keep their document order relative to each other.
#[derive(Deserialize)]
struct ListVersionsResult {
    #[serde(rename = "$value", default)]
    children: Vec<Child>,
}

#[derive(Deserialize)]
enum Child {
    Version(ListedVersion),
    DeleteMarker(ListedVersion),
    #[serde(deserialize_with = "flag")]
    IsTruncated(bool),
    #[serde(deserialize_with = "non_empty")]
    NextKeyMarker(Option<String>),
    #[serde(deserialize_with = "non_empty")]
    NextVersionIdMarker(Option<String>),
    /// Name, Prefix, KeyMarker, MaxKeys, CommonPrefixes and whatever servers add.
    #[serde(other)]
    Other,
}

/// Parses a `ListVersionsResult` document.
pub fn parse_page(body: &[u8]) -> Result<ListObjectVersionsPage, crate::s3::error::RequestError> {
    let doc: ListVersionsResult = from_xml(body, "ListVersionsResult")?;
    let mut page = ListObjectVersionsPage::default();
    for child in doc.children {
        match child {
            Child::Version(v) => page.versions.push(v),
            Child::DeleteMarker(v) => page.versions.push(ListedVersion {
                delete_marker: true,
                ..v
            }),
            Child::IsTruncated(t) => page.is_truncated = t,
            Child::NextKeyMarker(m) => page.next_key_marker = m,
            Child::NextVersionIdMarker(m) => page.next_version_id_marker = m,
            Child::Other => {}
        }
    }
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
            Err(e) if e.code() == "NotImplemented" => {
                return Err(ListObjectVersionsError::NotImplemented)
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

    #[test]
    fn keeps_the_order_of_versions_and_delete_markers_of_a_key() {
        let xml = br#"<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><IsTruncated>false</IsTruncated><MaxKeys>1000</MaxKeys>
  <Version><Key>a</Key><VersionId>v3</VersionId><IsLatest>true</IsLatest><LastModified>2026-01-01T00:00:01.000Z</LastModified><ETag>"e3"</ETag><Size>3</Size><Owner><ID>o</ID></Owner><StorageClass>STANDARD</StorageClass></Version>
  <DeleteMarker><Key>a</Key><VersionId>d2</VersionId><IsLatest>false</IsLatest><LastModified>2026-01-01T00:00:01.000Z</LastModified><Owner><ID>o</ID></Owner></DeleteMarker>
  <Version><Key>a</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest><LastModified>2026-01-01T00:00:01.000Z</LastModified><ETag>"e1"</ETag><Size>1</Size></Version>
  <DeleteMarker><Key>b</Key><VersionId>d9</VersionId><IsLatest>true</IsLatest><LastModified>2026-01-01T00:00:01.000Z</LastModified></DeleteMarker>
  <Version><Key>b</Key><VersionId>v8</VersionId><IsLatest>false</IsLatest><LastModified>2026-01-01T00:00:01.000Z</LastModified><ETag>"e8"</ETag><Size>8</Size></Version>
  <CommonPrefixes><Prefix>c/</Prefix></CommonPrefixes>
</ListVersionsResult>"#;
        let p = parse_page(xml).unwrap();
        let got: Vec<_> = p
            .versions
            .iter()
            .map(|v| (v.key.as_str(), v.version_id.as_str(), v.delete_marker))
            .collect();
        assert_eq!(
            got,
            [
                ("a", "v3", false),
                ("a", "d2", true),
                ("a", "v1", false),
                ("b", "d9", true),
                ("b", "v8", false)
            ]
        );
        assert!(!p.is_truncated && p.next_key_marker.is_none());
        assert_eq!(
            (p.versions[2].size, p.versions[2].etag.as_str()),
            (1, "\"e1\"")
        );
        // Equal timestamps: the stable sort keeps the listing order after the latest.
        let mut a = p.versions[..3].to_vec();
        sort_newest_first(&mut a);
        let ids: Vec<_> = a.iter().map(|v| v.version_id.as_str()).collect();
        assert_eq!(ids, ["v3", "d2", "v1"]);
    }

    fn listed(id: &str, marker: bool, at: &str, latest: bool) -> ListedVersion {
        ListedVersion {
            key: "k".into(),
            version_id: id.into(),
            is_latest: latest,
            delete_marker: marker,
            last_modified: format!("2026-11-25T10:00:{at}.000Z"),
            ..ListedVersion::default()
        }
    }

    fn ids(entries: &[ListedVersion]) -> Vec<&str> {
        entries.iter().map(|v| v.version_id.as_str()).collect()
    }

    #[test]
    fn versions_keep_the_listing_order_and_separate_markers_are_merged_by_time() {
        // v2 is a multipart upload started before v1 was written and completed after it.
        let mut aws = vec![
            listed("v3", false, "30", true),
            listed("v2", false, "00", false),
            listed("v1", false, "05", false),
        ];
        sort_newest_first(&mut aws);
        assert_eq!(ids(&aws), ["v3", "v2", "v1"]);
        // moto: every version, then every marker.
        let mut moto = vec![
            listed("v3", false, "30", true),
            listed("v2", false, "20", false),
            listed("v1", false, "05", false),
            listed("d2", true, "25", false),
            listed("d1", true, "05", false),
        ];
        sort_newest_first(&mut moto);
        assert_eq!(ids(&moto), ["v3", "d2", "v2", "v1", "d1"]);
        // AWS: markers older than multipart versions listed above them stay below (a
        // multipart upload's LastModified is when it started).
        let mut mpu = vec![
            listed("m2", false, "10", true),
            listed("m1", false, "08", false),
            listed("d", true, "09", false),
        ];
        for v in &mut mpu[..2] {
            v.etag = "\"abc-2\"".into();
        }
        sort_newest_first(&mut mpu);
        assert_eq!(ids(&mpu), ["m2", "m1", "d"]);
        // A latest marker listed last comes first.
        let mut latest = vec![
            listed("v1", false, "05", false),
            listed("d1", true, "05", true),
        ];
        sort_newest_first(&mut latest);
        assert_eq!(ids(&latest), ["d1", "v1"]);
    }

    #[test]
    fn keys_keep_their_whitespace_and_bad_documents_are_errors() {
        let xml = b"<ListVersionsResult><Version><Key> a </Key><VersionId>v</VersionId><Size> 2 </Size></Version><DeleteMarker><Key> </Key></DeleteMarker><NextKeyMarker></NextKeyMarker></ListVersionsResult>";
        let p = parse_page(xml).unwrap();
        assert_eq!((p.versions[0].key.as_str(), p.versions[0].size), (" a ", 2));
        assert_eq!(p.versions[1].key, " ");
        assert_eq!(p.next_key_marker, None);
        for bad in [
            &b"<ListVersionsResult><Version><Key>a</Key>"[..],
            b"<ListVersionsResult><Version><Size>x</Size></Version></ListVersionsResult>",
            b"not xml",
        ] {
            let e = parse_page(bad).unwrap_err();
            assert!(e.to_string().contains("ListVersionsResult"), "{e}");
        }
    }
}
