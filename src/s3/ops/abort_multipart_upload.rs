//! AbortMultipartUpload: discards an upload and its parts.

use http::Method;

use crate::s3::client::{Client, Req};
use crate::s3::error::op_error;

op_error! {
    /// Why AbortMultipartUpload failed.
    AbortMultipartUploadError {}
}

impl Client {
    /// Aborting an upload that no longer exists succeeds.
    pub async fn abort_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), AbortMultipartUploadError> {
        let req = Req::new(Method::DELETE, bucket, Some(key)).query("uploadId", upload_id);
        let resp = self.send("AbortMultipartUpload", req, &[404]).await?;
        let _ = resp.body.collect(64 * 1024).await;
        Ok(())
    }
}
