//! CreateMultipartUpload: starts an upload with the object's metadata and tags.

use http::Method;

use super::{apply_metadata, encode_tagging, walk_xml, ObjectMetadata};
use crate::s3::client::{Client, Req};
use crate::s3::error::{op_error, RequestError};

op_error! {
    /// Why CreateMultipartUpload failed.
    CreateMultipartUploadError {
        #[error("destination bucket does not exist")]
        NoSuchBucket => false, "NoSuchBucket";
    }
}

impl Client {
    /// Returns the upload id. `crc32c` asks the server to keep per-part CRC32C checksums.
    pub async fn create_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        metadata: &ObjectMetadata,
        tags: &[(String, String)],
        crc32c: bool,
    ) -> Result<String, CreateMultipartUploadError> {
        let mut req = Req::new(Method::POST, bucket, Some(key)).query("uploads", "");
        req = apply_metadata(req, metadata)?;
        if !tags.is_empty() {
            req = req.header("x-amz-tagging", &encode_tagging(tags))?;
        }
        if crc32c {
            req = req.header("x-amz-checksum-algorithm", "CRC32C")?;
        }
        let resp = match self.send("CreateMultipartUpload", req, &[]).await {
            Ok(r) => r,
            Err(e) if e.code() == "NoSuchBucket" => {
                return Err(CreateMultipartUploadError::NoSuchBucket)
            }
            Err(e) => return Err(e.into()),
        };
        let body = resp.body.collect(64 * 1024).await?;
        let mut upload_id = None;
        walk_xml(&body, |path, text| {
            if path == "UploadId" {
                if let Some(t) = text {
                    upload_id = Some(t.to_string());
                }
            }
        })?;
        upload_id.ok_or_else(|| {
            RequestError::BadResponse("no UploadId in CreateMultipartUpload response".into()).into()
        })
    }
}
