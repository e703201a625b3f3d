//! Bucket operations: GetBucketVersioning, GetBucketReplication,
//! GetBucketLifecycleConfiguration, and the CreateBucket and PutBucketVersioning that tests
//! and the demo use to prepare sites.

use http::Method;
use serde::{Deserialize, Serialize};

use super::xml::{from_xml, to_xml, S3_XMLNS};
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
        #[error("bucket has no lifecycle configuration")]
        NoLifecycleConfiguration => false, "NoSuchLifecycleConfiguration";
    }
}

/// A bucket's versioning state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Versioning {
    Unversioned,
    Enabled,
    Suspended,
}

/// The `VersioningConfiguration` document: read from GetBucketVersioning (whatever its root
/// is called: moto answers `GetBucketVersioningResponse`), sent to PutBucketVersioning.
#[derive(Serialize, Deserialize)]
#[serde(rename = "VersioningConfiguration")]
struct VersioningConfiguration {
    #[serde(rename = "@xmlns", default, skip_deserializing)]
    xmlns: &'static str,
    #[serde(rename = "Status", default)]
    status: Option<String>,
}

/// Parses a GetBucketVersioning response.
fn parse_versioning(body: &[u8]) -> Result<Versioning, crate::s3::error::RequestError> {
    let doc: VersioningConfiguration = from_xml(body, "VersioningConfiguration")?;
    Ok(match doc.status.as_deref().map(str::trim) {
        Some("Enabled") => Versioning::Enabled,
        Some("Suspended") => Versioning::Suspended,
        _ => Versioning::Unversioned,
    })
}

fn map_bucket_err(e: crate::s3::error::RequestError) -> BucketError {
    match e.code() {
        "NoSuchBucket" => BucketError::NoSuchBucket,
        "ReplicationConfigurationNotFoundError" => BucketError::NoReplicationConfiguration,
        "NoSuchLifecycleConfiguration" => BucketError::NoLifecycleConfiguration,
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
        Ok(parse_versioning(&body)?)
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

    /// The LifecycleConfiguration XML document, as stored.
    pub async fn get_bucket_lifecycle(&self, bucket: &str) -> Result<String, BucketError> {
        let req = Req::new(Method::GET, bucket, None).query("lifecycle", "");
        let resp = self
            .send("GetBucketLifecycleConfiguration", req, &[])
            .await
            .map_err(map_bucket_err)?;
        let body = resp.body.collect(1024 * 1024).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Creates a bucket; an existing bucket owned by the caller is not an error.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), BucketError> {
        self.create_bucket_with(bucket, false).await
    }

    /// Creates a bucket in the endpoint's region, with Object Lock enabled when
    /// `object_lock` (it cannot be turned on later on every server); an existing bucket
    /// owned by the caller is not an error.
    pub async fn create_bucket_with(
        &self,
        bucket: &str,
        object_lock: bool,
    ) -> Result<(), BucketError> {
        let mut req = Req::new(Method::PUT, bucket, None);
        if object_lock {
            req = req.header("x-amz-bucket-object-lock-enabled", "true")?;
        }
        let region = self.endpoint().region().to_string();
        if region != "us-east-1" && !region.is_empty() {
            let xml = format!(
                "<CreateBucketConfiguration xmlns=\"{S3_XMLNS}\"><LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
            );
            req = req.body(ReqBody::full(xml));
        }
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
        let doc = VersioningConfiguration {
            xmlns: S3_XMLNS,
            status: Some(status.to_string()),
        };
        let xml = to_xml(&doc, "VersioningConfiguration")?;
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

/// The `ObjectLockConfiguration` document, as far as whether Object Lock is on.
#[derive(Deserialize)]
struct ObjectLockConfiguration {
    #[serde(rename = "ObjectLockEnabled", default)]
    enabled: Option<String>,
}

impl Client {
    /// Whether the bucket has Object Lock enabled (a bucket without its configuration, or a
    /// server without the API, has not).
    pub async fn object_lock_enabled(&self, bucket: &str) -> Result<bool, BucketError> {
        let req = Req::new(Method::GET, bucket, None).query("object-lock", "");
        let resp = match self.send("GetObjectLockConfiguration", req, &[]).await {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.code(),
                    "ObjectLockConfigurationNotFoundError" | "NotImplemented"
                ) =>
            {
                return Ok(false)
            }
            Err(e) => return Err(map_bucket_err(e)),
        };
        let body = resp.body.collect(64 * 1024).await?;
        let doc: ObjectLockConfiguration = from_xml(&body, "ObjectLockConfiguration")?;
        Ok(doc.enabled.as_deref().map(str::trim) == Some("Enabled"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioning_documents() {
        let doc = VersioningConfiguration {
            xmlns: S3_XMLNS,
            status: Some("Enabled".into()),
        };
        assert_eq!(
            to_xml(&doc, "VersioningConfiguration").unwrap(),
            "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>Enabled</Status></VersioningConfiguration>"
        );
        for (xml, want) in [
            (&br#"<?xml version="1.0" encoding="UTF-8"?>
<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Status>Enabled</Status></VersioningConfiguration>"#[..], Versioning::Enabled),
            (b"<GetBucketVersioningResponse><Status>Suspended</Status><MfaDelete>Disabled</MfaDelete></GetBucketVersioningResponse>", Versioning::Suspended),
            (b"<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"/>", Versioning::Unversioned),
        ] {
            assert_eq!(parse_versioning(xml).unwrap(), want);
        }
        assert!(parse_versioning(b"<VersioningConfiguration>").is_err());
    }
}
