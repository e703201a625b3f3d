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
    #[serde(other)]
    Other,
}

/// Parses a `ListMultipartUploadsResult` document.
fn parse_uploads(body: &[u8]) -> Result<Vec<OpenUpload>, crate::s3::error::RequestError> {
    let doc: ListMultipartUploadsResult = from_xml(body, "ListMultipartUploadsResult")?;
    Ok(doc
        .children
        .into_iter()
        .filter_map(|c| match c {
            Child::Upload(u) => Some(u),
            Child::Other => None,
        })
        .collect())
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
}
