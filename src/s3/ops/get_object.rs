//! GetObject: streams a version (or a range, or one part) of an object.

use http::Method;

use super::ObjectHead;
use crate::s3::client::{Client, Req};
use crate::s3::error::{op_error, RequestError};
use crate::s3::http::RespBody;

op_error! {
    /// Why GetObject failed.
    GetObjectError {
        #[error("object not found")]
        NotFound => false, "NoSuchKey";
        #[error("requested range not satisfiable")]
        InvalidRange => false, "InvalidRange";
    }
}

/// Options of GetObject.
#[derive(Debug, Default, Clone)]
pub struct GetObjectRequest<'a> {
    pub version_id: Option<&'a str>,
    /// Inclusive byte range.
    pub range: Option<(u64, u64)>,
    pub part_number: Option<u32>,
    pub checksum_mode: bool,
}

/// A GetObject response: headers parsed, body not yet read.
pub struct GetObjectOutput {
    pub head: ObjectHead,
    pub body: RespBody,
}

impl Client {
    pub async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        opts: GetObjectRequest<'_>,
    ) -> Result<GetObjectOutput, GetObjectError> {
        let mut req = Req::new(Method::GET, bucket, Some(key));
        if let Some(p) = opts.part_number {
            req = req.query("partNumber", p.to_string());
        }
        if let Some(v) = opts.version_id {
            req = req.query("versionId", v);
        }
        if let Some((a, b)) = opts.range {
            req = req.header("range", &format!("bytes={a}-{b}"))?;
        }
        if opts.checksum_mode {
            req = req.header("x-amz-checksum-mode", "ENABLED")?;
        }
        match self.send("GetObject", req, &[]).await {
            Ok(resp) => Ok(GetObjectOutput {
                head: ObjectHead::from_headers(&resp.headers),
                body: resp.body,
            }),
            Err(RequestError::Service {
                status: 404, code, ..
            }) if code == "NoSuchKey" || code == "NoSuchVersion" || code == "NotFound" => {
                Err(GetObjectError::NotFound)
            }
            Err(RequestError::Service { status: 416, .. }) => Err(GetObjectError::InvalidRange),
            Err(e) => Err(e.into()),
        }
    }
}
