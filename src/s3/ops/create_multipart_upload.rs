//! CreateMultipartUpload: starts an upload with the object's metadata and tags.

use http::Method;
use serde::Deserialize;

use super::xml::{from_xml, non_empty};
use super::{apply_metadata, encode_tagging, ObjectMetadata};
use crate::s3::client::{Client, Req};
use crate::s3::error::{op_error, RequestError};

op_error! {
    /// Why CreateMultipartUpload failed.
    CreateMultipartUploadError {
        #[error("destination bucket does not exist")]
        NoSuchBucket => false, "NoSuchBucket";
    }
}

/// The `InitiateMultipartUploadResult` document (Bucket and Key are not used).
#[derive(Deserialize)]
struct InitiateMultipartUploadResult {
    #[serde(rename = "UploadId", default, deserialize_with = "non_empty")]
    upload_id: Option<String>,
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
        let doc: InitiateMultipartUploadResult = from_xml(&body, "InitiateMultipartUploadResult")?;
        doc.upload_id.ok_or_else(|| {
            RequestError::BadResponse("no UploadId in CreateMultipartUpload response".into()).into()
        })
    }
}
