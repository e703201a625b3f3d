//! CopyObject within a bucket: a version copied onto its own key with another storage
//! class (lifecycle's in-place transition), its metadata and tags kept by the server.

use http::Method;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::s3::client::{Client, Req};
use crate::s3::error::op_error;

op_error! {
    /// Why CopyObject failed.
    CopyObjectError {
        #[error("the source version does not exist")]
        NoSuchKey => false, "NoSuchKey";
    }
}

/// What CopyObject returns: the new version's id.
#[derive(Debug, Clone)]
pub struct CopyObjectOutput {
    pub version_id: Option<String>,
}

/// Characters kept as they are in `x-amz-copy-source` (a key's `/` among them).
const KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

impl Client {
    /// Copies version `version_id` of `key` onto `key` in `storage_class` (a new version
    /// on a versioned bucket), with its metadata and tags.
    pub async fn copy_in_place(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        storage_class: &str,
    ) -> Result<CopyObjectOutput, CopyObjectError> {
        let source = format!(
            "/{bucket}/{}?versionId={}",
            utf8_percent_encode(key, KEEP),
            utf8_percent_encode(version_id, KEEP)
        );
        let req = Req::new(Method::PUT, bucket, Some(key))
            .header("x-amz-copy-source", &source)?
            .header("x-amz-storage-class", storage_class)?
            .header("x-amz-metadata-directive", "COPY")?
            .header("x-amz-tagging-directive", "COPY")?;
        let resp = match self.send("CopyObject", req, &[]).await {
            Ok(r) => r,
            Err(e) if e.code() == "NoSuchKey" => return Err(CopyObjectError::NoSuchKey),
            Err(e) => return Err(e.into()),
        };
        let version_id = resp
            .headers
            .get("x-amz-version-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // A copy can fail after its 200 status line: the error is in the body.
        let body = resp.body.collect(64 * 1024).await?;
        if body.windows(7).any(|w| w == b"<Error>") {
            let text = String::from_utf8_lossy(&body).into_owned();
            return Err(crate::s3::error::RequestError::BadResponse(format!(
                "CopyObject failed after its status line: {text}"
            ))
            .into());
        }
        Ok(CopyObjectOutput { version_id })
    }
}
