//! CompleteMultipartUpload: assembles the uploaded parts into the object.

use http::Method;

use super::upload_part::CompletedPart;
use super::{walk_xml, xml_escape};
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

impl Client {
    pub async fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<CompleteOutput, CompleteMultipartUploadError> {
        let mut xml = String::from(
            "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
        );
        for p in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag>",
                p.part_number,
                xml_escape(&p.etag)
            ));
            if let Some(c) = p.crc32c {
                xml.push_str(&format!(
                    "<ChecksumCRC32C>{}</ChecksumCRC32C>",
                    checksum::encode(c)
                ));
            }
            xml.push_str("</Part>");
        }
        xml.push_str("</CompleteMultipartUpload>");
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
        let mut etag = String::new();
        walk_xml(&body, |path, text| {
            if path == "ETag" {
                if let Some(t) = text {
                    etag = t.to_string();
                }
            }
        })?;
        Ok(CompleteOutput { etag, version_id })
    }
}
