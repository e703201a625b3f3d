//! HeadObject: a version's size, ETag, checksum and metadata, without its bytes.

use http::Method;

use super::ObjectHead;
use crate::s3::client::{Client, Req};
use crate::s3::error::op_error;

op_error! {
    /// Why HeadObject failed.
    HeadObjectError {
        #[error("object not found")]
        NotFound => false, "NoSuchKey";
        /// The latest version (or the version asked for) is a delete marker.
        #[error("object version is a delete marker")]
        DeleteMarker { version_id: Option<String> } => false, "DeleteMarker";
    }
}

/// Options of HeadObject.
#[derive(Debug, Default, Clone)]
pub struct HeadObjectRequest<'a> {
    pub version_id: Option<&'a str>,
    pub part_number: Option<u32>,
    pub checksum_mode: bool,
}

impl Client {
    pub async fn head_object(
        &self,
        bucket: &str,
        key: &str,
        opts: HeadObjectRequest<'_>,
    ) -> Result<ObjectHead, HeadObjectError> {
        let mut req = Req::new(Method::HEAD, bucket, Some(key));
        if let Some(p) = opts.part_number {
            req = req.query("partNumber", p.to_string());
        }
        if let Some(v) = opts.version_id {
            req = req.query("versionId", v);
        }
        if opts.checksum_mode {
            req = req.header("x-amz-checksum-mode", "ENABLED")?;
        }
        let resp = self.send("HeadObject", req, &[404, 405]).await?;
        let delete_marker = resp
            .headers
            .get("x-amz-delete-marker")
            .map(|v| v.as_bytes() == b"true")
            .unwrap_or(false);
        let version_id = resp
            .headers
            .get("x-amz-version-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let status = resp.status;
        let head = ObjectHead::from_headers(&resp.headers);
        let _ = resp.body.collect(64 * 1024).await;
        match status {
            404 | 405 if delete_marker => Err(HeadObjectError::DeleteMarker { version_id }),
            404 => Err(HeadObjectError::NotFound),
            405 => Err(crate::s3::error::RequestError::from_response(405, b"", "").into()),
            _ => Ok(head),
        }
    }
}
