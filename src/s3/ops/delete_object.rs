//! DeleteObject: removes a version, or (without a version id on a versioned bucket) adds a
//! delete marker.

use http::Method;

use crate::s3::client::{Client, Req};
use crate::s3::error::op_error;

op_error! {
    /// Why DeleteObject failed.
    DeleteObjectError {}
}

/// What DeleteObject returns.
#[derive(Debug, Clone)]
pub struct DeleteObjectOutput {
    pub delete_marker: bool,
    pub version_id: Option<String>,
}

impl Client {
    pub async fn delete_object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<DeleteObjectOutput, DeleteObjectError> {
        let mut req = Req::new(Method::DELETE, bucket, Some(key));
        if let Some(v) = version_id {
            req = req.query("versionId", v);
        }
        let resp = self.send("DeleteObject", req, &[]).await?;
        let out = DeleteObjectOutput {
            delete_marker: resp
                .headers
                .get("x-amz-delete-marker")
                .map(|v| v.as_bytes() == b"true")
                .unwrap_or(false),
            version_id: resp
                .headers
                .get("x-amz-version-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        };
        let _ = resp.body.collect(64 * 1024).await;
        Ok(out)
    }
}
