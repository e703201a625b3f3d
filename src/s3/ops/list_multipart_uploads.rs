//! ListMultipartUploads: uploads started and neither completed nor aborted.

use http::Method;

use super::walk_xml;
use crate::s3::client::{Client, Req};
use crate::s3::error::op_error;

op_error! {
    /// Why ListMultipartUploads failed.
    ListMultipartUploadsError {}
}

/// An upload in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenUpload {
    pub key: String,
    pub upload_id: String,
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
        let mut out = Vec::new();
        let mut cur = OpenUpload::default();
        walk_xml(&body, |path, text| match (path, text) {
            ("Upload", None) => cur = OpenUpload::default(),
            ("Upload/Key", Some(t)) => cur.key = t.to_string(),
            ("Upload/UploadId", Some(t)) => cur.upload_id = t.to_string(),
            ("Upload/", None) => out.push(std::mem::take(&mut cur)),
            _ => {}
        })?;
        Ok(out)
    }
}
