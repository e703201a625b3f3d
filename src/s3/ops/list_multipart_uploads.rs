//! ListMultipartUploads: uploads started and neither completed nor aborted.

use http::Method;
use serde::Deserialize;

use super::xml::from_xml;
use crate::s3::client::{Client, Req};
use crate::s3::error::op_error;

op_error! {
    /// Why ListMultipartUploads failed.
    ListMultipartUploadsError {}
}

/// An upload in progress (an `<Upload>` element).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct OpenUpload {
    pub key: String,
    pub upload_id: String,
    /// When the upload began (RFC 3339).
    pub initiated: String,
}

/// One page of uploads and where the next begins.
#[derive(Debug, Clone, Default)]
pub struct UploadsPage {
    pub uploads: Vec<OpenUpload>,
    pub next: Option<(String, String)>,
}

/// The `ListMultipartUploadsResult` document: its uploads, whatever elements surround them.
#[derive(Deserialize)]
struct ListMultipartUploadsResult {
    #[serde(rename = "$value", default)]
    children: Vec<Child>,
}

#[derive(Deserialize)]
enum Child {
    Upload(OpenUpload),
    IsTruncated(String),
    NextKeyMarker(String),
    NextUploadIdMarker(String),
    #[serde(other)]
    Other,
}

/// Parses a `ListMultipartUploadsResult` document.
fn parse_page(body: &[u8]) -> Result<UploadsPage, crate::s3::error::RequestError> {
    let doc: ListMultipartUploadsResult = from_xml(body, "ListMultipartUploadsResult")?;
    let mut page = UploadsPage::default();
    let (mut truncated, mut key, mut id) = (false, String::new(), String::new());
    for c in doc.children {
        match c {
            Child::Upload(u) => page.uploads.push(u),
            Child::IsTruncated(t) => truncated = t.trim() == "true",
            Child::NextKeyMarker(k) => key = k,
            Child::NextUploadIdMarker(u) => id = u,
            Child::Other => {}
        }
    }
    if truncated {
        let last = page.uploads.last();
        if key.is_empty() {
            key = last.map(|u| u.key.clone()).unwrap_or_default();
            id = last.map(|u| u.upload_id.clone()).unwrap_or_default();
        }
        page.next = (!key.is_empty()).then_some((key, id));
    }
    Ok(page)
}

fn parse_uploads(body: &[u8]) -> Result<Vec<OpenUpload>, crate::s3::error::RequestError> {
    parse_page(body).map(|p| p.uploads)
}

impl Client {
    /// The first page (up to 1000) of uploads in progress under `prefix`.
    pub async fn list_multipart_uploads(
        &self,
        bucket: &str,
        prefix: Option<&str>,
    ) -> Result<Vec<OpenUpload>, ListMultipartUploadsError> {
        let mut req = Req::new(Method::GET, bucket, None).query("uploads", "");
        if let Some(p) = prefix {
            req = req.query("prefix", p);
        }
        let resp = self.send("ListMultipartUploads", req, &[]).await?;
        let body = resp.body.collect(16 * 1024 * 1024).await?;
        Ok(parse_uploads(&body)?)
    }

    /// A page of uploads in progress, from `after` (a key and upload id marker).
    pub async fn list_multipart_uploads_page(
        &self,
        bucket: &str,
        prefix: Option<&str>,
        after: Option<&(String, String)>,
    ) -> Result<UploadsPage, ListMultipartUploadsError> {
        let mut req = Req::new(Method::GET, bucket, None).query("uploads", "");
        if let Some(p) = prefix {
            req = req.query("prefix", p);
        }
        if let Some((key, id)) = after {
            req = req.query("key-marker", key.as_str());
            if !id.is_empty() {
                req = req.query("upload-id-marker", id.as_str());
            }
        }
        let resp = self.send("ListMultipartUploads", req, &[]).await?;
        let body = resp.body.collect(16 * 1024 * 1024).await?;
        Ok(parse_page(&body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uploads() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><IsTruncated>false</IsTruncated>
  <Upload><Key>a b</Key><UploadId>u1</UploadId><Initiator><ID>i</ID></Initiator><StorageClass>STANDARD</StorageClass></Upload>
  <Upload><Key>c&amp;</Key><UploadId>u2</UploadId></Upload>
</ListMultipartUploadsResult>"#;
        let u = parse_uploads(xml).unwrap();
        let got: Vec<_> = u
            .iter()
            .map(|u| (u.key.as_str(), u.upload_id.as_str()))
            .collect();
        assert_eq!(got, [("a b", "u1"), ("c&", "u2")]);
        assert!(
            parse_uploads(b"<ListMultipartUploadsResult></ListMultipartUploadsResult>")
                .unwrap()
                .is_empty()
        );
        assert!(parse_uploads(b"<ListMultipartUploadsResult><Upload>").is_err());
    }

    #[test]
    fn a_truncated_page_says_where_the_next_begins() {
        let xml = br#"<ListMultipartUploadsResult><IsTruncated>true</IsTruncated>
  <NextKeyMarker>k2</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>
  <Upload><Key>k1</Key><UploadId>u1</UploadId><Initiated>2026-03-01T00:00:00.000Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let p = parse_page(xml).unwrap();
        assert_eq!(p.uploads[0].initiated, "2026-03-01T00:00:00.000Z");
        assert_eq!(p.next, Some(("k2".to_string(), "u2".to_string())));
        // A server that leaves out the markers: the next page starts after the last upload.
        let bare = br#"<ListMultipartUploadsResult><IsTruncated>true</IsTruncated>
  <Upload><Key>k1</Key><UploadId>u1</UploadId></Upload></ListMultipartUploadsResult>"#;
        assert_eq!(
            parse_page(bare).unwrap().next,
            Some(("k1".to_string(), "u1".to_string()))
        );
        let last = br#"<ListMultipartUploadsResult><IsTruncated>false</IsTruncated>
  <NextKeyMarker>k9</NextKeyMarker></ListMultipartUploadsResult>"#;
        assert_eq!(parse_page(last).unwrap().next, None);
    }
}
