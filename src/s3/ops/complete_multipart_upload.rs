//! CompleteMultipartUpload: assembles the uploaded parts into the object.

use http::Method;
use serde::{Deserialize, Serialize};

use super::upload_part::CompletedPart;
use super::xml::{from_xml, to_xml, S3_XMLNS};
use crate::s3::checksum;
use crate::s3::client::{Client, Req};
use crate::s3::error::{op_error, RequestError};
use crate::s3::http::ReqBody;

op_error! {
    /// Why CompleteMultipartUpload failed.
    CompleteMultipartUploadError {
        #[error("the multipart upload no longer exists")]
        NoSuchUpload => false, "NoSuchUpload";
    }
}

/// What CompleteMultipartUpload returns.
#[derive(Debug, Clone)]
pub struct CompleteOutput {
    pub etag: String,
    pub version_id: Option<String>,
}

/// The request body: the parts, in order.
#[derive(Serialize)]
#[serde(rename = "CompleteMultipartUpload")]
struct CompleteMultipartUpload<'a> {
    #[serde(rename = "@xmlns")]
    xmlns: &'static str,
    #[serde(rename = "Part")]
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Part<'a> {
    part_number: u32,
    #[serde(rename = "ETag")]
    etag: &'a str,
    #[serde(rename = "ChecksumCRC32C", skip_serializing_if = "Option::is_none")]
    checksum_crc32c: Option<String>,
}

/// The `CompleteMultipartUploadResult` document (Location, Bucket and Key are not used).
#[derive(Deserialize)]
struct CompleteMultipartUploadResult {
    #[serde(rename = "ETag", default)]
    etag: String,
}

fn complete_body(parts: &[CompletedPart]) -> Result<String, RequestError> {
    let doc = CompleteMultipartUpload {
        xmlns: S3_XMLNS,
        parts: parts
            .iter()
            .map(|p| Part {
                part_number: p.part_number,
                etag: &p.etag,
                checksum_crc32c: p.crc32c.map(checksum::encode),
            })
            .collect(),
    };
    to_xml(&doc, "CompleteMultipartUpload")
}

impl Client {
    pub async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<CompleteOutput, CompleteMultipartUploadError> {
        let xml = complete_body(parts)?;
        let req = Req::new(Method::POST, bucket, Some(key))
            .query("uploadId", upload_id)
            .header("content-type", "application/xml")?
            .body(ReqBody::full(xml));
        let resp = match self.send("CompleteMultipartUpload", req, &[]).await {
            Ok(r) => r,
            Err(e) if e.code() == "NoSuchUpload" => {
                return Err(CompleteMultipartUploadError::NoSuchUpload)
            }
            Err(e) => return Err(e.into()),
        };
        let version_id = resp
            .headers
            .get("x-amz-version-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp.body.collect(1024 * 1024).await?;
        // A 200 response may still carry an error document.
        if let Some((code, message)) = crate::s3::error::parse_error_xml(&body) {
            return Err(RequestError::Service {
                status: 200,
                code,
                message,
                request_id: String::new(),
            }
            .into());
        }
        let doc: CompleteMultipartUploadResult = from_xml(&body, "CompleteMultipartUploadResult")?;
        Ok(CompleteOutput {
            etag: doc.etag,
            version_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_body_s3_wants() {
        let parts = [
            CompletedPart {
                part_number: 1,
                etag: "\"e1\"".into(),
                crc32c: Some(0x0102_0304),
            },
            CompletedPart {
                part_number: 2,
                etag: "\"e&2\"".into(),
                crc32c: None,
            },
        ];
        assert_eq!(
            complete_body(&parts).unwrap(),
            "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <Part><PartNumber>1</PartNumber><ETag>&quot;e1&quot;</ETag><ChecksumCRC32C>AQIDBA==</ChecksumCRC32C></Part>\
             <Part><PartNumber>2</PartNumber><ETag>&quot;e&amp;2&quot;</ETag></Part>\
             </CompleteMultipartUpload>"
        );
    }

    #[test]
    fn reads_the_result() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<CompleteMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Location>http://h/b/k</Location><Bucket>b</Bucket><Key>k</Key><ETag>"abc-2"</ETag>
</CompleteMultipartUploadResult>"#;
        let doc: CompleteMultipartUploadResult = from_xml(xml, "r").unwrap();
        assert_eq!(doc.etag, "\"abc-2\"");
    }
}
