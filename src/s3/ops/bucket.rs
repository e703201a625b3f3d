//! Bucket operations: GetBucketVersioning, GetBucketReplication, and the CreateBucket and
//! PutBucketVersioning that tests and the demo use to prepare sites.

use http::Method;

use super::walk_xml;
use crate::s3::client::{Client, Req};
use crate::s3::error::op_error;
use crate::s3::http::ReqBody;

op_error! {
    /// Why a bucket operation failed.
    BucketError {
        #[error("bucket does not exist")]
        NoSuchBucket => false, "NoSuchBucket";
        #[error("bucket has no replication configuration")]
        NoReplicationConfiguration => false, "ReplicationConfigurationNotFoundError";
    }
}

/// A bucket's versioning state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Versioning {
    Unversioned,
    Enabled,
    Suspended,
}

fn map_bucket_err(e: crate::s3::error::RequestError) -> BucketError {
    match e.code() {
        "NoSuchBucket" => BucketError::NoSuchBucket,
        "ReplicationConfigurationNotFoundError" => BucketError::NoReplicationConfiguration,
        _ => e.into(),
    }
}

impl Client {
    pub async fn get_bucket_versioning(&self, bucket: &str) -> Result<Versioning, BucketError> {
        let req = Req::new(Method::GET, bucket, None).query("versioning", "");
        let resp = self
            .send("GetBucketVersioning", req, &[])
            .await
            .map_err(map_bucket_err)?;
        let body = resp.body.collect(64 * 1024).await?;
        let mut v = Versioning::Unversioned;
        walk_xml(&body, |path, text| {
            if path == "Status" {
                match text.map(str::trim) {
                    Some("Enabled") => v = Versioning::Enabled,
                    Some("Suspended") => v = Versioning::Suspended,
                    _ => {}
                }
            }
        })?;
        Ok(v)
    }

    /// The ReplicationConfiguration XML document, as stored.
    pub async fn get_bucket_replication(&self, bucket: &str) -> Result<String, BucketError> {
        let req = Req::new(Method::GET, bucket, None).query("replication", "");
        let resp = self
            .send("GetBucketReplication", req, &[])
            .await
            .map_err(map_bucket_err)?;
        let body = resp.body.collect(1024 * 1024).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Creates a bucket; an existing bucket owned by the caller is not an error.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), BucketError> {
        let req = Req::new(Method::PUT, bucket, None);
        match self.send("CreateBucket", req, &[]).await {
            Ok(r) => {
                let _ = r.body.collect(64 * 1024).await;
                Ok(())
            }
            Err(e) if e.code() == "BucketAlreadyOwnedByYou" => Ok(()),
            Err(e) => Err(map_bucket_err(e)),
        }
    }

    pub async fn put_bucket_versioning(
        &self,
        bucket: &str,
        enabled: bool,
    ) -> Result<(), BucketError> {
        let status = if enabled { "Enabled" } else { "Suspended" };
        let xml = format!(
            "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>{status}</Status></VersioningConfiguration>"
        );
        let crc = crate::s3::checksum::crc32c(xml.as_bytes());
        let req = Req::new(Method::PUT, bucket, None)
            .query("versioning", "")
            .header("x-amz-checksum-crc32c", &crate::s3::checksum::encode(crc))?
            .body(ReqBody::full(xml));
        let r = self
            .send("PutBucketVersioning", req, &[])
            .await
            .map_err(map_bucket_err)?;
        let _ = r.body.collect(64 * 1024).await;
        Ok(())
    }
}

impl Client {
    /// Stores a ReplicationConfiguration XML document (tests and demos use it).
    pub async fn put_bucket_replication(&self, bucket: &str, xml: &str) -> Result<(), BucketError> {
        let crc = crate::s3::checksum::crc32c(xml.as_bytes());
        let req = Req::new(Method::PUT, bucket, None)
            .query("replication", "")
            .header("content-type", "application/xml")?
            .header("x-amz-checksum-crc32c", &crate::s3::checksum::encode(crc))?
            .body(ReqBody::full(xml.to_string()));
        let r = self
            .send("PutBucketReplication", req, &[])
            .await
            .map_err(map_bucket_err)?;
        let _ = r.body.collect(64 * 1024).await;
        Ok(())
    }
}

impl Client {
    /// HeadBucket: whether the bucket exists and the credentials may use it.
    pub async fn head_bucket(&self, bucket: &str) -> Result<(), BucketError> {
        let req = Req::new(Method::HEAD, bucket, None);
        let r = self
            .send("HeadBucket", req, &[404])
            .await
            .map_err(map_bucket_err)?;
        let status = r.status;
        let _ = r.body.collect(64 * 1024).await;
        if status == 404 {
            return Err(BucketError::NoSuchBucket);
        }
        Ok(())
    }
}
