//! UploadPart: uploads one part of a multipart upload.

use http::Method;

use super::put_object::{apply_checksum, UploadChecksum};
use crate::s3::checksum;
use crate::s3::client::{Client, Req};
use crate::s3::error::op_error;
use crate::s3::http::ReqBody;

op_error! {
    /// Why UploadPart failed.
    UploadPartError {
        #[error("the multipart upload no longer exists")]
        NoSuchUpload => false, "NoSuchUpload";
    }
}

/// A part as CompleteMultipartUpload needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub part_number: u32,
    pub etag: String,
    pub crc32c: Option<u32>,
}

/// One part to upload. For [`UploadChecksum::Trailer`] the body must be an aws-chunked
/// [`crate::s3::body::PipeBody`] and `length` the decoded length.
pub struct UploadPartRequest<'a> {
    pub upload_id: &'a str,
    pub part_number: u32,
    pub body: ReqBody,
    pub length: u64,
    pub checksum: UploadChecksum,
}

impl Client {
    pub async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        r: UploadPartRequest<'_>,
    ) -> Result<CompletedPart, UploadPartError> {
        let UploadPartRequest {
            upload_id,
            part_number,
            body,
            length,
            checksum: checksum_kind,
        } = r;
        let mut req = Req::new(Method::PUT, bucket, Some(key))
            .query("partNumber", part_number.to_string())
            .query("uploadId", upload_id);
        req = apply_checksum(req, checksum_kind, length, None)?;
        req = req.body(body);
        match self.send("UploadPart", req, &[]).await {
            Ok(resp) => {
                let h = &resp.headers;
                let part = CompletedPart {
                    part_number,
                    etag: h
                        .get("etag")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string(),
                    crc32c: h
                        .get("x-amz-checksum-crc32c")
                        .and_then(|v| v.to_str().ok())
                        .and_then(checksum::decode),
                };
                let _ = resp.body.collect(64 * 1024).await;
                Ok(part)
            }
            Err(e) if e.code() == "NoSuchUpload" => Err(UploadPartError::NoSuchUpload),
            Err(e) => Err(e.into()),
        }
    }
}
