//! PutObject: uploads a body of known length with its metadata, tags and CRC32C.

use http::Method;

use super::{apply_metadata, encode_tagging, ObjectMetadata};
use crate::s3::checksum;
use crate::s3::client::{Client, Req};
use crate::s3::error::op_error;
use crate::s3::http::ReqBody;
use crate::s3::signing::Payload;

op_error! {
    /// Why PutObject failed.
    PutObjectError {
        #[error("destination bucket does not exist")]
        NoSuchBucket => false, "NoSuchBucket";
        #[error("the key already exists at the destination (a write made only if it did not)")]
        KeyExists => false, "PreconditionFailed";
    }
}

/// How the CRC32C of an upload reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadChecksum {
    /// Known before sending: `x-amz-checksum-crc32c` header.
    Header(u32),
    /// The body is aws-chunked and carries the CRC32C in its trailer.
    Trailer,
    None,
}

/// A PutObject request. For [`UploadChecksum::Trailer`] the body must be an aws-chunked
/// [`crate::s3::body::PipeBody`] and `length` the decoded length.
pub struct PutObjectRequest<'a> {
    pub body: ReqBody,
    pub length: u64,
    pub metadata: &'a ObjectMetadata,
    pub tags: &'a [(String, String)],
    pub checksum: UploadChecksum,
    /// `If-None-Match: *`: written only if the key has no current object (a conditional
    /// write; a server that has an object there answers 412, [`PutObjectError::KeyExists`]).
    pub if_none_match: bool,
}

/// What PutObject returns.
#[derive(Debug, Clone)]
pub struct PutObjectOutput {
    pub etag: String,
    pub version_id: Option<String>,
    pub crc32c: Option<u32>,
}

/// Adds the checksum headers of an upload and returns how the payload is declared.
pub(crate) fn apply_checksum<'a>(
    mut req: crate::s3::client::Req<'a>,
    checksum: UploadChecksum,
    length: u64,
    content_encoding: Option<&str>,
) -> Result<crate::s3::client::Req<'a>, crate::s3::error::RequestError> {
    match checksum {
        UploadChecksum::Header(crc) => {
            req = req.header("x-amz-checksum-crc32c", &checksum::encode(crc))?;
            req = req.header("x-amz-sdk-checksum-algorithm", "CRC32C")?;
            req = req.header("content-length", &length.to_string())?;
        }
        UploadChecksum::Trailer => {
            let enc = match content_encoding {
                Some(e) if !e.is_empty() => format!("aws-chunked,{e}"),
                _ => "aws-chunked".to_string(),
            };
            req.headers.remove("content-encoding");
            req = req.header("content-encoding", &enc)?;
            req = req.header("x-amz-decoded-content-length", &length.to_string())?;
            req = req.header("x-amz-trailer", "x-amz-checksum-crc32c")?;
            req = req.header("x-amz-sdk-checksum-algorithm", "CRC32C")?;
            req.payload = Payload::StreamingUnsignedTrailer;
        }
        UploadChecksum::None => {
            req = req.header("content-length", &length.to_string())?;
        }
    }
    Ok(req)
}

impl Client {
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        r: PutObjectRequest<'_>,
    ) -> Result<PutObjectOutput, PutObjectError> {
        let mut req = Req::new(Method::PUT, bucket, Some(key));
        req = apply_metadata(req, r.metadata)?;
        if !r.tags.is_empty() {
            req = req.header("x-amz-tagging", &encode_tagging(r.tags))?;
        }
        req = apply_checksum(
            req,
            r.checksum,
            r.length,
            r.metadata.content_encoding.as_deref(),
        )?;
        if r.if_none_match {
            req = req.header("if-none-match", "*")?;
        }
        req = req.body(r.body);
        match self.send("PutObject", req, &[]).await {
            Ok(resp) => {
                let h = &resp.headers;
                let out = PutObjectOutput {
                    etag: h
                        .get("etag")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string(),
                    version_id: h
                        .get("x-amz-version-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                    crc32c: h
                        .get("x-amz-checksum-crc32c")
                        .and_then(|v| v.to_str().ok())
                        .and_then(checksum::decode),
                };
                let _ = resp.body.collect(64 * 1024).await;
                Ok(out)
            }
            Err(e) if e.code() == "NoSuchBucket" => Err(PutObjectError::NoSuchBucket),
            Err(e) if e.code() == "PreconditionFailed" => Err(PutObjectError::KeyExists),
            Err(e) => Err(e.into()),
        }
    }
}
